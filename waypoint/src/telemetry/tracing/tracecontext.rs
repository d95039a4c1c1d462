//! Trace context propagation: W3C `traceparent`/`tracestate` and B3 (multi-header and the
//! single `b3` header). Parsing never fails a request: malformed headers are ignored, as
//! in Envoy.

use http::header::{HeaderMap, HeaderValue};
use rand::Rng;

pub type TraceId = [u8; 16];
pub type SpanId = [u8; 8];

/// The trace context a request arrived with.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Incoming {
    pub trace_id: TraceId,
    /// The caller's span: the parent of the waypoint's server span.
    pub parent: Option<SpanId>,
    /// The caller's sampling decision, when it made one.
    pub sampled: Option<bool>,
    pub tracestate: Option<String>,
}

/// Which propagation formats the request used, so the forwarded headers stay consistent.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq)]
pub struct Formats {
    pub b3_multi: bool,
    pub b3_single: bool,
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

fn nonzero<const N: usize>(b: [u8; N]) -> Option<[u8; N]> {
    b.iter().any(|x| *x != 0).then_some(b)
}

/// A B3 trace id: 64-bit ids are left-padded to 128 bits.
fn b3_trace_id(s: &str) -> Option<TraceId> {
    match s.len() {
        32 => hex_bytes::<16>(s).and_then(nonzero),
        16 => {
            let low = hex_bytes::<8>(s)?;
            let mut id = [0u8; 16];
            id[8..].copy_from_slice(&low);
            nonzero(id)
        }
        _ => None,
    }
}

pub use meshwork_runtime::tracecontext::hex;

fn header<'a>(h: &'a HeaderMap, name: &str) -> Option<&'a str> {
    h.get(name).and_then(|v| v.to_str().ok()).map(str::trim)
}

/// `traceparent` as (trace id, parent id, sampled), `None` when malformed (then ignored,
/// as in Envoy). One parser for the whole mesh: `meshwork_runtime::tracecontext`.
pub fn parse_traceparent(v: &str) -> Option<(TraceId, SpanId, bool)> {
    let tp = meshwork_runtime::tracecontext::parse_traceparent(v).ok()?;
    Some((tp.trace_id, tp.parent_id, tp.sampled()))
}

fn b3_sampled(v: &str) -> Option<bool> {
    match v {
        "1" | "d" | "true" => Some(true),
        "0" | "false" => Some(false),
        _ => None,
    }
}

/// What a single `b3` header carries: the ids (absent for a bare decision) and the decision.
type B3Single = (Option<(TraceId, SpanId)>, Option<bool>);

/// The single `b3` header: `{trace}-{span}[-{sampled}[-{parent}]]` or just `{sampled}`.
fn parse_b3_single(v: &str) -> Option<B3Single> {
    let parts: Vec<&str> = v.split('-').collect();
    match parts.as_slice() {
        [s] => Some((None, Some(b3_sampled(s)?))),
        [t, s, rest @ ..] if rest.len() <= 2 => {
            let ids = (b3_trace_id(t)?, hex_bytes::<8>(s).and_then(nonzero)?);
            let sampled = match rest.first() {
                Some(x) => Some(b3_sampled(x)?),
                None => None,
            };
            Some((Some(ids), sampled))
        }
        _ => None,
    }
}

/// Reads the trace context: `traceparent` first, then B3. A B3 sampling flag alone (no ids)
/// still carries the caller's decision.
pub fn extract(h: &HeaderMap) -> (Option<Incoming>, Option<bool>, Formats) {
    let formats = Formats {
        b3_multi: h.contains_key("x-b3-traceid") || h.contains_key("x-b3-sampled"),
        b3_single: h.contains_key("b3"),
    };
    let tracestate = header(h, "tracestate")
        .filter(|s| !s.is_empty())
        .map(String::from);
    if let Some((trace_id, span, sampled)) = header(h, "traceparent").and_then(parse_traceparent) {
        let inc = Incoming {
            trace_id,
            parent: Some(span),
            sampled: Some(sampled),
            tracestate,
        };
        return (Some(inc), Some(sampled), formats);
    }
    let mut sampled = header(h, "x-b3-sampled").and_then(b3_sampled);
    if header(h, "x-b3-flags") == Some("1") {
        sampled = Some(true);
    }
    let multi = header(h, "x-b3-traceid")
        .and_then(b3_trace_id)
        .map(|t| (t, header(h, "x-b3-spanid").and_then(hex_bytes::<8>)));
    let single = header(h, "b3").and_then(parse_b3_single);
    if let Some((ids, s)) = &single {
        sampled = sampled.or(*s);
        if let (Some((t, sp)), None) = (ids, &multi) {
            let inc = Incoming {
                trace_id: *t,
                parent: Some(*sp),
                sampled,
                tracestate,
            };
            return (Some(inc), sampled, formats);
        }
    }
    let inc = multi.map(|(trace_id, parent)| Incoming {
        trace_id,
        parent: parent.and_then(nonzero),
        sampled,
        tracestate,
    });
    (inc, sampled, formats)
}

pub fn new_trace_id() -> TraceId {
    loop {
        let id: TraceId = rand::rng().random();
        if let Some(id) = nonzero(id) {
            return id;
        }
    }
}

pub fn new_span_id() -> SpanId {
    loop {
        let id: SpanId = rand::rng().random();
        if let Some(id) = nonzero(id) {
            return id;
        }
    }
}

fn set(h: &mut HeaderMap, name: &'static str, v: String) {
    if let Ok(v) = HeaderValue::from_str(&v) {
        h.insert(name, v);
    }
}

/// Rewrites the propagation headers for an upstream request whose parent is `span`.
/// `tracestate` and `baggage` are forwarded untouched; B3 headers are rewritten only in the
/// formats the request used.
pub fn inject(
    h: &mut HeaderMap,
    trace_id: &TraceId,
    span: &SpanId,
    parent: Option<&SpanId>,
    sampled: bool,
    formats: Formats,
) {
    let flag = if sampled { "01" } else { "00" };
    set(
        h,
        "traceparent",
        format!("00-{}-{}-{flag}", hex(trace_id), hex(span)),
    );
    if formats.b3_multi {
        set(h, "x-b3-traceid", hex(trace_id));
        set(h, "x-b3-spanid", hex(span));
        match parent {
            Some(p) => set(h, "x-b3-parentspanid", hex(p)),
            None => {
                h.remove("x-b3-parentspanid");
            }
        }
        set(h, "x-b3-sampled", if sampled { "1" } else { "0" }.into());
        h.remove("x-b3-flags");
    }
    if formats.b3_single {
        let s = if sampled { "1" } else { "0" };
        let v = match parent {
            Some(p) => format!("{}-{}-{s}-{}", hex(trace_id), hex(span), hex(p)),
            None => format!("{}-{}-{s}", hex(trace_id), hex(span)),
        };
        set(h, "b3", v);
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn headers(pairs: &[(&'static str, &str)]) -> HeaderMap {
        let mut h = HeaderMap::new();
        for (k, v) in pairs {
            h.insert(*k, HeaderValue::from_str(v).unwrap());
        }
        h
    }

    const TP: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn traceparent_parsing() {
        let (t, s, sampled) = parse_traceparent(TP).unwrap();
        assert_eq!(hex(&t), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&s), "00f067aa0ba902b7");
        assert!(sampled);
        assert!(!parse_traceparent(&TP.replace("-01", "-00")).unwrap().2);
        for bad in [
            "",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7",
            "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
            "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e473z-00f067aa0ba902b7-01",
            "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01-extra",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        // A future version may carry more fields.
        assert!(parse_traceparent(&format!("01{}-x", &TP[2..])).is_some());
    }

    #[test]
    fn extract_prefers_traceparent_and_keeps_tracestate() {
        let h = headers(&[
            ("traceparent", TP),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("x-b3-traceid", "80f198ee56343ba864fe8b2a57d3eff7"),
        ]);
        let (inc, sampled, f) = extract(&h);
        let inc = inc.unwrap();
        assert_eq!(hex(&inc.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(inc.tracestate.as_deref(), Some("congo=t61rcWkgMzE"));
        assert_eq!(sampled, Some(true));
        assert!(f.b3_multi && !f.b3_single);
    }

    #[test]
    fn b3_multi_and_single() {
        let h = headers(&[
            ("x-b3-traceid", "463ac35c9f6413ad"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ]);
        let (inc, sampled, _) = extract(&h);
        let inc = inc.unwrap();
        assert_eq!(hex(&inc.trace_id), "0000000000000000463ac35c9f6413ad");
        assert_eq!(hex(&inc.parent.unwrap()), "a2fb4a1d1a96d312");
        assert_eq!(sampled, Some(true));

        let h = headers(&[(
            "b3",
            "80f198ee56343ba864fe8b2a57d3eff7-e457b5a2e4d86bd1-0-05e3ac9a4f6e3b90",
        )]);
        let (inc, sampled, f) = extract(&h);
        assert_eq!(
            hex(&inc.unwrap().trace_id),
            "80f198ee56343ba864fe8b2a57d3eff7"
        );
        assert_eq!(sampled, Some(false));
        assert!(f.b3_single);

        // A bare sampling decision, no ids.
        let (inc, sampled, _) = extract(&headers(&[("x-b3-sampled", "1")]));
        assert!(inc.is_none());
        assert_eq!(sampled, Some(true));
        let (_, sampled, _) = extract(&headers(&[("b3", "d")]));
        assert_eq!(sampled, Some(true));
        let (inc, sampled, _) = extract(&headers(&[("b3", "nonsense-x")]));
        assert!(inc.is_none() && sampled.is_none());
    }

    #[test]
    fn inject_rewrites_consistently() {
        let mut h = headers(&[
            ("traceparent", TP),
            ("tracestate", "a=b"),
            ("baggage", "k=v"),
            ("x-b3-traceid", "x"),
            ("b3", "1"),
        ]);
        let t = hex_bytes::<16>("4bf92f3577b34da6a3ce929d0e0e4736").unwrap();
        let s = hex_bytes::<8>("1111111111111111").unwrap();
        let p = hex_bytes::<8>("2222222222222222").unwrap();
        let f = Formats {
            b3_multi: true,
            b3_single: true,
        };
        inject(&mut h, &t, &s, Some(&p), true, f);
        assert_eq!(
            h["traceparent"],
            "00-4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-01"
        );
        assert_eq!(h["tracestate"], "a=b");
        assert_eq!(h["baggage"], "k=v");
        assert_eq!(h["x-b3-traceid"], "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(h["x-b3-spanid"], "1111111111111111");
        assert_eq!(h["x-b3-parentspanid"], "2222222222222222");
        assert_eq!(h["x-b3-sampled"], "1");
        assert_eq!(
            h["b3"],
            "4bf92f3577b34da6a3ce929d0e0e4736-1111111111111111-1-2222222222222222"
        );
        // Round trip.
        let (inc, sampled, _) = extract(&h);
        assert_eq!(inc.unwrap().parent, Some(s));
        assert_eq!(sampled, Some(true));

        let mut plain = HeaderMap::new();
        inject(&mut plain, &t, &s, None, false, Formats::default());
        assert!(plain["traceparent"].to_str().unwrap().ends_with("-00"));
        assert!(!plain.contains_key("x-b3-traceid") && !plain.contains_key("b3"));
    }

    #[test]
    fn generated_ids_are_nonzero_and_distinct() {
        assert_ne!(new_trace_id(), [0; 16]);
        assert_ne!(new_span_id(), new_span_id());
    }
}

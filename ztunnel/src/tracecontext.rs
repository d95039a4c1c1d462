//! W3C Trace Context seen on inbound HBONE CONNECTs, for the access log.
//!
//! A waypoint (or any HBONE client) may send `traceparent`, `tracestate` and `baggage`
//! on the CONNECT request. The ztunnel records the trace id, parent span id and sampled
//! flag of a well-formed `traceparent` in that connection's access-log line, so an L4
//! hop can be joined with the waypoint's spans.
//!
//! Scope, on purpose:
//! - Inbound only. The ztunnel is L4: outbound connections come from applications as
//!   plain TCP (captured or SOCKS5) and it does not parse HTTP, so there is no context to
//!   read or propagate on outbound. Inbound HBONE ends at the pod as plain TCP, so there
//!   is no later HBONE hop on which to relay headers either.
//! - The ztunnel does not start spans of its own; it only reports what it was given.
//! - A malformed `traceparent` is ignored (logged at debug); it never refuses the
//!   connection. `tracestate` and `baggage` are only meaningful with a valid
//!   `traceparent`, so their presence is reported only then.

use http::HeaderMap;

/// Trace context parsed from CONNECT request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// The caller's span (the parent of anything done for this request): 16 lowercase
    /// hex digits, not all zero.
    pub span_id: String,
    /// The `sampled` bit of the trace flags.
    pub sampled: bool,
    /// A `tracestate` header was present.
    pub has_tracestate: bool,
    /// A `baggage` header was present.
    pub has_baggage: bool,
}

/// Why a `traceparent` header value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceparentError {
    #[error("traceparent header appears {0} times, expected once")]
    Repeated(usize),
    #[error("traceparent header is not visible ASCII")]
    NotAscii,
    #[error("traceparent is {0} characters, expected 55 (version-traceid-spanid-flags)")]
    Length(usize),
    #[error("traceparent field {field} is not {len} lowercase hex digits")]
    Field { field: &'static str, len: usize },
    #[error("traceparent fields must be separated by '-'")]
    Separator,
    #[error("traceparent version ff is invalid")]
    VersionFF,
    #[error("traceparent {0} is all zeros")]
    ZeroId(&'static str),
}

/// The fields of a valid `traceparent` value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Traceparent {
    pub trace_id: String,
    pub span_id: String,
    pub flags: u8,
}

fn lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn field<'a>(
    v: &'a str,
    range: std::ops::Range<usize>,
    name: &'static str,
) -> Result<&'a str, TraceparentError> {
    let len = range.len();
    let s = &v[range];
    if lower_hex(s) {
        Ok(s)
    } else {
        Err(TraceparentError::Field { field: name, len })
    }
}

/// Parses a `traceparent` value: `version-traceid-spanid-flags`, e.g.
/// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
///
/// Version `00` must be exactly 55 characters. A later version may be longer as long as
/// the 55-character prefix is followed by `-` (W3C forward compatibility); its first four
/// fields are read the same way.
pub fn parse_traceparent(v: &str) -> Result<Traceparent, TraceparentError> {
    if !v.is_ascii() {
        return Err(TraceparentError::NotAscii);
    }
    let v = v.trim_matches(|c| c == ' ' || c == '\t');
    if v.len() < 55 {
        return Err(TraceparentError::Length(v.len()));
    }
    let version = field(v, 0..2, "version")?;
    if version == "ff" {
        return Err(TraceparentError::VersionFF);
    }
    if (version == "00" && v.len() != 55) || (v.len() > 55 && v.as_bytes()[55] != b'-') {
        return Err(TraceparentError::Length(v.len()));
    }
    if [2, 35, 52].iter().any(|&i| v.as_bytes()[i] != b'-') {
        return Err(TraceparentError::Separator);
    }
    let trace_id = field(v, 3..35, "trace-id")?;
    let span_id = field(v, 36..52, "parent-id")?;
    let flags = field(v, 53..55, "trace-flags")?;
    if trace_id.bytes().all(|b| b == b'0') {
        return Err(TraceparentError::ZeroId("trace-id"));
    }
    if span_id.bytes().all(|b| b == b'0') {
        return Err(TraceparentError::ZeroId("parent-id"));
    }
    let flags = u8::from_str_radix(flags, 16).map_err(|_| TraceparentError::Field {
        field: "trace-flags",
        len: 2,
    })?;
    Ok(Traceparent {
        trace_id: trace_id.to_string(),
        span_id: span_id.to_string(),
        flags,
    })
}

/// Reads the trace context of CONNECT request `headers`: `Ok(None)` when there is no
/// `traceparent`, an error when it is malformed.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<TraceContext>, TraceparentError> {
    let mut values = headers.get_all("traceparent").iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let rest = values.count();
    if rest > 0 {
        return Err(TraceparentError::Repeated(rest + 1));
    }
    let v = first.to_str().map_err(|_| TraceparentError::NotAscii)?;
    let tp = parse_traceparent(v)?;
    Ok(Some(TraceContext {
        trace_id: tp.trace_id,
        span_id: tp.span_id,
        sampled: tp.flags & 0x01 != 0,
        has_tracestate: headers.contains_key("tracestate"),
        has_baggage: headers.contains_key("baggage"),
    }))
}

/// [`from_headers`] for the access log: a malformed header is logged at debug and
/// ignored.
pub fn for_access_log(headers: &HeaderMap, authority: &str) -> Option<TraceContext> {
    match from_headers(headers) {
        Ok(tc) => tc,
        Err(e) => {
            tracing::debug!(%authority, error = %e, "hbone: ignoring malformed trace context");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_a_valid_traceparent() {
        let tp = parse_traceparent(GOOD).unwrap();
        assert_eq!(tp.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(tp.span_id, "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        let tp = parse_traceparent(&GOOD.replace("-01", "-00")).unwrap();
        assert_eq!(tp.flags, 0);
    }

    #[test]
    fn future_versions_may_carry_more_fields() {
        let v = format!("01{}-extra", &GOOD[2..]);
        assert!(parse_traceparent(&v).is_ok());
        let v = format!("01{}", &GOOD[2..]);
        assert!(parse_traceparent(&v).is_ok());
        // Version 00 must be exact.
        assert_eq!(
            parse_traceparent(&format!("{GOOD}-extra")),
            Err(TraceparentError::Length(61))
        );
        // A longer future version must continue with '-'.
        assert_eq!(
            parse_traceparent(&format!("01{}x", &GOOD[2..])),
            Err(TraceparentError::Length(56))
        );
    }

    #[test]
    fn rejects_malformed_values() {
        let cases: &[(&str, TraceparentError)] = &[
            ("", TraceparentError::Length(0)),
            (&GOOD[..54], TraceparentError::Length(54)),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceparentError::Field {
                    field: "trace-id",
                    len: 32,
                },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
                TraceparentError::Field {
                    field: "parent-id",
                    len: 16,
                },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                TraceparentError::Field {
                    field: "trace-flags",
                    len: 2,
                },
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceparentError::Field {
                    field: "version",
                    len: 2,
                },
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceparentError::VersionFF,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceparentError::Separator,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceparentError::ZeroId("trace-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                TraceparentError::ZeroId("parent-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
                TraceparentError::NotAscii,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(parse_traceparent(v).as_ref(), Err(want), "{v:?}");
        }
    }

    #[test]
    fn reads_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h), Ok(None));
        h.insert("tracestate", "vendor=x".parse().unwrap());
        assert_eq!(from_headers(&h), Ok(None), "tracestate alone is no context");
        h.insert("traceparent", GOOD.replace("-01", "-00").parse().unwrap());
        let tc = from_headers(&h).unwrap().unwrap();
        assert_eq!(tc.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!tc.sampled);
        assert!(tc.has_tracestate);
        assert!(!tc.has_baggage);
        h.insert("baggage", "k=v".parse().unwrap());
        assert!(from_headers(&h).unwrap().unwrap().has_baggage);
        h.append("traceparent", GOOD.parse().unwrap());
        assert_eq!(from_headers(&h), Err(TraceparentError::Repeated(2)));
        assert_eq!(for_access_log(&h, "10.0.0.1:80"), None);
        let mut h = HeaderMap::new();
        h.insert("traceparent", "garbage".parse().unwrap());
        assert_eq!(for_access_log(&h, "10.0.0.1:80"), None);
    }
}

//! (4) Tracing: requests with distinct `x-user-id` values through the waypoint, a few
//! carrying a sampled B3 or W3C context; the spans the demo's OTLP collector received
//! show the sampling rate, the `user_id` tag, forced sampling and the propagated context.

use std::collections::{BTreeMap, BTreeSet};
use std::time::Instant;

use meshwork_runtime::tracecontext::{hex, parse_traceparent};

use super::*;
use meshwork_localmesh::collector::ReceivedSpan;

/// Requests of the batch, forced ones included.
pub const TRACE_REQUESTS: usize = 1000;
/// Requests with `x-b3-sampled: 1` (and B3 ids), and with a sampled `traceparent`.
pub const FORCED_B3: usize = 10;
pub const FORCED_W3C: usize = 10;
/// Telemetry `randomSamplingPercentage` of 04-tracing.yaml, and the tolerance.
const EXPECTED_PCT: f64 = 10.0;
const TOLERANCE_PCT: f64 = 3.0;
/// The exporter flushes at least every second: wait for the spans at most this long.
const FLUSH_WAIT: Duration = Duration::from_secs(3);
const QUIET: Duration = Duration::from_millis(1200);
const ID_PREFIX: &str = "demo-trace-";

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Forced {
    B3,
    W3c,
}

/// One request of the batch and the context it carries.
#[derive(Debug, Clone)]
pub struct Planned {
    pub request_id: String,
    pub user_id: String,
    /// A forced sample: its format and the incoming trace id (hex).
    pub forced: Option<(Forced, String)>,
}

/// The batch: forced B3 first, then forced W3C, then plain requests. `nonce` keeps the
/// incoming trace ids of two runs apart.
pub fn plan(nonce: u64) -> Vec<Planned> {
    (0..TRACE_REQUESTS)
        .map(|i| {
            let kind = if i < FORCED_B3 {
                Some(Forced::B3)
            } else if i < FORCED_B3 + FORCED_W3C {
                Some(Forced::W3c)
            } else {
                None
            };
            Planned {
                request_id: format!("{ID_PREFIX}{i}"),
                user_id: format!("demo-user-{i}"),
                forced: kind.map(|k| (k, format!("{nonce:016x}{:016x}", i + 1))),
            }
        })
        .collect()
}

fn request(p: &Planned, i: usize) -> Request {
    let mut r = Request::get("/api/orders")
        .header("x-request-id", &p.request_id)
        .header("x-user-id", &p.user_id);
    let parent = format!("{:016x}", i + 1);
    match &p.forced {
        Some((Forced::B3, trace)) => {
            r = r
                .header("x-b3-traceid", trace)
                .header("x-b3-spanid", &parent)
                .header("x-b3-sampled", "1");
        }
        Some((Forced::W3c, trace)) => {
            r = r.header("traceparent", &format!("00-{trace}-{parent}-01"));
        }
        None => {}
    }
    r
}

/// What the collector and the backend saw of the batch.
#[derive(Debug, Default, Clone, PartialEq)]
pub struct Tally {
    pub random_sent: usize,
    pub random_sampled: usize,
    pub spans: usize,
    pub spans_with_user_id: usize,
    pub forced_b3_honoured: usize,
    pub forced_w3c_honoured: usize,
    /// Sampled requests whose answer showed the app's `traceparent`, and those of them in
    /// the same trace as the waypoint's spans.
    pub backend_checked: usize,
    pub backend_same_trace: usize,
    pub failed: usize,
    pub first_error: Option<String>,
}

impl Tally {
    pub fn sampled_pct(&self) -> f64 {
        match self.random_sent {
            0 => 0.0,
            n => 100.0 * self.random_sampled as f64 / n as f64,
        }
    }
}

/// The trace id of the `traceparent` the app received, from its echo of the headers.
fn backend_trace(o: &Outcome) -> Option<String> {
    let j = o.as_ref().ok().filter(|r| r.status == 200)?.json()?;
    let trace = parse_traceparent(j["headers"]["traceparent"].as_str()?)
        .ok()?
        .trace_id;
    Some(hex(&trace))
}

pub fn tally(plan: &[Planned], answers: &[Outcome], spans: &[ReceivedSpan]) -> Tally {
    let mut by_request: BTreeMap<&str, Vec<&ReceivedSpan>> = BTreeMap::new();
    for s in spans {
        if let Some(id) = s
            .attr("guid:x-request-id")
            .filter(|id| id.starts_with(ID_PREFIX))
        {
            by_request.entry(id).or_default().push(s);
        }
    }
    let mut t = Tally::default();
    for (p, o) in plan.iter().zip(answers) {
        if !o.as_ref().is_ok_and(|r| r.status == 200) {
            t.failed += 1;
            if t.first_error.is_none() {
                t.first_error = Some(describe(o));
            }
        }
        let mine = by_request
            .get(p.request_id.as_str())
            .map(Vec::as_slice)
            .unwrap_or_default();
        t.spans += mine.len();
        t.spans_with_user_id += mine
            .iter()
            .filter(|s| s.attr("user_id") == Some(p.user_id.as_str()))
            .count();
        let traces: BTreeSet<&str> = mine.iter().map(|s| s.trace_id.as_str()).collect();
        match &p.forced {
            Some((kind, trace)) if traces.len() == 1 && traces.contains(trace.as_str()) => {
                match kind {
                    Forced::B3 => t.forced_b3_honoured += 1,
                    Forced::W3c => t.forced_w3c_honoured += 1,
                }
            }
            Some(_) => {}
            None => {
                t.random_sent += 1;
                t.random_sampled += usize::from(!mine.is_empty());
            }
        }
        if let (Some(backend), false) = (backend_trace(o), mine.is_empty()) {
            t.backend_checked += 1;
            t.backend_same_trace +=
                usize::from(traces.len() == 1 && traces.contains(backend.as_str()));
        }
    }
    t
}

/// Waits until the collector got no new span for [`QUIET`] (a flush period), at most
/// [`FLUSH_WAIT`] after the last request.
async fn wait_for_flush(mesh: &Mesh) {
    let deadline = Instant::now() + FLUSH_WAIT;
    let (mut seen, mut since) = (mesh.collector.len(), Instant::now());
    while Instant::now() < deadline {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let n = mesh.collector.len();
        if n != seen {
            (seen, since) = (n, Instant::now());
        } else if since.elapsed() >= QUIET {
            return;
        }
    }
}

fn nonce() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    // Never zero: a zero half would still be a valid id, but keep it recognisable.
    nanos | 1
}

/// (4) sampling rate, `user_id` tags, forced samples, context reaching the backend.
pub async fn tracing(mesh: &Mesh) -> Section {
    progress(&format!(
        "pattern 4: {TRACE_REQUESTS} requests with distinct x-user-id ({FORCED_B3} with x-b3-sampled: 1, {FORCED_W3C} with a sampled traceparent), spans to the OTLP collector on {}",
        mesh.collector.addr
    ));
    let mut s = Section::new(4, "tracing (04-tracing.yaml)");
    let planned = plan(nonce());
    let reqs = planned
        .iter()
        .enumerate()
        .map(|(i, p)| request(p, i))
        .collect();
    let answers = burst(
        &mesh.via("order-client", "order-service"),
        reqs,
        CONCURRENCY,
    )
    .await;
    wait_for_flush(mesh).await;
    let t = tally(&planned, &answers, &mesh.collector.spans());
    s.line(format!(
        "sampled {}/{} requests without trace context ({:.1}%, randomSamplingPercentage {EXPECTED_PCT})",
        t.random_sampled,
        t.random_sent,
        t.sampled_pct()
    ));
    s.line(format!(
        "{} span(s) of the batch, {} with user_id from x-user-id",
        t.spans, t.spans_with_user_id
    ));
    s.line(format!(
        "forced: x-b3-sampled: 1 → {}/{FORCED_B3} traced under the incoming trace id, sampled traceparent → {}/{FORCED_W3C}",
        t.forced_b3_honoured, t.forced_w3c_honoured
    ));
    s.line(format!(
        "the app received a traceparent of the same trace for {}/{} sampled requests",
        t.backend_same_trace, t.backend_checked
    ));
    s.expect(
        (t.sampled_pct() - EXPECTED_PCT).abs() <= TOLERANCE_PCT,
        format!(
            "sampling: {:.1}% of {} requests, expected {EXPECTED_PCT} ± {TOLERANCE_PCT}%",
            t.sampled_pct(),
            t.random_sent
        ),
    );
    s.expect(
        t.spans > 0 && t.spans_with_user_id == t.spans,
        format!(
            "user_id tag: {} of {} span(s) carry the request's x-user-id",
            t.spans_with_user_id, t.spans
        ),
    );
    s.expect(
        t.forced_b3_honoured == FORCED_B3 && t.forced_w3c_honoured == FORCED_W3C,
        format!(
            "forced sampling: {}/{FORCED_B3} B3 and {}/{FORCED_W3C} W3C requests produced spans in their incoming trace",
            t.forced_b3_honoured, t.forced_w3c_honoured
        ),
    );
    s.expect(
        t.backend_checked > 0 && t.backend_same_trace == t.backend_checked,
        format!(
            "propagation: {}/{} sampled requests reached the app with a traceparent of their trace",
            t.backend_same_trace, t.backend_checked
        ),
    );
    if let Some(e) = &t.first_error {
        s.expect(
            false,
            format!(
                "{} request(s) failed, first: {e}{}",
                t.failed,
                ztunnel_failure(mesh)
            ),
        );
    }
    s.data = serde_json::json!({
        "sent": TRACE_REQUESTS,
        "failed": t.failed,
        "random": {"sent": t.random_sent, "sampled": t.random_sampled, "pct": t.sampled_pct()},
        "spans": t.spans,
        "spans_with_user_id": t.spans_with_user_id,
        "forced": {
            "b3": {"sent": FORCED_B3, "honoured": t.forced_b3_honoured},
            "traceparent": {"sent": FORCED_W3C, "honoured": t.forced_w3c_honoured},
        },
        "backend": {"checked": t.backend_checked, "same_trace": t.backend_same_trace},
        "collector_spans_total": mesh.collector.len(),
    });
    s
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn span(trace: &str, request_id: &str, user: Option<&str>) -> ReceivedSpan {
        let mut attributes =
            BTreeMap::from([("guid:x-request-id".to_string(), request_id.to_string())]);
        if let Some(u) = user {
            attributes.insert("user_id".into(), u.into());
        }
        ReceivedSpan {
            trace_id: trace.into(),
            span_id: "01".repeat(8),
            attributes,
        }
    }

    fn echo(traceparent: Option<&str>) -> Outcome {
        let headers = match traceparent {
            Some(tp) => serde_json::json!({"traceparent": tp}),
            None => serde_json::json!({}),
        };
        Ok(Response {
            status: 200,
            headers: vec![],
            body: Bytes::from(serde_json::json!({"headers": headers}).to_string()),
        })
    }

    #[test]
    fn plan_has_distinct_users_and_the_forced_contexts() {
        let p = plan(7);
        assert_eq!(p.len(), TRACE_REQUESTS);
        let users: BTreeSet<&str> = p.iter().map(|x| x.user_id.as_str()).collect();
        assert_eq!(users.len(), TRACE_REQUESTS);
        let b3 = request(&p[0], 0);
        assert!(b3.headers.contains(&("x-b3-sampled".into(), "1".into())));
        assert!(b3
            .headers
            .contains(&("x-b3-traceid".into(), format!("{:016x}{:016x}", 7, 1))));
        let w3c = request(&p[FORCED_B3], FORCED_B3);
        let tp = &w3c
            .headers
            .iter()
            .find(|(k, _)| k == "traceparent")
            .unwrap()
            .1;
        let tp = parse_traceparent(tp).unwrap();
        let (trace, sampled) = (tp.trace_id, tp.sampled());
        assert!(sampled);
        assert_eq!(
            Some(hex(&trace)),
            p[FORCED_B3].forced.as_ref().map(|f| f.1.clone())
        );
        assert!(p[FORCED_B3 + FORCED_W3C].forced.is_none());
    }

    #[test]
    fn tally_counts_sampling_tags_forced_samples_and_backend_context() {
        let p = plan(1);
        let n = p.len();
        let b3_trace = p[0].forced.clone().unwrap().1;
        let random = FORCED_B3 + FORCED_W3C;
        let other = "cd".repeat(16);
        let mut answers: Vec<Outcome> = (0..n).map(|_| echo(None)).collect();
        answers[random] = echo(Some(&format!("00-{other}-{}-01", "02".repeat(8))));
        answers[random + 1] = Err(HttpError::Refused {
            target: "x".into(),
            code: 2,
        });
        let spans = vec![
            // B3 forced, right trace; W3C forced one in a fresh trace (not honoured).
            span(&b3_trace, &p[0].request_id, Some(&p[0].user_id)),
            span(
                &"ee".repeat(16),
                &p[FORCED_B3].request_id,
                Some(&p[FORCED_B3].user_id),
            ),
            // A sampled plain request, server and client span, one without the tag.
            span(&other, &p[random].request_id, Some(&p[random].user_id)),
            span(&other, &p[random].request_id, None),
            // Someone else's span.
            span(&other, "demo-order-retry-0", None),
        ];
        let t = tally(&p, &answers, &spans);
        assert_eq!(t.random_sent, n - random);
        assert_eq!(t.random_sampled, 1);
        assert_eq!((t.spans, t.spans_with_user_id), (4, 3));
        assert_eq!((t.forced_b3_honoured, t.forced_w3c_honoured), (1, 0));
        assert_eq!((t.backend_checked, t.backend_same_trace), (1, 1));
        assert_eq!(t.failed, 1);
        assert!(t.first_error.as_deref().unwrap_or("").contains("refused"));
        assert!((t.sampled_pct() - 100.0 / (n - random) as f64).abs() < 1e-9);
    }
}

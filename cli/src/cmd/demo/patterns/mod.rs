//! Drives traffic through the five seed patterns and progressive delivery (the control
//! plane's canary controller) and reports what the mesh did: shared
//! helpers here, one module per pattern.

mod enrolment;
mod progressive;
mod resilience;
mod tracing;
mod traffic;
pub mod wasm;
mod zero_trust;

pub use enrolment::{add_capture, add_identities, enrolment};
pub use progressive::progressive;
pub use resilience::resilience;
pub use tracing::tracing;
pub use traffic::{add_timeout, timeout_probe, traffic};
pub use wasm::wasm;
pub use zero_trust::zero_trust;

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;
use std::time::Duration;

use tokio::sync::Semaphore;

use super::connect::Dial;
use super::http::{self, HttpError, Request, Response, Via};
use super::mesh::Mesh;
use super::observe;
use super::progress;
use super::report::Section;
use super::topology::{NAMESPACE, PODS};

/// Request counts (bounded; the whole run stays well under a minute).
pub const HEALTH_REQUESTS: usize = 20;
pub const HEADER_REQUESTS: usize = 50;
pub const SPLIT_REQUESTS: usize = 1000;
pub const RETRY_PROBES: usize = 5;
pub const RETRY_REQUESTS: usize = 30;
pub const OVERFLOW_REQUESTS: usize = 120;
const CONCURRENCY: usize = 16;
const TIMEOUT: Duration = Duration::from_secs(15);

type Outcome = Result<Response, HttpError>;

/// Sends every request with at most `concurrency` in flight; answers in request order.
pub async fn burst(via: &Via, reqs: Vec<Request>, concurrency: usize) -> Vec<Outcome> {
    let sem = Arc::new(Semaphore::new(concurrency.max(1)));
    let mut tasks = Vec::with_capacity(reqs.len());
    for req in reqs {
        let via = via.clone();
        let sem = sem.clone();
        tasks.push(tokio::spawn(async move {
            let _permit = sem.acquire_owned().await;
            http::send(&via, &req, TIMEOUT).await
        }));
    }
    let mut out = Vec::with_capacity(tasks.len());
    for t in tasks {
        out.push(t.await.unwrap_or_else(|e| {
            Err(HttpError::Timeout {
                target: format!("task: {e}"),
                timeout: TIMEOUT,
            })
        }));
    }
    out
}

/// Counts of the `version` the answering app reported, plus failures.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct Versions {
    pub by_version: BTreeMap<String, usize>,
    pub failed: usize,
    /// What went wrong with the first failed request.
    pub first_error: Option<String>,
}

impl Versions {
    pub fn of(outcomes: &[Outcome]) -> Self {
        let mut v = Versions::default();
        for o in outcomes {
            match o
                .as_ref()
                .ok()
                .filter(|r| r.status == 200)
                .and_then(|r| r.json())
            {
                Some(j) => {
                    let ver = j["version"].as_str().unwrap_or("?").to_string();
                    *v.by_version.entry(ver).or_default() += 1;
                }
                None => {
                    v.failed += 1;
                    if v.first_error.is_none() {
                        v.first_error = Some(describe(o));
                    }
                }
            }
        }
        v
    }

    pub fn count(&self, version: &str) -> usize {
        self.by_version.get(version).copied().unwrap_or(0)
    }

    pub fn answered(&self) -> usize {
        self.by_version.values().sum()
    }

    /// Percentage of answers from `version`.
    pub fn pct(&self, version: &str) -> f64 {
        match self.answered() {
            0 => 0.0,
            n => 100.0 * self.count(version) as f64 / n as f64,
        }
    }
}

/// One line about an outcome.
pub fn describe(o: &Outcome) -> String {
    match o {
        Ok(r) => format!(
            "HTTP {}: {}",
            r.status,
            String::from_utf8_lossy(&r.body)
                .chars()
                .take(160)
                .collect::<String>()
        ),
        Err(e) => e.to_string(),
    }
}

/// The ztunnels' last "outbound connection failed" reason, to explain a refusal.
fn ztunnel_failure(mesh: &Mesh) -> String {
    mesh.ztunnel_metrics
        .keys()
        .filter_map(|node| {
            observe::last_field(
                &mesh.log(&format!("ztunnel-{node}"), "out"),
                "outbound connection failed",
                "error",
            )
        })
        .next_back()
        .map(|e| format!("; ztunnel says: {e}"))
        .unwrap_or_default()
}

/// The body of `GET path` on an admin or metrics endpoint ("" when it does not answer).
async fn get_text(dial: &Dial, path: &str) -> String {
    let via = Via::Plain {
        dial: dial.clone(),
        host: dial.addr().to_string(),
    };
    match http::send(&via, &Request::get(path), Duration::from_secs(5)).await {
        Ok(r) => String::from_utf8_lossy(&r.body).into_owned(),
        Err(_) => String::new(),
    }
}

/// The demo pod listening at `addr` (`ip:port`), else `addr` itself.
fn pod_at(mesh: &Mesh, addr: &str) -> String {
    let ip = addr.rsplit_once(':').map(|(ip, _)| ip).unwrap_or(addr);
    mesh.placement
        .pod_at(ip)
        .map(|p| p.name.to_string())
        .unwrap_or_else(|| addr.to_string())
}

/// `4` or `4, 3` style list of the distinct values.
fn render_counts(values: &[u32]) -> String {
    let distinct: BTreeSet<u32> = values.iter().copied().collect();
    if distinct.is_empty() {
        return "?".into();
    }
    distinct
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join("/")
}

fn with_id(req: Request, prefix: &str, i: usize) -> Request {
    req.header("x-request-id", &format!("{prefix}-{i}"))
}

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;

    fn answer(status: u16, version: &str) -> Outcome {
        Ok(Response {
            status,
            headers: vec![],
            body: Bytes::from(format!("{{\"version\":\"{version}\"}}")),
        })
    }

    #[test]
    fn identities_and_try_counts_render_short() {
        assert_eq!(
            enrolment::short_id("spiffe://cluster.local/ns/production/sa/waypoint"),
            "ns/production/sa/waypoint"
        );
        assert_eq!(enrolment::short_id("odd"), "odd");
        assert_eq!(render_counts(&[4, 4, 3]), "3/4");
        assert_eq!(render_counts(&[]), "?");
    }

    #[test]
    fn capture_counters_from_the_redirect_report() {
        let report = serde_json::json!({
            "enrolled": ["10.244.0.10", "10.244.0.11"],
            "stats": {"outbound_syn": 30, "inbound_hbone_syn": 4, "inbound_plain_syn": 1, "hairpin": 0},
        });
        let c = enrolment::Capture::of(&report).unwrap();
        assert_eq!(
            (
                c.enrolled,
                c.outbound_syn,
                c.inbound_hbone_syn,
                c.inbound_plain_syn
            ),
            (2, 30, 4, 1)
        );
        assert_eq!(
            enrolment::Capture::of(&serde_json::json!({"enrolled": []})),
            None
        );
    }

    #[test]
    fn versions_count_answers_and_failures() {
        let outs = vec![
            answer(200, "v1"),
            answer(200, "v2"),
            answer(200, "v1"),
            answer(503, "v1"),
            Err(HttpError::Refused {
                target: "x".into(),
                code: 2,
            }),
        ];
        let v = Versions::of(&outs);
        assert_eq!((v.count("v1"), v.count("v2"), v.failed), (2, 1, 2));
        assert!((v.pct("v2") - 100.0 / 3.0).abs() < 1e-9);
        assert_eq!(Versions::default().pct("v1"), 0.0);
    }
}

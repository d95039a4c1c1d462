//! (6) Progressive delivery: the control plane's built-in canary controller runs Flagger's
//! `Canary` for the service `catalog` (see `docs/canary.md`). The demo releases v2 (the
//! target Deployment's new version, a rewrite of the manifest as `kubectl apply` would
//! do): healthy, it is promoted step by step. Then a bad v3 (its app answers 500 to half
//! its requests, 600 ms late): rolled back by the controller on its own.
//!
//! While it runs, clients call `catalog` without a pause and every answer is filed under
//! the controller's step at the time it was sent (its phase and weight, polled on
//! `/debug/canaries`): the weights are the share of answers each version gave on the
//! wire (`x-served-by`), the success rate and p99 are the clients'. The controller's own
//! judgement (its checks of the waypoint's metrics and its decision) is shown beside them.

use std::sync::atomic::{AtomicBool, AtomicUsize, Ordering};
use std::sync::Mutex;
use std::time::Instant;

use serde_json::{json, Value};

use super::*;
use crate::cmd::demo::manifests::{
    canary_yaml, CANARY_FILE, CANARY_INTERVAL_SECS, CANARY_MAX_P99_MS, CANARY_MIN_SUCCESS,
    CANARY_STEPS, CANARY_THRESHOLD,
};
use crate::cmd::demo::topology::CATALOG;

/// Client workers calling `catalog` during the pattern, and their pause between calls.
const LOAD_WORKERS: usize = 8;
const LOAD_PAUSE: Duration = Duration::from_millis(40);
/// Requests sent this soon after a step began are not counted in its numbers (the new
/// routing is still on its way to the waypoint) ...
const SETTLE: Duration = Duration::from_millis(300);
/// ... nor those sent this soon before the next step was seen (the poll sees a step up to
/// one poll late).
const LAG: Duration = Duration::from_millis(200);
/// How often the controller's status is read.
const POLL: Duration = Duration::from_millis(100);
/// How long a release may take before the pattern gives up on it.
const RELEASE_LIMIT: Duration = Duration::from_secs(40);
/// The bad release's fault: the share of requests answered with 500, and the delay of all.
const BAD_RATE: f64 = 0.5;
const BAD_DELAY_MS: u64 = 600;

/// The controller's view of the Canary at one step.
#[derive(Debug, Clone, PartialEq)]
struct Step {
    phase: String,
    weight: u32,
    failed_checks: u32,
    decision: String,
    /// `(metric, value, passed)` of the checks that led to this step.
    checks: Vec<(String, Option<f64>, bool)>,
    /// When the pattern saw the step begin.
    at: Instant,
}

impl Step {
    fn of(view: &Value, at: Instant) -> Option<Step> {
        let status = &view["status"];
        Some(Step {
            phase: status["phase"].as_str()?.to_string(),
            weight: status["canaryWeight"].as_u64()? as u32,
            failed_checks: status["failedChecks"].as_u64().unwrap_or(0) as u32,
            decision: view["lastDecision"].as_str().unwrap_or("").to_string(),
            checks: view["lastChecks"]
                .as_array()
                .map(|a| {
                    a.iter()
                        .map(|c| {
                            (
                                c["metric"].as_str().unwrap_or("?").to_string(),
                                c["value"].as_f64(),
                                c["passed"].as_bool().unwrap_or(false),
                            )
                        })
                        .collect()
                })
                .unwrap_or_default(),
            at,
        })
    }

    /// Whether `other` is the same step (the poll saw nothing new).
    fn same(&self, other: &Step) -> bool {
        (&self.phase, self.weight, self.failed_checks, &self.decision)
            == (
                &other.phase,
                other.weight,
                other.failed_checks,
                &other.decision,
            )
    }
}

/// One answer (or failure) the clients got.
#[derive(Debug, Clone)]
struct Sample {
    /// Index into the steps.
    step: usize,
    sent: Instant,
    /// Version of the pod that answered (`x-served-by`), if any did.
    version: Option<String>,
    ok: bool,
    ms: f64,
}

/// What the clients saw during one step.
#[derive(Debug, Clone, Default, PartialEq)]
struct Wire {
    /// Every request of the step, and those that failed.
    sent: usize,
    failed: usize,
    /// Requests sent while the step's routing was surely in force (after [`SETTLE`],
    /// before the next step minus [`LAG`]): the numbers of the step.
    settled: usize,
    settled_failed: usize,
    /// Settled requests a pod answered, by its version.
    answers: usize,
    by_version: BTreeMap<String, usize>,
    /// p99 latency of the settled requests.
    p99_ms: Option<f64>,
}

impl Wire {
    /// `next`: when the next step was seen (None: the last step).
    fn of(step: &Step, next: Option<Instant>, samples: &[&Sample]) -> Wire {
        let mut w = Wire {
            sent: samples.len(),
            ..Wire::default()
        };
        let mut ms: Vec<f64> = Vec::with_capacity(samples.len());
        for s in samples {
            if !s.ok {
                w.failed += 1;
            }
            let after_start = s.sent.saturating_duration_since(step.at) >= SETTLE;
            let before_next = next.is_none_or(|n| n.saturating_duration_since(s.sent) >= LAG);
            if !(after_start && before_next) {
                continue;
            }
            w.settled += 1;
            ms.push(s.ms);
            if !s.ok {
                w.settled_failed += 1;
            }
            if let Some(v) = &s.version {
                w.answers += 1;
                *w.by_version.entry(v.clone()).or_default() += 1;
            }
        }
        w.p99_ms = quantile(&mut ms, 0.99);
        w
    }

    fn pct(&self, version: &str) -> f64 {
        match self.answers {
            0 => 0.0,
            n => 100.0 * self.by_version.get(version).copied().unwrap_or(0) as f64 / n as f64,
        }
    }

    /// Success rate of the settled requests.
    fn success_pct(&self) -> Option<f64> {
        (self.settled > 0)
            .then(|| 100.0 * (self.settled - self.settled_failed) as f64 / self.settled as f64)
    }
}

/// The `q` quantile (nearest rank) of `values`.
fn quantile(values: &mut [f64], q: f64) -> Option<f64> {
    if values.is_empty() {
        return None;
    }
    values.sort_by(f64::total_cmp);
    let rank = ((q * values.len() as f64).ceil() as usize).clamp(1, values.len());
    Some(values[rank - 1])
}

/// One release: the steps the controller went through and what the wire showed.
struct Release {
    version: &'static str,
    /// Steps, from the first after the release was applied.
    steps: Vec<(Step, Wire)>,
    /// The phase it ended in (`Succeeded`, `Failed`), or None when it did not end.
    outcome: Option<String>,
    seconds: f64,
}

/// The Canary's view on the control plane's admin endpoint.
async fn canary_view(mesh: &Mesh) -> Option<Value> {
    let body = get_text(&mesh.control_plane_admin, "/debug/canaries").await;
    let v: Value = serde_json::from_str(&body).ok()?;
    v["canaries"]
        .as_array()?
        .iter()
        .find(|c| c["namespace"] == NAMESPACE && c["name"] == CATALOG)
        .cloned()
}

/// Shared between the clients and the poller: the steps seen so far.
struct Tracker {
    steps: Mutex<Vec<Step>>,
    current: AtomicUsize,
    samples: Mutex<Vec<Sample>>,
    stop: AtomicBool,
}

impl Tracker {
    /// Records the step `view` shows if it is new; its phase.
    fn observe(&self, view: &Value) -> Option<String> {
        let step = Step::of(view, Instant::now())?;
        let phase = step.phase.clone();
        let mut steps = self.steps.lock().unwrap_or_else(|e| e.into_inner());
        if steps.last().is_none_or(|last| !last.same(&step)) {
            steps.push(step);
            self.current.store(steps.len() - 1, Ordering::SeqCst);
        }
        Some(phase)
    }
}

async fn client(via: Via, tracker: Arc<Tracker>, worker: usize) {
    let mut i = 0usize;
    while !tracker.stop.load(Ordering::SeqCst) {
        let step = tracker.current.load(Ordering::SeqCst);
        let sent = Instant::now();
        let req = with_id(
            Request::get("/api/catalog"),
            &format!("demo-canary-{worker}"),
            i,
        );
        let outcome = http::send(&via, &req, Duration::from_secs(5)).await;
        let ms = sent.elapsed().as_secs_f64() * 1000.0;
        let (ok, version) = match &outcome {
            Ok(r) => (
                r.status == 200,
                r.header("x-served-by")
                    .and_then(|pod| PODS.iter().find(|p| p.name == pod))
                    .map(|p| p.version.to_string()),
            ),
            Err(_) => (false, None),
        };
        tracker
            .samples
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .push(Sample {
                step,
                sent,
                version,
                ok,
                ms,
            });
        i += 1;
        tokio::time::sleep(LOAD_PAUSE).await;
    }
}

/// Replaces the demo's canary manifest in one rename, as an apply lands.
fn release(mesh: &Mesh, version: &str) -> std::io::Result<()> {
    let dir = mesh.config_dir();
    let tmp = dir.join(format!(".{CANARY_FILE}.tmp"));
    std::fs::write(&tmp, canary_yaml(version))?;
    std::fs::rename(&tmp, dir.join(CANARY_FILE))
}

/// Polls until the Canary reaches one of `phases` after step `from`; the phase reached.
async fn wait_for(
    mesh: &Mesh,
    tracker: &Tracker,
    from: usize,
    phases: &[&str],
    limit: Duration,
) -> Option<String> {
    let deadline = Instant::now() + limit;
    while Instant::now() < deadline {
        if let Some(view) = canary_view(mesh).await {
            tracker.observe(&view);
            let steps = tracker.steps.lock().unwrap_or_else(|e| e.into_inner());
            if let Some(s) = steps
                .iter()
                .skip(from)
                .find(|s| phases.contains(&s.phase.as_str()))
            {
                return Some(s.phase.clone());
            }
        }
        tokio::time::sleep(POLL).await;
    }
    None
}

/// Polls for `d` (so the steps of that time are recorded).
async fn watch_for(mesh: &Mesh, tracker: &Tracker, d: Duration) {
    let until = Instant::now() + d;
    while Instant::now() < until {
        if let Some(view) = canary_view(mesh).await {
            tracker.observe(&view);
        }
        tokio::time::sleep(POLL).await;
    }
}

/// (6) progressive delivery.
pub async fn progressive(mesh: &Mesh) -> Section {
    progress(&format!(
        "pattern 6: canary releases of {CATALOG} by the control plane's canary controller ({CANARY_INTERVAL_SECS} s steps): a healthy v2, then a failing v3"
    ));
    let mut s = Section::new(
        6,
        "progressive delivery (Canary catalog, the control plane's canary controller)",
    );
    let tracker = Arc::new(Tracker {
        steps: Mutex::new(Vec::new()),
        current: AtomicUsize::new(0),
        samples: Mutex::new(Vec::new()),
        stop: AtomicBool::new(false),
    });
    // The Canary starts at the primary's version (v1): initialized, nothing to analyse.
    let ready = wait_for(
        mesh,
        &tracker,
        0,
        &["Initialized", "Succeeded"],
        Duration::from_secs(20),
    )
    .await;
    if ready.is_none() {
        let view = canary_view(mesh).await;
        s.expect(
            false,
            format!("the Canary {NAMESPACE}/{CATALOG} was not initialized within 20 s: {view:?}"),
        );
        return s;
    }
    let via = mesh.via("order-client", CATALOG);
    let clients: Vec<_> = (0..LOAD_WORKERS)
        .map(|w| tokio::spawn(client(via.clone(), tracker.clone(), w)))
        .collect();
    let mut releases = Vec::new();
    for version in ["v2", "v3"] {
        if version == "v3" {
            let fault = http::send(
                &mesh.direct("catalog-v3"),
                &Request::post(&format!(
                    "/admin/fail?rate={BAD_RATE}&code=500&delay_ms={BAD_DELAY_MS}"
                )),
                Duration::from_secs(5),
            )
            .await;
            s.expect(
                fault.as_ref().is_ok_and(|r| r.status == 200),
                format!("could not make catalog-v3 fail: {fault:?}"),
            );
        }
        let from = tracker
            .steps
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .len();
        let started = Instant::now();
        if let Err(e) = release(mesh, version) {
            s.expect(false, format!("writing {CANARY_FILE} for {version}: {e}"));
            break;
        }
        let outcome = wait_for(
            mesh,
            &tracker,
            from,
            &["Succeeded", "Failed"],
            RELEASE_LIMIT,
        )
        .await;
        let seconds = started.elapsed().as_secs_f64();
        // One more step at the final routing, to see where the traffic went.
        watch_for(
            mesh,
            &tracker,
            Duration::from_secs(CANARY_INTERVAL_SECS) + SETTLE,
        )
        .await;
        releases.push((version, from, outcome, seconds));
    }
    tracker.stop.store(true, Ordering::SeqCst);
    for c in clients {
        let _ = c.await;
    }
    let _ = http::send(
        &mesh.direct("catalog-v3"),
        &Request::post("/admin/fail?rate=0&delay_ms=0"),
        Duration::from_secs(5),
    )
    .await;

    let steps = tracker
        .steps
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let samples = tracker
        .samples
        .lock()
        .unwrap_or_else(|e| e.into_inner())
        .clone();
    let ends: Vec<usize> = releases
        .iter()
        .skip(1)
        .map(|(_, from, _, _)| *from)
        .chain([steps.len()])
        .collect();
    let releases: Vec<Release> = releases
        .into_iter()
        .zip(ends)
        .map(|((version, from, outcome, seconds), end)| Release {
            version,
            steps: (from..end)
                .map(|i| {
                    let of_step: Vec<&Sample> = samples.iter().filter(|x| x.step == i).collect();
                    let next = steps.get(i + 1).map(|n| n.at);
                    (steps[i].clone(), Wire::of(&steps[i], next, &of_step))
                })
                .collect(),
            outcome,
            seconds,
        })
        .collect();
    report(&mut s, &releases);
    s
}

fn fmt_opt(v: Option<f64>, unit: &str) -> String {
    match v {
        Some(v) if unit == "%" => format!("{v:.1}%"),
        Some(v) => format!("{v:.0} {unit}"),
        None => "-".into(),
    }
}

fn checks_text(step: &Step) -> String {
    step.checks
        .iter()
        .map(|(metric, value, passed)| {
            let name = match metric.as_str() {
                "request-success-rate" => "success",
                "request-duration" => "p99",
                m => m,
            };
            let v = match (metric.as_str(), value) {
                ("request-success-rate", Some(v)) => format!("{v:.1}%"),
                ("request-duration", Some(v)) => format!("{v:.0} ms"),
                (_, Some(v)) => format!("{v:.2}"),
                (_, None) => "no value".into(),
            };
            format!("{name} {v}{}", if *passed { "" } else { " ✗" })
        })
        .collect::<Vec<_>>()
        .join(", ")
}

fn step_label(step: &Step) -> String {
    match step.phase.as_str() {
        "Progressing" => format!("weight {:>3}", step.weight),
        "Promoting" => format!("promoting {:>2}", step.weight),
        "Finalising" => "finalising".into(),
        "Succeeded" => "promoted".into(),
        "Failed" => "rolled back".into(),
        p => p.to_string(),
    }
}

fn report(s: &mut Section, releases: &[Release]) {
    let mut data = Vec::new();
    for r in releases {
        let canary = r.version;
        let primary_before = if canary == "v2" { "v1" } else { "v2" };
        let healthy = canary == "v2";
        s.line(if healthy {
            format!("release {canary} (healthy), steps of {CANARY_INTERVAL_SECS} s, weights {CANARY_STEPS:?}, checks success ≥ {CANARY_MIN_SUCCESS}% and p99 ≤ {CANARY_MAX_P99_MS} ms:")
        } else {
            format!("release {canary} (its app answers 500 to {:.0}% of requests, all {BAD_DELAY_MS} ms late; rollback at {CANARY_THRESHOLD} failed checks):", BAD_RATE * 100.0)
        });
        let mut steps_json = Vec::new();
        for (step, wire) in &r.steps {
            let judged = if step.checks.is_empty() {
                String::new()
            } else {
                format!("; judged {}", checks_text(step))
            };
            s.line(format!(
                "  {:<12} on the wire {canary} {:>5.1}% of {:>3} answers, success {}, p99 {}{judged} → {}",
                step_label(step),
                wire.pct(canary),
                wire.answers,
                fmt_opt(wire.success_pct(), "%"),
                fmt_opt(wire.p99_ms, "ms"),
                step.decision,
            ));
            steps_json.push(json!({
                "phase": step.phase,
                "weight": step.weight,
                "failed_checks": step.failed_checks,
                "decision": step.decision,
                "checks": step.checks.iter().map(|(m, v, p)| json!({"metric": m, "value": v, "passed": p})).collect::<Vec<_>>(),
                "wire": {
                    "answers": wire.answers,
                    "by_version": wire.by_version,
                    "canary_pct": wire.pct(canary),
                    "sent": wire.sent,
                    "failed": wire.failed,
                    "settled": wire.settled,
                    "settled_failed": wire.settled_failed,
                    "success_pct": wire.success_pct(),
                    "p99_ms": wire.p99_ms,
                },
            }));
        }
        let outcome = r.outcome.clone().unwrap_or_else(|| "none".into());
        s.line(format!(
            "  → {} {:.1} s after the release",
            match outcome.as_str() {
                "Succeeded" => format!("{canary} promoted"),
                "Failed" =>
                    format!("{canary} rolled back on its own, {primary_before} serves again"),
                _ => "no outcome".to_string(),
            },
            r.seconds
        ));
        let failed: usize = r.steps.iter().map(|(_, w)| w.failed).sum();
        let sent: usize = r.steps.iter().map(|(_, w)| w.sent).sum();
        let last = r.steps.last().map(|(_, w)| w.clone()).unwrap_or_default();
        let final_version = if healthy { canary } else { primary_before };
        let weights: Vec<u32> = r
            .steps
            .iter()
            .filter(|(st, _)| st.phase == "Progressing")
            .map(|(st, _)| st.weight)
            .collect();
        if healthy {
            s.expect(
                outcome == "Succeeded",
                format!("{canary} should be promoted; the controller's last phase: {outcome}"),
            );
            s.expect(
                CANARY_STEPS.iter().all(|w| weights.contains(w)),
                format!(
                    "{canary} should go through the weights {CANARY_STEPS:?}, went {weights:?}"
                ),
            );
            s.expect(
                failed == 0,
                format!("{failed} of {sent} requests failed while the weights moved to a healthy {canary}"),
            );
            for (st, w) in &r.steps {
                if st.phase == "Progressing" && st.weight > 0 && w.answers >= 20 {
                    let got = w.pct(canary);
                    s.expect(
                        (got - f64::from(st.weight)).abs() <= 20.0,
                        format!(
                            "at weight {} the wire showed {got:.1}% {canary} ({} answers)",
                            st.weight, w.answers
                        ),
                    );
                }
            }
        } else {
            s.expect(
                outcome == "Failed",
                format!("{canary} should be rolled back; the controller's last phase: {outcome}"),
            );
            s.expect(
                r.steps
                    .iter()
                    .any(|(st, _)| st.checks.iter().any(|(_, _, passed)| !passed)),
                format!("no failed check was recorded for {canary}"),
            );
            s.expect(
                r.steps.iter().any(|(_, w)| w.failed > 0),
                format!("the clients never reached the failing {canary}"),
            );
        }
        s.expect(
            last.answers > 0 && last.pct(final_version) >= 99.0 && last.settled_failed == 0,
            format!(
                "after the {canary} release all traffic should go to {final_version} without failures: {:?} ({} failed)",
                last.by_version, last.settled_failed
            ),
        );
        data.push(json!({
            "version": canary,
            "outcome": outcome,
            "seconds": r.seconds,
            "weights": weights,
            "sent": sent,
            "failed": failed,
            "final": {"version": final_version, "pct": last.pct(final_version), "answers": last.answers},
            "steps": steps_json,
        }));
    }
    s.data = json!({
        "canary": format!("{NAMESPACE}/{CATALOG}"),
        "interval_s": CANARY_INTERVAL_SECS,
        "threshold": CANARY_THRESHOLD,
        "step_weights": CANARY_STEPS,
        "releases": data,
    });
}

#[cfg(test)]
mod tests {
    use super::*;

    fn step(phase: &str, weight: u32, at: Instant) -> Step {
        Step {
            phase: phase.into(),
            weight,
            failed_checks: 0,
            decision: String::new(),
            checks: vec![
                ("request-success-rate".into(), Some(90.0), false),
                ("request-duration".into(), Some(612.4), false),
            ],
            at,
        }
    }

    #[test]
    fn quantile_is_nearest_rank() {
        let mut v: Vec<f64> = (1..=100).map(f64::from).collect();
        assert_eq!(quantile(&mut v, 0.99), Some(99.0));
        assert_eq!(quantile(&mut [5.0], 0.99), Some(5.0));
        assert_eq!(quantile(&mut [], 0.99), None);
    }

    #[test]
    fn the_wire_counts_every_failure_and_the_step_numbers_from_settled_requests() {
        let t0 = Instant::now();
        let st = step("Progressing", 20, t0);
        let sample = |after_ms: u64, version: Option<&str>, ok: bool| Sample {
            step: 0,
            sent: t0 + Duration::from_millis(after_ms),
            version: version.map(str::to_string),
            ok,
            ms: 3.0,
        };
        let samples = [
            sample(10, Some("v1"), false), // before the routing settled: not counted
            sample(400, Some("v2"), true),
            sample(500, Some("v1"), true),
            sample(600, Some("v1"), true),
            sample(700, Some("v1"), true),
            sample(800, Some("v2"), false),
            sample(900, None, false),
            sample(1850, Some("v2"), true), // just before the next step was seen
        ];
        let refs: Vec<&Sample> = samples.iter().collect();
        let next = Some(t0 + Duration::from_millis(2000));
        let w = Wire::of(&st, next, &refs);
        assert_eq!((w.sent, w.failed), (8, 3));
        assert_eq!((w.settled, w.settled_failed, w.answers), (6, 2, 5));
        assert!((w.pct("v2") - 40.0).abs() < 1e-9, "{w:?}");
        assert!((w.success_pct().unwrap() - 400.0 / 6.0).abs() < 1e-9);
        assert_eq!(Wire::of(&st, None, &refs).settled, 7);
        assert_eq!(w.p99_ms, Some(3.0));
        assert_eq!(Wire::default().success_pct(), None);
    }

    #[test]
    fn steps_are_new_only_when_the_controller_moved() {
        let t0 = Instant::now();
        let view = json!({
            "namespace": "production", "name": "catalog",
            "status": {"phase": "Progressing", "canaryWeight": 20, "failedChecks": 1},
            "lastDecision": "halt advancement",
            "lastChecks": [{"metric": "request-success-rate", "value": 90.0, "passed": false}],
        });
        let a = Step::of(&view, t0).unwrap();
        assert_eq!(
            (a.phase.as_str(), a.weight, a.failed_checks),
            ("Progressing", 20, 1)
        );
        assert_eq!(checks_text(&a), "success 90.0% ✗");
        let tracker = Tracker {
            steps: Mutex::new(Vec::new()),
            current: AtomicUsize::new(0),
            samples: Mutex::new(Vec::new()),
            stop: AtomicBool::new(false),
        };
        tracker.observe(&view);
        tracker.observe(&view);
        let mut next = view.clone();
        next["status"]["failedChecks"] = json!(2);
        tracker.observe(&next);
        assert_eq!(tracker.steps.lock().unwrap().len(), 2);
        assert_eq!(tracker.current.load(Ordering::SeqCst), 1);
        assert_eq!(Step::of(&json!({}), t0), None);
        assert_eq!(step_label(&step("Failed", 0, t0)), "rolled back");
        assert_eq!(
            checks_text(&step("Progressing", 20, t0)),
            "success 90.0% ✗, p99 612 ms ✗"
        );
    }
}

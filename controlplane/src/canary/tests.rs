//! The controller under paused time: a fake [`Judge`] (values set by the test), hooks that
//! record calls and gate on a flag, and a router that records every split it is given.
//! The HTTP parts (Prometheus, webhooks) are tested beside their code over loopback.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use futures::future::BoxFuture;
use meshwork_api::canary::CanaryWebhook;
use tokio::sync::watch;
use tokio::time::Instant;

use super::act::Router;
use super::judge::{Judge, JudgeError, Measurement};
use super::machine::{Command, Routing};
use super::spec::tests::{inputs, DEPLOYMENTS};
use super::spec::{Inputs, Plan};
use super::status::Phase;
use super::webhook::{Hooks, Payload};
use super::{Board, Controller};

#[derive(Default)]
struct FakeJudge {
    values: Mutex<BTreeMap<String, f64>>,
    calls: Mutex<Vec<String>>,
}

impl FakeJudge {
    fn set(&self, metric: &str, v: f64) {
        self.values.lock().unwrap().insert(metric.into(), v);
    }
}

impl Judge for FakeJudge {
    fn measure<'a>(&'a self, m: &'a Measurement) -> BoxFuture<'a, Result<f64, JudgeError>> {
        Box::pin(async move {
            self.calls.lock().unwrap().push(m.query.clone());
            self.values
                .lock()
                .unwrap()
                .get(&m.metric)
                .copied()
                .ok_or(JudgeError::NoValues {
                    metric: m.metric.clone(),
                    target: m.target.clone(),
                })
        })
    }
}

/// Hooks answer 2xx unless their name is in `closed`.
#[derive(Default)]
struct FakeHooks {
    closed: Mutex<Vec<String>>,
    calls: Mutex<Vec<(String, Payload)>>,
}

impl Hooks for FakeHooks {
    fn call<'a>(
        &'a self,
        hook: &'a CanaryWebhook,
        payload: &'a Payload,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            self.calls
                .lock()
                .unwrap()
                .push((hook.name.clone(), payload.clone()));
            if self.closed.lock().unwrap().contains(&hook.name) {
                Err(format!("webhook {}: HTTP 403", hook.name))
            } else {
                Ok(())
            }
        })
    }
}

struct Recorder {
    start: Instant,
    seen: Mutex<Vec<(u64, Routing)>>,
    removed: Mutex<Vec<String>>,
    /// `(phase, weight, decision)` of every status handed over.
    statuses: Mutex<Vec<(Phase, u32, String)>>,
    /// Whether this replica leads (runs the Canaries).
    leading: std::sync::atomic::AtomicBool,
}

impl Router for Recorder {
    fn apply(&self, _plan: &Plan, routing: &Routing) -> Result<(), String> {
        let t = self.start.elapsed().as_secs();
        self.seen.lock().unwrap().push((t, routing.clone()));
        Ok(())
    }
    fn remove(&self, namespace: &str, name: &str) {
        self.removed
            .lock()
            .unwrap()
            .push(format!("{namespace}/{name}"));
    }
    fn status(&self, _ns: &str, _name: &str, status: &super::status::Status, decision: &str) {
        self.statuses.lock().unwrap().push((
            status.phase,
            status.canary_weight,
            decision.to_string(),
        ));
    }
    fn active(&self) -> bool {
        self.leading.load(std::sync::atomic::Ordering::SeqCst)
    }
}

struct Harness {
    judge: Arc<FakeJudge>,
    hooks: Arc<FakeHooks>,
    router: Arc<Recorder>,
    board: Arc<Board>,
    inputs: watch::Sender<Inputs>,
}

fn canary(analysis: &str) -> String {
    format!(
        "{DEPLOYMENTS}---\napiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: web, namespace: shop}}\nspec:\n  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  service: {{port: 80}}\n  analysis:\n    interval: 1m\n{analysis}"
    )
}

const METRICS: &str = "    metrics:\n    - name: request-success-rate\n      thresholdRange: {min: 99}\n    - name: request-duration\n      thresholdRange: {max: 500}\n";

fn start(yaml: &str) -> Harness {
    let judge = Arc::new(FakeJudge::default());
    let hooks = Arc::new(FakeHooks::default());
    let router = Arc::new(Recorder {
        start: Instant::now(),
        seen: Mutex::default(),
        removed: Mutex::default(),
        statuses: Mutex::default(),
        leading: true.into(),
    });
    let board = Arc::new(Board::default());
    let (tx, rx) = watch::channel(inputs(yaml));
    let c = Controller {
        judge: judge.clone(),
        hooks: hooks.clone(),
        router: router.clone(),
        board: board.clone(),
        retry: Duration::from_secs(5),
    };
    tokio::spawn(c.run(rx));
    Harness {
        judge,
        hooks,
        router,
        board,
        inputs: tx,
    }
}

impl Harness {
    fn phase(&self) -> Phase {
        self.board.get("shop", "web").unwrap().status.phase
    }
    fn weights(&self) -> Vec<(u64, u32)> {
        self.router
            .seen
            .lock()
            .unwrap()
            .iter()
            .map(|(t, r)| (*t, r.canary_weight))
            .collect()
    }
    fn hook_calls(&self) -> Vec<String> {
        self.hooks
            .calls
            .lock()
            .unwrap()
            .iter()
            .map(|(n, p)| format!("{n}:{}:{}", p.type_, p.phase))
            .collect()
    }
}

/// Lets the controller run the steps due within `secs` (paused time jumps ahead).
async fn wait(secs: u64) {
    tokio::time::sleep(Duration::from_secs(secs)).await;
}

#[tokio::test(start_paused = true)]
async fn healthy_canary_promotes_step_by_step() {
    let h = start(&canary(&format!(
        "    threshold: 2\n    stepWeight: 20\n    maxWeight: 60\n{METRICS}"
    )));
    h.judge.set("request-success-rate", 100.0);
    h.judge.set("request-duration", 120.0);
    wait(1).await;
    // `web-primary` runs another version: first sight initializes, then analyses `web`.
    assert_eq!(h.phase(), Phase::Initialized);
    wait(60).await;
    assert_eq!(h.phase(), Phase::Progressing);
    wait(7 * 60).await;
    assert_eq!(h.phase(), Phase::Succeeded);
    let v = h.board.get("shop", "web").unwrap();
    assert_eq!(v.status.canary_weight, 0);
    assert_eq!(v.status.failed_checks, 0);
    assert_eq!(
        v.status.conditions[0].status, "True",
        "{:?}",
        v.status.conditions
    );
    // One routing per step, one interval apart: 20, 40, 60, then the primary takes the
    // canary's version (same weights, new primary pods), then all traffic to it.
    assert_eq!(
        h.weights(),
        [(0, 0), (120, 20), (180, 40), (240, 60), (300, 60), (360, 0)]
    );
    let seen = h.router.seen.lock().unwrap().clone();
    assert_eq!(seen[3].1.primary_selector["version"], "v1");
    assert_eq!(seen[4].1.primary_selector["version"], "v2");
    assert_eq!(seen[5].1.primary_weight, 100);
    // Judged at weights 20, 40 and 60 (not at 0), two metrics each.
    assert_eq!(h.judge.calls.lock().unwrap().len(), 6);
}

#[tokio::test(start_paused = true)]
async fn failing_canary_rolls_back_after_threshold_failures() {
    let h = start(&canary(&format!(
        "    threshold: 3\n    stepWeight: 10\n    maxWeight: 50\n{METRICS}"
    )));
    h.judge.set("request-success-rate", 100.0);
    h.judge.set("request-duration", 120.0);
    wait(2 * 60 + 1).await; // Initialized, Progressing, weight 10
    assert_eq!(h.weights().last(), Some(&(120, 10)));
    h.judge.set("request-duration", 900.0);
    wait(60).await;
    let v = h.board.get("shop", "web").unwrap();
    assert_eq!((v.status.failed_checks, v.status.canary_weight), (1, 10));
    assert!(
        v.last_decision.contains("request-duration 900.000 outside"),
        "{}",
        v.last_decision
    );
    assert!(!v.last_checks[1].passed && v.last_checks[0].passed);
    wait(2 * 60).await;
    assert_eq!(h.board.get("shop", "web").unwrap().status.failed_checks, 3);
    assert_eq!(h.phase(), Phase::Progressing);
    wait(60).await; // failedChecks reached the threshold: roll back
    let v = h.board.get("shop", "web").unwrap();
    assert_eq!(v.status.phase, Phase::Failed);
    assert_eq!(v.status.canary_weight, 0);
    assert_eq!(v.status.conditions[0].status, "False");
    let last = h.router.seen.lock().unwrap().last().unwrap().clone();
    assert_eq!((last.1.primary_weight, last.1.canary_weight), (100, 0));
    assert_eq!(
        last.1.primary_selector["version"], "v1",
        "the primary kept its version"
    );
    // No further steps for the same revision.
    let n = h.weights().len();
    wait(10 * 60).await;
    assert_eq!(h.weights().len(), n);
    assert_eq!(h.phase(), Phase::Failed);
}

#[tokio::test(start_paused = true)]
async fn no_values_is_a_failed_check() {
    let h = start(&canary(&format!(
        "    threshold: 1\n    stepWeight: 50\n{METRICS}"
    )));
    wait(3 * 60 + 1).await; // weight 50, then a check without values
    let v = h.board.get("shop", "web").unwrap();
    assert_eq!(v.status.failed_checks, 1);
    assert!(
        v.last_decision.contains("no values found"),
        "{}",
        v.last_decision
    );
    wait(60).await;
    assert_eq!(h.phase(), Phase::Failed);
}

const HOOKS: &str = "    webhooks:\n    - {name: go, type: confirm-rollout, url: 'http://127.0.0.1:1/'}\n    - {name: before, type: pre-rollout, url: 'http://127.0.0.1:1/'}\n    - {name: load, url: 'http://127.0.0.1:1/', metadata: {cmd: hey}}\n    - {name: ship, type: confirm-promotion, url: 'http://127.0.0.1:1/'}\n    - {name: after, type: post-rollout, url: 'http://127.0.0.1:1/'}\n";

#[tokio::test(start_paused = true)]
async fn confirm_gates_and_webhook_order() {
    let h = start(&canary(&format!(
        "    stepWeight: 50\n    maxWeight: 50\n{METRICS}{HOOKS}"
    )));
    h.judge.set("request-success-rate", 100.0);
    h.judge.set("request-duration", 1.0);
    h.hooks
        .closed
        .lock()
        .unwrap()
        .extend(["go".to_string(), "ship".to_string()]);
    wait(3 * 60 + 1).await;
    assert_eq!(
        h.phase(),
        Phase::Waiting,
        "confirm-rollout holds the analysis"
    );
    assert!(h.weights().iter().all(|(_, w)| *w == 0));
    h.hooks.closed.lock().unwrap().retain(|n| n != "go");
    wait(60).await;
    assert_eq!(h.phase(), Phase::Progressing);
    wait(2 * 60).await; // weight 50, then judged at the max weight: promotion is gated
    assert_eq!(h.phase(), Phase::WaitingPromotion);
    wait(5 * 60).await;
    assert_eq!(h.phase(), Phase::WaitingPromotion, "still gated");
    assert_eq!(h.board.get("shop", "web").unwrap().status.canary_weight, 50);
    h.hooks.closed.lock().unwrap().clear();
    wait(3 * 60).await; // Promoting, Finalising, Succeeded
    assert_eq!(h.phase(), Phase::Succeeded);
    let calls = h.hook_calls();
    let firsts: Vec<&str> = {
        let mut seen = Vec::new();
        for c in &calls {
            let name = c.split(':').next().unwrap();
            if !seen.contains(&name) {
                seen.push(name);
            }
        }
        seen
    };
    assert_eq!(
        firsts,
        ["go", "before", "load", "ship", "after"],
        "{calls:?}"
    );
    assert_eq!(calls.iter().filter(|c| c.starts_with("before:")).count(), 1);
    assert!(
        calls.contains(&"load:rollout:Progressing".to_string()),
        "{calls:?}"
    );
    assert_eq!(calls.last().unwrap(), "after:post-rollout:Succeeded");
    let load = h
        .hooks
        .calls
        .lock()
        .unwrap()
        .iter()
        .find(|(n, _)| n == "load")
        .unwrap()
        .1
        .clone();
    assert_eq!(load.metadata["cmd"], "hey");
    assert_eq!(
        (load.name.as_str(), load.namespace.as_str()),
        ("web", "shop")
    );
}

#[tokio::test(start_paused = true)]
async fn failing_pre_rollout_and_rollback_hook() {
    let yaml = canary(&format!(
        "    threshold: 2\n    stepWeight: 50\n{METRICS}    webhooks:\n    - {{name: before, type: pre-rollout, url: 'http://127.0.0.1:1/'}}\n    - {{name: panic, type: rollback, url: 'http://127.0.0.1:1/'}}\n"
    ));
    let h = start(&yaml);
    h.judge.set("request-success-rate", 100.0);
    h.judge.set("request-duration", 1.0);
    h.hooks
        .closed
        .lock()
        .unwrap()
        .extend(["before".to_string(), "panic".to_string()]);
    wait(2 * 60 + 1).await;
    assert_eq!(h.board.get("shop", "web").unwrap().status.failed_checks, 1);
    h.hooks.closed.lock().unwrap().retain(|n| n != "before");
    wait(60).await;
    assert_eq!(h.board.get("shop", "web").unwrap().status.canary_weight, 50);
    // The rollback hook answers 2xx: roll back at the next step.
    h.hooks.closed.lock().unwrap().clear();
    wait(60).await;
    let v = h.board.get("shop", "web").unwrap();
    assert_eq!(v.status.phase, Phase::Failed);
    assert!(
        v.last_decision.contains("rollback webhook panic"),
        "{}",
        v.last_decision
    );
}

#[tokio::test(start_paused = true)]
async fn operator_promote_abort_and_a_new_revision_restarts() {
    let h = start(&canary(&format!(
        "    stepWeight: 10\n    maxWeight: 90\n{METRICS}"
    )));
    h.judge.set("request-success-rate", 100.0);
    h.judge.set("request-duration", 1.0);
    assert!(h.board.command("shop", "nope", Command::Promote).is_err());
    wait(1).await;
    assert_eq!(
        h.board
            .command("shop", "web", Command::Abort)
            .unwrap_err()
            .to_string(),
        "canary shop/web is Initialized: only a running analysis can be promoted or aborted"
    );
    wait(3 * 60).await;
    assert_eq!(h.board.get("shop", "web").unwrap().status.canary_weight, 20);
    h.board.command("shop", "web", Command::Promote).unwrap();
    wait(1).await; // carried out at once, not at the next interval
    assert_eq!(h.phase(), Phase::Promoting);
    wait(2 * 60).await;
    assert_eq!(h.phase(), Phase::Succeeded);

    // A new version of the target: a new analysis, aborted by the operator.
    let yaml = canary(&format!("    stepWeight: 10\n    maxWeight: 90\n{METRICS}"))
        .replace("image: web:2", "image: web:3");
    h.inputs.send(inputs(&yaml)).unwrap();
    wait(2 * 60).await;
    assert_eq!(h.phase(), Phase::Progressing);
    h.board.command("shop", "web", Command::Abort).unwrap();
    wait(1).await;
    let v = h.board.get("shop", "web").unwrap();
    assert_eq!(v.status.phase, Phase::Failed);
    assert_eq!(
        v.routing.unwrap().primary_selector["version"],
        "v2",
        "v2 stays promoted"
    );

    // The Canary is deleted: its generated routing is withdrawn.
    h.inputs.send(inputs(DEPLOYMENTS)).unwrap();
    wait(1).await;
    assert_eq!(*h.router.removed.lock().unwrap(), ["shop/web"]);
    assert!(h.board.get("shop", "web").is_none());
}

#[tokio::test(start_paused = true)]
async fn ab_testing_iterations_route_the_match_to_the_canary() {
    let h = start(&canary(&format!(
        "    iterations: 3\n    match:\n    - headers: {{x-canary: {{exact: insider}}}}\n{METRICS}"
    )));
    h.judge.set("request-success-rate", 100.0);
    h.judge.set("request-duration", 1.0);
    wait(2 * 60 + 1).await;
    let r = h.board.get("shop", "web").unwrap().routing.unwrap();
    assert!(r.match_to_canary);
    assert_eq!(r.canary_weight, 0);
    wait(3 * 60).await;
    let v = h.board.get("shop", "web").unwrap();
    assert_eq!(v.status.phase, Phase::Promoting, "{}", v.last_decision);
    assert_eq!(v.status.iterations, 3);
    assert!(!v.routing.unwrap().match_to_canary);
}

/// A replica that does not lead steps nothing; once it leads, the Canary starts from
/// `Initializing`, and every status change is handed to the router once, with its step's
/// decision.
#[tokio::test(start_paused = true)]
async fn only_the_leading_replica_steps_and_reports_each_status_once() {
    let h = start(&canary(&format!(
        "    threshold: 1\n    stepWeight: 50\n    maxWeight: 50\n{METRICS}"
    )));
    h.router
        .leading
        .store(false, std::sync::atomic::Ordering::SeqCst);
    h.judge.set("request-success-rate", 100.0);
    h.judge.set("request-duration", 10.0);
    wait(150).await;
    assert!(h.board.get("shop", "web").is_none());
    assert!(h.router.seen.lock().unwrap().is_empty());
    assert!(h.router.statuses.lock().unwrap().is_empty());
    h.router
        .leading
        .store(true, std::sync::atomic::Ordering::SeqCst);
    wait(6 * 60).await;
    assert_eq!(h.phase(), Phase::Succeeded);
    let statuses = h.router.statuses.lock().unwrap().clone();
    let phases: Vec<(Phase, u32)> = statuses.iter().map(|(p, w, _)| (*p, *w)).collect();
    assert_eq!(
        phases,
        [
            (Phase::Initialized, 0),
            (Phase::Progressing, 0),
            (Phase::Progressing, 50),
            (Phase::Promoting, 50),
            (Phase::Finalising, 0),
            (Phase::Succeeded, 0),
        ]
    );
    assert_eq!(statuses[2].2, "advance canary weight 50");
}

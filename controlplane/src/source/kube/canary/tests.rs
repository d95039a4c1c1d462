//! The Kubernetes writes of the canary controller against the recorded mock API server:
//! what is applied where (paths, field manager, force, bodies), leader-only writing,
//! retries, and a whole analysis driven by the controller under paused time.

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use futures::future::BoxFuture;
use http::Method;
use serde_json::{json, Value};
use tokio::sync::watch;

use super::*;
use crate::canary::judge::{Judge, JudgeError, Measurement};
use crate::canary::spec::tests::{inputs, DEPLOYMENTS};
use crate::canary::status::Phase;
use crate::source::kube::test_api::{MockApi, Recorded};

const VS: &str = "/apis/networking.istio.io/v1/namespaces/shop/virtualservices/web";
const VS_BETA: &str = "/apis/networking.istio.io/v1beta1/namespaces/shop/virtualservices/web";
const PRIMARY: &str = "/api/v1/namespaces/shop/services/web-primary";
const CANARY_SVC: &str = "/api/v1/namespaces/shop/services/web-canary";
const STATUS: &str = "/apis/flagger.app/v1beta1/namespaces/shop/canaries/web/status";
const EVENTS: &str = "/api/v1/namespaces/shop/events";

fn canary_yaml(extra: &str) -> String {
    format!(
        "{DEPLOYMENTS}---\napiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: web, namespace: shop}}\nspec:\n  targetRef: {{kind: Deployment, name: web}}\n  service: {{port: 80, targetPort: 8080}}\n  analysis:\n    interval: 10s\n    threshold: 2\n    stepWeight: 50\n    maxWeight: 50\n    metrics:\n    - name: request-success-rate\n      thresholdRange: {{min: 99}}\n{extra}"
    )
}

fn plan() -> Plan {
    let i = inputs(&canary_yaml(""));
    i.plan(&i.canaries[0]).unwrap()
}

fn mock() -> MockApi {
    let api = MockApi::default();
    for path in [VS, PRIMARY, CANARY_SVC, STATUS] {
        api.on(Method::PATCH, path, 200, Value::Null);
    }
    api.on(Method::POST, EVENTS, 201, Value::Null);
    api
}

fn served(vs_version: &str) -> Served {
    let mut m = BTreeMap::new();
    m.insert(
        "VirtualService".to_string(),
        watched("VirtualService").unwrap().api_resource(vs_version),
    );
    m.insert("Canary".to_string(), watched("Canary").unwrap().preferred());
    Arc::new(RwLock::new(m))
}

fn start(api: &MockApi, leader: bool, vs_version: &str) -> (KubeRouter, watch::Sender<bool>) {
    let (tx, rx) = watch::channel(leader);
    let (router, writes) = KubeRouter::new(api.client(), served(vs_version), rx);
    tokio::spawn(run_writes(writes));
    (router, tx)
}

/// Waits (bounded, paused clock) until `n` requests were recorded.
async fn wait_for(api: &MockApi, n: usize) -> Vec<Recorded> {
    for _ in 0..300 {
        if api.requests().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    api.requests()
}

fn routing(p: &Plan, canary: u32) -> Routing {
    Routing {
        primary_weight: 100 - canary,
        canary_weight: canary,
        match_to_canary: false,
        primary_selector: p.primary_selector.clone(),
        canary_selector: p.canary_selector.clone(),
    }
}

fn weights(vs: &Value) -> Vec<(String, u64)> {
    vs["spec"]["http"][0]["route"]
        .as_array()
        .unwrap()
        .iter()
        .map(|d| {
            (
                d["destination"]["host"].as_str().unwrap().to_string(),
                d["weight"].as_u64().unwrap(),
            )
        })
        .collect()
}

#[tokio::test(start_paused = true)]
async fn routing_is_server_side_applied_as_the_canary_field_manager() {
    let api = mock();
    let (router, _leader) = start(&api, true, "v1");
    let p = plan();
    router.apply(&p, &routing(&p, 30)).unwrap();
    let reqs = wait_for(&api, 3).await;
    assert_eq!(reqs.len(), 3, "{reqs:#?}");
    for r in &reqs {
        assert_eq!(r.method, Method::PATCH);
        assert_eq!(r.content_type, "application/apply-patch+yaml", "{r:?}");
        assert!(
            r.query.contains("fieldManager=meshwork-canary"),
            "{}",
            r.query
        );
        // Objects someone else manages are not taken over.
        assert!(!r.query.contains("force=true"), "{}", r.query);
    }
    let by_path: BTreeMap<&str, &Value> = reqs.iter().map(|r| (r.path.as_str(), &r.body)).collect();
    let vs = by_path[VS];
    assert_eq!(vs["apiVersion"], "networking.istio.io/v1");
    assert_eq!(vs["kind"], "VirtualService");
    assert_eq!(
        weights(vs),
        [
            ("web-primary".to_string(), 70),
            ("web-canary".to_string(), 30)
        ]
    );
    assert_eq!(by_path[PRIMARY]["spec"]["selector"]["version"], "v1");
    assert_eq!(by_path[CANARY_SVC]["spec"]["selector"]["version"], "v2");
    assert_eq!(by_path[CANARY_SVC]["spec"]["ports"][0]["targetPort"], 8080);

    // Only the newest weights of an object are written.
    api.clear();
    router.apply(&p, &routing(&p, 40)).unwrap();
    router.apply(&p, &routing(&p, 50)).unwrap();
    wait_for(&api, 3).await;
    tokio::time::sleep(Duration::from_millis(200)).await;
    let vs: Vec<Recorded> = api
        .requests()
        .into_iter()
        .filter(|r| r.path == VS)
        .collect();
    assert_eq!(vs.len(), 1, "{vs:#?}");
    assert_eq!(weights(&vs[0].body)[1].1, 50);
}

#[tokio::test(start_paused = true)]
async fn the_served_virtualservice_version_is_used() {
    let api = mock();
    api.on(Method::PATCH, VS_BETA, 200, Value::Null);
    let (router, _leader) = start(&api, true, "v1beta1");
    let p = plan();
    router.apply(&p, &routing(&p, 10)).unwrap();
    let reqs = wait_for(&api, 3).await;
    let vs = reqs
        .iter()
        .find(|r| r.path == VS_BETA)
        .expect("v1beta1 path");
    assert_eq!(vs.body["apiVersion"], "networking.istio.io/v1beta1");
}

#[tokio::test(start_paused = true)]
async fn status_goes_to_the_subresource_and_each_step_is_an_event() {
    let api = mock();
    let (router, _leader) = start(&api, true, "v1");
    let mut status = Status::default();
    status.set_phase(Phase::Progressing, "new revision detected");
    status.canary_weight = 50;
    status.failed_checks = 1;
    status.last_applied_spec = "abc".into();
    router.status("shop", "web", &status, "halt advancement: request-success-rate 90.000 outside its threshold range (failed checks 1/2)");
    let reqs = wait_for(&api, 2).await;
    let st = reqs
        .iter()
        .find(|r| r.path == STATUS)
        .expect("status patch");
    assert_eq!(st.method, Method::PATCH);
    assert!(
        st.query.contains("fieldManager=meshwork-canary"),
        "{}",
        st.query
    );
    assert_eq!(st.body["apiVersion"], "flagger.app/v1beta1");
    assert_eq!(st.body["kind"], "Canary");
    assert_eq!(
        st.body["metadata"],
        json!({"name": "web", "namespace": "shop"})
    );
    let s = &st.body["status"];
    assert_eq!(s["phase"], "Progressing");
    assert_eq!(s["canaryWeight"], 50);
    assert_eq!(s["failedChecks"], 1);
    assert_eq!(s["iterations"], 0);
    assert_eq!(s["lastAppliedSpec"], "abc");
    assert_eq!(s["conditions"][0]["type"], "Promoted");
    assert_eq!(s["conditions"][0]["status"], "Unknown");
    assert_eq!(s["conditions"][0]["reason"], "Progressing");
    let ev = reqs.iter().find(|r| r.path == EVENTS).expect("event");
    assert_eq!(ev.method, Method::POST);
    assert_eq!(ev.body["involvedObject"]["kind"], "Canary");
    assert_eq!(ev.body["involvedObject"]["name"], "web");
    assert_eq!(ev.body["reason"], "Progressing");
    assert_eq!(ev.body["type"], "Warning");
    assert!(
        ev.body["message"]
            .as_str()
            .unwrap()
            .starts_with("halt advancement"),
        "{}",
        ev.body
    );
    assert_eq!(ev.body["source"]["component"], "meshwork-canary");
}

#[tokio::test(start_paused = true)]
async fn a_follower_writes_nothing_and_is_not_active() {
    let api = mock();
    let (router, leader) = start(&api, false, "v1");
    assert!(!router.active());
    let p = plan();
    router.apply(&p, &routing(&p, 20)).unwrap();
    router.status("shop", "web", &Status::default(), "");
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert!(api.requests().is_empty(), "{:#?}", api.requests());
    // Leading now: the controller starts again and queues afresh.
    leader.send(true).unwrap();
    assert!(router.active());
    router.apply(&p, &routing(&p, 0)).unwrap();
    let reqs = wait_for(&api, 3).await;
    let vs = reqs.iter().find(|r| r.path == VS).unwrap();
    assert_eq!(weights(&vs.body)[1].1, 0);
    assert_eq!(reqs.iter().filter(|r| r.path == STATUS).count(), 0);
}

#[tokio::test(start_paused = true)]
async fn a_failed_write_is_retried_unless_newer_weights_replaced_it() {
    let api = mock();
    api.on(
        Method::PATCH,
        VS,
        500,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
               "reason": "InternalError", "code": 500, "message": "etcd unavailable"}),
    );
    let (router, _leader) = start(&api, true, "v1");
    let p = plan();
    router.apply(&p, &routing(&p, 10)).unwrap();
    wait_for(&api, 3).await;
    let vs_writes = || api.requests().iter().filter(|r| r.path == VS).count();
    assert_eq!(vs_writes(), 1);
    api.on(Method::PATCH, VS, 200, Value::Null);
    tokio::time::sleep(RETRY + Duration::from_secs(1)).await;
    assert_eq!(vs_writes(), 2, "retried after {RETRY:?}");
    let last = api
        .requests()
        .into_iter()
        .rev()
        .find(|r| r.path == VS)
        .unwrap();
    assert_eq!(weights(&last.body)[1].1, 10);
    // Written now: nothing more.
    tokio::time::sleep(RETRY * 3).await;
    assert_eq!(vs_writes(), 2);
}

/// Judges every check with one value, set by the test.
struct Constant(std::sync::Mutex<f64>);

impl Judge for Constant {
    fn measure<'a>(&'a self, m: &'a Measurement) -> BoxFuture<'a, Result<f64, JudgeError>> {
        let v = *self.0.lock().unwrap();
        Box::pin(async move {
            if v.is_nan() {
                Err(JudgeError::NoValues {
                    metric: m.metric.clone(),
                    target: m.target.clone(),
                })
            } else {
                Ok(v)
            }
        })
    }
}

/// The controller with the Kubernetes router: the phases it goes through are written to
/// the Canary's status, and the weights to the VirtualService, step by step.
#[tokio::test(start_paused = true)]
async fn a_healthy_canary_is_promoted_through_the_api() {
    let api = mock();
    let (router, _leader) = start(&api, true, "v1");
    let board = Arc::new(crate::canary::Board::default());
    let (_tx, rx) = watch::channel(inputs(&canary_yaml("")));
    let controller = crate::canary::Controller {
        judge: Arc::new(Constant(std::sync::Mutex::new(100.0))),
        hooks: Arc::new(crate::canary::webhook::HttpHooks::default()),
        router: Arc::new(router),
        board: board.clone(),
        retry: Duration::from_secs(5),
    };
    let task = tokio::spawn(controller.run(rx));
    // Initializing → Initialized (the primary Deployment runs v1, the target v2: a new
    // revision) → Progressing 0 → 50 → Promoting → Finalising → Succeeded, 10 s apart.
    tokio::time::sleep(Duration::from_secs(75)).await;
    task.abort();
    let reqs = api.requests();
    let phases: Vec<(String, u64)> = reqs
        .iter()
        .filter(|r| r.path == STATUS)
        .map(|r| {
            (
                r.body["status"]["phase"].as_str().unwrap().to_string(),
                r.body["status"]["canaryWeight"].as_u64().unwrap(),
            )
        })
        .collect();
    let want: Vec<(String, u64)> = [
        ("Initialized", 0),
        ("Progressing", 0),
        ("Progressing", 50),
        ("Promoting", 50),
        ("Finalising", 0),
        ("Succeeded", 0),
    ]
    .iter()
    .map(|(p, w)| (p.to_string(), *w))
    .collect();
    assert_eq!(phases, want, "{reqs:#?}");
    let canary_weights: Vec<u64> = reqs
        .iter()
        .filter(|r| r.path == VS)
        .map(|r| weights(&r.body)[1].1)
        .collect();
    // The promotion re-applies 50 with the primary Service on the canary's version.
    assert_eq!(canary_weights, [0, 50, 50, 0], "{reqs:#?}");
    // After the promotion the primary Service selects the canary's version.
    let last_primary = reqs.iter().rev().find(|r| r.path == PRIMARY).unwrap();
    assert_eq!(last_primary.body["spec"]["selector"]["version"], "v2");
    let succeeded = reqs.iter().rev().find(|r| r.path == STATUS).unwrap();
    assert_eq!(succeeded.body["status"]["conditions"][0]["status"], "True");
    let events = reqs.iter().filter(|r| r.path == EVENTS).count();
    assert_eq!(events, want.len());
    assert_eq!(
        board.get("shop", "web").unwrap().status.phase,
        Phase::Succeeded
    );
}

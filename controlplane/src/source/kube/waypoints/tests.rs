//! The controller against a recorded mock API server (`kube::Client` over a
//! `tower::service_fn` answering canned JSON), driven by watch batches.

use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::*;
use crate::source::kube::test_api::{MockApi, Recorded};
use crate::source::FileEvent;

const SA: &str = "/api/v1/namespaces/production/serviceaccounts/waypoint";
const DEPLOY: &str = "/apis/apps/v1/namespaces/production/deployments/waypoint";
const SVC: &str = "/api/v1/namespaces/production/services/waypoint";
const GW_STATUS: &str =
    "/apis/gateway.networking.k8s.io/v1/namespaces/production/gateways/waypoint/status";

fn template_text(image: &str) -> String {
    format!(
        "apiVersion: v1\nkind: ServiceAccount\nmetadata: {{name: \"${{NAME}}\"}}\n---\n\
         apiVersion: apps/v1\nkind: Deployment\nmetadata: {{name: \"${{NAME}}\"}}\n\
         spec:\n  template:\n    spec:\n      serviceAccountName: \"${{NAME}}\"\n      containers:\n\
         \x20       - {{name: waypoint, image: {image}, args: [\"--gateway=${{NAMESPACE}}/${{NAME}}\"]}}\n---\n\
         apiVersion: v1\nkind: Service\nmetadata: {{name: \"${{NAME}}\"}}\n\
         spec:\n  ports: [{{name: mesh, port: 15008}}]\n"
    )
}

fn template_event(image: &str) -> FileEvent {
    FileEvent::Changed(
        "k8s://ConfigMap/istio-system/meshwork-waypoint-template".into(),
        json!({"apiVersion": "v1", "kind": "ConfigMap",
               "metadata": {"name": "meshwork-waypoint-template", "namespace": "istio-system"},
               "data": {"waypoint.yaml": template_text(image)}})
        .to_string(),
    )
}

fn gateway_event(protocol: &str, generation: i64) -> FileEvent {
    FileEvent::Changed(
        "k8s://Gateway/production/waypoint".into(),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "waypoint", "namespace": "production", "uid": "gw-uid",
                            "generation": generation,
                            "labels": {"istio.io/waypoint-for": "service"}},
               "spec": {"gatewayClassName": "istio-waypoint",
                        "listeners": [{"name": "mesh", "port": 15008, "protocol": protocol}]}})
        .to_string(),
    )
}

fn mock() -> MockApi {
    let api = MockApi::default();
    api.on(Method::PATCH, SA, 200, Value::Null);
    api.on(Method::PATCH, DEPLOY, 200, Value::Null);
    api.on(
        Method::PATCH,
        SVC,
        200,
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": "waypoint", "namespace": "production"},
               "spec": {"clusterIP": "10.96.4.2", "clusterIPs": ["10.96.4.2"]}}),
    );
    api.on(
        Method::PATCH,
        GW_STATUS,
        200,
        json!({"apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "Gateway", "metadata": {"name": "waypoint", "namespace": "production"}}),
    );
    api
}

struct Harness {
    events: mpsc::Sender<Vec<FileEvent>>,
    leader: watch::Sender<bool>,
    task: tokio::task::JoinHandle<()>,
}

fn start(api: &MockApi, leader: bool) -> Harness {
    let (events, rx) = mpsc::channel(8);
    let (leader_tx, leader_rx) = watch::channel(leader);
    let task = tokio::spawn(run_waypoints(
        WaypointApi::new(api.client()),
        Controller::new(TemplateSource::chart_default("istio-system")),
        rx,
        leader_rx,
    ));
    Harness {
        events,
        leader: leader_tx,
        task,
    }
}

/// Waits (bounded, paused clock) until `n` requests were recorded.
async fn wait_for(api: &MockApi, n: usize) -> Vec<Recorded> {
    for _ in 0..200 {
        if api.requests().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    api.requests()
}

fn status_of(r: &Recorded) -> (&Value, &Value) {
    (
        &r.body["status"]["conditions"][0],
        &r.body["status"]["conditions"][1],
    )
}

#[tokio::test(start_paused = true)]
async fn leader_applies_owned_objects_and_reports_the_service_address() {
    let api = mock();
    let h = start(&api, true);
    h.events
        .send(vec![
            template_event("ghcr.io/meshwork/waypoint:1"),
            gateway_event("HBONE", 1),
        ])
        .await
        .unwrap();
    let reqs = wait_for(&api, 4).await;
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, [SA, DEPLOY, SVC, GW_STATUS]);
    for r in &reqs[..3] {
        assert_eq!(r.method, Method::PATCH);
        assert_eq!(r.content_type, "application/apply-patch+yaml");
        assert!(
            r.query
                .contains("fieldManager=meshwork-waypoint-controller"),
            "{}",
            r.query
        );
        assert!(r.query.contains("force=true"), "{}", r.query);
        assert_eq!(r.body["metadata"]["namespace"], "production");
        assert_eq!(
            r.body["metadata"]["ownerReferences"],
            json!([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                    "name": "waypoint", "uid": "gw-uid", "controller": true}])
        );
    }
    assert_eq!(
        reqs[1].body["spec"]["template"]["spec"]["containers"][0]["args"][0],
        "--gateway=production/waypoint"
    );
    let st = &reqs[3];
    assert_eq!(st.content_type, "application/apply-patch+yaml");
    assert!(st.query.contains("force=true"), "{}", st.query);
    assert_eq!(st.body["kind"], "Gateway");
    let (accepted, programmed) = status_of(st);
    assert_eq!(
        (accepted["type"].as_str(), accepted["status"].as_str()),
        (Some("Accepted"), Some("True"))
    );
    assert_eq!(
        (programmed["type"].as_str(), programmed["status"].as_str()),
        (Some("Programmed"), Some("True"))
    );
    assert_eq!(programmed["observedGeneration"], 1);
    assert_eq!(
        st.body["status"]["addresses"],
        json!([{"type": "IPAddress", "value": "10.96.4.2"}])
    );

    // Nothing changed: nothing is written again, until the periodic resync re-applies
    // (restoring objects someone deleted).
    h.events
        .send(vec![gateway_event("HBONE", 1)])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(api.requests().len(), 4);
    tokio::time::sleep(RESYNC).await;
    let reqs = wait_for(&api, 8).await;
    assert_eq!(reqs.len(), 8);
    assert_eq!(reqs[5].path, DEPLOY);
    drop(h.events);
    h.task.await.unwrap();
}

#[tokio::test(start_paused = true)]
async fn template_change_reapplies_every_waypoint() {
    let api = mock();
    let h = start(&api, true);
    h.events
        .send(vec![
            template_event("waypoint:1"),
            gateway_event("HBONE", 1),
        ])
        .await
        .unwrap();
    wait_for(&api, 4).await;
    api.clear();
    h.events
        .send(vec![template_event("waypoint:2")])
        .await
        .unwrap();
    let reqs = wait_for(&api, 4).await;
    assert_eq!(reqs.len(), 4);
    assert_eq!(reqs[1].path, DEPLOY);
    assert_eq!(
        reqs[1].body["spec"]["template"]["spec"]["containers"][0]["image"],
        "waypoint:2"
    );
    // A Gateway change (new generation) re-applies too, and reports its generation.
    api.clear();
    h.events
        .send(vec![gateway_event("HBONE", 2)])
        .await
        .unwrap();
    let reqs = wait_for(&api, 4).await;
    assert_eq!(status_of(&reqs[3]).1["observedGeneration"], 2);
}

#[tokio::test(start_paused = true)]
async fn non_leader_does_nothing_until_it_leads() {
    let api = mock();
    let h = start(&api, false);
    h.events
        .send(vec![
            template_event("waypoint:1"),
            gateway_event("HBONE", 1),
        ])
        .await
        .unwrap();
    tokio::time::sleep(Duration::from_secs(60)).await;
    assert!(api.requests().is_empty(), "{:?}", api.requests());
    h.leader.send(true).unwrap();
    let reqs = wait_for(&api, 4).await;
    assert_eq!(reqs.len(), 4);
}

#[tokio::test(start_paused = true)]
async fn invalid_listener_gets_accepted_false_and_nothing_is_applied() {
    let api = mock();
    let h = start(&api, true);
    h.events
        .send(vec![template_event("waypoint:1"), gateway_event("HTTP", 1)])
        .await
        .unwrap();
    let reqs = wait_for(&api, 1).await;
    tokio::time::sleep(Duration::from_secs(30)).await;
    assert_eq!(api.requests().len(), 1, "only the status");
    assert_eq!(reqs[0].path, GW_STATUS);
    let (accepted, programmed) = status_of(&reqs[0]);
    assert_eq!(accepted["status"], "False");
    assert_eq!(accepted["reason"], "ListenersNotValid");
    assert!(
        accepted["message"]
            .as_str()
            .unwrap()
            .contains("spec.listeners[0].protocol"),
        "{accepted}"
    );
    assert_eq!(programmed["status"], "False");
}

#[tokio::test(start_paused = true)]
async fn missing_template_is_reported_and_its_arrival_applies() {
    let api = mock();
    let h = start(&api, true);
    h.events
        .send(vec![gateway_event("HBONE", 1)])
        .await
        .unwrap();
    let reqs = wait_for(&api, 1).await;
    let (accepted, programmed) = status_of(&reqs[0]);
    assert_eq!(accepted["status"], "True");
    assert_eq!(programmed["status"], "False");
    assert_eq!(programmed["reason"], "Pending");
    assert!(
        programmed["message"]
            .as_str()
            .unwrap()
            .contains("istio-system/meshwork-waypoint-template"),
        "{programmed}"
    );
    h.events
        .send(vec![template_event("waypoint:1")])
        .await
        .unwrap();
    let reqs = wait_for(&api, 5).await;
    assert_eq!(reqs[1].path, SA);
    assert_eq!(status_of(&reqs[4]).1["status"], "True");
}

#[tokio::test(start_paused = true)]
async fn apply_failure_is_surfaced_in_status_and_retried() {
    let api = mock();
    api.on(
        Method::PATCH,
        DEPLOY,
        403,
        json!({"kind": "Status", "apiVersion": "v1", "status": "Failure", "reason": "Forbidden",
               "code": 403, "message": "deployments.apps is forbidden"}),
    );
    let h = start(&api, true);
    h.events
        .send(vec![
            template_event("waypoint:1"),
            gateway_event("HBONE", 1),
        ])
        .await
        .unwrap();
    let reqs = wait_for(&api, 3).await;
    assert_eq!(reqs[1].path, DEPLOY);
    assert_eq!(
        reqs[2].path, GW_STATUS,
        "no Service after the failed Deployment"
    );
    let (accepted, programmed) = status_of(&reqs[2]);
    assert_eq!(accepted["status"], "True");
    assert_eq!(programmed["status"], "False");
    assert_eq!(programmed["reason"], "NoResources");
    let msg = programmed["message"].as_str().unwrap();
    assert!(
        msg.contains("Deployment production/waypoint") && msg.contains("forbidden"),
        "{msg}"
    );

    // Fixed (RBAC granted): the next retry applies everything.
    api.on(Method::PATCH, DEPLOY, 200, Value::Null);
    api.clear();
    tokio::time::sleep(RETRY + Duration::from_secs(1)).await;
    let reqs = wait_for(&api, 4).await;
    let paths: Vec<&str> = reqs.iter().map(|r| r.path.as_str()).collect();
    assert_eq!(paths, [SA, DEPLOY, SVC, GW_STATUS]);
    assert_eq!(status_of(&reqs[3]).1["status"], "True");
}

#[tokio::test(start_paused = true)]
async fn deleted_gateway_is_forgotten_and_tee_forwards_only_gateways_and_configmaps() {
    let (tx, rx) = mpsc::channel(4);
    let (mut main, mut wp) = tee(rx);
    tx.send(vec![
        gateway_event("HBONE", 1),
        FileEvent::Changed("k8s://Pod/production/p".into(), "{}".into()),
        template_event("w"),
    ])
    .await
    .unwrap();
    assert_eq!(main.recv().await.unwrap().len(), 3);
    assert_eq!(wp.recv().await.unwrap().len(), 2);

    let mut c = Controller::new(TemplateSource::chart_default("istio-system"));
    c.observe(&[gateway_event("HBONE", 1)]);
    assert_eq!(c.pending().len(), 1);
    c.observe(&[FileEvent::Removed(
        "k8s://Gateway/production/waypoint".into(),
    )]);
    assert!(c.pending().is_empty());
}

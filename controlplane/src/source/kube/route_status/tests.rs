//! Route parent statuses: computed from routes, Gateways and Services, and written to a
//! recorded mock API server.

use crate::source::kube::status::Tracker;
use std::path::PathBuf;
use std::time::Duration;

use http::Method;
use serde_json::{json, Value};
use tokio::sync::{mpsc, watch};

use super::parents::observe_route;
use super::*;
use crate::source::kube::resources::watched;
use crate::source::kube::test_api::MockApi;
use crate::source::FileEvent;

const ROUTE: &str = "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/reviews";
const ROUTE_STATUS: &str =
    "/apis/gateway.networking.k8s.io/v1/namespaces/shop/httproutes/reviews/status";

fn route_path() -> PathBuf {
    "k8s://HTTPRoute/shop/reviews".into()
}

fn route_json(parent_refs: Value, backends: Value) -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": "reviews", "namespace": "shop", "generation": 3},
           "spec": {"parentRefs": parent_refs,
                    "rules": [{"backendRefs": backends}]}})
}

fn route_event(parent_refs: Value, backends: Value) -> FileEvent {
    FileEvent::Changed(route_path(), route_json(parent_refs, backends).to_string())
}

fn waypoint_ref() -> Value {
    json!({"group": "gateway.networking.k8s.io", "kind": "Gateway", "name": "waypoint"})
}

fn gateway_event(name: &str, class: &str) -> FileEvent {
    FileEvent::Changed(
        format!("k8s://Gateway/shop/{name}").into(),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": name, "namespace": "shop"},
               "spec": {"gatewayClassName": class,
                        "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}})
        .to_string(),
    )
}

fn service_event(name: &str) -> FileEvent {
    FileEvent::Changed(
        format!("k8s://Service/shop/{name}").into(),
        json!({"apiVersion": "v1", "kind": "Service",
               "metadata": {"name": name, "namespace": "shop"},
               "spec": {"ports": [{"port": 9080}]}})
        .to_string(),
    )
}

fn status_of(events: &[FileEvent]) -> RouteStatus {
    let mut t = RouteTracker::default();
    t.observe(events);
    let mut pending = t.pending();
    assert_eq!(pending.len(), 1, "{pending:?}");
    pending.remove(0).2
}

fn backend(name: &str) -> Value {
    json!([{"name": name, "port": 9080}])
}

#[test]
fn a_route_on_an_existing_waypoint_is_accepted_with_its_refs_resolved() {
    let s = status_of(&[
        gateway_event("waypoint", "istio-waypoint"),
        service_event("reviews"),
        route_event(
            json!([waypoint_ref(), {"group": "", "kind": "Service", "name": "reviews"}]),
            backend("reviews"),
        ),
    ]);
    assert_eq!(s.observed_generation, Some(3));
    assert_eq!(s.parents.len(), 1, "Service parents get no entry");
    let p = &s.parents[0];
    assert_eq!(p.parent_ref, waypoint_ref());
    assert!(p.accepted.status);
    assert_eq!(p.accepted.reason, "Accepted");
    assert!(p.resolved_refs.status);
    assert_eq!(p.resolved_refs.reason, "ResolvedRefs");
}

#[test]
fn a_missing_or_foreign_gateway_is_no_matching_parent() {
    let s = status_of(&[
        gateway_event("ingress", "istio"),
        service_event("reviews"),
        route_event(
            json!([{"name": "ingress"}, {"name": "nowhere"}]),
            backend("reviews"),
        ),
    ]);
    let (a, b) = (&s.parents[0].accepted, &s.parents[1].accepted);
    assert!(!a.status && a.reason == "NoMatchingParent", "{a:?}");
    assert!(
        a.message.contains("shop/ingress") && a.message.contains("\"istio\""),
        "{}",
        a.message
    );
    assert!(!b.status && b.reason == "NoMatchingParent", "{b:?}");
    assert_eq!(b.message, "Gateway shop/nowhere not found");
}

#[test]
fn unresolved_backends_are_named() {
    let s = status_of(&[
        gateway_event("waypoint", "istio-waypoint"),
        service_event("reviews"),
        route_event(
            json!([waypoint_ref()]),
            json!([{"name": "reviews", "port": 9080}, {"name": "ratings", "port": 9080},
                   {"name": "other", "namespace": "billing", "port": 80}]),
        ),
    ]);
    let r = &s.parents[0].resolved_refs;
    assert!(!r.status && r.reason == "BackendNotFound", "{r:?}");
    assert_eq!(
        r.message,
        "backend Service(s) not found: billing/other, shop/ratings"
    );
    assert!(s.parents[0].accepted.status);

    let s = status_of(&[
        gateway_event("waypoint", "istio-waypoint"),
        route_event(
            json!([waypoint_ref()]),
            json!([{"group": "networking.istio.io", "kind": "ServiceEntry", "name": "ext"}]),
        ),
    ]);
    let r = &s.parents[0].resolved_refs;
    assert!(!r.status && r.reason == "InvalidKind", "{r:?}");
    assert!(
        r.message
            .contains("ServiceEntry.networking.istio.io shop/ext"),
        "{}",
        r.message
    );
}

#[test]
fn an_invalid_route_is_not_accepted_and_names_the_field() {
    let text = json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
        "metadata": {"name": "reviews", "namespace": "shop"},
        "spec": {"parentRefs": [{"name": "waypoint"}],
                 "rules": [{"matches": [{"path": {"type": "Sometimes", "value": "/"}}],
                            "backendRefs": [{"name": "reviews", "port": 9080}]}]}})
    .to_string();
    let r = observe_route(&route_path(), &text).unwrap();
    assert!(
        r.invalid.is_some(),
        "the api crate rejects the path match type"
    );
    let s = status_of(&[
        gateway_event("waypoint", "istio-waypoint"),
        service_event("reviews"),
        FileEvent::Changed(route_path(), text),
    ]);
    let a = &s.parents[0].accepted;
    assert!(!a.status && a.reason == "UnsupportedValue", "{a:?}");
    assert!(a.message.contains("Sometimes"), "{}", a.message);
}

#[test]
fn a_route_with_only_service_parents_is_left_alone_until_it_had_ours() {
    let mut t = RouteTracker::default();
    let service_parent = json!([{"group": "", "kind": "Service", "name": "reviews"}]);
    t.observe(&[route_event(service_parent.clone(), backend("reviews"))]);
    assert!(t.pending().is_empty());
    t.observe(&[
        gateway_event("waypoint", "istio-waypoint"),
        route_event(json!([waypoint_ref()]), backend("reviews")),
    ]);
    let (path, _, s) = t.pending().remove(0);
    t.mark_written(path, s);
    assert!(t.pending().is_empty());
    // Moved off the waypoint: our entry must go.
    t.observe(&[route_event(service_parent, backend("reviews"))]);
    let pending = t.pending();
    assert_eq!(pending.len(), 1);
    assert!(pending[0].2.parents.is_empty());
}

fn writer(api: &MockApi) -> RouteStatusWriter {
    RouteStatusWriter::new(
        api.client(),
        [
            watched("HTTPRoute").unwrap().preferred(),
            watched("GRPCRoute").unwrap().preferred(),
        ],
    )
}

#[tokio::test]
async fn the_write_keeps_other_controllers_entries_and_unchanged_transition_times() {
    let api = MockApi::default();
    let foreign = json!({"parentRef": {"name": "edge"}, "controllerName": "example.com/edge",
                         "conditions": [{"type": "Accepted", "status": "True",
                                         "reason": "Accepted", "message": "ok",
                                         "lastTransitionTime": "2020-01-01T00:00:00Z"}]});
    let ours_before = json!({"parentRef": waypoint_ref(), "controllerName": MESH_CONTROLLER,
        "conditions": [
            {"type": "Accepted", "status": "False", "reason": "NoMatchingParent",
             "message": "Gateway shop/waypoint not found",
             "lastTransitionTime": "2026-01-01T00:00:00Z"},
            {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs",
             "message": "All references resolved",
             "lastTransitionTime": "2026-01-01T00:00:00Z"}]});
    let mut current = route_json(
        json!([waypoint_ref(), {"name": "edge"}]),
        backend("reviews"),
    );
    current["status"] = json!({"parents": [foreign.clone(), ours_before]});
    current["metadata"]["resourceVersion"] = json!("41");
    api.on(Method::GET, ROUTE, 200, current);
    api.on(
        Method::PATCH,
        ROUTE_STATUS,
        200,
        json!({"apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute", "metadata": {"name": "reviews", "namespace": "shop"}}),
    );

    let status = status_of(&[
        gateway_event("waypoint", "istio-waypoint"),
        service_event("reviews"),
        route_event(json!([waypoint_ref()]), backend("reviews")),
    ]);
    let obj = super::super::status::ObjectRef {
        kind: "HTTPRoute".into(),
        namespace: "shop".into(),
        name: "reviews".into(),
    };
    let now = "2026-05-06T07:08:09Z".parse().unwrap();
    writer(&api).write(&obj, &status, now).await.unwrap();

    let reqs = api.requests();
    assert_eq!(reqs.len(), 2, "{reqs:?}");
    assert_eq!(
        (reqs[0].method.clone(), reqs[0].path.as_str()),
        (Method::GET, ROUTE)
    );
    assert_eq!(reqs[1].method, Method::PATCH);
    assert_eq!(reqs[1].path, ROUTE_STATUS);
    assert_eq!(reqs[1].content_type, "application/merge-patch+json");
    assert_eq!(
        reqs[1].body,
        json!({"metadata": {"resourceVersion": "41"}, "status": {"parents": [foreign, {
            "parentRef": waypoint_ref(),
            "controllerName": "istio.io/mesh-controller",
            "conditions": [
                {"type": "Accepted", "status": "True", "reason": "Accepted",
                 "message": "Route was valid", "observedGeneration": 3,
                 "lastTransitionTime": "2026-05-06T07:08:09Z"},
                {"type": "ResolvedRefs", "status": "True", "reason": "ResolvedRefs",
                 "message": "All references resolved", "observedGeneration": 3,
                 "lastTransitionTime": "2026-01-01T00:00:00Z"}]}]}})
    );
}

#[tokio::test]
async fn a_deleted_route_is_skipped() {
    let api = MockApi::default();
    let status = status_of(&[
        gateway_event("waypoint", "istio-waypoint"),
        route_event(json!([waypoint_ref()]), backend("reviews")),
    ]);
    let obj = super::super::status::ObjectRef {
        kind: "HTTPRoute".into(),
        namespace: "shop".into(),
        name: "reviews".into(),
    };
    writer(&api)
        .write(&obj, &status, "2026-05-06T07:08:09Z".parse().unwrap())
        .await
        .unwrap();
    let reqs = api.requests();
    assert_eq!(reqs.len(), 1, "only the GET: {reqs:?}");
}

async fn wait_requests(api: &MockApi, n: usize) {
    for _ in 0..200 {
        if api.requests().len() >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    panic!("expected {n} requests, got {:?}", api.requests());
}

#[tokio::test(start_paused = true)]
async fn only_the_leader_writes_and_a_new_gateway_rewrites_its_routes() {
    let api = MockApi::default();
    api.on(
        Method::GET,
        ROUTE,
        200,
        route_json(json!([waypoint_ref()]), backend("reviews")),
    );
    api.on(
        Method::PATCH,
        ROUTE_STATUS,
        200,
        json!({"apiVersion": "gateway.networking.k8s.io/v1",
        "kind": "HTTPRoute", "metadata": {"name": "reviews", "namespace": "shop"}}),
    );
    let (tx, rx) = mpsc::channel(4);
    let (leader_tx, leader_rx) = watch::channel(false);
    let task = tokio::spawn(run_route_status(writer(&api), rx, leader_rx));

    tx.send(vec![
        service_event("reviews"),
        route_event(json!([waypoint_ref()]), backend("reviews")),
    ])
    .await
    .unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(api.requests().is_empty(), "not the leader");

    leader_tx.send(true).unwrap();
    wait_requests(&api, 2).await;
    let body = &api.requests()[1].body;
    assert_eq!(
        body["status"]["parents"][0]["conditions"][0]["reason"],
        "NoMatchingParent"
    );

    api.clear();
    tx.send(vec![gateway_event("waypoint", "istio-waypoint")])
        .await
        .unwrap();
    wait_requests(&api, 2).await;
    let body = &api.requests()[1].body;
    assert_eq!(
        body["status"]["parents"][0]["conditions"][0]["status"],
        "True"
    );

    // Nothing changed: nothing written.
    api.clear();
    tx.send(vec![service_event("unrelated")]).await.unwrap();
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(api.requests().is_empty(), "{:?}", api.requests());

    drop(tx);
    task.await.unwrap();
}

#[tokio::test]
async fn the_tee_passes_everything_on_and_copies_routes_gateways_and_services() {
    let (tx, rx) = mpsc::channel(4);
    let (mut main, mut status) = tee(rx);
    let pod = FileEvent::Changed("k8s://Pod/shop/p".into(), "{}".into());
    tx.send(vec![
        pod.clone(),
        service_event("reviews"),
        gateway_event("waypoint", "istio-waypoint"),
    ])
    .await
    .unwrap();
    assert_eq!(main.recv().await.unwrap().len(), 3);
    assert_eq!(status.recv().await.unwrap().len(), 2);
}

#[test]
fn a_waypoint_of_another_namespace_does_not_accept_the_route() {
    let other = FileEvent::Changed(
        "k8s://Gateway/billing/waypoint".into(),
        json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
               "metadata": {"name": "waypoint", "namespace": "billing"},
               "spec": {"gatewayClassName": "istio-waypoint",
                        "listeners": [{"name": "mesh", "port": 15008, "protocol": "HBONE"}]}})
        .to_string(),
    );
    let s = status_of(&[
        other,
        service_event("reviews"),
        route_event(
            json!([{"name": "waypoint", "namespace": "billing"}]),
            backend("reviews"),
        ),
    ]);
    let p = &s.parents[0];
    assert!(!p.accepted.status);
    assert_eq!(p.accepted.reason, "NotAllowedByListeners");
}

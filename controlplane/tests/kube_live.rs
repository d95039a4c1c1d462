//! The Kubernetes source against a fake API server over HTTP on loopback
//! ([`fake_api`]): live CRD discovery, a forbidden kind, and status writes racing
//! another controller.

mod fake_api;

use std::path::PathBuf;
use std::time::Duration;

use fake_api::FakeApi;
use kube::api::{Api, Patch, PatchParams};
use kube::core::DynamicObject;
use meshwork_controlplane::source::dir::FileEvent;
use meshwork_controlplane::source::kube::resources::watched;
use meshwork_controlplane::source::kube::route_status::{
    route_status, Cluster, ParentStatus, RouteStatus, RouteStatusWriter,
};
use meshwork_controlplane::source::kube::status::{Condition, ObjectRef, StatusWriter};
use meshwork_controlplane::source::kube::{watch, KubeSourceOptions};
use serde_json::{json, Value};
use tokio::sync::mpsc;

const ISTIO_SECURITY: &str = "security.istio.io";

fn namespace(name: &str) -> Value {
    json!({"apiVersion": "v1", "kind": "Namespace",
           "metadata": {"name": name, "labels": {"istio.io/dataplane-mode": "ambient"}}})
}

fn peer_auth(name: &str) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
           "metadata": {"name": name, "namespace": "production", "generation": 1},
           "spec": {"mtls": {"mode": "STRICT"}}})
}

fn auth_policy(name: &str) -> Value {
    json!({"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy",
           "metadata": {"name": name, "namespace": "production", "generation": 1},
           "spec": {"action": "DENY", "rules": [{}]}})
}

async fn next(rx: &mut mpsc::Receiver<Vec<FileEvent>>) -> Vec<FileEvent> {
    tokio::time::timeout(Duration::from_secs(10), rx.recv())
        .await
        .expect("batch delivered")
        .expect("source running")
}

fn paths(batch: &[FileEvent]) -> Vec<String> {
    let mut out: Vec<String> = batch
        .iter()
        .map(|e| match e {
            FileEvent::Changed(p, _) => format!("changed {}", p.display()),
            FileEvent::Removed(p) => format!("removed {}", p.display()),
        })
        .collect();
    out.sort();
    out
}

/// Waits for a batch with `want` among its events.
async fn until(rx: &mut mpsc::Receiver<Vec<FileEvent>>, want: &str) -> Vec<String> {
    loop {
        let b = paths(&next(rx).await);
        if b.iter().any(|p| p == want) {
            return b;
        }
    }
}

#[tokio::test]
async fn a_crd_installed_after_start_is_watched_without_restart_and_stops_when_removed() {
    let api = FakeApi::start().await;
    api.put("", "namespaces", namespace("production"));
    api.install_crd(
        ISTIO_SECURITY,
        "PeerAuthentication",
        "peerauthentications",
        &["v1"],
    );
    api.put(ISTIO_SECURITY, "peerauthentications", peer_auth("strict"));

    let (mut rx, handle) = watch(api.client(), &KubeSourceOptions::default());
    let initial = paths(&next(&mut rx).await);
    assert_eq!(
        initial,
        [
            "changed k8s://Namespace/production",
            "changed k8s://PeerAuthentication/production/strict"
        ]
    );
    assert!(
        handle.health.reports().is_empty(),
        "{:?}",
        handle.health.reports()
    );

    // AuthorizationPolicy's CRD arrives later, with an object.
    api.install_crd(
        ISTIO_SECURITY,
        "AuthorizationPolicy",
        "authorizationpolicies",
        &["v1beta1", "v1"],
    );
    api.put(ISTIO_SECURITY, "authorizationpolicies", auth_policy("deny"));
    until(&mut rx, "changed k8s://AuthorizationPolicy/production/deny").await;
    let served = handle
        .served
        .read()
        .unwrap()
        .get("AuthorizationPolicy")
        .cloned();
    assert_eq!(served.unwrap().api_version, "security.istio.io/v1");

    // Uninstalled: its objects leave the config.
    api.uninstall_crd(ISTIO_SECURITY, "authorizationpolicies");
    until(&mut rx, "removed k8s://AuthorizationPolicy/production/deny").await;
    assert!(handle
        .served
        .read()
        .unwrap()
        .get("AuthorizationPolicy")
        .is_none());
}

#[tokio::test]
async fn a_forbidden_kind_is_reported_and_the_rest_is_published() {
    let api = FakeApi::start().await;
    api.put("", "namespaces", namespace("production"));
    api.install_crd(
        ISTIO_SECURITY,
        "PeerAuthentication",
        "peerauthentications",
        &["v1"],
    );
    api.put(ISTIO_SECURITY, "peerauthentications", peer_auth("strict"));
    api.forbid("", "pods");

    let (mut rx, handle) = watch(api.client(), &KubeSourceOptions::default());
    let initial = paths(&next(&mut rx).await);
    assert!(
        initial.contains(&"changed k8s://PeerAuthentication/production/strict".to_string()),
        "{initial:?}"
    );
    let reports = handle.health.reports();
    assert_eq!(reports.len(), 1, "{reports:?}");
    assert!(reports[0].contains("Pod"), "{}", reports[0]);
    assert!(reports[0].contains("HTTP 403 Forbidden"), "{}", reports[0]);
}

#[tokio::test]
async fn without_access_to_crds_api_discovery_finds_the_kinds() {
    let api = FakeApi::start().await;
    api.put("", "namespaces", namespace("production"));
    api.install_crd(
        ISTIO_SECURITY,
        "PeerAuthentication",
        "peerauthentications",
        &["v1beta1"],
    );
    api.put(ISTIO_SECURITY, "peerauthentications", peer_auth("strict"));
    api.forbid("apiextensions.k8s.io", "customresourcedefinitions");

    let (mut rx, handle) = watch(api.client(), &KubeSourceOptions::default());
    let initial = paths(&next(&mut rx).await);
    assert!(
        initial.contains(&"changed k8s://PeerAuthentication/production/strict".to_string()),
        "the first batch waits for discovery: {initial:?}"
    );
    let served = handle
        .served
        .read()
        .unwrap()
        .get("PeerAuthentication")
        .cloned();
    assert_eq!(served.unwrap().api_version, "security.istio.io/v1beta1");
    let reports = handle.health.reports();
    assert!(
        reports
            .iter()
            .any(|r| r.contains("CustomResourceDefinition") && r.contains("403")),
        "{reports:?}"
    );
}

/// A kind listed, then refused (RBAC revoked, the watch restarting): its objects stay as
/// last listed, reported, and no fail-closed.
#[tokio::test]
async fn a_kind_refused_after_it_was_listed_keeps_its_objects() {
    let api = FakeApi::start().await;
    api.put("", "namespaces", namespace("production"));
    api.install_crd(
        ISTIO_SECURITY,
        "AuthorizationPolicy",
        "authorizationpolicies",
        &["v1"],
    );
    api.put(ISTIO_SECURITY, "authorizationpolicies", auth_policy("deny"));
    let (mut rx, handle) = watch(api.client(), &KubeSourceOptions::default());
    let initial = paths(&next(&mut rx).await);
    assert!(initial.contains(&"changed k8s://AuthorizationPolicy/production/deny".to_string()));

    api.forbid(ISTIO_SECURITY, "authorizationpolicies");
    api.end_watches();
    let deadline = tokio::time::Instant::now() + Duration::from_secs(20);
    while handle.health.errors().is_empty() {
        assert!(tokio::time::Instant::now() < deadline, "no report");
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    let errors = handle.health.errors();
    assert!(errors[0].contains("stay as last listed"), "{errors:?}");
    assert_eq!(handle.health.unreadable("AuthorizationPolicy"), None);
    // Nothing was removed.
    while let Ok(batch) = rx.try_recv() {
        assert!(
            !paths(&batch).iter().any(|p| p.starts_with("removed")),
            "{batch:?}"
        );
    }
}

/// The whole control plane on the fake API: the forbidden kind shows in `/debug/errors`
/// and the rest of the config is in the model.
#[tokio::test]
async fn a_forbidden_kind_shows_in_the_admin_errors_of_a_running_control_plane() {
    use meshwork_controlplane::run::{self, KubeOptions, Options, Source};
    let api = FakeApi::start().await;
    api.put("", "namespaces", namespace("production"));
    api.install_crd(
        ISTIO_SECURITY,
        "AuthorizationPolicy",
        "authorizationpolicies",
        &["v1"],
    );
    api.put(ISTIO_SECURITY, "authorizationpolicies", auth_policy("deny"));
    api.forbid("", "pods");
    let dir = tempfile::tempdir().unwrap();
    let kubeconfig = dir.path().join("kubeconfig");
    std::fs::write(
        &kubeconfig,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\nusers:\n- name: fake\n  user: {{}}\n",
            api.addr
        ),
    )
    .unwrap();
    // The only test of this binary touching the environment.
    unsafe { std::env::set_var("KUBECONFIG", &kubeconfig) };
    let running = run::start(Options {
        source: Source::Kubernetes(KubeOptions {
            token_audience: "istio-ca".into(),
            node_agent_service_accounts: vec![("istio-system".into(), "ztunnel".into())],
            ca_from_secrets: true,
            root_cert_configmaps: Vec::new(),
            observer_service_accounts: Vec::new(),
            leader_election: false,
            lease_namespace: "istio-system".into(),
            lease_name: "meshwork".into(),
            lease_duration: Duration::from_secs(15),
            identity: "test".into(),
            waypoint_template: None,
        }),
        mesh_config: None,
        trust_domain: None,
        root_namespace: None,
        default_namespace: "default".into(),
        grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
        grpc_tls_addr: None,
        serving: run::Serving::local("istio-system", "meshwork-controlplane"),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        probe_addr: None,
        ca_dir: dir.path().join("ca"),
        cert_ttl: Duration::from_secs(3600),
        ca_reload_interval: Duration::from_secs(3600),
        state_dir: None,
    })
    .await
    .unwrap();
    let errors = admin_get(running.admin_addr, "/debug/errors").await;
    let list = errors["errors"].as_array().unwrap();
    assert!(
        list.iter()
            .any(|e| e.as_str().unwrap().contains("Pod") && e.as_str().unwrap().contains("403")),
        "{errors}"
    );
    let model = admin_get(running.admin_addr, "/debug/model")
        .await
        .to_string();
    assert!(model.contains("authz/production/deny"), "{model}");
    running.shutdown();
}

/// A policy kind that cannot be read may hide policies: the mesh fails closed (a DENY-all
/// in the root namespace) while the rest publishes, and opens again once it can be read.
#[tokio::test]
async fn an_unreadable_authorization_policy_kind_fails_closed_mesh_wide() {
    let api = FakeApi::start().await;
    api.put("", "namespaces", namespace("production"));
    api.install_crd(
        ISTIO_SECURITY,
        "AuthorizationPolicy",
        "authorizationpolicies",
        &["v1"],
    );
    api.forbid(ISTIO_SECURITY, "authorizationpolicies");
    let hub = meshwork_controlplane::distribute::ModelHub::new();
    let mut engine = meshwork_controlplane::engine::Engine::new(hub.clone(), "default");
    engine.set_mesh_config(None);
    let (mut rx, handle) = watch(api.client(), &KubeSourceOptions::default());
    engine.with_source_health(handle.health.clone());
    engine.apply_events(next(&mut rx).await);
    let deny = "authz/istio-system/meshwork~fail-closed";
    assert!(
        hub.read().resources.contains_key(deny),
        "{:?}",
        hub.read().resources.keys()
    );
    let errors = engine.diagnostics().read().unwrap().errors.clone();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("istio-system") && e.contains("HTTP 403")),
        "{errors:?}"
    );

    // RBAC fixed: the watcher's retry lists the kind, the deny goes away.
    api.allow(ISTIO_SECURITY, "authorizationpolicies");
    let deadline = tokio::time::Instant::now() + Duration::from_secs(30);
    while hub.read().resources.contains_key(deny) {
        assert!(tokio::time::Instant::now() < deadline, "still denied");
        engine.apply_events(next(&mut rx).await);
    }
}

async fn admin_get(addr: std::net::SocketAddr, path: &str) -> Value {
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    let mut s = tokio::net::TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.0\r\nHost: x\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8(buf).unwrap();
    let body = text.split_once("\r\n\r\n").unwrap().1;
    serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
}

fn pa_ref() -> ObjectRef {
    ObjectRef {
        kind: "PeerAuthentication".into(),
        namespace: "production".into(),
        name: "strict".into(),
    }
}

fn accepted(ok: bool) -> Condition {
    Condition {
        accepted: ok,
        reason: if ok { "Accepted" } else { "Invalid" }.into(),
        message: "m".into(),
        observed_generation: Some(1),
    }
}

fn condition_types(obj: &Value) -> Vec<(String, String)> {
    let mut v: Vec<(String, String)> = obj["status"]["conditions"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|c| {
            (
                c["type"].as_str().unwrap().to_string(),
                c["status"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn our_status_apply_keeps_the_conditions_another_controller_applies() {
    let api = FakeApi::start().await;
    api.install_crd(
        ISTIO_SECURITY,
        "PeerAuthentication",
        "peerauthentications",
        &["v1"],
    );
    api.put(ISTIO_SECURITY, "peerauthentications", peer_auth("strict"));
    let ar = watched("PeerAuthentication").unwrap().preferred();
    let ours = StatusWriter::new(api.client(), [ar.clone()]);
    let other: Api<DynamicObject> = Api::namespaced_with(api.client(), "production", &ar);
    let other_apply = |status: &str| {
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"name": "strict", "namespace": "production"},
               "status": {"conditions": [{"type": "Reconciled", "status": status}]}})
    };
    let now = "2026-05-06T07:08:09Z".parse().unwrap();

    // Both write concurrently, several rounds.
    for round in 0..5 {
        let ok = round % 2 == 0;
        let body = other_apply(if ok { "True" } else { "False" });
        let (obj_ref, cond) = (pa_ref(), accepted(ok));
        let (params, patch) = (PatchParams::apply("other-controller"), Patch::Apply(&body));
        let (a, b) = tokio::join!(
            ours.write(&obj_ref, &cond, now),
            other.patch_status("strict", &params, &patch),
        );
        a.unwrap();
        b.unwrap();
        let obj = api
            .get(
                ISTIO_SECURITY,
                "peerauthentications",
                "production",
                "strict",
            )
            .unwrap();
        let want = if ok { "True" } else { "False" };
        assert_eq!(
            condition_types(&obj),
            [
                ("Accepted".to_string(), want.to_string()),
                ("Reconciled".into(), want.into())
            ],
            "round {round}: {obj}"
        );
    }
    let requests = api.requests();
    assert!(
        requests
            .iter()
            .any(|r| r.contains("fieldManager=meshwork-controlplane")
                && r.contains("force=true")
                && r.ends_with("application/apply-patch+yaml")),
        "{requests:?}"
    );
}

/// The fake API's apply semantics the test above relies on: a manager's conditions it no
/// longer sends are removed, the others' stay; taking another manager's condition needs
/// `force`.
#[tokio::test]
async fn the_fake_api_applies_like_a_server() {
    let api = FakeApi::start().await;
    api.install_crd(
        ISTIO_SECURITY,
        "PeerAuthentication",
        "peerauthentications",
        &["v1"],
    );
    api.put(ISTIO_SECURITY, "peerauthentications", peer_auth("strict"));
    let ar = watched("PeerAuthentication").unwrap().preferred();
    let ours = StatusWriter::new(api.client(), [ar.clone()]);
    let other: Api<DynamicObject> = Api::namespaced_with(api.client(), "production", &ar);
    let apply = |types: &[&str]| {
        let conds: Vec<Value> = types
            .iter()
            .map(|t| json!({"type": t, "status": "True"}))
            .collect();
        json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
               "metadata": {"name": "strict", "namespace": "production"},
               "status": {"conditions": conds}})
    };
    let params = PatchParams::apply("other-controller");
    ours.write(
        &pa_ref(),
        &accepted(true),
        "2026-05-06T07:08:09Z".parse().unwrap(),
    )
    .await
    .unwrap();
    other
        .patch_status(
            "strict",
            &params,
            &Patch::Apply(&apply(&["Reconciled", "Ready"])),
        )
        .await
        .unwrap();
    other
        .patch_status("strict", &params, &Patch::Apply(&apply(&["Reconciled"])))
        .await
        .unwrap();
    let obj = api
        .get(
            ISTIO_SECURITY,
            "peerauthentications",
            "production",
            "strict",
        )
        .unwrap();
    let types: Vec<String> = condition_types(&obj).into_iter().map(|(t, _)| t).collect();
    assert_eq!(types, ["Accepted", "Reconciled"], "{obj}");
    // Another value for our Accepted, unforced: a conflict.
    let err = other
        .patch_status("strict", &params, &Patch::Apply(&apply(&["Accepted"])))
        .await
        .unwrap_err();
    assert!(
        matches!(&err, kube::Error::Api(s) if s.code == 409),
        "{err}"
    );
}

const GW: &str = "gateway.networking.k8s.io";

fn route() -> Value {
    json!({"apiVersion": "gateway.networking.k8s.io/v1", "kind": "HTTPRoute",
           "metadata": {"name": "reviews", "namespace": "shop", "generation": 2},
           "spec": {"parentRefs": [{"name": "waypoint"}],
                    "rules": [{"backendRefs": [{"name": "reviews", "port": 80}]}]}})
}

fn other_parent(name: &str) -> Value {
    json!({"parentRef": {"name": name}, "controllerName": "example.com/other",
           "conditions": [{"type": "Accepted", "status": "True", "reason": "Accepted",
                           "message": "", "lastTransitionTime": "2026-01-01T00:00:00Z"}]})
}

fn controllers(obj: &Value) -> Vec<String> {
    let mut v: Vec<String> = obj["status"]["parents"]
        .as_array()
        .into_iter()
        .flatten()
        .map(|p| {
            format!(
                "{} {}",
                p["controllerName"].as_str().unwrap(),
                p["parentRef"]["name"].as_str().unwrap()
            )
        })
        .collect();
    v.sort();
    v
}

#[tokio::test]
async fn a_route_status_write_racing_another_controller_loses_no_entry() {
    let api = FakeApi::start().await;
    api.install_crd(GW, "HTTPRoute", "httproutes", &["v1"]);
    api.put(GW, "httproutes", route());
    let ar = watched("HTTPRoute").unwrap().preferred();
    let writer = RouteStatusWriter::new(api.client(), [ar]);
    let mut cluster = Cluster::default();
    cluster
        .gateways
        .insert(("shop".into(), "waypoint".into()), "istio-waypoint".into());
    cluster.services.insert(("shop".into(), "reviews".into()));
    let obs = meshwork_controlplane::source::kube::route_status::parents::observe_route(
        &PathBuf::from("k8s://HTTPRoute/shop/reviews"),
        &route().to_string(),
    )
    .unwrap();
    let status: RouteStatus = route_status(&obs, &cluster);
    assert!(matches!(&status.parents[..], [ParentStatus { .. }]));

    // The other controller writes its entry between our read and our write.
    api.after_next_get(|s| {
        s.merge_status(
            GW,
            "httproutes",
            "shop",
            "reviews",
            json!({"parents": [other_parent("edge")]}),
        );
    });
    writer
        .write(&obj_ref(), &status, "2026-05-06T07:08:09Z".parse().unwrap())
        .await
        .unwrap();
    let obj = api.get(GW, "httproutes", "shop", "reviews").unwrap();
    assert_eq!(
        controllers(&obj),
        [
            "example.com/other edge",
            "istio.io/mesh-controller waypoint"
        ],
        "{obj}"
    );
    let patches = api
        .requests()
        .iter()
        .filter(|r| r.starts_with("PATCH"))
        .count();
    assert_eq!(patches, 2, "the first write conflicted and was retried");
}

fn obj_ref() -> ObjectRef {
    ObjectRef {
        kind: "HTTPRoute".into(),
        namespace: "shop".into(),
        name: "reviews".into(),
    }
}

//! The control plane as users run it: a real process over a temp directory, real gRPC
//! subscribers, file edits, and a kill + restart that the subscribers ride out.

#[macro_use]
mod common;

use std::collections::BTreeMap;
use std::time::Duration;

use common::{free_port, token, wait_for, write, ztunnel, ControlPlane};
use meshwork_model::client::{self, Subscription};
use meshwork_model::pb::config::{
    mesh_config_client::MeshConfigClient, proxy_message, Ack, ConfigUpdate, ProxyKind,
    ProxyMessage, Subscribe,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

const NAMESPACE: &str = concat!(
    ambient_namespace!("production"),
    r#"---
apiVersion: v1
kind: Service
metadata:
  name: order-service
spec:
  clusterIP: 10.96.0.10
  selector:
    app: order-service
  ports:
    - port: 8080
      name: http
---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: order-only
spec:
  selector:
    matchLabels:
      app: order-service
  action: ALLOW
  rules:
    - from:
        - source:
            namespaces: ["production"]
"#
);

fn pod(name: &str, node: &str, ip: &str, version: &str) -> String {
    format!(
        r#"
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  labels:
    app: order-service
    version: {version}
spec:
  nodeName: {node}
  serviceAccountName: order-service
  containers:
    - name: app
      image: order-service:{version}
      ports:
        - containerPort: 8080
status:
  phase: Running
  podIP: {ip}
"#
    )
}

/// A raw stream, to see exactly what the control plane sends.
struct RawStream {
    tx: mpsc::Sender<ProxyMessage>,
    rx: tonic::Streaming<ConfigUpdate>,
}

impl RawStream {
    async fn open(
        endpoint: &str,
        node: &str,
        token: &str,
        known: BTreeMap<String, String>,
    ) -> Self {
        let mut client = MeshConfigClient::connect(endpoint.to_string())
            .await
            .unwrap()
            .max_decoding_message_size(64 << 20);
        let (tx, rx) = mpsc::channel(4);
        tx.send(ProxyMessage {
            msg: Some(proxy_message::Msg::Subscribe(Subscribe {
                kind: ProxyKind::Ztunnel as i32,
                node: node.into(),
                proxy_id: "raw".into(),
                known,
                token: token.into(),
                ..Default::default()
            })),
        })
        .await
        .unwrap();
        let rx = client
            .stream(ReceiverStream::new(rx))
            .await
            .unwrap()
            .into_inner();
        RawStream { tx, rx }
    }

    async fn next(&mut self) -> ConfigUpdate {
        let u = tokio::time::timeout(Duration::from_secs(10), self.rx.message())
            .await
            .expect("an update within 10s")
            .unwrap()
            .expect("stream open");
        self.tx
            .send(ProxyMessage {
                msg: Some(proxy_message::Msg::Ack(Ack {
                    nonce: u.nonce.clone(),
                    error: String::new(),
                })),
            })
            .await
            .unwrap();
        u
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn deltas_reach_subscribers_and_they_survive_a_restart() {
    let config = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    write(config.path(), "base.yaml", NAMESPACE);
    write(
        config.path(),
        "pods.yaml",
        &pod("order-v1", "node-a", "10.244.1.5", "v1"),
    );
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let cp = ControlPlane::start_on_port(config.path(), ca.path(), port);

    let (tok_a, tok_b) = (token(ca.path(), "node-a"), token(ca.path(), "node-b"));
    let a = ztunnel(&endpoint, "node-a", tok_a.clone());
    let b = ztunnel(&endpoint, "node-b", tok_b);
    for (h, node) in [(&a, "a"), (&b, "b")] {
        wait_for(h, &format!("node-{node} initial snapshot"), |s| {
            s.workload("workload/production/order-v1").is_some()
        })
        .await;
    }
    // Policies only for the node that runs a selected workload.
    assert!(a
        .snapshot()
        .authorization("production", "order-only")
        .is_some());
    assert!(b
        .snapshot()
        .authorization("production", "order-only")
        .is_none());
    assert!(b
        .snapshot()
        .service_by_vip("10.96.0.10".parse().unwrap())
        .is_some());

    // A raw subscriber sees the edit as a delta of exactly the changed resource.
    let mut raw = RawStream::open(&endpoint, "node-a", &tok_a, BTreeMap::new()).await;
    let initial = raw.next().await;
    assert!(initial.initial);
    let held: BTreeMap<String, String> = initial
        .resources
        .iter()
        .map(|r| (r.key.clone(), r.version.clone()))
        .collect();
    assert!(held.contains_key("workload/production/order-v1"));

    let both = format!(
        "{}---{}",
        pod("order-v1", "node-a", "10.244.1.5", "v1"),
        pod("order-v2", "node-b", "10.244.2.7", "v2")
    );
    write(config.path(), "pods.yaml", &both);
    let delta = raw.next().await;
    assert!(!delta.initial);
    let keys: Vec<_> = delta.resources.iter().map(|r| r.key.as_str()).collect();
    assert_eq!(keys, ["workload/production/order-v2"], "{delta:?}");
    assert!(delta.removed.is_empty());
    for h in [&a, &b] {
        wait_for(h, "order-v2 delta", |s| {
            s.workload("workload/production/order-v2").is_some()
        })
        .await;
    }
    // node-b now runs a selected workload, so it receives the selector policy.
    wait_for(&b, "policy for node-b", |s| {
        s.authorization("production", "order-only").is_some()
    })
    .await;

    // Control plane dies: proxies keep their config.
    cp.kill();
    tokio::time::sleep(Duration::from_millis(300)).await;
    assert!(a
        .snapshot()
        .workload("workload/production/order-v2")
        .is_some());
    assert!(!a.status().connected);

    // Edited while it was away; after restart the subscribers resume and catch up.
    write(
        config.path(),
        "pods.yaml",
        &pod("order-v2", "node-b", "10.244.2.7", "v2"),
    );
    let _cp = ControlPlane::start_on_port(config.path(), ca.path(), port);
    for h in [&a, &b] {
        wait_for(h, "order-v1 removal after restart", |s| {
            s.workload("workload/production/order-v1").is_none()
                && s.workload("workload/production/order-v2").is_some()
        })
        .await;
    }
    // Resuming with what it holds, a subscriber is sent only the difference.
    let mut resumed = RawStream::open(&endpoint, "node-a", &tok_a, a.snapshot().versions()).await;
    let first = resumed.next().await;
    assert!(first.initial);
    assert!(
        first.resources.is_empty() && first.removed.is_empty(),
        "nothing changed since: {first:?}"
    );
    let mut stale = RawStream::open(&endpoint, "node-a", &tok_a, held).await;
    let catch_up = stale.next().await;
    let removed: Vec<_> = catch_up.removed.iter().map(String::as_str).collect();
    assert!(
        removed.contains(&"workload/production/order-v1"),
        "{catch_up:?}"
    );
    assert!(
        catch_up.resources.iter().all(|r| r.key != "mesh"),
        "unchanged mesh not resent"
    );
}

#[tokio::test]
async fn bad_tokens_are_refused() {
    let config = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    write(config.path(), "base.yaml", NAMESPACE);
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let _cp = ControlPlane::start_on_port(config.path(), ca.path(), port);
    let wrong_node = token(ca.path(), "node-b");
    let h = ztunnel(&endpoint, "node-a", wrong_node);
    tokio::time::sleep(Duration::from_millis(500)).await;
    let st = h.status();
    assert!(!st.synced);
    let err = st.last_error.unwrap_or_default();
    assert!(
        err.contains("refused")
            || err.contains("Unauthenticated")
            || err.contains("PermissionDenied"),
        "{err}"
    );
}

const PARTNERS: &str = concat!(
    ambient_namespace!("partners"),
    r#"---
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: partners-deny
  namespace: partners
spec:
  action: DENY
  rules:
    - from:
        - source:
            namespaces: ["staging"]
"#
);

fn observer_token(ca: &std::path::Path, name: &str) -> String {
    let out = std::process::Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .args([
            "--ca-dir",
            ca.to_str().unwrap(),
            "token",
            "--observer",
            name,
        ])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

fn subscriber(endpoint: &str, kind: ProxyKind, ns: &str, token: String) -> client::ConfigHandle {
    client::spawn(
        endpoint.to_string(),
        Subscription {
            kind,
            namespace: ns.into(),
            name: if ns.is_empty() { "" } else { "waypoint" }.into(),
            proxy_id: format!("test-{kind:?}-{ns}"),
            token: token.into(),
            ..Default::default()
        },
        None,
    )
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn each_subscriber_receives_only_what_it_may_know() {
    let config = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    write(config.path(), "base.yaml", NAMESPACE);
    write(config.path(), "partners.yaml", PARTNERS);
    write(
        config.path(),
        "pods.yaml",
        &pod("order-v1", "node-a", "10.244.1.5", "v1"),
    );
    let port = free_port();
    let endpoint = format!("http://127.0.0.1:{port}");
    let _cp = ControlPlane::start_on_port(config.path(), ca.path(), port);

    // A waypoint of partners: its own and the root namespace's policies, every service and
    // workload, but not production's policies.
    let wp = subscriber(
        &endpoint,
        ProxyKind::Waypoint,
        "partners",
        token(ca.path(), "node-a"),
    );
    wait_for(&wp, "partners waypoint snapshot", |s| {
        s.authorization("partners", "partners-deny").is_some()
            && s.workload("workload/production/order-v1").is_some()
    })
    .await;
    assert!(
        wp.snapshot()
            .authorization("production", "order-only")
            .is_none(),
        "a partners waypoint must not receive production's policies"
    );

    // An observer without a token is refused; with an observer token it sees everything.
    let anonymous = subscriber(&endpoint, ProxyKind::Observer, "", String::new());
    let mut rx = anonymous.watch();
    let refused = tokio::time::timeout(Duration::from_secs(2), rx.wait_for(|s| s.version > 0));
    assert!(
        refused.await.is_err(),
        "an anonymous observer got a snapshot"
    );
    let st = anonymous.status();
    assert!(!st.synced);
    let err = st.last_error.unwrap_or_default();
    assert!(err.contains("needs a token"), "{err}");

    let observer = subscriber(
        &endpoint,
        ProxyKind::Observer,
        "",
        observer_token(ca.path(), "cli"),
    );
    wait_for(&observer, "observer snapshot", |s| {
        s.authorization("production", "order-only").is_some()
            && s.authorization("partners", "partners-deny").is_some()
    })
    .await;
}

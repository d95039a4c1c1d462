//! Two control-plane processes (`controlplane --source kubernetes`, as the chart runs two
//! replicas) over one fake API server: they share one CA through its Secret, so each one's
//! TLS certificate verifies under the other's root, a restart keeps the root, and a
//! proxy pinned to that root keeps verifying every replica. (The exact create race is
//! forced in `source::kube::ca_secret`'s unit tests.)

mod common;
mod fake_api;

use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use common::istio_ztunnel;
use fake_api::FakeApi;
use serde_json::json;

struct Replica {
    child: Child,
    tls: SocketAddr,
    ca_dir: PathBuf,
}

impl Drop for Replica {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

fn kubeconfig(dir: &Path, api: &FakeApi) -> PathBuf {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\ncurrent-context: fake\nclusters:\n- name: fake\n  cluster:\n    server: http://{}\ncontexts:\n- name: fake\n  context:\n    cluster: fake\n    user: fake\nusers:\n- name: fake\n  user: {{}}\n",
            api.addr
        ),
    )
    .unwrap();
    path
}

fn start(kubeconfig: &Path, ca_dir: &Path, name: &str) -> Replica {
    let mut child = Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .env("KUBECONFIG", kubeconfig)
        .env("POD_NAME", name)
        .env("POD_NAMESPACE", "istio-system")
        .args(["--source", "kubernetes", "--leader-election=false"])
        .args(["--waypoint-template", "", "--root-cert-configmap", ""])
        .args(["--grpc-addr", "off", "--grpc-tls-addr", "127.0.0.1:0"])
        .args(["--admin-addr", "127.0.0.1:0"])
        .arg("--ca-dir")
        .arg(ca_dir)
        .stdout(Stdio::piped())
        .stderr(Stdio::null())
        .spawn()
        .expect("start controlplane");
    let line = common::ready_line(&mut child, Duration::from_secs(60));
    let tls = common::ready_addr(&line, "grpc-tls").expect("a TLS port");
    Replica {
        child,
        tls,
        ca_dir: ca_dir.to_path_buf(),
    }
}

/// A TLS handshake with `replica` verified against the mesh root in `root`.
async fn verifies(replica: &Replica, root: &Path) -> bool {
    istio_ztunnel::channel(
        &format!("https://{}", replica.tls),
        istio_ztunnel::tls_config(root),
    )
    .await
    .is_ok()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn two_replicas_over_one_api_sign_into_one_root_and_a_restart_keeps_it() {
    let api = FakeApi::start().await;
    api.put(
        "",
        "namespaces",
        json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "istio-system"}}),
    );
    let dir = tempfile::tempdir().unwrap();
    let kc = kubeconfig(dir.path(), &api);
    // Started together, as a Deployment's replicas are (the API server's create decides).
    let spawn = |name: &'static str| {
        let (kc, ca) = (kc.clone(), dir.path().join(name));
        tokio::task::spawn_blocking(move || start(&kc, &ca, name))
    };
    let (a, b) = (spawn("a"), spawn("b"));
    let (a, b) = (a.await.unwrap(), b.await.unwrap());
    let secret = api
        .get("", "secrets", "istio-system", "meshwork-ca-secret")
        .expect("the shared root is in a Secret");
    assert!(secret["data"]["ca-key.pem"].is_string());
    assert_eq!(
        std::fs::read(a.ca_dir.join("ca-root.pem")).unwrap(),
        std::fs::read(b.ca_dir.join("ca-root.pem")).unwrap(),
        "one root"
    );
    let root = |r: &Replica| r.ca_dir.join("ca-root.pem");
    assert!(verifies(&a, &root(&b)).await && verifies(&b, &root(&a)).await);

    // A proxy pinned to replica a's root; a's pod is replaced (new empty CA directory).
    let pinned = tempfile::tempdir().unwrap();
    let pinned = pinned.path().join("root-cert.pem");
    std::fs::copy(root(&a), &pinned).unwrap();
    drop(a);
    let c = spawn("c").await.unwrap();
    assert!(
        verifies(&c, &pinned).await,
        "the restarted replica keeps the root"
    );
    assert!(verifies(&b, &pinned).await);
}

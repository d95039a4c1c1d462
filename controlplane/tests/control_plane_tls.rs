//! The control plane's TLS port (15012, as istiod's): config and CA over TLS 1.3 with a
//! serving certificate from the mesh CA. Clients verify it against the mesh root: Istio's
//! ztunnel (its exact request shape, `common::istio_ztunnel`) and Meshwork's proxies
//! (`meshwork_model::endpoint`). A control plane under another root, a wrong name, or a
//! plaintext port off loopback are refused.

#[macro_use]
mod common;

use std::time::Duration;

use common::istio_ztunnel::{self, IstioZtunnel};
use meshwork_controlplane::run::{self, Options, RunError, Running, Serving, Source};
use meshwork_identity::{SpiffeId, TrustBundle};
use meshwork_model::ca_client::CaClient;
use meshwork_model::client::{self, Subscription};
use meshwork_model::endpoint::ControlPlane;
use meshwork_model::pb::config::ProxyKind;

const ORDER: &str = "spiffe://cluster.local/ns/production/sa/order-service";

const PODS: &str = concat!(
    ambient_namespace!("production"),
    r#"---
apiVersion: v1
kind: Pod
metadata:
  name: order
  namespace: production
spec:
  nodeName: node-a
  serviceAccountName: order-service
  containers: [{name: app, image: app}]
status:
  phase: Running
  podIP: 10.0.1.1
"#
);

struct Cp {
    running: Running,
    root: std::path::PathBuf,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

impl Cp {
    fn tls_url(&self) -> String {
        format!("https://{}", self.running.grpc_tls_addr.unwrap())
    }

    /// `https://localhost:PORT`: a DNS name from the serving certificate.
    fn tls_url_by_name(&self) -> String {
        format!(
            "https://localhost:{}",
            self.running.grpc_tls_addr.unwrap().port()
        )
    }
}

fn options(config: &std::path::Path, ca: &std::path::Path) -> Options {
    Options {
        source: Source::Dir(config.to_path_buf()),
        mesh_config: None,
        trust_domain: None,
        root_namespace: None,
        default_namespace: "default".into(),
        grpc_addr: None,
        grpc_tls_addr: Some("127.0.0.1:0".parse().unwrap()),
        serving: Serving::local("istio-system", "meshwork-controlplane"),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        probe_addr: None,
        ca_dir: ca.to_path_buf(),
        cert_ttl: Duration::from_secs(3600),
        ca_reload_interval: Duration::from_secs(3600),
        state_dir: None,
    }
}

async fn start() -> Cp {
    let config = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    std::fs::write(config.path().join("mesh.yaml"), PODS).unwrap();
    let running = run::start(options(config.path(), ca.path())).await.unwrap();
    Cp {
        running,
        root: ca.path().join("ca-root.pem"),
        _dirs: (config, ca),
    }
}

#[tokio::test]
async fn istios_ztunnel_obtains_a_workload_certificate_over_tls() {
    let cp = start().await;
    for address in [cp.tls_url(), cp.tls_url_by_name()] {
        let zt = IstioZtunnel {
            address,
            root_cert: cp.root.clone(),
            token: cp.running.tokens.token_for("node-a").unwrap(),
            cluster_id: "Kubernetes".into(),
        };
        let issued = zt.fetch_certificate(ORDER).await.unwrap();
        assert_eq!(issued.uri_sans, vec![ORDER.to_string()]);
        assert!(
            issued.intermediates.is_empty(),
            "self-signed root signs leaves"
        );
        // ztunnel's check: the leaf chains to the answered roots.
        let mut store = rustls::RootCertStore::empty();
        for r in &issued.roots {
            store.add(r.clone()).unwrap();
        }
        let leaf = rustls::server::ParsedCertificate::try_from(&issued.leaf).unwrap();
        rustls::client::verify_server_cert_signed_by_trust_anchor(
            &leaf,
            &store,
            &issued.intermediates,
            rustls_pki_types::UnixTime::now(),
            rustls::crypto::ring::default_provider()
                .signature_verification_algorithms
                .all,
        )
        .unwrap();
    }

    // Its node token does not get another node's workloads, over TLS as in plaintext.
    let other = IstioZtunnel {
        address: cp.tls_url(),
        root_cert: cp.root.clone(),
        token: cp.running.tokens.token_for("node-b").unwrap(),
        cluster_id: "Kubernetes".into(),
    };
    let e = other.fetch_certificate(ORDER).await.err().unwrap();
    assert_eq!(e.code(), tonic::Code::PermissionDenied, "{e:?}");
}

#[tokio::test]
async fn meshwork_proxies_follow_config_and_renew_certificates_over_tls() {
    let cp = start().await;
    let endpoint = ControlPlane::new(cp.tls_url()).with_roots_file(Some(cp.root.clone()));
    let token = cp.running.tokens.token_for("node-a").unwrap();
    let handle = client::spawn(
        endpoint.clone(),
        Subscription {
            kind: ProxyKind::Ztunnel,
            node: "node-a".into(),
            proxy_id: "ztunnel-node-a".into(),
            token: token.clone().into(),
            ..Default::default()
        },
        None,
    );
    let snap = handle
        .wait_synced(Duration::from_secs(20))
        .await
        .expect("config over TLS");
    let roots = |pem: &str| {
        TrustBundle::from_pem("roots", pem)
            .unwrap()
            .roots()
            .to_vec()
    };
    let published = snap.mesh().unwrap().ca_roots_pem.clone();
    assert_eq!(
        roots(&published),
        roots(&std::fs::read_to_string(&cp.root).unwrap()),
        "the mesh settings carry the CA's roots"
    );
    let ca = CaClient::new(endpoint, token, Duration::from_secs(3600), None).unwrap();
    let id: SpiffeId = ORDER.parse().unwrap();
    assert_eq!(ca.sign(&id).await.unwrap().identity(), &id);

    // A new CA (a rotation): the new roots reach the proxy on the config stream.
    let fresh = tempfile::tempdir().unwrap();
    let next = meshwork_controlplane::ca::Ca::open(
        fresh.path(),
        meshwork_controlplane::ca::CaConfig::new("cluster.local"),
    )
    .unwrap();
    let next_roots = next.trust_bundle().roots().to_vec();
    cp.running.ca.replace(next);
    let mut watch = handle.watch();
    tokio::time::timeout(Duration::from_secs(10), async {
        loop {
            let pem = watch
                .borrow_and_update()
                .mesh()
                .map(|m| m.ca_roots_pem.clone())
                .unwrap_or_default();
            if !pem.is_empty() && roots(&pem) == next_roots {
                return;
            }
            watch.changed().await.unwrap();
        }
    })
    .await
    .expect("new roots pushed");
}

#[tokio::test]
async fn a_control_plane_under_another_root_is_refused_before_any_token_is_sent() {
    let (ours, theirs) = (start().await, start().await);
    // Our root, their port: the handshake fails, so the request (and its token) never
    // leaves the client.
    let e = istio_ztunnel::channel(&theirs.tls_url(), istio_ztunnel::tls_config(&ours.root))
        .await
        .err()
        .unwrap();
    // Both roots have the same subject: webpki finds the issuer by name and the signature
    // fails (an unrelated subject gives UnknownIssuer).
    assert!(e.contains("InvalidCertificate"), "{e}");

    let handle = client::spawn(
        ControlPlane::new(theirs.tls_url()).with_roots_file(Some(ours.root.clone())),
        Subscription {
            kind: ProxyKind::Ztunnel,
            node: "node-a".into(),
            proxy_id: "ztunnel-node-a".into(),
            token: ours.running.tokens.token_for("node-a").unwrap().into(),
            ..Default::default()
        },
        None,
    );
    let err = handle
        .wait_synced(Duration::from_secs(3))
        .await
        .unwrap_err();
    let status = handle.status();
    assert!(!status.synced, "{err}");
    let last = status.last_error.unwrap_or_default();
    assert!(last.contains("invalid peer certificate"), "{last}");
}

#[tokio::test]
async fn a_name_not_in_the_serving_certificate_is_refused() {
    let cp = start().await;
    let endpoint = ControlPlane::new(cp.tls_url())
        .with_roots_file(Some(cp.root.clone()))
        .with_server_name(Some("istiod.istio-system.svc".into()));
    let ca = CaClient::new(
        endpoint,
        cp.running.tokens.token_for("node-a").unwrap(),
        Duration::from_secs(3600),
        None,
    )
    .unwrap();
    let e = ca.sign(&ORDER.parse().unwrap()).await.unwrap_err();
    assert!(format!("{e:?}").contains("NotValidForName"), "{e:?}");
}

#[tokio::test]
async fn plaintext_grpc_is_refused_off_loopback() {
    let config = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    let mut opts = options(config.path(), ca.path());
    opts.grpc_addr = Some("0.0.0.0:0".parse().unwrap());
    let e = run::start(opts).await.err().unwrap();
    assert!(matches!(e, RunError::PlaintextOffHost(_)), "{e}");
    assert!(e.to_string().contains("15012"), "{e}");
}

#[tokio::test]
async fn the_serving_certificate_follows_a_new_root() {
    let cp = start().await;
    let url = cp.tls_url();
    istio_ztunnel::channel(&url, istio_ztunnel::tls_config(&cp.root))
        .await
        .unwrap();
    // A new root (a rotation's final state): new handshakes present a certificate under
    // it; a client holding only the old root refuses them.
    let fresh = tempfile::tempdir().unwrap();
    let ca = meshwork_controlplane::ca::Ca::open(
        fresh.path(),
        meshwork_controlplane::ca::CaConfig::new("cluster.local"),
    )
    .unwrap();
    cp.running.ca.replace(ca);
    assert!(
        istio_ztunnel::channel(&url, istio_ztunnel::tls_config(&cp.root))
            .await
            .is_err(),
        "old root only"
    );
    istio_ztunnel::channel(
        &url,
        istio_ztunnel::tls_config(&fresh.path().join("ca-root.pem")),
    )
    .await
    .unwrap();
}

#[tokio::test]
async fn silent_clients_do_not_hold_up_the_tls_port() {
    let cp = start().await;
    let addr = cp.running.grpc_tls_addr.unwrap();
    // Connections that never send a ClientHello.
    let mut silent = Vec::new();
    for _ in 0..50 {
        silent.push(tokio::net::TcpStream::connect(addr).await.unwrap());
    }
    tokio::time::timeout(
        Duration::from_secs(5),
        istio_ztunnel::channel(&cp.tls_url(), istio_ztunnel::tls_config(&cp.root)),
    )
    .await
    .expect("served while 50 handshakes hang")
    .unwrap();
    drop(silent);
}

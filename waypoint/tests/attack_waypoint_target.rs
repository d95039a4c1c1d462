//! Attacks on which destinations the waypoint serves (issue #18, item 1), over real HBONE
//! (mTLS 1.3 + HTTP/2 CONNECT) on loopback, with the waypoint's real HBONE upstream:
//! - a CONNECT naming the waypoint's own pod IP must not make it dial itself without end;
//! - a CONNECT to another waypoint, or from the waypoint's own identity, is a loop;
//! - a CONNECT to a workload or service not bound to this waypoint must be refused, so the
//!   waypoint never reaches it with its own identity (laundering the caller's).
//!
//! Addresses: the waypoint's "pod" is 127.0.0.2, the fake destination ztunnels 127.0.0.3
//! (a workload that does not use this waypoint) and 127.0.0.4 (one that does), all on the
//! waypoint's HBONE port, as every pod's ztunnel listens on the same port.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use meshwork_hbone::{
    ClientError, ConnectHandler, ConnectRequest, H2Settings, H2Stream, Pool, PoolKey, PoolSettings,
    Responder, Server,
};
use meshwork_identity::testing::TestCa;
use meshwork_identity::tls::{client_config, server_config, RotatingCert};
use meshwork_identity::SpiffeId;
use meshwork_model::pb::config as pb;
use meshwork_waypoint::hbone::{HboneConnector, WaypointHandler};
use meshwork_waypoint::server::ServerLimits;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

const LEDGER_IP: &str = "127.0.0.3";
const PAYMENT_IP: &str = "127.0.0.4";
const OTHER_WAYPOINT_IP: &str = "127.0.0.5";
const PAYMENT_VIP: &str = "240.240.0.20";
const LEDGER_VIP: &str = "240.240.0.40";
/// Generous bound for one refused CONNECT on a loaded machine (it takes milliseconds).
const PATIENCE: Duration = Duration::from_secs(10);

fn id(sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", NS, sa).unwrap()
}

/// What a fake destination ztunnel saw: (peer identity, CONNECT authority).
type Seen = Arc<Mutex<Vec<(String, String)>>>;

/// A destination ztunnel: records every CONNECT and answers HTTP 200 `name` inside it.
#[derive(Clone)]
struct FakeZtunnel {
    name: &'static str,
    seen: Seen,
}

impl ConnectHandler for FakeZtunnel {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        self.seen
            .lock()
            .unwrap()
            .push((req.conn.peer_identity.to_string(), req.authority.clone()));
        let Ok(stream) = responder.accept() else {
            return;
        };
        let name = self.name;
        let svc = hyper::service::service_fn(
            move |_req: http::Request<hyper::body::Incoming>| async move {
                Ok::<_, std::convert::Infallible>(http::Response::new(Full::new(Bytes::from(name))))
            },
        );
        let _ = hyper::server::conn::http1::Builder::new()
            .serve_connection(TokioIo::new(stream), svc)
            .await;
    }
}

/// The waypoint's handler, counting the CONNECTs it handles and those still running.
#[derive(Clone)]
struct Counting {
    inner: WaypointHandler,
    handled: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
}

impl ConnectHandler for Counting {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        self.handled.fetch_add(1, Ordering::SeqCst);
        self.running.fetch_add(1, Ordering::SeqCst);
        self.inner.handle(req, responder).await;
        self.running.fetch_sub(1, Ordering::SeqCst);
    }
}

struct Fixture {
    ca: TestCa,
    waypoint: SocketAddr,
    handled: Arc<AtomicUsize>,
    running: Arc<AtomicUsize>,
    accepted: Arc<AtomicUsize>,
    ledger_seen: Seen,
    payment_seen: Seen,
    log: Arc<Mutex<Vec<String>>>,
    _drain: CancellationToken,
}

fn workload(name: &str, sa: &str, ip: &str, service: Option<&str>) -> pb::Workload {
    pb::Workload {
        uid: format!("Kubernetes//Pod/{NS}/{name}"),
        name: name.into(),
        namespace: NS.into(),
        service_account: sa.into(),
        trust_domain: "cluster.local".into(),
        addresses: vec![ip.into()],
        captured: true,
        healthy: true,
        services: service
            .map(|s| pb::ServicePorts {
                service: format!("{NS}/{s}.{NS}.svc.cluster.local"),
                ports: [(80u32, 8080u32)].into(),
            })
            .into_iter()
            .collect(),
        ..Default::default()
    }
}

fn service(name: &str, vip: &str, waypoint: Option<pb::GatewayAddress>) -> pb::Service {
    pb::Service {
        name: name.into(),
        namespace: NS.into(),
        hostname: format!("{name}.{NS}.svc.cluster.local"),
        vips: vec![vip.into()],
        ports: vec![pb::ServicePort {
            port: 80,
            target_port: 8080,
            name: "http".into(),
            protocol: "HTTP".into(),
            ..Default::default()
        }],
        waypoint,
        ..Default::default()
    }
}

/// The mesh: payment (service and pod) uses this waypoint; ledger (service and pod) uses
/// none; two waypoint pods, this one and another.
fn mesh() -> Mesh {
    let mut m = Mesh::default();
    let other_waypoint = pb::GatewayAddress {
        name: "other-waypoint".into(),
        address: OTHER_WAYPOINT_IP.into(),
        identity: "spiffe://cluster.local/ns/production/sa/other-waypoint".into(),
        ..waypoint_address()
    };
    let mut waypoint_pod = workload("waypoint-0", "waypoint", WAYPOINT_IP, None);
    waypoint_pod.is_waypoint = true;
    waypoint_pod.captured = false;
    let mut other_pod = workload(
        "other-waypoint-0",
        "other-waypoint",
        OTHER_WAYPOINT_IP,
        None,
    );
    other_pod.is_waypoint = true;
    other_pod.captured = false;
    m.raw_service(service(
        "payment-service",
        PAYMENT_VIP,
        Some(waypoint_address()),
    ))
    .raw_workload(workload(
        "payment-0",
        "payment-service",
        PAYMENT_IP,
        Some("payment-service"),
    ))
    .raw_service(service("ledger", LEDGER_VIP, None))
    .raw_workload(workload("ledger-0", "ledger", LEDGER_IP, Some("ledger")))
    .raw_workload(waypoint_pod)
    .raw_workload(pb::Workload {
        waypoint: Some(other_waypoint),
        ..workload("audit-0", "audit", "127.0.0.6", None)
    })
    .raw_workload(other_pod);
    m
}

/// Serves `handler` over HBONE with `identity`'s certificate on `listener`.
fn serve<H: ConnectHandler>(
    ca: &TestCa,
    identity: &SpiffeId,
    listener: TcpListener,
    handler: H,
    drain: CancellationToken,
    accepted: Arc<AtomicUsize>,
) {
    let cert = RotatingCert::new(ca.issue(identity, Duration::from_secs(3600)));
    let tls = server_config(&ca.bundle(), cert).unwrap();
    let local = listener.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..10_000 {
            let Ok((s, peer)) = listener.accept().await else {
                return;
            };
            accepted.fetch_add(1, Ordering::SeqCst);
            let (tls, handler, drain) = (tls.clone(), handler.clone(), drain.clone());
            tokio::spawn(async move {
                let _ = Server::new(H2Settings::default())
                    .serve_tls(s, tls, peer, local, handler, drain)
                    .await;
            });
        }
    });
}

async fn fixture() -> Fixture {
    let ca = TestCa::new("cluster.local");
    let waypoint_id = id("waypoint");
    let listener = TcpListener::bind((WAYPOINT_IP, 0)).await.unwrap();
    let waypoint = listener.local_addr().unwrap();
    let hbone_port = waypoint.port();
    let drain = CancellationToken::new();

    // The destination ztunnels listen on the same HBONE port at their own addresses.
    let mut fakes = Vec::new();
    for (ip, sa, name) in [
        (LEDGER_IP, "ledger", "ledger"),
        (PAYMENT_IP, "payment-service", "payment"),
    ] {
        let l = TcpListener::bind((ip, hbone_port)).await.unwrap();
        let seen: Seen = Arc::default();
        let fake = FakeZtunnel {
            name,
            seen: seen.clone(),
        };
        serve(&ca, &id(sa), l, fake, drain.clone(), Arc::default());
        fakes.push(seen);
    }

    let cert = RotatingCert::new(ca.issue(&waypoint_id, Duration::from_secs(3600)));
    let connector = HboneConnector::new(Pool::new(PoolSettings::default()), cert, hbone_port);
    let (svc, log) = logged_service(mesh().snapshot(), Arc::new(connector));
    let handled = Arc::new(AtomicUsize::new(0));
    let running = Arc::new(AtomicUsize::new(0));
    let accepted = Arc::new(AtomicUsize::new(0));
    let handler = Counting {
        inner: WaypointHandler {
            service: svc,
            limits: Arc::new(ServerLimits::default()),
            identity: waypoint_id.clone(),
        },
        handled: handled.clone(),
        running: running.clone(),
    };
    serve(
        &ca,
        &waypoint_id,
        listener,
        handler,
        drain.clone(),
        accepted.clone(),
    );
    let payment_seen = fakes.pop().unwrap();
    let ledger_seen = fakes.pop().unwrap();
    Fixture {
        ca,
        waypoint,
        handled,
        running,
        accepted,
        ledger_seen,
        payment_seen,
        log,
        _drain: drain,
    }
}

/// Opens a CONNECT to `target` at the waypoint as `client` (a fresh HBONE connection).
async fn connect(f: &Fixture, client: &SpiffeId, target: &str) -> Result<H2Stream, ClientError> {
    let cert = f.ca.issue(client, Duration::from_secs(3600));
    let tls = client_config(&cert, &f.ca.bundle(), [id("waypoint")]).unwrap();
    let pool = Pool::new(PoolSettings::default());
    let key = PoolKey {
        src_identity: client.to_string(),
        dst: f.waypoint,
        dst_identity: id("waypoint").to_string(),
        from: Default::default(),
    };
    pool.connect(&key, || tls, target, http::HeaderMap::new())
        .await
}

/// One GET inside the tunnel: (status, body).
async fn get(stream: H2Stream, host: &str) -> (u16, String) {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("/")
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

/// The CONNECT (and a GET inside it, when it is accepted) must end within [`PATIENCE`]:
/// `Err(status)` for a refused CONNECT, `Ok` the GET's answer.
async fn attempt(f: &Fixture, client: &SpiffeId, target: &str) -> Result<(u16, String), u16> {
    let run = async {
        match connect(f, client, target).await {
            Ok(s) => Ok(get(s, PAYMENT_HOST).await),
            Err(ClientError::Refused { status, .. }) => Err(status.as_u16()),
            Err(e) => panic!("CONNECT {target}: {e}"),
        }
    };
    match tokio::time::timeout(PATIENCE, run).await {
        Ok(r) => r,
        Err(_) => panic!(
            "CONNECT {target} did not end within {PATIENCE:?}: the waypoint handled {} CONNECTs \
             ({} still running) over {} connections for this one (a forwarding loop)",
            f.handled.load(Ordering::SeqCst),
            f.running.load(Ordering::SeqCst),
            f.accepted.load(Ordering::SeqCst),
        ),
    }
}

/// Waits (bounded) until no CONNECT is being handled.
async fn settled(f: &Fixture) -> usize {
    for _ in 0..500 {
        if f.running.load(Ordering::SeqCst) == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    f.running.load(Ordering::SeqCst)
}

fn log_lines(f: &Fixture) -> Vec<serde_json::Value> {
    f.log
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

#[tokio::test]
async fn attack_self_connect_is_refused_and_holds_nothing() {
    let f = fixture().await;
    let client = id("order-service");
    let targets = [
        format!("{WAYPOINT_IP}:8080"),
        f.waypoint.to_string(),
        format!("{WAYPOINT_IP}:80"),
    ];
    for round in 0..3 {
        for t in &targets {
            assert_eq!(
                attempt(&f, &client, t).await,
                Err(508),
                "round {round}: {t}"
            );
        }
    }
    let sent = 3 * targets.len();
    // The waypoint handled exactly the client's CONNECTs: it never dialed itself.
    assert_eq!(f.handled.load(Ordering::SeqCst), sent, "CONNECTs handled");
    assert_eq!(
        f.accepted.load(Ordering::SeqCst),
        sent,
        "connections accepted"
    );
    assert_eq!(settled(&f).await, 0, "CONNECT handlers still running");
    let lines = log_lines(&f);
    assert_eq!(lines.len(), sent, "{lines:?}");
    for l in &lines {
        assert_eq!(l["response_code"], 508, "{l}");
        assert_eq!(l["response_flags"], "NR", "{l}");
        assert_eq!(l["response_code_details"], "waypoint_loop_detected", "{l}");
        assert_eq!(l["source_principal"], client.to_string(), "{l}");
    }
}

#[tokio::test]
async fn attack_connect_to_another_waypoint_is_a_loop() {
    let f = fixture().await;
    let client = id("order-service");
    let target = format!("{OTHER_WAYPOINT_IP}:15008");
    assert_eq!(attempt(&f, &client, &target).await, Err(508));
    assert_eq!(f.handled.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn attack_tunnel_from_the_waypoints_own_identity_is_a_loop() {
    let f = fixture().await;
    // Even to a destination it serves: only a tunnel it opened itself carries its identity.
    let target = format!("{PAYMENT_VIP}:80");
    assert_eq!(attempt(&f, &id("waypoint"), &target).await, Err(508));
    assert!(f.payment_seen.lock().unwrap().is_empty());
}

#[tokio::test]
async fn attack_connect_to_workload_not_bound_to_this_waypoint_is_refused() {
    let f = fixture().await;
    let client = id("order-service");
    // The ledger pod and its service use no waypoint; audit-0 uses another one.
    for target in [
        format!("{LEDGER_IP}:8080"),
        format!("{LEDGER_VIP}:80"),
        "127.0.0.6:8080".to_string(),
        "192.0.2.7:80".to_string(),
    ] {
        assert_eq!(attempt(&f, &client, &target).await, Err(421), "{target}");
    }
    let seen = f.ledger_seen.lock().unwrap().clone();
    assert!(
        seen.is_empty(),
        "the ledger's ztunnel was reached as {seen:?}: the waypoint laundered the caller"
    );
    assert_eq!(settled(&f).await, 0);
    let lines = log_lines(&f);
    assert_eq!(lines.len(), 4, "{lines:?}");
    for l in &lines {
        assert_eq!(l["response_code"], 421, "{l}");
        assert_eq!(l["response_flags"], "NR", "{l}");
        assert_eq!(
            l["response_code_details"], "waypoint_destination_not_bound",
            "{l}"
        );
    }
}

#[tokio::test]
async fn bound_service_and_pod_are_still_served_over_hbone() {
    let f = fixture().await;
    let client = id("order-service");
    for target in [format!("{PAYMENT_VIP}:80"), format!("{PAYMENT_IP}:8080")] {
        assert_eq!(
            attempt(&f, &client, &target).await,
            Ok((200, "payment".into())),
            "{target}"
        );
    }
    let seen = f.payment_seen.lock().unwrap().clone();
    let upstream = format!("{PAYMENT_IP}:8080");
    assert_eq!(seen.len(), 2, "{seen:?}");
    for (peer, authority) in &seen {
        assert_eq!(peer, &id("waypoint").to_string());
        assert_eq!(authority, &upstream);
    }
}

//! The waypoint behind real HBONE (mTLS 1.3 + HTTP/2 CONNECT): HTTP inside the tunnel gets
//! L7 routing and authorization with the peer's verified identity; other bytes pass through.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use meshwork_hbone::{H2Settings, Pool, PoolKey, PoolSettings, Server};
use meshwork_identity::testing::TestCa;
use meshwork_identity::tls::{client_config, server_config, RotatingCert};
use meshwork_identity::SpiffeId;
use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config as pb;
use meshwork_waypoint::hbone::WaypointHandler;
use meshwork_waypoint::server::ServerLimits;
use meshwork_waypoint::{L7Service, Options, TcpConnector, WaypointId};
use prometheus_client::registry::Registry;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

fn id(sa: &str, ns: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

struct Fixture {
    ca: TestCa,
    paid: SocketAddr,
    waypoint: SocketAddr,
    waypoint_id: SpiffeId,
    _drain: CancellationToken,
}

async fn echo_backend() -> SocketAddr {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    tokio::spawn(async move {
        for _ in 0..100 {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
            });
        }
    });
    addr
}

async fn fixture() -> Fixture {
    let paid = named("paid").await;
    let echo = echo_backend().await;
    let mut m = Mesh::default();
    m.service("payment-service", "240.240.0.20")
        .workload(
            "payment-0",
            "payment-service",
            "v1",
            "payment-service",
            paid.addr.port(),
        )
        .service("echo", "240.240.0.30")
        .workload("echo-0", "echo", "v1", "echo", echo.port())
        .authz(service_policy(
            "payment-service-policy",
            pb::Action::Allow,
            "payment-service",
            vec![pb::Rule {
                from: vec![pb::Source {
                    principals: vec!["cluster.local/ns/production/sa/order-service".into()],
                    ..Default::default()
                }],
                to: vec![pb::Operation {
                    methods: vec!["POST".into()],
                    paths: vec!["/api/payments/*".into()],
                    ..Default::default()
                }],
                when: vec![],
            }],
        ))
        .bind_all_to_waypoint();
    let mut registry = Registry::default();
    let svc = L7Service::new(
        ConfigHandle::fixed(m.snapshot()),
        Arc::new(TcpConnector),
        Options {
            waypoint: WaypointId {
                namespace: NS.into(),
                name: "waypoint".into(),
            },
            ..Default::default()
        },
        &mut registry,
    );
    let ca = TestCa::new("cluster.local");
    let waypoint_id = id("waypoint", NS);
    let cert = RotatingCert::new(ca.issue(&waypoint_id, Duration::from_secs(3600)));
    let tls = server_config(&ca.bundle(), cert).unwrap();
    let listener = TcpListener::bind((WAYPOINT_IP, 0)).await.unwrap();
    let waypoint = listener.local_addr().unwrap();
    let drain = CancellationToken::new();
    let d = drain.clone();
    let handler = WaypointHandler {
        service: svc,
        limits: Arc::new(ServerLimits::default()),
        identity: waypoint_id.clone(),
    };
    tokio::spawn(async move {
        for _ in 0..1000 {
            let Ok((s, peer)) = listener.accept().await else {
                return;
            };
            let tls = tls.clone();
            let handler = handler.clone();
            let d = d.clone();
            tokio::spawn(async move {
                let _ = Server::new(H2Settings::default())
                    .serve_tls(s, tls, peer, waypoint, handler, d)
                    .await;
            });
        }
    });
    Fixture {
        ca,
        paid: paid.addr,
        waypoint,
        waypoint_id,
        _drain: drain,
    }
}

async fn tunnel(f: &Fixture, client: &SpiffeId, target: &str) -> meshwork_hbone::H2Stream {
    let cert = f.ca.issue(client, Duration::from_secs(3600));
    let tls = client_config(&cert, &f.ca.bundle(), [f.waypoint_id.clone()]).unwrap();
    let pool = Pool::new(PoolSettings::default());
    let key = PoolKey {
        src_identity: client.to_string(),
        dst: f.waypoint,
        dst_identity: f.waypoint_id.to_string(),
        from: Default::default(),
    };
    pool.connect(&key, || tls, target, http::HeaderMap::new())
        .await
        .unwrap()
}

async fn http_over(stream: meshwork_hbone::H2Stream, method: &str, path: &str) -> (u16, String) {
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method(method)
        .uri(path)
        .header("host", "payment-service.production.svc.cluster.local")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let resp = send.send_request(req).await.unwrap();
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

#[tokio::test]
async fn http_through_hbone_uses_peer_identity() {
    let f = fixture().await;
    let order = id("order-service", NS);
    let s = tunnel(&f, &order, "240.240.0.20:80").await;
    assert_eq!(
        http_over(s, "POST", "/api/payments/1").await,
        (200, "paid".into())
    );
    let s = tunnel(&f, &order, "240.240.0.20:80").await;
    assert_eq!(
        http_over(s, "GET", "/api/payments/1").await,
        (403, "RBAC: access denied".into())
    );
    let s = tunnel(&f, &id("frontend", "staging"), "240.240.0.20:80").await;
    assert_eq!(http_over(s, "POST", "/api/payments/1").await.0, 403);
}

#[tokio::test]
async fn non_http_is_passed_through() {
    let f = fixture().await;
    let mut s = tunnel(&f, &id("order-service", NS), "240.240.0.30:80").await;
    s.write_all(b"\x00\x01binary-hello").await.unwrap();
    let mut buf = [0u8; 14];
    tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut buf))
        .await
        .unwrap()
        .unwrap();
    assert_eq!(&buf, b"\x00\x01binary-hello");
}

#[tokio::test]
async fn non_http_to_l7_only_allowed_service_is_denied() {
    let f = fixture().await;
    let mut s = tunnel(&f, &id("order-service", NS), "240.240.0.20:80").await;
    s.write_all(b"\x00\x01binary-hello").await.unwrap();
    let mut buf = Vec::new();
    let r = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut buf))
        .await
        .unwrap();
    assert!(
        r.is_err() || buf.is_empty(),
        "no bytes may come back: {buf:?}"
    );
}

#[tokio::test]
async fn pod_ip_destination_goes_to_that_workload() {
    let f = fixture().await;
    let s = tunnel(&f, &id("order-service", NS), &f.paid.to_string()).await;
    // Judged as the pod, not as the service the Host header names (whose policy denies GET).
    assert_eq!(http_over(s, "GET", "/direct").await, (200, "paid".into()));
}

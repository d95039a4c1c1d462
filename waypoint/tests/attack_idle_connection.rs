//! Idle downstream connections, with paused time: an HTTP/2 connection (as inside an HBONE
//! tunnel, where the tunnel lives as long as it does) that never sends a request, or stays
//! after its last one, is closed: within the header read timeout before its first request,
//! after `idle_timeout` (1 h, Envoy's default) after its last. A request in flight is
//! never cut by it.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config as pb;
use meshwork_waypoint::access_log::AccessLog;
use meshwork_waypoint::server::{serve_connection, ServerLimits};
use meshwork_waypoint::{ConnContext, L7Service, Options, TcpConnector, WaypointId};
use prometheus_client::registry::Registry;
use tokio::task::JoinHandle;
use tokio::time::Instant;

/// order-service answering every request directly (no upstream: only virtual time runs).
fn service() -> L7Service {
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .route(pb::RouteConfig {
            hostname: ORDER_HOST.into(),
            namespace: NS.into(),
            http: vec![pb::HttpRoute {
                direct_response: Some(pb::DirectResponse {
                    status: 200,
                    body: b"ok".to_vec(),
                }),
                ..Default::default()
            }],
            ..Default::default()
        });
    L7Service::new(
        ConfigHandle::fixed(m.snapshot()),
        Arc::new(TcpConnector),
        Options {
            waypoint: WaypointId {
                namespace: NS.into(),
                name: "waypoint".into(),
            },
            access_log: AccessLog::Off,
            ..Default::default()
        },
        &mut Registry::default(),
    )
}

/// A downstream HTTP/2 connection over an in-memory pipe; the task is the server side.
async fn connect() -> (h2::client::SendRequest<Bytes>, JoinHandle<()>) {
    let (client, server) = tokio::io::duplex(64 * 1024);
    let svc = service();
    let served = tokio::spawn(async move {
        let ctx = ConnContext {
            source_identity: Some(ORDER_SA.into()),
            source: None,
            destination: None,
        };
        serve_connection(server, svc, ctx, &ServerLimits::default()).await;
    });
    let (send, conn) = h2::client::handshake(client).await.unwrap();
    tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, served)
}

async fn get(send: &mut h2::client::SendRequest<Bytes>) -> u16 {
    let req = http::Request::builder()
        .uri("http://order-service/")
        .body(())
        .unwrap();
    let (resp, _) = send.send_request(req, true).unwrap();
    let resp = resp.await.unwrap();
    let status = resp.status().as_u16();
    let mut body = resp.into_body();
    while let Some(chunk) = body.data().await {
        let _ = body.flow_control().release_capacity(chunk.unwrap().len());
    }
    status
}

/// Waits (bounded, in virtual time) for the server side to end; returns when it did.
async fn ended(served: JoinHandle<()>, within: Duration) -> Instant {
    tokio::time::timeout(within, served)
        .await
        .expect("the waypoint kept the idle connection open")
        .unwrap();
    Instant::now()
}

#[tokio::test(start_paused = true)]
async fn attack_http2_connection_without_requests_is_closed() {
    let limits = ServerLimits::default();
    let start = Instant::now();
    let (_send, served) = connect().await;
    let at = ended(served, limits.header_read_timeout * 4).await;
    assert!(at - start >= limits.header_read_timeout, "{:?}", at - start);
}

#[tokio::test(start_paused = true)]
async fn attack_http2_connection_idle_after_its_requests_is_closed() {
    let limits = ServerLimits::default();
    let (mut send, mut served) = connect().await;
    // Used now and then for longer than the first-request deadline: kept.
    for _ in 0..3 {
        assert_eq!(get(&mut send).await, 200);
        tokio::time::sleep(limits.header_read_timeout * 2).await;
        assert!(!served.is_finished(), "closed while in use");
    }
    assert_eq!(get(&mut send).await, 200);
    let last = Instant::now();
    tokio::time::sleep(limits.idle_timeout - limits.header_read_timeout * 3).await;
    assert!(!served.is_finished(), "closed before the idle timeout");
    let at = ended(
        std::mem::replace(&mut served, tokio::spawn(async {})),
        limits.idle_timeout,
    )
    .await;
    let idle = at - last;
    assert!(idle >= limits.idle_timeout, "{idle:?}");
    assert!(
        idle <= limits.idle_timeout + limits.header_read_timeout,
        "{idle:?}"
    );
}

//! Idle HBONE connections: a peer that completes the TLS and HTTP/2 handshakes and then
//! opens no stream, or keeps a connection after its streams ended, holds a connection (a
//! TLS session, HTTP/2 state and a file descriptor) only for a bounded time: the handshake
//! deadline before its first stream, `idle_timeout` after its last one. Refused requests do
//! not extend it; an open tunnel is never cut by it.

mod common;
#[path = "support/tls.rs"]
mod tls;

use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use meshwork_hbone::{H2Settings, Server, ServerError};
use meshwork_identity::testing::TestCa;
use meshwork_identity::tls::{server_config, RotatingCert};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tokio_util::sync::CancellationToken;

const FIRST_STREAM: Duration = Duration::from_secs(1);
const IDLE: Duration = Duration::from_secs(2);
/// Far beyond both deadlines: the server must have given up by then.
const BOUND: Duration = Duration::from_secs(30);

/// An HBONE echo server with short deadlines, serving one connection.
async fn server(ca: &TestCa) -> (std::net::SocketAddr, JoinHandle<Result<(), ServerError>>) {
    let c = cert(ca, &id("b", "server"));
    let tls = server_config(c.roots(), RotatingCert::new(c.clone())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        let (sock, peer) = listener.accept().await.unwrap();
        let (seen, _) = mpsc::unbounded_channel();
        Server::new(H2Settings {
            handshake_timeout: FIRST_STREAM,
            idle_timeout: IDLE,
            ..Default::default()
        })
        .serve_tls(
            sock,
            tls,
            peer,
            addr,
            Echo { seen },
            CancellationToken::new(),
        )
        .await
    });
    (addr, served)
}

/// A client that completed TLS and the HTTP/2 handshake; the task drives the connection
/// and ends when the server closes it.
async fn connect(
    ca: &TestCa,
    addr: std::net::SocketAddr,
) -> (h2::client::SendRequest<Bytes>, JoinHandle<()>) {
    let config = client_tls(&cert(ca, &id("a", "attacker")), &id("b", "server"));
    let tls = tls::tls_connect(addr, config).await;
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    let driver = tokio::spawn(async move {
        let _ = conn.await;
    });
    (send, driver)
}

fn connect_request(authority: &str) -> http::Request<()> {
    http::Request::builder()
        .method("CONNECT")
        .uri(authority)
        .body(())
        .unwrap()
}

/// One complete tunnel: CONNECT, send `hello`, read the echo to its end.
async fn one_tunnel(send: &mut h2::client::SendRequest<Bytes>) {
    let (resp, mut stream) = send
        .send_request(connect_request("127.0.0.1:9"), false)
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    stream
        .send_data(Bytes::from_static(b"hello"), true)
        .unwrap();
    let mut body = resp.into_body();
    let mut echoed = Vec::new();
    while let Some(chunk) = body.data().await {
        let chunk = chunk.unwrap();
        let _ = body.flow_control().release_capacity(chunk.len());
        echoed.extend_from_slice(&chunk);
    }
    assert_eq!(echoed, b"hello");
}

/// Waits (bounded) until the server has closed the connection; returns when it did.
async fn closed_by_server(
    served: JoinHandle<Result<(), ServerError>>,
    driver: JoinHandle<()>,
) -> Instant {
    let result = tokio::time::timeout(BOUND, served)
        .await
        .expect("the server kept the idle connection open")
        .unwrap();
    let at = Instant::now();
    assert!(result.is_ok(), "{result:?}");
    tokio::time::timeout(BOUND, driver)
        .await
        .expect("the client's connection stayed open")
        .unwrap();
    at
}

#[tokio::test]
async fn attack_connection_that_opens_no_stream_is_closed() {
    let ca = TestCa::new(TD);
    let (addr, served) = server(&ca).await;
    let start = Instant::now();
    let (_send, driver) = connect(&ca, addr).await;
    let at = closed_by_server(served, driver).await;
    let took = at - start;
    assert!(
        took >= FIRST_STREAM - Duration::from_millis(100),
        "{took:?}"
    );
}

#[tokio::test]
async fn attack_connection_kept_after_its_streams_is_closed() {
    let ca = TestCa::new(TD);
    let (addr, served) = server(&ca).await;
    let (mut send, driver) = connect(&ca, addr).await;
    for _ in 0..3 {
        one_tunnel(&mut send).await;
    }
    let last = Instant::now();
    let at = closed_by_server(served, driver).await;
    // Closed for being idle, not for missing the first-stream deadline.
    let idle = at - last;
    assert!(idle >= IDLE - Duration::from_millis(500), "{idle:?}");
}

/// Requests the server refuses (not CONNECT to an `ip:port`) every 200 ms do not keep the
/// connection alive.
#[tokio::test]
async fn attack_refused_requests_do_not_keep_a_connection_open() {
    let ca = TestCa::new(TD);
    let (addr, served) = server(&ca).await;
    let (mut send, driver) = connect(&ca, addr).await;
    let pester = tokio::spawn(async move {
        for _ in 0..500 {
            let Ok((resp, _)) = send.send_request(connect_request("example.com:80"), true) else {
                return;
            };
            match resp.await {
                Ok(r) => assert_eq!(r.status(), 400),
                Err(_) => return,
            }
            tokio::time::sleep(Duration::from_millis(200)).await;
        }
    });
    closed_by_server(served, driver).await;
    pester.abort();
}

/// An open tunnel is not idle: it outlives both deadlines and still carries data.
#[tokio::test]
async fn open_tunnel_is_not_cut_by_the_idle_timeout() {
    let ca = TestCa::new(TD);
    let (addr, served) = server(&ca).await;
    let (mut send, _driver) = connect(&ca, addr).await;
    let (resp, mut stream) = send
        .send_request(connect_request("127.0.0.1:9"), false)
        .unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), 200);
    let mut body = resp.into_body();
    tokio::time::sleep(FIRST_STREAM + IDLE + Duration::from_secs(1)).await;
    assert!(
        !served.is_finished(),
        "the server closed a connection with an open tunnel"
    );
    stream
        .send_data(Bytes::from_static(b"still"), true)
        .unwrap();
    let mut echoed = Vec::new();
    while let Some(chunk) = tokio::time::timeout(BOUND, body.data()).await.unwrap() {
        echoed.extend_from_slice(&chunk.unwrap());
    }
    assert_eq!(echoed, b"still");
}

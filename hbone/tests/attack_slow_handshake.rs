//! Slowloris at the HBONE port: a client that trickles its TLS handshake, or completes TLS
//! and then never sends the HTTP/2 preface, holds a connection (and a file descriptor) only
//! until the handshake deadline.

mod common;

use std::time::{Duration, Instant};

use common::*;
use meshwork_hbone::{H2Settings, Server, ServerError};
use meshwork_identity::testing::TestCa;
use meshwork_identity::tls::{server_config, RotatingCert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

const DEADLINE: Duration = Duration::from_secs(1);

/// An HBONE server with a 1 s handshake deadline; returns its address and the result of
/// serving the first connection.
async fn server(
    ca: &TestCa,
) -> (
    std::net::SocketAddr,
    tokio::task::JoinHandle<Result<(), ServerError>>,
) {
    let c = cert(ca, &id("b", "server"));
    let tls = server_config(c.roots(), RotatingCert::new(c.clone())).unwrap();
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let served = tokio::spawn(async move {
        let (sock, peer) = listener.accept().await.unwrap();
        Server::new(H2Settings {
            handshake_timeout: DEADLINE,
            ..Default::default()
        })
        .serve_tls(sock, tls, peer, addr, Sink, CancellationToken::new())
        .await
    });
    (addr, served)
}

#[derive(Clone)]
struct Sink;

impl meshwork_hbone::ConnectHandler for Sink {
    async fn handle(&self, _req: meshwork_hbone::ConnectRequest, r: meshwork_hbone::Responder) {
        let _ = r.accept();
    }
}

/// Waits (bounded) for the server side to give up, then checks the client saw the close.
async fn assert_cut_off(
    served: tokio::task::JoinHandle<Result<(), ServerError>>,
    start: Instant,
) -> ServerError {
    let result = tokio::time::timeout(Duration::from_secs(20), served)
        .await
        .expect("the server never gave up on the slow client")
        .unwrap();
    let elapsed = start.elapsed();
    assert!(
        elapsed >= DEADLINE - Duration::from_millis(100),
        "{elapsed:?}"
    );
    result.expect_err("a slow handshake must fail")
}

/// A TLS ClientHello record header, then one byte every 100 ms (it would take minutes).
#[tokio::test]
async fn attack_trickled_tls_handshake_is_cut_off() {
    let ca = TestCa::new(TD);
    let (addr, served) = server(&ca).await;
    let mut tcp = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    tcp.write_all(&[0x16, 0x03, 0x01, 0x02, 0x00])
        .await
        .unwrap();
    let trickle = tokio::spawn(async move {
        for _ in 0..3000 {
            if tcp.write_all(&[0x01]).await.is_err() {
                return;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    });
    let err = assert_cut_off(served, start).await;
    trickle.abort();
    assert!(matches!(err, ServerError::HandshakeTimeout { .. }), "{err}");
}

/// TLS completes with a valid client certificate, then silence instead of the preface.
#[tokio::test]
async fn attack_silent_peer_after_tls_is_cut_off() {
    let ca = TestCa::new(TD);
    let (addr, served) = server(&ca).await;
    let config = client_tls(&cert(&ca, &id("a", "attacker")), &id("b", "server"));
    let tcp = TcpStream::connect(addr).await.unwrap();
    let start = Instant::now();
    let mut tls = TlsConnector::from(config)
        .connect(
            rustls::pki_types::ServerName::IpAddress(addr.ip().into()),
            tcp,
        )
        .await
        .unwrap();
    let err = assert_cut_off(served, start).await;
    assert!(matches!(err, ServerError::HandshakeTimeout { .. }), "{err}");
    // The attacker's connection is closed.
    let mut buf = Vec::new();
    let read = tokio::time::timeout(Duration::from_secs(5), tls.read_to_end(&mut buf)).await;
    assert!(read.is_ok(), "the connection stayed open");
}

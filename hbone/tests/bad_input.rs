//! Garbage on the HBONE port gets a clean refusal, never a panic.

mod common;

use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::{Method, Request, StatusCode};
use meshwork_hbone::{ConnInfo, ConnectHandler, ConnectRequest, H2Settings, Responder, Server};
use meshwork_identity::testing::TestCa;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::TlsConnector;
use tokio_util::sync::CancellationToken;

async fn tls_to(
    srv: &EchoServer,
    config: Arc<rustls::ClientConfig>,
) -> tokio_rustls::client::TlsStream<TcpStream> {
    let tcp = TcpStream::connect(srv.addr).await.unwrap();
    TlsConnector::from(config)
        .connect(
            rustls::pki_types::ServerName::IpAddress(srv.addr.ip().into()),
            tcp,
        )
        .await
        .unwrap()
}

#[tokio::test]
async fn plaintext_is_refused_at_tls() {
    let ca = TestCa::new(TD);
    let mut srv = echo_server(cert(&ca, &id("b", "server"))).await;
    let mut tcp = TcpStream::connect(srv.addr).await.unwrap();
    tcp.write_all(b"GET / HTTP/1.1\r\nHost: x\r\n\r\n")
        .await
        .unwrap();
    let mut buf = Vec::new();
    let _ = tcp.read_to_end(&mut buf).await;
    let e = srv.errors.recv().await.unwrap();
    assert!(e.contains("TLS handshake"), "{e}");
}

#[tokio::test]
async fn tls_without_h2_alpn_is_refused() {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let mut srv = echo_server(cert(&ca, &server)).await;
    let mut config = (*client_tls(&cert(&ca, &client), &server)).clone();
    config.alpn_protocols.clear();
    let mut tls = tls_to(&srv, Arc::new(config)).await;
    let mut buf = Vec::new();
    let _ = tls.read_to_end(&mut buf).await;
    let e = srv.errors.recv().await.unwrap();
    assert!(e.contains("ALPN"), "{e}");
}

#[tokio::test]
async fn non_connect_methods_get_405_and_connection_survives() {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let srv = echo_server(cert(&ca, &server)).await;
    let tls = tls_to(&srv, client_tls(&cert(&ca, &client), &server)).await;
    let (mut send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    for method in [Method::GET, Method::POST] {
        let req = Request::builder()
            .method(method)
            .uri("https://10.0.0.5:8080/")
            .body(())
            .unwrap();
        send = send.ready().await.unwrap();
        let (resp, _) = send.send_request(req, true).unwrap();
        assert_eq!(resp.await.unwrap().status(), StatusCode::METHOD_NOT_ALLOWED);
    }
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("10.0.0.5:8080")
        .body(())
        .unwrap();
    send = send.ready().await.unwrap();
    let (resp, mut body_tx) = send.send_request(req, false).unwrap();
    let resp = resp.await.unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    body_tx
        .send_data(Bytes::from_static(b"ping"), true)
        .unwrap();
    let mut body = resp.into_body();
    let data = body.data().await.unwrap().unwrap();
    assert_eq!(&data[..], b"ping");
}

/// Accepts every CONNECT and drops the tunnel.
#[derive(Clone)]
struct Sink;

impl ConnectHandler for Sink {
    async fn handle(&self, _req: ConnectRequest, responder: Responder) {
        let _ = responder.accept();
    }
}

fn info() -> ConnInfo {
    ConnInfo {
        peer_addr: "127.0.0.1:1000".parse().unwrap(),
        local_addr: "127.0.0.1:15008".parse().unwrap(),
        peer_identity: id("a", "fuzz"),
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// A random sequence of syntactically framed HTTP/2 frames with random payloads.
fn random_frames(rng: &mut StdRng) -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    for _ in 0..rng.random_range(0..8) {
        let len: usize = rng.random_range(0..48);
        let ty: u8 = rng.random_range(0..12);
        let flags: u8 = rng.random();
        let stream: u32 = if rng.random_bool(0.3) {
            0
        } else {
            rng.random_range(1..8)
        };
        out.extend_from_slice(&(len as u32).to_be_bytes()[1..]);
        out.push(ty);
        out.push(flags);
        out.extend_from_slice(&stream.to_be_bytes());
        out.extend((0..len).map(|_| rng.random::<u8>()));
    }
    out
}

async fn feed<F, Fut>(input: Vec<u8>, serve: F)
where
    F: FnOnce(tokio::io::DuplexStream) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    let (mut client, server_io) = tokio::io::duplex(64 * 1024);
    let task = tokio::spawn(serve(server_io));
    let _ = client.write_all(&input).await;
    let _ = client.shutdown().await;
    // Read whatever the server answers so it never blocks on a full pipe.
    let drain = async {
        let mut buf = vec![0; 4096];
        while let Ok(n) = client.read(&mut buf).await {
            if n == 0 {
                break;
            }
        }
    };
    let _ = tokio::time::timeout(Duration::from_secs(5), drain).await;
    drop(client);
    match tokio::time::timeout(Duration::from_secs(5), task).await {
        Ok(Err(e)) if e.is_panic() => panic!("server panicked on input {input:02x?}"),
        _ => {}
    }
}

#[tokio::test]
async fn random_h2_frames_never_panic() {
    let server = Server::new(H2Settings {
        handshake_timeout: Duration::from_secs(1),
        ..Default::default()
    });
    let mut rng = StdRng::seed_from_u64(0x4b0e);
    let refused = Arc::new(AtomicUsize::new(0));
    for _ in 0..3000 {
        let input = random_frames(&mut rng);
        let (server, refused) = (server.clone(), refused.clone());
        feed(input, move |io| async move {
            if server
                .serve_h2(io, info(), Sink, CancellationToken::new())
                .await
                .is_err()
            {
                refused.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
    }
    // Most random frame sequences are protocol errors; the server must have said so.
    assert!(refused.load(Ordering::Relaxed) > 1000, "{refused:?}");
}

#[tokio::test]
async fn random_bytes_never_panic() {
    let ca = TestCa::new(TD);
    let c = cert(&ca, &id("b", "server"));
    let tls = meshwork_identity::tls::server_config(
        c.roots(),
        meshwork_identity::tls::RotatingCert::new(c.clone()),
    )
    .unwrap();
    let server = Server::new(H2Settings {
        handshake_timeout: Duration::from_secs(1),
        ..Default::default()
    });
    let mut rng = StdRng::seed_from_u64(0x5eed);
    let refused = Arc::new(AtomicUsize::new(0));
    for i in 0..2000 {
        let len = rng.random_range(0..512);
        let mut input: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        // Half the cases start like a TLS handshake record to get past the first check.
        if i % 2 == 0 && input.len() > 5 {
            input[..3].copy_from_slice(&[0x16, 0x03, 0x01]);
        }
        let (server, tls, refused) = (server.clone(), tls.clone(), refused.clone());
        feed(input, move |io| async move {
            let i = info();
            let r = server
                .serve_tls(
                    io,
                    tls,
                    i.peer_addr,
                    i.local_addr,
                    Sink,
                    CancellationToken::new(),
                )
                .await;
            if r.is_err() {
                refused.fetch_add(1, Ordering::Relaxed);
            }
        })
        .await;
    }
    assert_eq!(refused.load(Ordering::Relaxed), 2000);
    // Random bytes after a valid preface, fed to the HTTP/2 layer directly.
    for _ in 0..1000 {
        let len = rng.random_range(0..256);
        let mut input = PREFACE.to_vec();
        input.extend((0..len).map(|_| rng.random::<u8>()));
        let server = server.clone();
        feed(input, move |io| async move {
            let _ = server
                .serve_h2(io, info(), Sink, CancellationToken::new())
                .await;
        })
        .await;
    }
}

//! Downstream protocols: HTTP/2 requests, malformed HTTP, oversized headers, HTTP/2 garbage.
//! None of it may take the proxy down.

mod common;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

async fn simple() -> Proxy {
    let v1 = named("v1").await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10").workload(
        "order-v1",
        "order-service",
        "v1",
        "order-service",
        v1.addr.port(),
    );
    proxy(m.snapshot(), Some(ORDER_SA)).await
}

async fn raw(addr: std::net::SocketAddr, bytes: &[u8]) -> String {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(bytes).await.unwrap();
    let mut out = Vec::new();
    let _ = tokio::time::timeout(Duration::from_secs(2), s.read_to_end(&mut out)).await;
    String::from_utf8_lossy(&out).into_owned()
}

async fn still_serving(p: &Proxy) {
    let (status, body, _) = send(&client(), p.addr, "GET", "order-service", "/", &[]).await;
    assert_eq!((status, body.as_str()), (200, "v1"));
}

#[tokio::test]
async fn http2_downstream() {
    let p = simple().await;
    let s = TcpStream::connect(p.addr).await.unwrap();
    let (mut send_req, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    for _ in 0..5 {
        let req = http::Request::builder()
            .uri("http://order-service/h2")
            .body(Full::new(Bytes::new()))
            .unwrap();
        let resp = send_req.send_request(req).await.unwrap();
        assert_eq!(resp.status(), 200);
        let body = resp.into_body().collect().await.unwrap().to_bytes();
        assert_eq!(&body[..], b"v1");
    }
    let log = wait_log(&p, 5).await;
    assert_eq!(log[0]["protocol"], "HTTP/2");
}

#[tokio::test]
async fn malformed_http1_gets_400() {
    let p = simple().await;
    let out = raw(p.addr, b"THIS IS NOT HTTP\r\n\r\n").await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    let out = raw(
        p.addr,
        b"GET / HTTP/1.1\r\nHost: order-service\r\nContent-Length: x\r\n\r\n",
    )
    .await;
    assert!(out.starts_with("HTTP/1.1 400"), "{out:?}");
    still_serving(&p).await;
}

#[tokio::test]
async fn oversized_headers_get_431() {
    let p = simple().await;
    let big = "a".repeat(100 * 1024);
    let req = format!("GET / HTTP/1.1\r\nHost: order-service\r\nx-big: {big}\r\n\r\n");
    let out = raw(p.addr, req.as_bytes()).await;
    assert!(
        out.starts_with("HTTP/1.1 431"),
        "{:?}",
        &out[..out.len().min(80)]
    );
    still_serving(&p).await;
}

#[tokio::test]
async fn oversized_headers_over_h2_are_refused() {
    let p = simple().await;
    let s = TcpStream::connect(p.addr).await.unwrap();
    let (mut send_req, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .uri("http://order-service/")
        .header("x-big", "b".repeat(100 * 1024))
        .body(Full::new(Bytes::new()))
        .unwrap();
    match send_req.send_request(req).await {
        Ok(resp) => assert_eq!(resp.status(), 431),
        Err(e) => assert!(!e.to_string().is_empty()),
    }
    still_serving(&p).await;
}

#[tokio::test]
async fn http2_garbage_is_a_protocol_error() {
    let p = simple().await;
    let mut bytes = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    // A frame header claiming a huge DATA frame on stream 0, then junk.
    bytes.extend_from_slice(&[0xff, 0xff, 0xff, 0x00, 0x00, 0x00, 0x00, 0x00, 0x00]);
    bytes.extend_from_slice(&[0xde; 64]);
    let _ = raw(p.addr, &bytes).await;
    // Truncated preface.
    let _ = raw(p.addr, b"PRI * HTTP/2.0\r\n").await;
    still_serving(&p).await;
}

//! Attack (issue #18 item 11): a slow or large upload against a route with a timeout.
//!
//! The route timeout and the per-try timeout count from the end of the downstream request
//! (Envoy's semantics), so an upload still arriving is not answered `504 UT` halfway; a
//! backend slow to answer after the body is still cut by the timeout.
//! Real sockets on 127.0.0.1; the upload lasts about 3 s against a 1 s timeout.

mod common;

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_model::pb::config as pb;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

/// Reads the whole body, waits `delay`, answers 200 with the number of bytes received.
async fn counting_backend(delay: Duration) -> (SocketAddr, Arc<AtomicUsize>) {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let full_bodies = Arc::new(AtomicUsize::new(0));
    let seen = full_bodies.clone();
    tokio::spawn(async move {
        for _ in 0..100 {
            let Ok((s, _)) = l.accept().await else { return };
            let seen = seen.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let seen = seen.clone();
                    async move {
                        let n = match req.into_body().collect().await {
                            Ok(b) => b.to_bytes().len(),
                            // Cut off mid-body: not a full body.
                            Err(_) => return Ok(hyper::Response::new(Full::new(Bytes::new()))),
                        };
                        seen.fetch_add(1, Ordering::SeqCst);
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                            n.to_string(),
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    (addr, full_bodies)
}

fn route(timeout_ms: u64, retries: Option<pb::Retry>) -> pb::RouteConfig {
    pb::RouteConfig {
        hostname: PAYMENT_HOST.into(),
        namespace: NS.into(),
        http: vec![pb::HttpRoute {
            route: vec![dest(PAYMENT_HOST, "", 100)],
            timeout_ms,
            has_timeout: timeout_ms > 0,
            retries,
            ..Default::default()
        }],
        ..Default::default()
    }
}

async fn payment_proxy(backend: SocketAddr, route: pb::RouteConfig) -> Proxy {
    let mut m = Mesh::default();
    m.service("payment-service", "240.240.0.20");
    m.workload(
        "payment-0",
        "payment-service",
        "v1",
        "payment-service",
        backend.port(),
    );
    m.route(route);
    proxy(m.snapshot(), Some(ORDER_SA)).await
}

/// How the upload announces its length.
#[derive(Clone, Copy, Debug)]
enum Framing {
    Chunked,
    /// `Content-Length`, larger than the 1 MiB the waypoint buffers for retries.
    Length,
}

/// POSTs `pieces` pieces of `piece` bytes, one every `every`, over a raw HTTP/1.1
/// connection; returns the status and body of the answer and when it came.
async fn slow_post(
    proxy: SocketAddr,
    framing: Framing,
    pieces: usize,
    piece: usize,
    every: Duration,
) -> (u16, String, Instant) {
    let s = TcpStream::connect(proxy).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let framing_header = match framing {
        Framing::Chunked => "transfer-encoding: chunked".to_string(),
        Framing::Length => format!("content-length: {}", pieces * piece),
    };
    let head = format!(
        "POST /upload HTTP/1.1\r\nhost: payment-service\r\n{framing_header}\r\n\
         content-type: application/octet-stream\r\n\r\n"
    );
    wr.write_all(head.as_bytes()).await.unwrap();
    let writer = tokio::spawn(async move {
        let data = vec![b'u'; piece];
        for _ in 0..pieces {
            tokio::time::sleep(every).await;
            let sent = match framing {
                Framing::Chunked => {
                    let mut c = format!("{piece:x}\r\n").into_bytes();
                    c.extend_from_slice(&data);
                    c.extend_from_slice(b"\r\n");
                    wr.write_all(&c).await
                }
                Framing::Length => wr.write_all(&data).await,
            };
            // The proxy may answer and close before the upload is done (the attack).
            if sent.is_err() {
                return wr;
            }
        }
        if let Framing::Chunked = framing {
            let _ = wr.write_all(b"0\r\n\r\n").await;
        }
        wr
    });
    // Read the response head and a Content-Length body.
    let mut buf = Vec::new();
    let mut tmp = [0u8; 4096];
    let done = tokio::time::timeout(Duration::from_secs(30), async {
        loop {
            let n = rd.read(&mut tmp).await.unwrap_or(0);
            if n == 0 {
                return;
            }
            buf.extend_from_slice(&tmp[..n]);
            let text = String::from_utf8_lossy(&buf);
            if let Some(end) = text.find("\r\n\r\n") {
                let len = text[..end]
                    .lines()
                    .find_map(|l| {
                        let (k, v) = l.split_once(':')?;
                        k.eq_ignore_ascii_case("content-length")
                            .then(|| v.trim().parse::<usize>().ok())?
                    })
                    .unwrap_or(0);
                if buf.len() >= end + 4 + len {
                    return;
                }
            }
        }
    })
    .await;
    assert!(done.is_ok(), "no answer within 30 s");
    let at = Instant::now();
    let _ = tokio::time::timeout(Duration::from_secs(10), writer).await;
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .unwrap_or_else(|| panic!("not an HTTP response: {text:?}"));
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body, at)
}

#[tokio::test]
async fn attack_slow_upload_is_not_cut_by_the_route_timeout() {
    let (backend, full_bodies) = counting_backend(Duration::ZERO).await;
    let p = payment_proxy(backend, route(1000, None)).await;
    let every = Duration::from_millis(300);
    // 10 pieces over 3 s, chunked and as a 2 MiB Content-Length body, at the same time.
    let (chunked, sized) = tokio::join!(
        slow_post(p.addr, Framing::Chunked, 10, 1000, every),
        slow_post(p.addr, Framing::Length, 10, 200 * 1024, every),
    );
    assert_eq!(
        (chunked.0, chunked.1.as_str()),
        (200, "10000"),
        "chunked upload"
    );
    assert_eq!(
        (sized.0, sized.1.as_str()),
        (200, "2048000"),
        "Content-Length upload"
    );
    assert_eq!(full_bodies.load(Ordering::SeqCst), 2);
    let log = wait_log(&p, 2).await;
    for e in &log {
        assert_eq!(e["response_flags"], "-", "{e}");
    }
}

#[tokio::test]
async fn attack_slow_upload_is_not_cut_by_the_per_try_timeout() {
    let (backend, full_bodies) = counting_backend(Duration::ZERO).await;
    let retry = pb::Retry {
        attempts: 2,
        per_try_timeout_ms: 1000,
        retry_on: vec!["5xx,reset".into()],
        backoff_ms: 5,
        ..Default::default()
    };
    // No route timeout: only the per-try one.
    let p = payment_proxy(backend, route(0, Some(retry))).await;
    let (status, body, _) = slow_post(
        p.addr,
        Framing::Chunked,
        10,
        1000,
        Duration::from_millis(300),
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "10000"));
    assert_eq!(full_bodies.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn attack_slow_backend_after_the_upload_still_times_out() {
    let (backend, full_bodies) = counting_backend(Duration::from_secs(2)).await;
    let p = payment_proxy(backend, route(1000, None)).await;
    let start = Instant::now();
    // 5 pieces over 1.5 s, then the backend takes 2 s: the 1 s timer runs from the end of
    // the upload.
    let (status, body, at) = slow_post(
        p.addr,
        Framing::Chunked,
        5,
        1000,
        Duration::from_millis(300),
    )
    .await;
    assert_eq!(status, 504, "{body}");
    assert!(body.contains("upstream request timeout"), "{body}");
    assert_eq!(
        full_bodies.load(Ordering::SeqCst),
        1,
        "the body got through"
    );
    // Not before the upload ended (1.5 s) plus most of the timeout; generous upper bound.
    let took = at - start;
    assert!(took >= Duration::from_millis(2000), "504 after {took:?}");
    assert!(took < Duration::from_secs(10), "504 after {took:?}");
    let log = wait_log(&p, 1).await;
    assert_eq!(log[0]["response_flags"], "UT");
}

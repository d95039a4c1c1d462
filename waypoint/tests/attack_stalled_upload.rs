//! Attack: an upload that stops. The route and per-try timeouts start when the request has
//! been received in full (Envoy's semantics), so a client that sends part of a body and
//! then nothing would hold the request, the upstream request and its connection forever.
//! The stream idle timeout (Envoy's `stream_idle_timeout`, 5 min by default) ends it with
//! `408` and response flag `SI`; an upload that is slow but keeps sending is not cut.
//! Paused time: the upstream is an in-memory hyper server behind a connector.

mod common;

use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full, StreamBody};
use hyper::body::Frame;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_model::pb::config as pb;
use meshwork_waypoint::connector::{BoxedIo, Connector, Target};
use meshwork_waypoint::{ConnContext, L7Service};
use tokio::sync::mpsc;
use tokio::time::Instant;

const IDLE: Duration = Duration::from_secs(300);

type BoxError = Box<dyn std::error::Error + Send + Sync>;
type Part = Result<Frame<Bytes>, BoxError>;

/// An in-memory upstream that reads the whole body and answers with its length; counts the
/// bodies it received in full.
#[derive(Clone, Default)]
struct Upstream {
    full_bodies: Arc<AtomicUsize>,
}

impl Connector for Upstream {
    fn connect(&self, _target: &Target) -> BoxFuture<'static, std::io::Result<BoxedIo>> {
        let full = self.full_bodies.clone();
        Box::pin(async move {
            let (client, server) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let full = full.clone();
                    async move {
                        let n = match req.into_body().collect().await {
                            Ok(b) => b.to_bytes().len(),
                            Err(_) => return Ok(hyper::Response::new(Full::new(Bytes::new()))),
                        };
                        full.fetch_add(1, Ordering::SeqCst);
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from(
                            n.to_string(),
                        ))))
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(server), svc)
                    .await;
            });
            Ok(Box::new(client) as BoxedIo)
        })
    }
}

fn service(up: &Upstream) -> (L7Service, Arc<Mutex<Vec<String>>>) {
    let mut m = Mesh::default();
    m.service("payment-service", "240.240.0.20")
        .workload("payment-0", "payment-service", "v1", "payment-service", 1)
        .route(pb::RouteConfig {
            hostname: PAYMENT_HOST.into(),
            namespace: NS.into(),
            http: vec![pb::HttpRoute {
                route: vec![dest(PAYMENT_HOST, "", 100)],
                // A route timeout too: it starts only once the body has ended.
                timeout_ms: 10_000,
                has_timeout: true,
                ..Default::default()
            }],
            ..Default::default()
        });
    logged_service(m.snapshot(), Arc::new(up.clone()))
}

/// A POST whose body is what is sent on the returned channel (no length: streamed).
fn post() -> (
    http::Request<StreamBody<impl futures::Stream<Item = Part>>>,
    mpsc::Sender<Part>,
) {
    let (tx, mut rx) = mpsc::channel::<Part>(1);
    let frames = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
    let req = http::Request::builder()
        .method("POST")
        .uri("/upload")
        .header("host", "payment-service")
        .body(StreamBody::new(frames))
        .unwrap();
    (req, tx)
}

fn ctx() -> ConnContext {
    ConnContext {
        source_identity: Some(ORDER_SA.into()),
        ..Default::default()
    }
}

#[tokio::test(start_paused = true)]
async fn attack_stalled_upload_is_ended_by_the_stream_idle_timeout() {
    let up = Upstream::default();
    let (svc, log) = service(&up);
    let (req, tx) = post();
    let sender = tokio::spawn(async move {
        for _ in 0..3 {
            tx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(60)).await;
        }
        // Then nothing, with the stream still open (the sender is kept).
        tokio::time::sleep(Duration::from_secs(100 * 3600)).await;
        drop(tx);
    });
    let start = Instant::now();
    let resp = tokio::time::timeout(Duration::from_secs(3600), svc.handle(req, &ctx()))
        .await
        .expect("the stalled upload was never ended");
    let took = start.elapsed();
    assert_eq!(resp.status(), 408);
    // The last part was sent at 120 s; the body then stayed silent for the idle timeout.
    assert!(took >= Duration::from_secs(120) + IDLE, "{took:?}");
    assert!(took <= Duration::from_secs(180) + IDLE, "{took:?}");
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"stream timeout\n");
    let line = log.lock().unwrap()[0].clone();
    assert!(line.contains("\"response_flags\":\"SI\""), "{line}");
    assert!(
        line.contains("\"response_code_details\":\"stream_idle_timeout\""),
        "{line}"
    );
    assert_eq!(up.full_bodies.load(Ordering::SeqCst), 0);
    sender.abort();
}

#[tokio::test(start_paused = true)]
async fn slow_upload_that_keeps_sending_is_not_cut() {
    let up = Upstream::default();
    let (svc, _log) = service(&up);
    let (req, tx) = post();
    // A part every 4 min for 40 min: far beyond the idle timeout in total, never idle.
    let sender = tokio::spawn(async move {
        for _ in 0..10 {
            tx.send(Ok(Frame::data(Bytes::from_static(b"part"))))
                .await
                .unwrap();
            tokio::time::sleep(Duration::from_secs(240)).await;
        }
        drop(tx);
    });
    let resp = tokio::time::timeout(Duration::from_secs(3 * 3600), svc.handle(req, &ctx()))
        .await
        .expect("no answer");
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    assert_eq!(&body[..], b"40");
    assert_eq!(up.full_bodies.load(Ordering::SeqCst), 1);
    sender.await.unwrap();
}

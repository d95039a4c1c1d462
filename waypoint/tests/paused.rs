//! Time-based behaviour with paused tokio time: upstreams are in-memory hyper servers behind a
//! connector, so virtual time drives timeouts, per-try timeouts, backoff and ejection.

mod common;

use std::collections::HashMap;
use std::convert::Infallible;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_model::pb::config as pb;
use meshwork_waypoint::connector::{BoxedIo, Connector, Target};
use meshwork_waypoint::{ConnContext, L7Service};
use tokio::time::Instant;

type Behave = Arc<dyn Fn(usize) -> (u16, Duration) + Send + Sync>;
type Endpoints = HashMap<u16, (Behave, Arc<AtomicUsize>)>;

/// In-memory endpoints keyed by port.
#[derive(Clone, Default)]
struct Mem {
    by_port: Arc<Mutex<Endpoints>>,
}

impl Mem {
    fn add(&self, port: u16, f: Behave) -> Arc<AtomicUsize> {
        let hits = Arc::new(AtomicUsize::new(0));
        self.by_port.lock().unwrap().insert(port, (f, hits.clone()));
        hits
    }
}

impl Connector for Mem {
    fn connect(&self, target: &Target) -> BoxFuture<'static, std::io::Result<BoxedIo>> {
        let entry = self
            .by_port
            .lock()
            .unwrap()
            .get(&target.addr.port())
            .cloned();
        Box::pin(async move {
            let (f, hits) =
                entry.ok_or_else(|| std::io::Error::from(std::io::ErrorKind::ConnectionRefused))?;
            let (client, server) = tokio::io::duplex(64 * 1024);
            tokio::spawn(async move {
                let svc = service_fn(move |_req: hyper::Request<hyper::body::Incoming>| {
                    let n = hits.fetch_add(1, Ordering::SeqCst);
                    let (status, delay) = f(n);
                    async move {
                        tokio::time::sleep(delay).await;
                        let mut r = hyper::Response::new(Full::new(Bytes::from(format!("{n}"))));
                        *r.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(r)
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

fn service(mesh: &Mesh, mem: &Mem) -> (L7Service, Arc<Mutex<Vec<String>>>) {
    logged_service(mesh.snapshot(), Arc::new(mem.clone()))
}

async fn get(svc: &L7Service, host: &str) -> (u16, String) {
    let req = http::Request::builder()
        .uri("/")
        .header("host", host)
        .body(Full::new(Bytes::new()))
        .unwrap();
    let ctx = ConnContext {
        source_identity: Some(ORDER_SA.into()),
        ..Default::default()
    };
    let resp = svc.handle(req, &ctx).await;
    let status = resp.status().as_u16();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned())
}

fn single_route(
    host: &str,
    timeout_ms: u64,
    retry: Option<pb::Retry>,
    policy: Option<pb::TrafficPolicy>,
) -> pb::RouteConfig {
    pb::RouteConfig {
        hostname: host.into(),
        namespace: NS.into(),
        http: vec![pb::HttpRoute {
            route: vec![dest(host, "", 100)],
            timeout_ms,
            has_timeout: timeout_ms > 0,
            retries: retry,
            ..Default::default()
        }],
        traffic_policy: policy,
        ..Default::default()
    }
}

fn mesh_with(ports: &[u16], route: pb::RouteConfig) -> Mesh {
    let mut m = Mesh::default();
    m.service("payment-service", "240.240.0.20");
    for (i, p) in ports.iter().enumerate() {
        m.workload(
            &format!("payment-{i}"),
            "payment-service",
            "v1",
            "payment-service",
            *p,
        );
    }
    m.route(route);
    m
}

#[tokio::test(start_paused = true)]
async fn seed_timeout_is_exactly_ten_seconds() {
    let mem = Mem::default();
    mem.add(1, Arc::new(|_| (200, Duration::from_secs(60))));
    let (svc, log) = service(
        &mesh_with(
            &[1],
            single_route(PAYMENT_HOST, 10_000, Some(pb::Retry::default()), None),
        ),
        &mem,
    );
    let start = Instant::now();
    let (status, body) = get(&svc, "payment-service").await;
    assert_eq!((status, body.as_str()), (504, "upstream request timeout"));
    assert_eq!(start.elapsed(), Duration::from_secs(10));
    assert!(log.lock().unwrap()[0].contains("\"response_flags\":\"UT\""));
}

#[tokio::test(start_paused = true)]
async fn per_try_timeouts_and_backoff_fit_in_the_route_timeout() {
    let mem = Mem::default();
    // Every try hangs: 1 + 3 retries of 3 s each, plus jittered backoff (≤ 25, 75, 175 ms).
    let hits = mem.add(1, Arc::new(|_| (200, Duration::from_secs(60))));
    let retry = pb::Retry {
        attempts: 3,
        per_try_timeout_ms: 3000,
        retry_on: vec![
            "5xx".into(),
            "reset".into(),
            "connect-failure".into(),
            "refused-stream".into(),
        ],
        ..Default::default()
    };
    let (svc, _) = service(
        &mesh_with(
            &[1],
            single_route(PAYMENT_HOST, 20_000, Some(retry.clone()), None),
        ),
        &mem,
    );
    let start = Instant::now();
    let (status, _) = get(&svc, "payment-service").await;
    let took = start.elapsed();
    assert_eq!(status, 504);
    assert_eq!(hits.load(Ordering::SeqCst), 4);
    assert!(took >= Duration::from_secs(12), "{took:?}");
    assert!(
        took <= Duration::from_millis(12_000 + 25 + 75 + 175),
        "{took:?}"
    );

    // With the seed's 10 s route timeout the fourth try is cut short: 504 at 10 s.
    let mem = Mem::default();
    mem.add(1, Arc::new(|_| (200, Duration::from_secs(60))));
    let (svc, _) = service(
        &mesh_with(&[1], single_route(PAYMENT_HOST, 10_000, Some(retry), None)),
        &mem,
    );
    let start = Instant::now();
    assert_eq!(get(&svc, "payment-service").await.0, 504);
    assert_eq!(start.elapsed(), Duration::from_secs(10));
}

#[tokio::test(start_paused = true)]
async fn backoff_is_exponential_with_jitter() {
    let mem = Mem::default();
    let hits = mem.add(1, Arc::new(|_| (503, Duration::ZERO)));
    let retry = pb::Retry {
        attempts: 5,
        retry_on: vec!["5xx".into()],
        ..Default::default()
    };
    let (svc, _) = service(
        &mesh_with(&[1], single_route(PAYMENT_HOST, 0, Some(retry), None)),
        &mem,
    );
    let mut totals = Vec::new();
    for _ in 0..20 {
        let start = Instant::now();
        assert_eq!(get(&svc, "payment-service").await.0, 503);
        totals.push(start.elapsed());
    }
    assert_eq!(hits.load(Ordering::SeqCst), 20 * 6);
    // Ceilings: 25, 75, 175, 250 (capped), 250 ms.
    let max = Duration::from_millis(25 + 75 + 175 + 250 + 250);
    assert!(totals.iter().all(|t| *t <= max), "{totals:?}");
    let distinct: std::collections::HashSet<_> = totals.iter().collect();
    assert!(distinct.len() > 10, "jittered: {totals:?}");
}

#[tokio::test(start_paused = true)]
async fn ejected_endpoint_returns_after_base_time_then_twice_as_long() {
    let mem = Mem::default();
    let bad_on = Arc::new(std::sync::atomic::AtomicBool::new(true));
    let b = bad_on.clone();
    let bad = mem.add(
        1,
        Arc::new(move |_| {
            (
                if b.load(Ordering::SeqCst) { 503 } else { 200 },
                Duration::ZERO,
            )
        }),
    );
    let good = mem.add(2, Arc::new(|_| (200, Duration::ZERO)));
    let policy = pb::TrafficPolicy {
        outlier_detection: Some(pb::OutlierDetection {
            consecutive_5xx_errors: 3,
            interval_ms: 30_000,
            base_ejection_time_ms: 60_000,
            max_ejection_percent: 50,
            ..Default::default()
        }),
        load_balancer: Some(pb::LoadBalancer {
            simple: pb::load_balancer::Simple::RoundRobin as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let retry = pb::Retry::default();
    let (svc, _) = service(
        &mesh_with(
            &[1, 2],
            single_route(PAYMENT_HOST, 0, Some(retry), Some(policy)),
        ),
        &mem,
    );
    for _ in 0..10 {
        get(&svc, "payment-service").await;
    }
    assert_eq!(bad.load(Ordering::SeqCst), 3);
    // Ejected for 60 s.
    tokio::time::advance(Duration::from_secs(59)).await;
    for _ in 0..4 {
        get(&svc, "payment-service").await;
    }
    assert_eq!(bad.load(Ordering::SeqCst), 3);
    tokio::time::advance(Duration::from_secs(1)).await;
    // Back, fails 3 more times: ejected again for 120 s.
    for _ in 0..8 {
        get(&svc, "payment-service").await;
    }
    assert_eq!(bad.load(Ordering::SeqCst), 6);
    tokio::time::advance(Duration::from_secs(119)).await;
    for _ in 0..4 {
        get(&svc, "payment-service").await;
    }
    assert_eq!(
        bad.load(Ordering::SeqCst),
        6,
        "second ejection lasts 2 × base"
    );
    bad_on.store(false, Ordering::SeqCst);
    tokio::time::advance(Duration::from_secs(1)).await;
    for _ in 0..4 {
        assert_eq!(get(&svc, "payment-service").await.0, 200);
    }
    assert!(bad.load(Ordering::SeqCst) > 6);
    assert!(good.load(Ordering::SeqCst) > 0);
}

#[tokio::test(start_paused = true)]
async fn pending_requests_wait_for_the_connection_and_overflow_fails_fast() {
    let mem = Mem::default();
    mem.add(1, Arc::new(|_| (200, Duration::from_secs(1))));
    let policy = pb::TrafficPolicy {
        connection_pool: Some(pb::ConnectionPool {
            max_connections: 1,
            http1_max_pending_requests: 1,
            ..Default::default()
        }),
        ..Default::default()
    };
    let (svc, _) = service(
        &mesh_with(
            &[1],
            single_route(PAYMENT_HOST, 0, Some(pb::Retry::default()), Some(policy)),
        ),
        &mem,
    );
    let start = Instant::now();
    let a = tokio::spawn({
        let svc = svc.clone();
        async move { (get(&svc, "payment-service").await.0, start.elapsed()) }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let b = tokio::spawn({
        let svc = svc.clone();
        async move { (get(&svc, "payment-service").await.0, start.elapsed()) }
    });
    tokio::time::sleep(Duration::from_millis(10)).await;
    let (c, c_took) = (get(&svc, "payment-service").await.0, start.elapsed());
    assert_eq!(c, 503, "third request overflows");
    assert_eq!(c_took, Duration::from_millis(20), "immediately");
    let (a, a_took) = a.await.unwrap();
    let (b, b_took) = b.await.unwrap();
    assert_eq!((a, b), (200, 200));
    assert_eq!(a_took, Duration::from_secs(1));
    assert_eq!(
        b_took,
        Duration::from_secs(2),
        "the pending request reused the one connection"
    );
}

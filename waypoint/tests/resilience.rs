//! Retries, pool limits and outlier detection against real backends (seed 03 shape).

mod common;

use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use meshwork_model::pb::config as pb;

fn payment_route(retry: Option<pb::Retry>, policy: pb::TrafficPolicy) -> pb::RouteConfig {
    pb::RouteConfig {
        hostname: PAYMENT_HOST.into(),
        namespace: NS.into(),
        http: vec![pb::HttpRoute {
            route: vec![dest(PAYMENT_HOST, "", 100)],
            timeout_ms: 5000,
            has_timeout: true,
            retries: retry,
            ..Default::default()
        }],
        traffic_policy: Some(policy),
        ..Default::default()
    }
}

fn retry(attempts: u32, per_try_ms: u64, on: &str) -> pb::Retry {
    pb::Retry {
        attempts,
        per_try_timeout_ms: per_try_ms,
        retry_on: vec![on.into()],
        backoff_ms: 5,
        ..Default::default()
    }
}

async fn payment_proxy(backends: &[&Backend], route: pb::RouteConfig) -> Proxy {
    let mut m = Mesh::default();
    m.service("payment-service", "240.240.0.20");
    for (i, b) in backends.iter().enumerate() {
        m.workload(
            &format!("payment-{i}"),
            "payment-service",
            "v1",
            "payment-service",
            b.addr.port(),
        );
    }
    m.route(route);
    proxy(m.snapshot(), Some(ORDER_SA)).await
}

#[tokio::test]
async fn retry_succeeds_against_flaky_endpoint() {
    let flaky = backend(Arc::new(|n, _| {
        if n < 2 {
            (503, "down".into(), Duration::ZERO)
        } else {
            (200, "ok".into(), Duration::ZERO)
        }
    }))
    .await;
    let p = payment_proxy(
        &[&flaky],
        payment_route(Some(retry(3, 2000, "5xx,reset")), Default::default()),
    )
    .await;
    let (status, body, _) = send(&client(), p.addr, "POST", "payment-service", "/pay", &[]).await;
    assert_eq!((status, body.as_str()), (200, "ok"));
    assert_eq!(flaky.hits.load(Ordering::SeqCst), 3);
    let log = wait_log(&p, 1).await;
    assert_eq!(log[0]["attempts"], 3);
}

#[tokio::test]
async fn retries_give_up_after_configured_attempts() {
    let down = backend(Arc::new(|_, _| (503, "down".into(), Duration::ZERO))).await;
    let p = payment_proxy(
        &[&down],
        payment_route(Some(retry(2, 2000, "5xx,reset")), Default::default()),
    )
    .await;
    let (status, body, _) = send(&client(), p.addr, "GET", "payment-service", "/", &[]).await;
    assert_eq!((status, body.as_str()), (503, "down"));
    assert_eq!(down.hits.load(Ordering::SeqCst), 3, "1 try + 2 retries");
    let log = wait_log(&p, 1).await;
    assert_eq!(log[0]["response_flags"], "URX");
}

#[tokio::test]
async fn no_retry_on_unlisted_status() {
    let down = backend(Arc::new(|_, _| (500, "boom".into(), Duration::ZERO))).await;
    let p = payment_proxy(
        &[&down],
        payment_route(Some(retry(2, 0, "gateway-error")), Default::default()),
    )
    .await;
    let (status, _, _) = send(&client(), p.addr, "GET", "payment-service", "/", &[]).await;
    assert_eq!(status, 500);
    assert_eq!(down.hits.load(Ordering::SeqCst), 1);
}

#[tokio::test]
async fn per_try_timeout_retries_then_succeeds() {
    let slow_first = backend(Arc::new(|n, _| {
        let delay = if n == 0 {
            Duration::from_secs(3)
        } else {
            Duration::ZERO
        };
        (200, format!("try-{n}"), delay)
    }))
    .await;
    let p = payment_proxy(
        &[&slow_first],
        payment_route(Some(retry(2, 200, "5xx,reset")), Default::default()),
    )
    .await;
    let (status, body, _) = send(&client(), p.addr, "GET", "payment-service", "/", &[]).await;
    assert_eq!((status, body.as_str()), (200, "try-1"));
}

#[tokio::test]
async fn connect_failure_is_retried_on_another_endpoint() {
    let good = named("good").await;
    // A port with nothing listening: bind then drop.
    let dead_port = {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        l.local_addr().unwrap().port()
    };
    let dead = Backend {
        addr: std::net::SocketAddr::from(([127, 0, 0, 1], dead_port)),
        hits: Default::default(),
    };
    let p = payment_proxy(
        &[&good, &dead],
        payment_route(Some(retry(2, 0, "connect-failure")), Default::default()),
    )
    .await;
    let c = client();
    for _ in 0..20 {
        let (status, body, _) = send(&c, p.addr, "GET", "payment-service", "/", &[]).await;
        assert_eq!((status, body.as_str()), (200, "good"));
    }
}

#[tokio::test]
async fn pool_overflow_returns_503_uo() {
    let slow = backend(Arc::new(|_, _| {
        (200, "slow".into(), Duration::from_millis(600))
    }))
    .await;
    let policy = pb::TrafficPolicy {
        connection_pool: Some(pb::ConnectionPool {
            max_connections: 1,
            http1_max_pending_requests: 1,
            http2_max_requests: 50,
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = payment_proxy(&[&slow], payment_route(Some(retry(0, 0, "5xx")), policy)).await;
    let c = client();
    let mut tasks = Vec::new();
    for i in 0..3u64 {
        let c = c.clone();
        let addr = p.addr;
        tasks.push(tokio::spawn(async move {
            tokio::time::sleep(Duration::from_millis(50 * i)).await;
            send(&c, addr, "GET", "payment-service", "/", &[]).await
        }));
    }
    let mut statuses = Vec::new();
    for t in tasks {
        let (status, body, headers) = t.await.unwrap();
        if status == 503 {
            assert!(body.contains("overflow"), "{body}");
            assert_eq!(headers["x-envoy-overloaded"], "true");
        }
        statuses.push(status);
    }
    statuses.sort();
    assert_eq!(
        statuses,
        [200, 200, 503],
        "one active, one pending, one overflow"
    );
    let log = wait_log(&p, 3).await;
    assert_eq!(
        log.iter().filter(|e| e["response_flags"] == "UO").count(),
        1
    );
}

#[tokio::test]
async fn max_requests_overflow() {
    let slow = backend(Arc::new(|_, _| {
        (200, "slow".into(), Duration::from_millis(500))
    }))
    .await;
    let policy = pb::TrafficPolicy {
        connection_pool: Some(pb::ConnectionPool {
            http2_max_requests: 2,
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = payment_proxy(&[&slow], payment_route(Some(retry(0, 0, "5xx")), policy)).await;
    let c = client();
    let tasks: Vec<_> = (0..4)
        .map(|_| {
            let c = c.clone();
            let addr = p.addr;
            tokio::spawn(async move { send(&c, addr, "GET", "payment-service", "/", &[]).await.0 })
        })
        .collect();
    let mut statuses = Vec::new();
    for t in tasks {
        statuses.push(t.await.unwrap());
    }
    statuses.sort();
    assert_eq!(statuses, [200, 200, 503, 503]);
}

#[tokio::test]
async fn outlier_ejects_failing_endpoint() {
    let bad = backend(Arc::new(|_, _| (500, "bad".into(), Duration::ZERO))).await;
    let good = named("good").await;
    let policy = pb::TrafficPolicy {
        outlier_detection: Some(pb::OutlierDetection {
            consecutive_5xx_errors: 3,
            interval_ms: 30_000,
            base_ejection_time_ms: 60_000,
            max_ejection_percent: 50,
            min_health_percent: 0,
            ..Default::default()
        }),
        load_balancer: Some(pb::LoadBalancer {
            simple: pb::load_balancer::Simple::RoundRobin as i32,
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = payment_proxy(
        &[&bad, &good],
        payment_route(Some(retry(0, 0, "5xx")), policy),
    )
    .await;
    let c = client();
    for _ in 0..30 {
        send(&c, p.addr, "GET", "payment-service", "/", &[]).await;
    }
    assert_eq!(
        bad.hits.load(Ordering::SeqCst),
        3,
        "ejected after 3 consecutive 5xx"
    );
    assert_eq!(good.hits.load(Ordering::SeqCst), 27);
}

#[tokio::test]
async fn seed_pool_limits_admit_50_active_plus_30_pending() {
    let slow = backend(Arc::new(|_, _| {
        (200, "slow".into(), Duration::from_millis(2000))
    }))
    .await;
    let policy = pb::TrafficPolicy {
        connection_pool: Some(pb::ConnectionPool {
            max_connections: 50,
            connect_timeout_ms: 5000,
            http1_max_pending_requests: 30,
            http2_max_requests: 50,
            h2_upgrade_policy: "DEFAULT".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let p = payment_proxy(&[&slow], payment_route(Some(retry(0, 0, "5xx")), policy)).await;
    let c = client();
    let start = std::time::Instant::now();
    let tasks: Vec<_> = (0..120)
        .map(|_| {
            let c = c.clone();
            let addr = p.addr;
            tokio::spawn(async move {
                let (status, _, headers) = send(&c, addr, "GET", "payment-service", "/", &[]).await;
                (
                    status,
                    headers.contains_key("x-envoy-overloaded"),
                    start.elapsed(),
                )
            })
        })
        .collect();
    let mut results = Vec::new();
    for t in tasks {
        results.push(t.await.unwrap());
    }
    let ok = results.iter().filter(|r| r.0 == 200).count();
    let overflow: Vec<_> = results.iter().filter(|r| r.0 == 503).collect();
    assert_eq!((ok, overflow.len()), (80, 40), "{results:?}");
    assert!(
        overflow.iter().all(|r| r.1),
        "503s carry x-envoy-overloaded"
    );
    assert!(
        overflow.iter().all(|r| r.2 < Duration::from_millis(2000)),
        "overflow answers at once, without waiting for a connection: {overflow:?}"
    );
    assert_eq!(slow.hits.load(Ordering::SeqCst), 80);
    let log = wait_log(&p, 120).await;
    assert_eq!(
        log.iter().filter(|e| e["response_flags"] == "UO").count(),
        40
    );
}

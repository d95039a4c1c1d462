//! The seed's order-service routing through the waypoint against real backends.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;

async fn order_mesh(timeout_ms: u64) -> (Proxy, Backend, Backend) {
    let v1 = named("v1").await;
    let v2 = named("v2").await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload(
            "order-v1",
            "order-service",
            "v1",
            "order-service",
            v1.addr.port(),
        )
        .workload(
            "order-v2",
            "order-service",
            "v2",
            "order-service",
            v2.addr.port(),
        )
        .route(order_route(timeout_ms, Some(seed_retry())));
    (proxy(m.snapshot(), Some(ORDER_SA)).await, v1, v2)
}

#[tokio::test]
async fn canary_header_always_v2() {
    let (p, _, _) = order_mesh(10_000).await;
    let c = client();
    for _ in 0..50 {
        let (status, body, _) = send(
            &c,
            p.addr,
            "GET",
            "order-service",
            "/orders",
            &[("x-canary", "true")],
        )
        .await;
        assert_eq!((status, body.as_str()), (200, "v2"));
    }
}

#[tokio::test]
async fn even_user_ids_go_to_v2() {
    let (p, _, _) = order_mesh(10_000).await;
    let c = client();
    for id in ["0", "12", "1234", "99998"] {
        for _ in 0..10 {
            let (_, body, _) = send(
                &c,
                p.addr,
                "GET",
                "order-service",
                "/",
                &[("x-user-id", id)],
            )
            .await;
            assert_eq!(body, "v2", "user {id}");
        }
    }
    // Odd ids fall through to the 90/10 split: some v1 shows up.
    let mut v1 = 0;
    for _ in 0..50 {
        let (_, body, _) = send(
            &c,
            p.addr,
            "GET",
            "order-service",
            "/",
            &[("x-user-id", "1235")],
        )
        .await;
        v1 += usize::from(body == "v1");
    }
    assert!(v1 > 30, "{v1}");
}

#[tokio::test]
async fn ninety_ten_split() {
    let (p, _, _) = order_mesh(10_000).await;
    let c = client();
    let mut v2 = 0;
    let n = 2_000;
    for _ in 0..n {
        let (status, body, _) = send(&c, p.addr, "GET", ORDER_HOST, "/", &[]).await;
        assert_eq!(status, 200);
        v2 += usize::from(body == "v2");
    }
    let pct = v2 as f64 * 100.0 / n as f64;
    assert!((7.0..=13.0).contains(&pct), "v2 got {pct}%");
}

#[tokio::test]
async fn route_timeout_gives_504() {
    let slow = backend(Arc::new(|_, _| {
        (200, "late".into(), Duration::from_secs(2))
    }))
    .await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload(
            "order-v1",
            "order-service",
            "v1",
            "order-service",
            slow.addr.port(),
        )
        .workload(
            "order-v2",
            "order-service",
            "v2",
            "order-service",
            slow.addr.port(),
        )
        .route(order_route(300, None));
    let p = proxy(m.snapshot(), Some(ORDER_SA)).await;
    let c = client();
    let started = std::time::Instant::now();
    let (status, body, _) = send(&c, p.addr, "GET", "order-service", "/", &[]).await;
    assert_eq!(status, 504);
    assert_eq!(body, "upstream request timeout");
    assert!(started.elapsed() < Duration::from_millis(1500));
    let log = wait_log(&p, 1).await;
    assert_eq!(log[0]["response_flags"], "UT");
}

#[tokio::test]
async fn unknown_host_and_empty_service() {
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10");
    let p = proxy(m.snapshot(), Some(ORDER_SA)).await;
    let c = client();
    let (status, _, _) = send(&c, p.addr, "GET", "nope.example", "/", &[]).await;
    assert_eq!(status, 404);
    let (status, body, _) = send(&c, p.addr, "GET", "order-service", "/", &[]).await;
    assert_eq!((status, body.as_str()), (503, "no healthy upstream"));
    let log = wait_log(&p, 2).await;
    assert_eq!(log[0]["response_flags"], "NR");
    assert_eq!(log[1]["response_flags"], "UH");
}

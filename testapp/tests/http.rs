//! The server and client over loopback.
use std::time::Duration;

use meshwork_testapp::{client, faults::FaultConfig, server};

async fn start(version: &str) -> String {
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let state = server::State::new(
        server::Identity {
            service: "orders".into(),
            version: version.into(),
            pod: "orders-1".into(),
        },
        FaultConfig::default(),
    );
    tokio::spawn(server::serve(listener, state));
    format!("http://{addr}")
}

async fn get(url: &str, headers: &[(&str, &str)], count: u64) -> client::Summary {
    let t = client::parse_url(url).unwrap();
    let h: Vec<(String, String)> = headers
        .iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect();
    client::run(&t, &h, count, Duration::from_secs(5)).await
}

#[tokio::test]
async fn health_and_echo() {
    let base = start("v2").await;
    let s = get(&format!("{base}/health"), &[], 1).await;
    assert_eq!(s.status.get("200"), Some(&1));
    let s = get(&format!("{base}/api/orders"), &[("x-user-id", "42")], 3).await;
    assert_eq!(s.status.get("200"), Some(&3));
    assert_eq!(s.versions.get("v2"), Some(&3));
    assert_eq!(s.pods.get("orders-1"), Some(&3));

    // The body names path, method and headers.
    let stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post("/api/orders?size=1024")
        .header("host", "x")
        .header("x-user-id", "42")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    use http_body_util::BodyExt;
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let v: serde_json::Value = serde_json::from_slice(&body).unwrap();
    assert_eq!(v["service"], "orders");
    assert_eq!(v["path"], "/api/orders");
    assert_eq!(v["method"], "POST");
    assert_eq!(v["headers"]["x-user-id"], "42");
    assert_eq!(v["padding"].as_str().unwrap().len(), 1024);
}

#[tokio::test]
async fn header_faults_and_admin_endpoint() {
    let base = start("v1").await;
    let s = get(&format!("{base}/x"), &[("x-testapp-fail", "503")], 2).await;
    assert_eq!(s.status.get("503"), Some(&2));
    let s = get(&format!("{base}/x"), &[("x-testapp-fail", "nope")], 1).await;
    assert_eq!(s.status.get("400"), Some(&1));

    let start_t = std::time::Instant::now();
    let s = get(&format!("{base}/x"), &[("x-testapp-delay-ms", "150")], 1).await;
    assert_eq!(s.status.get("200"), Some(&1));
    assert!(start_t.elapsed() >= Duration::from_millis(150));

    // Make the endpoint always fail with 500, then heal it.
    post(&base, "/admin/fail?rate=1&code=500").await;
    let s = get(&format!("{base}/api/orders"), &[], 4).await;
    assert_eq!(s.status.get("500"), Some(&4));
    post(&base, "/admin/fail?rate=0").await;
    let s = get(&format!("{base}/api/orders"), &[], 4).await;
    assert_eq!(s.status.get("200"), Some(&4));
    // Health is never failed.
    post(&base, "/admin/fail?rate=1").await;
    let s = get(&format!("{base}/health"), &[], 2).await;
    assert_eq!(s.status.get("200"), Some(&2));
}

async fn post(base: &str, path: &str) {
    let stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = hyper::Request::post(path)
        .header("host", "x")
        .body(http_body_util::Empty::<bytes::Bytes>::new())
        .unwrap();
    let resp = tx.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200, "POST {path}");
}

/// Every answer names the pod that gave it, and the access line says what was asked.
#[tokio::test]
async fn answers_name_the_pod_and_are_logged() {
    let base = start("v1").await;
    let stream = tokio::net::TcpStream::connect(base.trim_start_matches("http://"))
        .await
        .unwrap();
    let (mut tx, conn) =
        hyper::client::conn::http1::handshake(hyper_util::rt::TokioIo::new(stream))
            .await
            .unwrap();
    tokio::spawn(conn);
    for (path, status) in [("/api/orders", 200), ("/health", 200)] {
        let req = hyper::Request::get(path)
            .header("host", "x")
            .body(http_body_util::Empty::<bytes::Bytes>::new())
            .unwrap();
        let resp = tx.send_request(req).await.unwrap();
        assert_eq!(resp.status().as_u16(), status);
        assert_eq!(
            resp.headers()
                .get(server::HEADER_SERVED_BY)
                .and_then(|v| v.to_str().ok()),
            Some("orders-1"),
            "{path}"
        );
    }
    let id = server::Identity {
        service: "orders".into(),
        version: "v1".into(),
        pod: "orders-1".into(),
    };
    let line = server::access_line(
        &id,
        "GET",
        "/api/orders",
        "10.0.0.7:5555".parse().unwrap(),
        503,
        Duration::from_millis(12),
    );
    let v: serde_json::Value = serde_json::from_str(&line).unwrap();
    assert_eq!(v["pod"], "orders-1");
    assert_eq!(v["client"], "10.0.0.7");
    assert_eq!(
        (v["status"].as_u64(), v["ms"].as_u64()),
        (Some(503), Some(12))
    );
    assert!(!line.contains('\n'));
}

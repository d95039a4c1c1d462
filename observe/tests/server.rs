//! The graph page server over HTTP on loopback: the page, `/api/graph` following the
//! proxies' counters, and who may reach it (non-loopback `Host:` refused, GET only).

mod common;

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::time::{Duration, Instant};

use common::{scaled, FakeProxy, FIXTURES};
use meshwork_observe::graph::Target;
use meshwork_observe::{serve, ServeOptions};
use serde_json::Value;

/// One raw HTTP/1.1 request: (status, body).
fn raw(addr: SocketAddr, method: &str, path: &str, host: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
    write!(
        s,
        "{method} {path} HTTP/1.1\r\nHost: {host}\r\nConnection: close\r\nContent-Length: 0\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    s.read_to_string(&mut out).unwrap();
    let status = out
        .split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or_else(|| panic!("no status line: {out:?}"));
    let body = out.split_once("\r\n\r\n").map(|(_, b)| b).unwrap_or("");
    (status, body.to_string())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn serves_the_page_and_live_json_to_loopback_only() {
    let proxies: Vec<FakeProxy> = FIXTURES
        .iter()
        .map(|(_, _, b)| {
            let b = b.to_string();
            FakeProxy::dynamic(move |n| scaled(&b, n))
        })
        .collect();
    let targets: Vec<Target> = proxies.iter().map(|p| Target::parse(&p.url())).collect();
    let server = serve(
        targets,
        ServeOptions {
            listen: "127.0.0.1:0".parse().unwrap(),
            interval: Duration::from_millis(200),
            ..Default::default()
        },
    )
    .await
    .unwrap();
    let addr = server.addr;
    let host = addr.to_string();

    let g = tokio::task::spawn_blocking(move || {
        let (status, page) = raw(addr, "GET", "/", &host);
        assert_eq!(status, 200);
        assert!(page.contains("<svg id=\"graph\""), "{page}");
        assert!(!page.contains("__REFRESH_MS__"));
        assert!(page.contains("const REFRESH_MS = 200;"));
        // Until the second scrape, rates are null; then frontend → order-v2 carries the
        // recorded scrape's 60 requests per scrape at 90% success.
        let deadline = Instant::now() + Duration::from_secs(20);
        let g: Value = loop {
            let (status, body) = raw(addr, "GET", "/api/graph", "localhost");
            assert_eq!(status, 200);
            let g: Value = serde_json::from_str(&body).unwrap();
            if !g["window_secs"].is_null() {
                break g;
            }
            assert!(Instant::now() < deadline, "{g}");
            std::thread::sleep(Duration::from_millis(50));
        };
        let (status, body) = raw(addr, "GET", "/api/graph", "evil.test:80");
        assert_eq!(status, 403, "{body}");
        assert!(body.contains("loopback"));
        assert_eq!(raw(addr, "POST", "/api/graph", "127.0.0.1").0, 405);
        assert_eq!(raw(addr, "GET", "/nope", "127.0.0.1").0, 404);
        g
    })
    .await
    .unwrap();
    let e = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["destination"] == "production/order-v2" && e["protocol"] == "http")
        .unwrap_or_else(|| panic!("{g}"));
    let per_scrape = e["rate"].as_f64().unwrap() * g["window_secs"].as_f64().unwrap();
    assert!((per_scrape - 60.0).abs() < 1e-6, "{e}");
    assert!((e["success"].as_f64().unwrap() - 0.9).abs() < 1e-9);
    assert_eq!(e["mtls"], "yes");
    drop(server);
    // Stopped: the listener is gone once the server is dropped.
    tokio::time::sleep(Duration::from_millis(100)).await;
    assert!(TcpStream::connect(addr).is_err());
}

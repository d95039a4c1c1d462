//! `meshwork top` and `meshwork graph` against a fake waypoint on loopback serving the
//! recorded metrics of meshwork-observe's fixtures, its counters growing on every scrape.

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::process::{Command, Stdio};
use std::sync::atomic::{AtomicU32, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant};

const WAYPOINT: &str = include_str!("../../observe/tests/fixtures/waypoint.1.prom");

/// Serves `WAYPOINT` with every value multiplied by the scrape's number; runs until the
/// test process exits.
fn fake_waypoint() -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = listener.local_addr().unwrap();
    let n = Arc::new(AtomicU32::new(0));
    std::thread::spawn(move || {
        for conn in listener.incoming().map_while(Result::ok).take(1000) {
            let k = f64::from(n.fetch_add(1, Ordering::Relaxed) + 1);
            std::thread::spawn(move || {
                let mut conn = conn;
                let mut buf = [0u8; 4096];
                let mut req = Vec::new();
                while !req.windows(4).any(|w| w == b"\r\n\r\n") {
                    match conn.read(&mut buf) {
                        Ok(0) | Err(_) => return,
                        Ok(n) => req.extend_from_slice(&buf[..n]),
                    }
                }
                let mut body = String::new();
                for line in WAYPOINT.lines() {
                    match line.rsplit_once(' ') {
                        Some((series, v)) if !line.starts_with('#') => {
                            let v: f64 = v.parse().unwrap();
                            body.push_str(&format!("{series} {}\n", v * k));
                        }
                        _ => body.push_str(&format!("{line}\n")),
                    }
                }
                let _ = write!(
                    conn,
                    "HTTP/1.1 200 OK\r\nContent-Type: text/plain; version=0.0.4\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
                    body.len()
                );
            });
        }
    });
    addr
}

fn meshwork(args: &[&str]) -> std::process::Output {
    Command::new(env!("CARGO_BIN_EXE_meshwork"))
        .args(args)
        .output()
        .expect("running meshwork")
}

#[test]
fn top_once_prints_the_edges_as_json_and_text() {
    let target = format!("http://{}/metrics", fake_waypoint());
    let out = meshwork(&[
        "top",
        "--once",
        "--json",
        "--interval",
        "0.3",
        "--targets",
        &target,
    ]);
    assert!(out.status.success(), "{out:?}");
    let g: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let e = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .find(|e| e["destination"] == "production/order-v2")
        .unwrap_or_else(|| panic!("{g}"));
    // One more copy of the recorded scrape (60 requests to order-v2) between the two scrapes.
    let per_window = e["rate"].as_f64().unwrap() * g["window_secs"].as_f64().unwrap();
    assert!((per_window - 60.0).abs() < 1e-6, "{e}");
    assert!((e["success"].as_f64().unwrap() - 0.9).abs() < 1e-9, "{e}");
    assert!((e["p99_ms"].as_f64().unwrap() - 950.0).abs() < 1e-9, "{e}");
    assert_eq!(g["proxies"][0]["kind"], "waypoint");

    let out = meshwork(&["top", "--once", "--interval", "0.2", "--targets", &target]);
    assert!(out.status.success(), "{out:?}");
    let text = String::from_utf8(out.stdout).unwrap();
    for want in [
        "SERVICES",
        "order-service.production.svc.cluster.local  http",
        "production/frontend",
        "90.0%",
    ] {
        assert!(text.contains(want), "{want:?} not in:\n{text}");
    }
}

#[test]
fn top_fails_when_no_target_answers() {
    let dead = TcpListener::bind("127.0.0.1:0").unwrap();
    let url = format!("http://{}/metrics", dead.local_addr().unwrap());
    drop(dead);
    let out = meshwork(&["top", "--once", "--interval", "0.1", "--targets", &url]);
    assert_eq!(out.status.code(), Some(1), "{out:?}");
    assert!(String::from_utf8_lossy(&out.stdout).contains("down"));
}

#[test]
fn graph_serves_loopback_and_refuses_other_addresses_without_the_flag() {
    let target = format!("http://{}/metrics", fake_waypoint());
    let out = meshwork(&["graph", "--listen", "0.0.0.0:15090", "--targets", &target]);
    assert_eq!(out.status.code(), Some(2), "{out:?}");
    let err = String::from_utf8_lossy(&out.stderr);
    assert!(err.contains("not a loopback address"), "{err}");

    // A port below the ephemeral range, free now (the e2e helper's pattern).
    let port = (20_000..32_000)
        .map(|p| p + (std::process::id() % 7000) as u16)
        .find(|p| TcpListener::bind(("127.0.0.1", *p)).is_ok())
        .expect("a free loopback port");
    let listen = format!("127.0.0.1:{port}");
    let mut child = Command::new(env!("CARGO_BIN_EXE_meshwork"))
        .args([
            "graph",
            "--listen",
            &listen,
            "--interval",
            "0.2",
            "--targets",
            &target,
        ])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let deadline = Instant::now() + Duration::from_secs(20);
    let body = loop {
        let got = TcpStream::connect(&listen).ok().and_then(|mut s| {
            s.set_read_timeout(Some(Duration::from_secs(5))).ok()?;
            write!(
                s,
                "GET /api/graph HTTP/1.1\r\nHost: localhost\r\nConnection: close\r\n\r\n"
            )
            .ok()?;
            let mut out = String::new();
            s.read_to_string(&mut out).ok()?;
            let body = out.split_once("\r\n\r\n")?.1.to_string();
            let g: serde_json::Value = serde_json::from_str(&body).ok()?;
            (!g["window_secs"].is_null()).then_some(g)
        });
        if let Some(g) = got {
            break g;
        }
        if Instant::now() > deadline {
            let _ = child.kill();
            let _ = child.wait();
            panic!("meshwork graph did not serve a graph with rates on {listen}");
        }
        std::thread::sleep(Duration::from_millis(100));
    };
    let _ = child.kill();
    let _ = child.wait();
    assert!(body["nodes"]
        .as_array()
        .unwrap()
        .iter()
        .any(|n| n["id"] == "production/frontend"));
}

//! Test helpers: fake proxies serving recorded metric texts over loopback HTTP, ports.

#![allow(dead_code)]

use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU32, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

/// The recorded scrapes: (name, scrape 0, scrape 1).
pub const FIXTURES: [(&str, &str, &str); 3] = [
    (
        "ztunnel-node-a",
        include_str!("../fixtures/ztunnel-node-a.0.prom"),
        include_str!("../fixtures/ztunnel-node-a.1.prom"),
    ),
    (
        "ztunnel-node-b",
        include_str!("../fixtures/ztunnel-node-b.0.prom"),
        include_str!("../fixtures/ztunnel-node-b.1.prom"),
    ),
    (
        "waypoint",
        include_str!("../fixtures/waypoint.0.prom"),
        include_str!("../fixtures/waypoint.1.prom"),
    ),
];

/// A `/metrics` endpoint on 127.0.0.1 answering the current text (HTTP/1.1, one request
/// per connection). Stops when dropped.
type Body = Arc<dyn Fn(u32) -> String + Send + Sync>;

pub struct FakeProxy {
    pub addr: SocketAddr,
    body: Arc<Mutex<Body>>,
    stop: Arc<AtomicBool>,
    pub requests: Arc<AtomicU32>,
}

impl FakeProxy {
    pub fn start(text: &str) -> FakeProxy {
        let text = text.to_string();
        FakeProxy::dynamic(move |_| text.clone())
    }

    /// A proxy whose text is `f(n)` for its `n`-th scrape (from 1).
    pub fn dynamic(f: impl Fn(u32) -> String + Send + Sync + 'static) -> FakeProxy {
        let listener = TcpListener::bind("127.0.0.1:0").expect("binding a fake proxy");
        let addr = listener.local_addr().unwrap();
        listener.set_nonblocking(true).unwrap();
        let body: Arc<Mutex<Body>> = Arc::new(Mutex::new(Arc::new(f)));
        let stop = Arc::new(AtomicBool::new(false));
        let requests = Arc::new(AtomicU32::new(0));
        let (b, s, r) = (body.clone(), stop.clone(), requests.clone());
        std::thread::spawn(move || {
            while !s.load(Ordering::Relaxed) {
                match listener.accept() {
                    Ok((conn, _)) => {
                        let n = r.fetch_add(1, Ordering::Relaxed) + 1;
                        let f = b.lock().unwrap().clone();
                        let text = f(n);
                        std::thread::spawn(move || answer(conn, &text));
                    }
                    Err(_) => std::thread::sleep(Duration::from_millis(5)),
                }
            }
        });
        FakeProxy {
            addr,
            body,
            stop,
            requests,
        }
    }

    pub fn url(&self) -> String {
        format!("http://{}/metrics", self.addr)
    }

    pub fn set(&self, text: &str) {
        let text = text.to_string();
        *self.body.lock().unwrap() = Arc::new(move |_| text.clone());
    }
}

impl Drop for FakeProxy {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
    }
}

fn answer(mut conn: TcpStream, text: &str) {
    let _ = conn.set_nonblocking(false);
    let _ = conn.set_read_timeout(Some(Duration::from_secs(5)));
    let mut req = Vec::new();
    let mut buf = [0u8; 4096];
    while !req.windows(4).any(|w| w == b"\r\n\r\n") {
        match conn.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => req.extend_from_slice(&buf[..n]),
        }
        if req.len() > 64 << 10 {
            return;
        }
    }
    let head = String::from_utf8_lossy(&req);
    let path_ok = head
        .split_whitespace()
        .nth(1)
        .is_some_and(|p| p == "/metrics");
    let (status, body) = if path_ok {
        ("200 OK", text)
    } else {
        ("404 Not Found", "not found\n")
    };
    let _ = write!(
        conn,
        "HTTP/1.1 {status}\r\nContent-Type: text/plain; version=0.0.4; charset=utf-8\r\nContent-Length: {}\r\nConnection: close\r\n\r\n{body}",
        body.len()
    );
}

/// The fixtures' three proxies, serving scrape 0.
pub fn fixture_proxies() -> Vec<FakeProxy> {
    FIXTURES
        .iter()
        .map(|(_, a, _)| FakeProxy::start(a))
        .collect()
}

/// Switches the fixtures' proxies to scrape 1.
pub fn advance(proxies: &[FakeProxy]) {
    for (p, (_, _, b)) in proxies.iter().zip(FIXTURES) {
        p.set(b);
    }
}

/// A loopback port below the ephemeral range for a process that binds it later (the e2e
/// helper's pattern: another test's outgoing connection cannot take it meanwhile).
pub fn free_port() -> u16 {
    const BASE: u32 = 20_000;
    const SPAN: u32 = 12_000;
    static NEXT: AtomicU32 = AtomicU32::new(0);
    let start = std::process::id().wrapping_mul(7919);
    for _ in 0..SPAN {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (BASE + start.wrapping_add(n) % SPAN) as u16;
        if TcpListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free loopback port in {BASE}..{}", BASE + SPAN);
}

/// Installs a Debian package when `binary` is missing; `false` when it cannot be.
pub fn ensure_installed(binary: &str, package: &str) -> bool {
    let on_path = |b: &str| {
        std::env::var_os("PATH")
            .is_some_and(|p| std::env::split_paths(&p).any(|d| d.join(b).is_file()))
    };
    if on_path(binary) {
        return true;
    }
    eprintln!("{binary} missing: apt-get install -y {package}");
    let ok = std::process::Command::new("apt-get")
        .args(["install", "-y", "--no-install-recommends", package])
        .env("DEBIAN_FRONTEND", "noninteractive")
        .status()
        .is_ok_and(|s| s.success());
    ok && on_path(binary)
}

/// `text` with every sample value multiplied by `k`: counters and histogram buckets grow
/// linearly, so rates, success ratios and quantiles stay the same from scrape to scrape.
pub fn scaled(text: &str, k: u32) -> String {
    let mut out = String::with_capacity(text.len() + 64);
    for line in text.lines() {
        match line.rsplit_once(' ') {
            Some((series, v)) if !line.starts_with('#') => {
                let v: f64 = v.parse().expect("a sample value");
                out.push_str(&format!("{series} {}", v * f64::from(k)));
            }
            _ => out.push_str(line),
        }
        out.push('\n');
    }
    out
}

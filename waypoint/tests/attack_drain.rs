//! Attack (issue #18 item 8): SIGTERM (a rollout, a node drain) while requests are in flight.
//!
//! The real `waypoint` binary on 127.0.0.1, with a certificate from a test CA, plain
//! HTTP and HBONE listeners and a backend that takes 1.5 s. At SIGTERM the waypoint must
//! turn unready, refuse new connections, tell open ones to go (HTTP/1.1
//! `Connection: close`, HTTP/2 GOAWAY), serve every request and tunnel in flight, and
//! exit as soon as they are done — long before the drain period (30 s here).
//!
//! The period is given through `MESHWORK_TERMINATION_DRAIN_DURATION`, which a waypoint
//! without drain support ignores, so these tests fail there on behaviour, not on a flag.

mod common;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::{ExitStatus, Stdio};
use std::sync::atomic::Ordering;
use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_hbone::{Pool, PoolKey, PoolSettings};
use meshwork_identity::testing::TestCa;
use meshwork_identity::tls::client_config;
use meshwork_identity::SpiffeId;
use meshwork_model::pb::config::ConfigUpdate;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;
use tokio::process::{Child, Command};

const DRAIN: &str = "30s";
const PAYMENT_VIP: &str = "240.240.0.20:80";

fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new("cluster.local", ns, sa).unwrap()
}

/// A port free a moment ago (the waypoint's flags take fixed addresses).
/// A free port on a loopback address of the test's own (`127.77.<n>.1`): the tests of this
/// file start waypoints at the same time, and a port picked by `bind(:0)` and released may
/// be picked again by another test before its waypoint binds it. Then one waypoint fails to
/// bind, and its test talks to the other's readiness port.
fn free_addr(test: &str) -> SocketAddr {
    let n = test
        .bytes()
        .fold(7u8, |h, b| h.wrapping_mul(31).wrapping_add(b));
    std::net::TcpListener::bind((std::net::Ipv4Addr::new(127, 77, n, 1), 0))
        .unwrap()
        .local_addr()
        .unwrap()
}

struct Waypoint {
    child: Child,
    http: SocketAddr,
    hbone: SocketAddr,
    readiness: SocketAddr,
    ca: TestCa,
    dir: PathBuf,
}

impl Drop for Waypoint {
    fn drop(&mut self) {
        let _ = std::fs::remove_dir_all(&self.dir);
    }
}

/// Starts the waypoint binary in front of `backend` and waits until it is ready.
async fn start_waypoint(backend: &Backend, test: &str) -> Waypoint {
    let mut m = Mesh::default();
    m.service("payment-service", "240.240.0.20").workload(
        "payment-0",
        "payment-service",
        "v1",
        "payment-service",
        backend.addr.port(),
    );
    // Tunnels to the service are served only when it uses this waypoint.
    m.bind_all_to_waypoint();
    let dir = std::env::temp_dir().join(format!("mw-attack-drain-{}-{test}", std::process::id()));
    std::fs::create_dir_all(&dir).unwrap();
    let update = ConfigUpdate {
        version: 1,
        resources: m.snapshot().resources().map(|r| (**r).clone()).collect(),
        ..Default::default()
    };
    let config = dir.join("config.pb");
    std::fs::write(&config, meshwork_model::static_config::encode(&update)).unwrap();
    let ca = TestCa::new("cluster.local");
    ca.issue(&id(NS, "waypoint"), Duration::from_secs(3600))
        .save(&dir.join("certs"))
        .unwrap();
    let addr = || free_addr(test);
    let (http, hbone, admin, readiness) = (addr(), addr(), addr(), addr());
    let child = Command::new(env!("CARGO_BIN_EXE_waypoint"))
        .arg(format!("--static-config={}", config.display()))
        .arg(format!("--gateway={NS}/waypoint"))
        .arg(format!("--cert-dir={}", dir.join("certs").display()))
        .arg("--upstream=plain")
        .arg(format!("--http-addr={http}"))
        .arg(format!("--hbone-addr={hbone}"))
        .arg(format!("--admin-addr={admin}"))
        .arg(format!("--readiness-addr={readiness}"))
        .arg("--metrics-addr=off")
        .arg("--no-access-log")
        .arg("--worker-threads=2")
        .env("MESHWORK_TERMINATION_DRAIN_DURATION", DRAIN)
        .env("RUST_LOG", "info")
        .stdin(Stdio::null())
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .kill_on_drop(true)
        .spawn()
        .expect("starting the waypoint binary");
    let w = Waypoint {
        child,
        http,
        hbone,
        readiness,
        ca,
        dir,
    };
    for _ in 0..200 {
        if readiness_status(w.readiness).await == Some(200) {
            return w;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    panic!("waypoint not ready within 10 s");
}

async fn readiness_status(addr: SocketAddr) -> Option<u16> {
    let s = TcpStream::connect(addr).await.ok()?;
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .ok()?;
    tokio::spawn(conn);
    let req = http::Request::get("/healthz/ready")
        .header("host", "localhost")
        .body(Full::new(Bytes::new()))
        .unwrap();
    let r = tokio::time::timeout(Duration::from_secs(5), send.send_request(req))
        .await
        .ok()?
        .ok()?;
    Some(r.status().as_u16())
}

fn sigterm(child: &Child) {
    let pid = child.id().expect("waypoint still running") as libc::pid_t;
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(pid, libc::SIGTERM) }, 0);
}

/// What one request through the waypoint got: the status and the `Connection` header, or
/// the error.
type Outcome = Result<(u16, Option<String>), String>;

fn payment_request() -> http::Request<Full<Bytes>> {
    http::Request::post("/api/payments/1")
        .header("host", "payment-service")
        .body(Full::new(Bytes::new()))
        .unwrap()
}

async fn finish(resp: hyper::Result<http::Response<hyper::body::Incoming>>) -> Outcome {
    let resp = resp.map_err(|e| format!("no response: {e}"))?;
    let status = resp.status().as_u16();
    let connection = resp
        .headers()
        .get(http::header::CONNECTION)
        .map(|v| v.to_str().unwrap_or("").to_string());
    resp.into_body()
        .collect()
        .await
        .map_err(|e| format!("body cut: {e}"))?;
    Ok((status, connection))
}

/// Sends a request over HTTP/1.1 on `io` (its own connection); also reports whether the
/// connection closed once the response was done (within 5 s).
async fn h1_on<IO>(io: IO) -> (Outcome, bool)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let (mut send, conn) = match hyper::client::conn::http1::handshake(TokioIo::new(io)).await {
        Ok(c) => c,
        Err(e) => return (Err(format!("handshake: {e}")), false),
    };
    let conn = tokio::spawn(conn);
    let outcome = finish(send.send_request(payment_request()).await).await;
    let closed = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .is_ok();
    (outcome, closed)
}

/// Two requests on one HTTP/2 connection (prior knowledge); also reports whether the
/// connection closed once both were done (GOAWAY, then close).
async fn h2_pair(addr: SocketAddr) -> (Vec<Outcome>, bool) {
    let s = TcpStream::connect(addr).await.unwrap();
    let (send, conn) = hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let (mut a, mut b) = (send.clone(), send);
    let (ra, rb) = tokio::join!(
        async { finish(a.send_request(payment_request()).await).await },
        async { finish(b.send_request(payment_request()).await).await },
    );
    drop((a, b));
    let closed = tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .is_ok();
    (vec![ra, rb], closed)
}

async fn hbone_stream(w: &Waypoint, pool: &Pool) -> Result<meshwork_hbone::H2Stream, String> {
    let client = id(NS, "order-service");
    let cert = w.ca.issue(&client, Duration::from_secs(3600));
    let tls = client_config(&cert, &w.ca.bundle(), [id(NS, "waypoint")]).unwrap();
    let key = PoolKey {
        src_identity: client.to_string(),
        dst: w.hbone,
        dst_identity: id(NS, "waypoint").to_string(),
        from: Default::default(),
    };
    pool.connect(&key, || tls, PAYMENT_VIP, http::HeaderMap::new())
        .await
        .map_err(|e| format!("HBONE CONNECT: {e}"))
}

/// Waits until `n` requests reached the backend (10 s at most).
async fn in_flight(backend: &Backend, n: usize) {
    for _ in 0..500 {
        if backend.hits.load(Ordering::SeqCst) >= n {
            return;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    panic!(
        "only {} of {n} requests reached the backend",
        backend.hits.load(Ordering::SeqCst)
    );
}

/// True once `addr` has refused five connections in a row (within 5 s).
async fn refuses(addr: SocketAddr) -> bool {
    let mut in_a_row = 0;
    for _ in 0..250 {
        match TcpStream::connect(addr).await {
            Err(_) => {
                in_a_row += 1;
                if in_a_row == 5 {
                    return true;
                }
            }
            Ok(_) => {
                in_a_row = 0;
                tokio::time::sleep(Duration::from_millis(20)).await;
            }
        }
    }
    false
}

async fn exit_within(child: &mut Child, limit: Duration) -> Option<ExitStatus> {
    tokio::time::timeout(limit, child.wait())
        .await
        .ok()
        .map(|r| r.unwrap())
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_sigterm_serves_all_in_flight_requests_then_exits_early() {
    let backend = backend(Arc::new(|_, _| {
        (200, "paid".into(), Duration::from_millis(1500))
    }))
    .await;
    let mut w = start_waypoint(&backend, "inflight").await;

    // 10 requests in flight: 5 over HTTP/1.1 (each its own connection), 2 on one HTTP/2
    // connection, 3 over HBONE tunnels (HTTP/1.1 inside; two share a pooled connection).
    let mut h1 = Vec::new();
    for _ in 0..5 {
        let s = TcpStream::connect(w.http).await.unwrap();
        h1.push(tokio::spawn(h1_on(s)));
    }
    let h2 = tokio::spawn(h2_pair(w.http));
    let pool = Pool::new(PoolSettings::default());
    let mut tunnels = Vec::new();
    for _ in 0..3 {
        let s = hbone_stream(&w, &pool).await.unwrap();
        tunnels.push(tokio::spawn(h1_on(s)));
    }
    in_flight(&backend, 10).await;

    let sent = Instant::now();
    sigterm(&w.child);
    // Readiness fails and the listeners refuse new connections while the drain runs.
    let ready_after = async {
        let mut last = None;
        for _ in 0..100 {
            last = readiness_status(w.readiness).await;
            if last == Some(503) {
                break;
            }
            tokio::time::sleep(Duration::from_millis(10)).await;
        }
        last
    };
    let (ready_after, http_refused, hbone_refused) =
        tokio::join!(ready_after, refuses(w.http), refuses(w.hbone));

    let mut outcomes = Vec::new();
    for (what, task) in h1
        .into_iter()
        .map(|t| ("HTTP/1.1", t))
        .chain(tunnels.into_iter().map(|t| ("HBONE", t)))
    {
        let (outcome, closed) = task.await.unwrap();
        outcomes.push((what, outcome.clone()));
        if let Ok((_, connection)) = &outcome {
            assert_eq!(
                connection.as_deref(),
                Some("close"),
                "{what}: the in-flight response tells the client to go"
            );
            assert!(closed, "{what}: connection closed after the response");
        }
    }
    let (h2_outcomes, h2_closed) = h2.await.unwrap();
    outcomes.extend(h2_outcomes.into_iter().map(|o| ("HTTP/2", o)));
    let ok = outcomes
        .iter()
        .filter(|(_, o)| matches!(o, Ok((200, _))))
        .count();
    assert_eq!(ok, 10, "in-flight requests answered 200: {outcomes:?}");
    assert!(h2_closed, "HTTP/2: GOAWAY, then the connection closed");
    assert_eq!(ready_after, Some(503), "readiness fails once draining");
    assert!(http_refused, "HTTP listener still accepting while draining");
    assert!(
        hbone_refused,
        "HBONE listener still accepting while draining"
    );

    let status = exit_within(&mut w.child, Duration::from_secs(10))
        .await
        .expect("waypoint still running 10 s after SIGTERM with nothing in flight");
    let took = sent.elapsed();
    eprintln!("in-flight drain: exited {took:?} after SIGTERM (drain period {DRAIN})");
    assert!(status.success(), "exit status {status}");
    // The requests had about 1.5 s left; the drain period is 30 s.
    assert!(
        took < Duration::from_secs(10),
        "exited {took:?} after SIGTERM"
    );
    assert_eq!(backend.hits.load(Ordering::SeqCst), 10);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_idle_connections_do_not_hold_a_draining_waypoint() {
    let backend = backend(Arc::new(|_, _| (200, "paid".into(), Duration::ZERO))).await;
    let mut w = start_waypoint(&backend, "idle").await;
    // An idle keep-alive HTTP/1.1 connection and an HBONE connection whose tunnel ended:
    // neither has anything in flight.
    let s = TcpStream::connect(w.http).await.unwrap();
    let (mut send, conn) = hyper::client::conn::http1::handshake(TokioIo::new(s))
        .await
        .unwrap();
    let conn = tokio::spawn(conn);
    let first = finish(send.send_request(payment_request()).await).await;
    assert!(matches!(first, Ok((200, _))), "{first:?}");
    let pool = Pool::new(PoolSettings::default());
    let tunnel = hbone_stream(&w, &pool).await.unwrap();
    let (outcome, _) = h1_on(tunnel).await;
    assert!(matches!(outcome, Ok((200, _))), "{outcome:?}");

    let sent = Instant::now();
    sigterm(&w.child);
    let status = exit_within(&mut w.child, Duration::from_secs(10))
        .await
        .expect("an idle waypoint must not wait out the 30 s drain period");
    eprintln!(
        "idle drain: exited {:?} after SIGTERM (drain period {DRAIN})",
        sent.elapsed()
    );
    assert!(status.success(), "exit status {status}");
    assert!(
        sent.elapsed() < Duration::from_secs(10),
        "{:?}",
        sent.elapsed()
    );
    // The idle HTTP/1.1 connection was closed, not left to time out.
    assert!(tokio::time::timeout(Duration::from_secs(5), conn)
        .await
        .is_ok());
}

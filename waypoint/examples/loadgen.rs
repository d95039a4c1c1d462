//! HTTP load generator for the waypoint benchmark. Prints one JSON line: requests,
//! errors, requests/s and latency percentiles (µs).
//!
//! Usage: loadgen <addr> <host-header> <connections> <seconds> [h1|h2] [rate]
//!
//! - closed loop (no rate, or rate 0): every connection (h1) or stream slot (h2:
//!   `connections` concurrent streams over 4 connections) sends back to back;
//! - open loop (`rate` requests/s in total): requests are scheduled at fixed intervals
//!   spread over the connections; a request sent late because a slow response held its
//!   slot counts its latency from the scheduled time, so slowness is not hidden
//!   (no coordinated omission).

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpStream;

#[derive(Clone, Copy, PartialEq)]
enum Proto {
    H1,
    H2,
}

enum Sender {
    H1(http1::SendRequest<Empty<Bytes>>),
    H2(http2::SendRequest<Empty<Bytes>>),
}

impl Sender {
    async fn connect(addr: &str, proto: Proto) -> Option<Sender> {
        let s = TcpStream::connect(addr).await.ok()?;
        let _ = s.set_nodelay(true);
        let io = TokioIo::new(s);
        match proto {
            Proto::H1 => {
                let (send, conn) = http1::handshake(io).await.ok()?;
                tokio::spawn(conn);
                Some(Sender::H1(send))
            }
            Proto::H2 => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io).await.ok()?;
                tokio::spawn(conn);
                Some(Sender::H2(send))
            }
        }
    }

    /// One request; `Err` means the connection is unusable.
    async fn request(&mut self, host: &str) -> Result<bool, ()> {
        let req = hyper::Request::builder()
            .uri(format!("http://{host}/bench"))
            .header("host", host)
            .body(Empty::<Bytes>::new())
            .expect("static request");
        let resp = match self {
            Sender::H1(s) => s.send_request(req).await,
            Sender::H2(s) => s.send_request(req).await,
        }
        .map_err(|_| ())?;
        let ok = resp.status().is_success();
        Ok(resp.into_body().collect().await.is_ok() && ok)
    }
}

struct Slot {
    lat: Vec<u32>,
    errors: u64,
}

/// One request slot: closed loop, or every `interval` starting at `first`.
async fn slot(
    addr: String,
    host: String,
    proto: Proto,
    mut sender: Option<Sender>,
    until: Instant,
    pace: Option<(Instant, Duration)>,
) -> Slot {
    let mut out = Slot {
        lat: Vec::with_capacity(100_000),
        errors: 0,
    };
    let mut next = pace.map(|(first, _)| first);
    while Instant::now() < until {
        let start = match (next.as_mut(), pace) {
            (Some(n), Some((_, every))) => {
                let at = *n;
                if at >= until {
                    break;
                }
                *n += every;
                if at > Instant::now() {
                    // On time: count from when the timer let us go (tokio's timer has
                    // millisecond granularity; its lag is the generator's, not the proxy's).
                    tokio::time::sleep_until(at.into()).await;
                    Instant::now()
                } else {
                    // Behind schedule (a slow response held this slot): count from the
                    // scheduled time, so the wait shows up in the latency.
                    at
                }
            }
            _ => Instant::now(),
        };
        if sender.is_none() {
            sender = Sender::connect(&addr, proto).await;
            if sender.is_none() {
                out.errors += 1;
                tokio::time::sleep(Duration::from_millis(10)).await;
                continue;
            }
        }
        let s = sender.as_mut().expect("connected above");
        match s.request(&host).await {
            Ok(ok) => {
                if !ok {
                    out.errors += 1;
                }
                out.lat.push(start.elapsed().as_micros() as u32);
            }
            Err(()) => {
                out.errors += 1;
                sender = None;
            }
        }
    }
    out
}

#[tokio::main(flavor = "current_thread")]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let addr = a
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let host = a.get(1).cloned().unwrap_or_else(|| "bench".into());
    let conns: usize = a.get(2).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let secs: u64 = a.get(3).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let proto = match a.get(4).map(String::as_str) {
        None | Some("h1") => Proto::H1,
        Some("h2") => Proto::H2,
        Some(other) => anyhow::bail!("protocol must be h1 or h2, not {other:?}"),
    };
    let rate: u64 = a.get(5).map(|s| s.parse()).transpose()?.unwrap_or(0);
    let conns = conns.max(1);

    // h2: share 4 connections between the slots (or one per slot if fewer).
    let mut shared = Vec::new();
    if proto == Proto::H2 {
        for _ in 0..conns.min(4) {
            match Sender::connect(&addr, proto).await {
                Some(Sender::H2(s)) => shared.push(s),
                _ => anyhow::bail!("h2 connection to {addr} failed"),
            }
        }
    }
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|i| {
            let sender = (!shared.is_empty()).then(|| Sender::H2(shared[i % shared.len()].clone()));
            let pace = (rate > 0).then(|| {
                let every = Duration::from_secs_f64(conns as f64 / rate as f64);
                (start + every.mul_f64(i as f64 / conns as f64), every)
            });
            tokio::spawn(slot(addr.clone(), host.clone(), proto, sender, until, pace))
        })
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let s = t.await?;
        all.extend(s.lat);
        errors += s.errors;
    }
    let elapsed = start.elapsed().as_secs_f64();
    all.sort_unstable();
    let pct = |p: f64| {
        all.get(((all.len() as f64 * p) as usize).min(all.len().saturating_sub(1)))
            .copied()
            .unwrap_or(0)
    };
    println!(
        "{{\"requests\":{},\"errors\":{},\"rps\":{:.0},\"p50_us\":{},\"p90_us\":{},\"p99_us\":{},\"max_us\":{}}}",
        all.len(),
        errors,
        all.len() as f64 / elapsed,
        pct(0.50),
        pct(0.90),
        pct(0.99),
        all.last().copied().unwrap_or(0)
    );
    Ok(())
}

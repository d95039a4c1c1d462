//! Closed-loop HTTP/1.1 load generator: N connections, each sending requests back to back
//! for a fixed duration. Prints one JSON line: requests/s and latency percentiles (µs).
//! Usage: loadgen <addr> <host-header> <connections> <seconds>

use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

async fn worker(addr: String, host: String, until: Instant) -> (Vec<u32>, u64) {
    let mut lat = Vec::with_capacity(100_000);
    let mut errors = 0u64;
    'outer: while Instant::now() < until {
        let Ok(s) = TcpStream::connect(&addr).await else {
            errors += 1;
            tokio::time::sleep(Duration::from_millis(10)).await;
            continue;
        };
        let _ = s.set_nodelay(true);
        let Ok((mut send, conn)) = hyper::client::conn::http1::handshake(TokioIo::new(s)).await
        else {
            errors += 1;
            continue;
        };
        tokio::spawn(conn);
        while Instant::now() < until {
            let req = hyper::Request::builder()
                .uri("/bench")
                .header("host", &host)
                .body(Empty::<Bytes>::new())
                .expect("static request");
            let t = Instant::now();
            match send.send_request(req).await {
                Ok(resp) => {
                    let ok = resp.status().is_success();
                    if resp.into_body().collect().await.is_err() || !ok {
                        errors += 1;
                    }
                    lat.push(t.elapsed().as_micros() as u32);
                }
                Err(_) => {
                    errors += 1;
                    continue 'outer;
                }
            }
        }
    }
    (lat, errors)
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let a: Vec<String> = std::env::args().skip(1).collect();
    let addr = a
        .first()
        .cloned()
        .unwrap_or_else(|| "127.0.0.1:18081".into());
    let host = a.get(1).cloned().unwrap_or_else(|| "bench".into());
    let conns: usize = a.get(2).map(|s| s.parse()).transpose()?.unwrap_or(16);
    let secs: u64 = a.get(3).map(|s| s.parse()).transpose()?.unwrap_or(10);
    let start = Instant::now();
    let until = start + Duration::from_secs(secs);
    let tasks: Vec<_> = (0..conns)
        .map(|_| tokio::spawn(worker(addr.clone(), host.clone(), until)))
        .collect();
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        let (l, e) = t.await?;
        all.extend(l);
        errors += e;
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

//! Load generation for the data-plane benchmark: fixed-rate and closed-loop HTTP/1.1
//! (keep-alive, one request in flight per connection) and a bulk TCP stream.
use std::io::{Read, Write};
use std::net::{SocketAddr, TcpListener, TcpStream};
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper_util::rt::TokioIo;

/// Outcome of one load phase.
#[derive(Clone, Debug, Default, PartialEq)]
pub struct LoadResult {
    pub ok: u64,
    pub errors: u64,
    pub elapsed: Duration,
    pub p50_ms: f64,
    pub p90_ms: f64,
    pub p99_ms: f64,
}

impl LoadResult {
    pub fn rps(&self) -> f64 {
        if self.elapsed.is_zero() {
            0.0
        } else {
            self.ok as f64 / self.elapsed.as_secs_f64()
        }
    }
}

/// p-th percentile (nearest rank) in milliseconds of unsorted samples.
pub fn percentile_ms(samples: &mut [Duration], p: f64) -> f64 {
    if samples.is_empty() {
        return 0.0;
    }
    samples.sort_unstable();
    let rank = ((p / 100.0) * samples.len() as f64).ceil() as usize;
    samples[rank.clamp(1, samples.len()) - 1].as_secs_f64() * 1000.0
}

async fn connect(addr: SocketAddr) -> std::io::Result<SendRequest<Empty<Bytes>>> {
    let stream = tokio::net::TcpStream::connect(addr).await?;
    stream.set_nodelay(true)?;
    let (tx, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(tx)
}

async fn request(
    tx: &mut Option<SendRequest<Empty<Bytes>>>,
    addr: SocketAddr,
    path: &str,
) -> std::io::Result<()> {
    if tx.as_ref().is_none_or(|t| t.is_closed()) {
        *tx = Some(connect(addr).await?);
    }
    let Some(t) = tx.as_mut() else {
        return Err(std::io::Error::other("no connection"));
    };
    t.ready().await.map_err(std::io::Error::other)?;
    let req = hyper::Request::get(path)
        .header(hyper::header::HOST, addr.to_string())
        .body(Empty::new())
        .map_err(std::io::Error::other)?;
    let resp = t.send_request(req).await.map_err(std::io::Error::other)?;
    let ok = resp.status().is_success();
    resp.into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?;
    if ok {
        Ok(())
    } else {
        Err(std::io::Error::other("non-2xx"))
    }
}

/// `conns` connections; with `rate` Some(rps) each sends on a fixed schedule (a request
/// sent late because the previous one was slow counts from its scheduled time, so
/// queueing shows; one sent on time counts from when the timer fired), else back-to-back.
pub async fn http_load(
    addr: SocketAddr,
    path: &str,
    conns: u32,
    rate: Option<u32>,
    duration: Duration,
) -> LoadResult {
    let start = Instant::now();
    let deadline = tokio::time::Instant::now() + duration;
    let mut tasks = Vec::new();
    let conns = conns.max(1);
    for i in 0..conns {
        let path = path.to_string();
        tasks.push(tokio::spawn(async move {
            let mut tx = None;
            let mut lat = Vec::new();
            let mut errors = 0u64;
            let period =
                rate.map(|r| Duration::from_secs_f64(f64::from(conns) / f64::from(r.max(1))));
            // Connection i starts i/conns of a period late, so the requests of all
            // connections are evenly spaced (one every 1/rate) instead of arriving as a
            // burst of `conns` at the same instant every period.
            let mut next =
                tokio::time::Instant::now() + period.map_or(Duration::ZERO, |p| p * i / conns);
            // Bounded by the deadline.
            while tokio::time::Instant::now() < deadline {
                let scheduled = match period {
                    Some(p) => {
                        let at = next;
                        next += p;
                        if at >= deadline {
                            break;
                        }
                        if at > tokio::time::Instant::now() {
                            // On time: count from when the timer let us go (tokio's timer
                            // has millisecond granularity; its lag is not the mesh's).
                            tokio::time::sleep_until(at).await;
                            tokio::time::Instant::now()
                        } else {
                            // Behind schedule (a slow response held this connection):
                            // count from the scheduled time, so queueing shows.
                            at
                        }
                    }
                    None => tokio::time::Instant::now(),
                };
                let res =
                    tokio::time::timeout(Duration::from_secs(5), request(&mut tx, addr, &path))
                        .await;
                match res {
                    Ok(Ok(())) => lat.push(scheduled.elapsed()),
                    _ => {
                        errors += 1;
                        tx = None;
                    }
                }
            }
            (lat, errors)
        }));
    }
    let mut all = Vec::new();
    let mut errors = 0;
    for t in tasks {
        if let Ok((lat, e)) = t.await {
            all.extend(lat);
            errors += e;
        }
    }
    let elapsed = start.elapsed();
    LoadResult {
        ok: all.len() as u64,
        errors,
        elapsed,
        p50_ms: percentile_ms(&mut all, 50.0),
        p90_ms: percentile_ms(&mut all, 90.0),
        p99_ms: percentile_ms(&mut all, 99.0),
    }
}

/// Reads everything from the first connection `listener` accepts; returns (bytes, time
/// from accept to EOF).
pub fn bulk_sink(listener: TcpListener) -> std::io::Result<(u64, Duration)> {
    let (mut s, _) = listener.accept()?;
    let start = Instant::now();
    let mut buf = vec![0u8; 256 * 1024];
    let mut total = 0u64;
    loop {
        let n = s.read(&mut buf)?;
        if n == 0 {
            break;
        }
        total += n as u64;
    }
    Ok((total, start.elapsed()))
}

/// Writes as fast as possible to `addr` for `duration`, then closes.
pub fn bulk_source(addr: SocketAddr, duration: Duration) -> std::io::Result<u64> {
    let mut s = TcpStream::connect_timeout(&addr, Duration::from_secs(5))?;
    let chunk = vec![0x5au8; 256 * 1024];
    let start = Instant::now();
    let mut sent = 0u64;
    while start.elapsed() < duration {
        s.write_all(&chunk)?;
        sent += chunk.len() as u64;
    }
    s.shutdown(std::net::Shutdown::Write)?;
    Ok(sent)
}

/// CPU time (user + system) a process has used: the scheduler's exact run time summed
/// over its threads (`/proc/<pid>/task/*/schedstat`), or, where the kernel keeps no
/// schedstat, the tick-sampled utime + stime of `/proc/<pid>/stat`.
pub fn process_cpu(pid: u32) -> std::io::Result<Duration> {
    if let Some(ns) = threads_runtime_ns(pid) {
        return Ok(Duration::from_nanos(ns));
    }
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat"))?;
    parse_cpu(&stat).ok_or_else(|| std::io::Error::other(format!("unparsable /proc/{pid}/stat")))
}

/// A `/proc/<pid>/status` memory field (`VmRSS:`, `VmHWM:`), in kB.
pub fn process_memory_kb(pid: u32, field: &str) -> Option<u64> {
    let status = std::fs::read_to_string(format!("/proc/{pid}/status")).ok()?;
    parse_status_kb(&status, field)
}

fn parse_status_kb(status: &str, field: &str) -> Option<u64> {
    status
        .lines()
        .find_map(|l| l.strip_prefix(field))
        .and_then(|rest| rest.split_whitespace().next())
        .and_then(|n| n.parse().ok())
}

fn threads_runtime_ns(pid: u32) -> Option<u64> {
    let mut total = 0;
    for t in std::fs::read_dir(format!("/proc/{pid}/task"))
        .ok()?
        .flatten()
    {
        // A thread that exited between listing and reading ran for no more than it had.
        if let Some(ns) = thread_runtime_ns(&t.path().join("schedstat").to_string_lossy()) {
            total += ns;
        }
    }
    Some(total)
}

/// First field of a `schedstat` file: nanoseconds the task has run on a CPU.
pub fn thread_runtime_ns(path: &str) -> Option<u64> {
    std::fs::read_to_string(path)
        .ok()?
        .split_whitespace()
        .next()?
        .parse()
        .ok()
}

fn parse_cpu(stat: &str) -> Option<Duration> {
    // Fields after the parenthesised command name; utime and stime are the 14th and 15th.
    let rest = &stat[stat.rfind(')')? + 2..];
    let f: Vec<&str> = rest.split_whitespace().collect();
    let ticks: u64 = f.get(11)?.parse::<u64>().ok()? + f.get(12)?.parse::<u64>().ok()?;
    // SAFETY: sysconf has no preconditions.
    let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) }.max(1) as u64;
    Some(Duration::from_secs_f64(ticks as f64 / hz as f64))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn percentiles_nearest_rank() {
        let mut v: Vec<Duration> = (1..=100).rev().map(Duration::from_millis).collect();
        assert_eq!(percentile_ms(&mut v, 50.0), 50.0);
        assert_eq!(percentile_ms(&mut v, 99.0), 99.0);
        assert_eq!(percentile_ms(&mut [], 99.0), 0.0);
    }

    #[test]
    fn memory_fields_from_proc_status() {
        let status = "Name:\tztunnel\nVmHWM:\t   20604 kB\nVmRSS:\t    9312 kB\n";
        assert_eq!(parse_status_kb(status, "VmRSS:"), Some(9312));
        assert_eq!(parse_status_kb(status, "VmHWM:"), Some(20604));
        assert_eq!(parse_status_kb(status, "VmSwap:"), None);
        assert!(process_memory_kb(std::process::id(), "VmRSS:").is_some_and(|kb| kb > 0));
    }

    #[test]
    fn cpu_from_stat_line() {
        let hz = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
        let line = "123 (zt (x) y) S 1 2 3 4 5 6 7 8 9 10 150 50 0 0 20 0 1 0";
        let d = parse_cpu(line).unwrap();
        assert!((d.as_secs_f64() - 200.0 / hz).abs() < 1e-9);
        assert_eq!(parse_cpu("garbage"), None);
        let own = process_cpu(std::process::id()).unwrap();
        assert!(own < Duration::from_secs(3600));
        // Burn a little CPU on this thread: its exact run time must grow.
        let before = thread_runtime_ns("/proc/thread-self/schedstat").unwrap();
        let t = Instant::now();
        let mut x = 0u64;
        while t.elapsed() < Duration::from_millis(20) {
            x = x.wrapping_add(std::hint::black_box(1));
        }
        assert!(x > 0);
        let after = thread_runtime_ns("/proc/thread-self/schedstat").unwrap();
        assert!(after - before >= 5_000_000, "{before} -> {after}");
        assert_eq!(thread_runtime_ns("/proc/none/schedstat"), None);
    }

    /// A loopback HTTP/1.1 server answering "ok", calling `on_request` for each request;
    /// it lives as long as the test's runtime.
    async fn ok_server(
        on_request: impl Fn() + Clone + Send + Sync + 'static,
    ) -> std::net::SocketAddr {
        let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = listener.local_addr().unwrap();
        tokio::spawn(async move {
            while let Ok((s, _)) = listener.accept().await {
                let on_request = on_request.clone();
                tokio::spawn(async move {
                    let svc = hyper::service::service_fn(move |_req| {
                        on_request();
                        async {
                            Ok::<_, std::convert::Infallible>(hyper::Response::new(
                                http_body_util::Full::new(Bytes::from_static(b"ok")),
                            ))
                        }
                    });
                    let _ = hyper::server::conn::http1::Builder::new()
                        .serve_connection(TokioIo::new(s), svc)
                        .await;
                });
            }
        });
        addr
    }

    #[tokio::test]
    async fn load_against_loopback_server() {
        let addr = ok_server(|| {}).await;
        let r = http_load(addr, "/", 2, Some(200), Duration::from_millis(500)).await;
        assert_eq!(r.errors, 0);
        assert!((80..=110).contains(&r.ok), "{r:?}");
        let r = http_load(addr, "/", 2, None, Duration::from_millis(200)).await;
        assert!(r.ok > 10 && r.errors == 0, "{r:?}");
    }

    #[tokio::test]
    async fn fixed_rate_spreads_connections_over_the_period() {
        // 4 connections at 200 rps: each sends every 20 ms, and together they should
        // send every 5 ms, not 4 at once every 20 ms.
        let arrivals = std::sync::Arc::new(std::sync::Mutex::new(Vec::new()));
        let seen = arrivals.clone();
        let addr = ok_server(move || seen.lock().unwrap().push(Instant::now())).await;
        let r = http_load(addr, "/", 4, Some(200), Duration::from_millis(400)).await;
        assert_eq!(r.errors, 0);
        let mut t = arrivals.lock().unwrap().clone();
        t.sort();
        let gaps: Vec<Duration> = t.windows(2).map(|w| w[1] - w[0]).collect();
        let bunched = gaps
            .iter()
            .filter(|g| **g < Duration::from_millis(1))
            .count();
        // In bursts, three gaps in four would be ~0; evenly spread, (almost) none are.
        assert!(
            gaps.len() >= 40 && bunched * 4 <= gaps.len(),
            "{bunched} of {} gaps under 1 ms",
            gaps.len()
        );
    }
}

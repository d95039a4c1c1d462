//! mwload: the request/response, connection-rate and fixed-rate HTTP/1.1 driver of
//! `bench/compare/run.sh` (netperf's TCP_RR / TCP_CRR and wrk2 are not packaged here).
//! Standard library only: `rustc -O bench/compare/mwload.rs -o mwload`.
//!
//!   mwload serve ECHO_PORT HTTP_PORT           echo server and HTTP/1.1 keep-alive server
//!   mwload rr   ADDR SECS                      one connection, 64 B ping-pong
//!   mwload crr  ADDR SECS WORKERS              connect, 64 B request, 64 B reply, close
//!   mwload http ADDR SECS RATE CONNS           open loop at RATE req/s over CONNS connections
//!
//! Every client phase stops after SECS; output is one line of `key=value` pairs.

use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::thread;
use std::time::{Duration, Instant};

const MSG: usize = 64;
const HTTP_BODY: &[u8] = b"ok\n";

fn main() {
    let a: Vec<String> = std::env::args().collect();
    let arg = |i: usize| -> &str { a.get(i).map(String::as_str).unwrap_or_else(|| usage()) };
    let num = |i: usize| -> u64 { arg(i).parse().unwrap_or_else(|_| usage()) };
    match arg(1) {
        "serve" => serve(num(2) as u16, num(3) as u16),
        "rr" => rr(addr(arg(2)), secs(num(3))),
        "crr" => crr(addr(arg(2)), secs(num(3)), num(4) as usize),
        "http" => http(addr(arg(2)), secs(num(3)), num(4), num(5) as usize),
        _ => usage(),
    }
}

fn usage() -> ! {
    eprintln!("usage: mwload serve ECHO HTTP | rr ADDR SECS | crr ADDR SECS WORKERS | http ADDR SECS RATE CONNS");
    std::process::exit(2)
}

fn addr(s: &str) -> SocketAddr {
    s.parse().unwrap_or_else(|_| usage())
}

fn secs(s: u64) -> Duration {
    Duration::from_secs(s.clamp(1, 600))
}

fn serve(echo_port: u16, http_port: u16) {
    let echo = TcpListener::bind(("0.0.0.0", echo_port)).expect("bind echo port");
    let http = TcpListener::bind(("0.0.0.0", http_port)).expect("bind http port");
    thread::spawn(move || {
        for s in http.incoming().flatten() {
            thread::spawn(move || http_conn(s));
        }
    });
    for s in echo.incoming().flatten() {
        thread::spawn(move || echo_conn(s));
    }
}

fn echo_conn(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let mut buf = [0u8; 16 * 1024];
    loop {
        match s.read(&mut buf) {
            Ok(0) | Err(_) => return,
            Ok(n) => {
                if s.write_all(&buf[..n]).is_err() {
                    return;
                }
            }
        }
    }
}

fn http_conn(mut s: TcpStream) {
    let _ = s.set_nodelay(true);
    let resp = format!(
        "HTTP/1.1 200 OK\r\ncontent-length: {}\r\ncontent-type: text/plain\r\n\r\n",
        HTTP_BODY.len()
    );
    let mut resp = resp.into_bytes();
    resp.extend_from_slice(HTTP_BODY);
    let mut buf = Vec::with_capacity(8192);
    let mut chunk = [0u8; 8192];
    loop {
        // Requests carry no body: each ends at an empty line.
        while let Some(end) = find(&buf, b"\r\n\r\n") {
            buf.drain(..end + 4);
            if s.write_all(&resp).is_err() {
                return;
            }
        }
        match s.read(&mut chunk) {
            Ok(0) | Err(_) => return,
            Ok(n) => buf.extend_from_slice(&chunk[..n]),
        }
    }
}

fn find(h: &[u8], n: &[u8]) -> Option<usize> {
    h.windows(n.len()).position(|w| w == n)
}

fn pct(sorted: &[u64], p: f64) -> u64 {
    if sorted.is_empty() {
        return 0;
    }
    let i = ((sorted.len() as f64 * p).ceil() as usize).clamp(1, sorted.len()) - 1;
    sorted[i]
}

fn rr(dst: SocketAddr, d: Duration) {
    let mut s = TcpStream::connect(dst).expect("connect");
    s.set_nodelay(true).unwrap();
    let req = [7u8; MSG];
    let mut rsp = [0u8; MSG];
    let mut lat = Vec::with_capacity(1 << 20);
    // Warm-up round trip (the mesh's first stream), not counted.
    s.write_all(&req).unwrap();
    s.read_exact(&mut rsp).unwrap();
    let start = Instant::now();
    while start.elapsed() < d {
        let t = Instant::now();
        s.write_all(&req).expect("write");
        s.read_exact(&mut rsp).expect("read");
        lat.push(t.elapsed().as_micros() as u64);
    }
    let el = start.elapsed().as_secs_f64();
    lat.sort_unstable();
    println!(
        "tps={:.0} p50_us={} p99_us={} n={}",
        lat.len() as f64 / el,
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        lat.len()
    );
}

fn crr(dst: SocketAddr, d: Duration, workers: usize) {
    let done = Arc::new(AtomicU64::new(0));
    let errs = Arc::new(AtomicU64::new(0));
    let start = Instant::now();
    let hs: Vec<_> = (0..workers.clamp(1, 64))
        .map(|_| {
            let (done, errs) = (done.clone(), errs.clone());
            thread::spawn(move || {
                let req = [7u8; MSG];
                let mut rsp = [0u8; MSG];
                while start.elapsed() < d {
                    let ok = (|| -> std::io::Result<()> {
                        let mut s = TcpStream::connect_timeout(&dst, Duration::from_secs(5))?;
                        s.set_nodelay(true)?;
                        s.set_read_timeout(Some(Duration::from_secs(5)))?;
                        s.write_all(&req)?;
                        s.read_exact(&mut rsp)?;
                        let _ = s.shutdown(Shutdown::Both);
                        Ok(())
                    })();
                    match ok {
                        Ok(()) => done.fetch_add(1, Ordering::Relaxed),
                        Err(_) => errs.fetch_add(1, Ordering::Relaxed),
                    };
                }
            })
        })
        .collect();
    for h in hs {
        let _ = h.join();
    }
    let el = start.elapsed().as_secs_f64();
    println!(
        "cps={:.0} n={} errors={}",
        done.load(Ordering::Relaxed) as f64 / el,
        done.load(Ordering::Relaxed),
        errs.load(Ordering::Relaxed)
    );
}

/// Open loop: connection `c` sends its k-th request at start + (k * conns + c) / rate;
/// latency counts from that scheduled time (a late send is charged to the system).
fn http(dst: SocketAddr, d: Duration, rate: u64, conns: usize) {
    let conns = conns.clamp(1, 256);
    let rate = rate.clamp(1, 100_000);
    let period = Duration::from_secs_f64(conns as f64 / rate as f64);
    let errs = Arc::new(AtomicU64::new(0));
    let stop = Arc::new(AtomicBool::new(false));
    // Connect everything first (the mesh's stream setup is not in the figure).
    let socks: Vec<TcpStream> = (0..conns)
        .map(|_| {
            let s = TcpStream::connect(dst).expect("connect");
            s.set_nodelay(true).unwrap();
            s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
            s
        })
        .collect();
    let start = Instant::now() + Duration::from_millis(100);
    let hs: Vec<_> = socks
        .into_iter()
        .enumerate()
        .map(|(c, mut s)| {
            let (errs, stop) = (errs.clone(), stop.clone());
            thread::spawn(move || {
                let req =
                    format!("GET /bench HTTP/1.1\r\nhost: {dst}\r\nuser-agent: mwload\r\n\r\n")
                        .into_bytes();
                let mut lat = Vec::new();
                let mut buf = Vec::with_capacity(4096);
                let mut chunk = [0u8; 4096];
                let offset = period.mul_f64(c as f64 / conns as f64);
                let mut k = 0u32;
                loop {
                    let due = start + offset + period * k;
                    if due >= start + d || stop.load(Ordering::Relaxed) {
                        break;
                    }
                    let now = Instant::now();
                    if due > now {
                        thread::sleep(due - now);
                    }
                    let ok = (|| -> std::io::Result<()> {
                        s.write_all(&req)?;
                        loop {
                            if let Some(h) = find(&buf, b"\r\n\r\n") {
                                let need = h + 4 + HTTP_BODY.len();
                                if buf.len() >= need {
                                    buf.drain(..need);
                                    return Ok(());
                                }
                            }
                            let n = s.read(&mut chunk)?;
                            if n == 0 {
                                return Err(std::io::ErrorKind::UnexpectedEof.into());
                            }
                            buf.extend_from_slice(&chunk[..n]);
                        }
                    })();
                    if ok.is_err() {
                        errs.fetch_add(1, Ordering::Relaxed);
                        stop.store(true, Ordering::Relaxed);
                        break;
                    }
                    lat.push(Instant::now().saturating_duration_since(due).as_micros() as u64);
                    k += 1;
                }
                lat
            })
        })
        .collect();
    let mut lat: Vec<u64> = hs
        .into_iter()
        .flat_map(|h| h.join().unwrap_or_default())
        .collect();
    lat.sort_unstable();
    println!(
        "rps={:.0} p50_us={} p99_us={} n={} errors={}",
        lat.len() as f64 / d.as_secs_f64(),
        pct(&lat, 0.50),
        pct(&lat, 0.99),
        lat.len(),
        errs.load(Ordering::Relaxed)
    );
}

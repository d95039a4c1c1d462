//! ztunnel benchmark: direct loopback TCP vs. through two ztunnel processes
//! (client → SOCKS5 on ztunnel A → HBONE/mTLS → ztunnel B → server), in one run.
//!
//! Run with `bench/ztunnel/run.sh` (builds release binaries, then runs this). Every phase
//! is bounded by `--secs`; all traffic stays on 127.88.0.0/24.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::{Duration, Instant};

use anyhow::{bail, Context, Result};
use clap::Parser;
use meshwork_identity::testing::TestCa;
use meshwork_model::keys::make_resource;
use meshwork_model::pb::config::{resource, ConfigUpdate, MeshSettings, Workload};
use meshwork_model::Kind;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};

#[derive(Parser)]
struct Args {
    /// Seconds per measured phase.
    #[arg(long, default_value_t = 3)]
    secs: u64,
    /// Worker threads of each ztunnel process (0: one per CPU).
    #[arg(long, default_value_t = 0)]
    ztunnel_threads: usize,
    /// ztunnel binary (default: next to this executable).
    #[arg(long)]
    ztunnel: Option<PathBuf>,
}

fn ip(host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 88, 0, host))
}

fn free_port(ip: IpAddr) -> Result<u16> {
    let l = std::net::TcpListener::bind(SocketAddr::new(ip, 0))?;
    Ok(l.local_addr()?.port())
}

fn workload(name: &str, node: &str, addr: IpAddr) -> Workload {
    Workload {
        uid: format!("bench/{name}"),
        name: name.into(),
        namespace: "bench".into(),
        service_account: name.into(),
        node: node.into(),
        addresses: vec![addr.to_string()],
        captured: true,
        healthy: true,
        ..Default::default()
    }
}

struct Proc(Child);

impl Drop for Proc {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

fn spawn_ztunnel(bin: &Path, args: &[String], log: &Path) -> Result<Proc> {
    let out = std::fs::File::create(log)?;
    let child = Command::new(bin)
        .args(args)
        .env("RUST_LOG", "info")
        .stdout(out.try_clone()?)
        .stderr(out)
        .stdin(Stdio::null())
        .spawn()
        .with_context(|| format!("starting {}", bin.display()))?;
    Ok(Proc(child))
}

async fn wait_ready(addr: SocketAddr) -> Result<()> {
    for _ in 0..200 {
        if let Ok(mut s) = TcpStream::connect(addr).await {
            s.write_all(b"GET /healthz/ready HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n")
                .await?;
            let mut buf = Vec::new();
            let _ = s.read_to_end(&mut buf).await;
            if buf.starts_with(b"HTTP/1.1 200") {
                return Ok(());
            }
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    bail!("ztunnel at {addr} not ready after 10s")
}

fn proc_status_kb(pid: u32, field: &str) -> u64 {
    std::fs::read_to_string(format!("/proc/{pid}/status"))
        .ok()
        .and_then(|s| {
            s.lines()
                .find(|l| l.starts_with(field))
                .and_then(|l| l.split_whitespace().nth(1).and_then(|v| v.parse().ok()))
        })
        .unwrap_or(0)
}

/// utime + stime of a process, in seconds.
fn cpu_secs(pid: u32) -> f64 {
    let tck = unsafe { libc::sysconf(libc::_SC_CLK_TCK) } as f64;
    let stat = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
    let after = stat.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<&str> = after.split_whitespace().collect();
    let t = |i: usize| f.get(i).and_then(|v| v.parse::<f64>().ok()).unwrap_or(0.0);
    // Fields after ")" start at index 0 = state; utime is field 14 overall → index 11.
    (t(11) + t(12)) / tck
}

/// Echo server (latency, connection rate).
async fn echo_server(addr: SocketAddr) -> Result<()> {
    let l = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let _ = s.set_nodelay(true);
                let mut buf = vec![0u8; 16 * 1024];
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).await.is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(())
}

/// Sink server (throughput): counts bytes until EOF, answers the count.
async fn sink_server(addr: SocketAddr) -> Result<()> {
    let l = TcpListener::bind(addr).await?;
    tokio::spawn(async move {
        while let Ok((mut s, _)) = l.accept().await {
            tokio::spawn(async move {
                let mut buf = vec![0u8; 256 * 1024];
                let mut total = 0u64;
                loop {
                    match s.read(&mut buf).await {
                        Ok(0) => break,
                        Ok(n) => total += n as u64,
                        Err(_) => return,
                    }
                }
                let _ = s.write_all(&total.to_be_bytes()).await;
                let _ = s.shutdown().await;
            });
        }
    });
    Ok(())
}

#[derive(Clone, Copy)]
enum Path2 {
    Direct,
    Mesh { socks: SocketAddr },
}

async fn connect(path: Path2, dst: SocketAddr) -> Result<TcpStream> {
    match path {
        Path2::Direct => {
            let s = TcpStream::connect(dst).await?;
            s.set_nodelay(true)?;
            Ok(s)
        }
        Path2::Mesh { socks } => {
            let mut s = TcpStream::connect(socks).await?;
            s.set_nodelay(true)?;
            let IpAddr::V4(v4) = dst.ip() else {
                bail!("IPv4 only")
            };
            let mut req = vec![5, 1, 0, 5, 1, 0, 1];
            req.extend(v4.octets());
            req.extend(dst.port().to_be_bytes());
            // Greeting and request pipelined; replies are read in order.
            s.write_all(&req).await?;
            let mut reply = [0u8; 12];
            s.read_exact(&mut reply).await?;
            if reply[3] != 0 {
                bail!("SOCKS5 refused: {}", reply[3]);
            }
            Ok(s)
        }
    }
}

async fn bulk(path: Path2, dst: SocketAddr, streams: usize, d: Duration) -> Result<(f64, u64)> {
    let start = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..streams {
        tasks.push(tokio::spawn(async move {
            let mut s = connect(path, dst).await?;
            let chunk = vec![0x5au8; 256 * 1024];
            let t0 = Instant::now();
            while t0.elapsed() < d {
                s.write_all(&chunk).await?;
            }
            s.shutdown().await?;
            let mut n = [0u8; 8];
            s.read_exact(&mut n).await?;
            anyhow::Ok(u64::from_be_bytes(n))
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    let secs = start.elapsed().as_secs_f64();
    Ok((total as f64 * 8.0 / secs / 1e9, total))
}

/// Blocking echo server for the latency phase: one OS thread per connection, so the
/// server side of a ping-pong costs one kernel wake-up, like netperf's TCP_RR.
fn blocking_echo_server(addr: SocketAddr) -> Result<()> {
    let l = std::net::TcpListener::bind(addr)?;
    std::thread::spawn(move || {
        for s in l.incoming() {
            let Ok(mut s) = s else { break };
            std::thread::spawn(move || {
                use std::io::{Read, Write};
                let _ = s.set_nodelay(true);
                let mut buf = [0u8; 4096];
                loop {
                    match s.read(&mut buf) {
                        Ok(0) | Err(_) => break,
                        Ok(n) => {
                            if s.write_all(&buf[..n]).is_err() {
                                break;
                            }
                        }
                    }
                }
            });
        }
    });
    Ok(())
}

/// 64-byte ping-pong on one connection from a blocking client thread (the SOCKS5
/// handshake is done by the async path, then the socket is switched to blocking mode).
async fn latency(path: Path2, dst: SocketAddr, d: Duration) -> Result<(f64, f64, usize)> {
    let s = connect(path, dst).await?.into_std()?;
    s.set_nonblocking(false)?;
    tokio::task::spawn_blocking(move || ping_pong(s, d)).await?
}

fn ping_pong(mut s: std::net::TcpStream, d: Duration) -> Result<(f64, f64, usize)> {
    use std::io::{Read, Write};
    let msg = [0x42u8; 64];
    let mut buf = [0u8; 64];
    // Warm up.
    for _ in 0..200 {
        s.write_all(&msg)?;
        s.read_exact(&mut buf)?;
    }
    let mut samples = Vec::with_capacity(200_000);
    let t0 = Instant::now();
    while t0.elapsed() < d && samples.len() < 1_000_000 {
        let t = Instant::now();
        s.write_all(&msg)?;
        s.read_exact(&mut buf)?;
        samples.push(t.elapsed().as_secs_f64() * 1e6);
    }
    samples.sort_by(|a, b| a.total_cmp(b));
    let pct = |p: f64| samples[((samples.len() as f64 - 1.0) * p) as usize];
    Ok((pct(0.50), pct(0.99), samples.len()))
}

async fn conn_rate(path: Path2, dst: SocketAddr, d: Duration, workers: usize) -> Result<f64> {
    let t0 = Instant::now();
    let mut tasks = Vec::new();
    for _ in 0..workers {
        tasks.push(tokio::spawn(async move {
            let mut n = 0u64;
            let msg = [1u8; 64];
            let mut buf = [0u8; 64];
            while t0.elapsed() < d {
                let mut s = connect(path, dst).await?;
                s.write_all(&msg).await?;
                s.read_exact(&mut buf).await?;
                n += 1;
            }
            anyhow::Ok(n)
        }));
    }
    let mut total = 0;
    for t in tasks {
        total += t.await??;
    }
    Ok(total as f64 / t0.elapsed().as_secs_f64())
}

/// Destination-pod servers: async echo (connection rate), blocking echo (latency), sink.
#[derive(Clone, Copy)]
struct Servers {
    echo: SocketAddr,
    pingpong: SocketAddr,
    sink: SocketAddr,
}

struct Results {
    gbps1: f64,
    gbps8: f64,
    p50: f64,
    p99: f64,
    conns: f64,
    bytes: u64,
}

async fn run_all(path: Path2, servers: Servers, d: Duration) -> Result<Results> {
    let Servers {
        echo,
        pingpong,
        sink,
    } = servers;
    let (gbps1, b1) = bulk(path, sink, 1, d).await?;
    let (gbps8, b8) = bulk(path, sink, 8, d).await?;
    let (p50, p99, _) = latency(path, pingpong, d).await?;
    let conns = conn_rate(path, echo, d, 4).await?;
    Ok(Results {
        gbps1,
        gbps8,
        p50,
        p99,
        conns,
        bytes: b1 + b8,
    })
}

#[tokio::main]
async fn main() -> Result<()> {
    let args = Args::parse();
    let d = Duration::from_secs(args.secs.clamp(1, 30));
    let bin = match args.ztunnel.clone() {
        Some(b) => b,
        None => std::env::current_exe()?.with_file_name("ztunnel"),
    };
    if !bin.exists() {
        bail!(
            "{} not found: build it with cargo build --release -p meshwork-ztunnel --bin ztunnel",
            bin.display()
        );
    }
    let dir = std::env::temp_dir().join(format!("meshwork-ztunnel-bench-{}", std::process::id()));
    std::fs::create_dir_all(&dir)?;

    // Certificates and config for node-a (client) and node-b (server).
    let ca = TestCa::new("cluster.local");
    let certs = dir.join("certs");
    for sa in ["client", "server"] {
        let id = format!("spiffe://cluster.local/ns/bench/sa/{sa}").parse()?;
        ca.issue(&id, Duration::from_secs(3600))
            .save(&certs.join("bench").join(sa))?;
    }
    let mut resources = vec![make_resource(
        "mesh".into(),
        resource::Kind::Mesh(MeshSettings {
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            ..Default::default()
        }),
    )];
    for w in [
        workload("client", "node-a", ip(2)),
        workload("server", "node-b", ip(3)),
    ] {
        resources.push(make_resource(
            Kind::Workload.key(&w.namespace, &w.name),
            resource::Kind::Workload(w),
        ));
    }
    let config = dir.join("config.pb");
    std::fs::write(
        &config,
        meshwork_model::static_config::encode(&ConfigUpdate {
            version: 1,
            resources,
            ..Default::default()
        }),
    )?;

    let echo = SocketAddr::new(ip(3), free_port(ip(3))?);
    let sink = SocketAddr::new(ip(3), free_port(ip(3))?);
    let pingpong = SocketAddr::new(ip(3), free_port(ip(3))?);
    echo_server(echo).await?;
    blocking_echo_server(pingpong)?;
    sink_server(sink).await?;
    let servers = Servers {
        echo,
        pingpong,
        sink,
    };

    let socks = SocketAddr::new(ip(1), free_port(ip(1))?);
    let ready_a = SocketAddr::new(ip(1), free_port(ip(1))?);
    let ready_b = SocketAddr::new(ip(4), free_port(ip(4))?);
    let common = |node: &str| {
        vec![
            "--node".to_string(),
            node.to_string(),
            "--static-config".into(),
            config.display().to_string(),
            "--cert-dir".into(),
            certs.display().to_string(),
            "--outbound-addr".into(),
            "off".into(),
            "--inbound-plain-addr".into(),
            "off".into(),
            "--admin-addr".into(),
            "off".into(),
            "--metrics-addr".into(),
            "off".into(),
            "--worker-threads".into(),
            args.ztunnel_threads.to_string(),
        ]
    };
    let mut a_args = common("node-a");
    a_args.extend([
        "--socks5-addr".into(),
        socks.to_string(),
        "--local-workload".into(),
        "bench/client".into(),
        "--hbone-addr".into(),
        SocketAddr::new(ip(2), 15008).to_string(),
        "--readiness-addr".into(),
        ready_a.to_string(),
    ]);
    let mut b_args = common("node-b");
    b_args.extend([
        "--socks5-addr".into(),
        "off".into(),
        "--hbone-addr".into(),
        SocketAddr::new(ip(3), 15008).to_string(),
        "--readiness-addr".into(),
        ready_b.to_string(),
    ]);
    let a = spawn_ztunnel(&bin, &a_args, &dir.join("ztunnel-a.log"))?;
    let b = spawn_ztunnel(&bin, &b_args, &dir.join("ztunnel-b.log"))?;
    wait_ready(ready_a).await?;
    wait_ready(ready_b).await?;
    tokio::time::sleep(Duration::from_millis(300)).await;
    let (pa, pb) = (a.0.id(), b.0.id());
    let idle_rss = (proc_status_kb(pa, "VmRSS:"), proc_status_kb(pb, "VmRSS:"));

    eprintln!("measuring direct TCP ({}s per phase)...", d.as_secs());
    let direct = run_all(Path2::Direct, servers, d).await?;
    eprintln!("measuring through two ztunnels...");
    let cpu0 = cpu_secs(pa) + cpu_secs(pb);
    let mesh_path = Path2::Mesh { socks };
    let (gbps1, b1) = bulk(mesh_path, sink, 1, d).await?;
    let (gbps8, b8) = bulk(mesh_path, sink, 8, d).await?;
    let cpu1 = cpu_secs(pa) + cpu_secs(pb);
    let (p50, p99, _) = latency(mesh_path, pingpong, d).await?;
    let conns = conn_rate(mesh_path, echo, d, 4).await?;
    let mesh = Results {
        gbps1,
        gbps8,
        p50,
        p99,
        conns,
        bytes: b1 + b8,
    };
    let cpu_per_gb = (cpu1 - cpu0) / (mesh.bytes as f64 / 1e9);
    let peak_rss = (proc_status_kb(pa, "VmHWM:"), proc_status_kb(pb, "VmHWM:"));

    let cores = std::thread::available_parallelism()
        .map(|n| n.get())
        .unwrap_or(0);
    println!(
        "## ztunnel benchmark ({cores} cores, {}s per phase, ztunnel worker threads: {})\n",
        d.as_secs(),
        if args.ztunnel_threads == 0 {
            "one per CPU".to_string()
        } else {
            args.ztunnel_threads.to_string()
        }
    );
    println!("| metric | direct TCP | via 2 ztunnels | mesh / direct |");
    println!("|---|---|---|---|");
    let row = |name: &str, dv: f64, mv: f64, unit: &str| {
        println!(
            "| {name} | {dv:.2} {unit} | {mv:.2} {unit} | {:.2}x |",
            mv / dv
        );
    };
    row("1 stream bulk", direct.gbps1, mesh.gbps1, "Gb/s");
    row("8 streams bulk", direct.gbps8, mesh.gbps8, "Gb/s");
    row("64 B ping-pong p50", direct.p50, mesh.p50, "µs");
    row("64 B ping-pong p99", direct.p99, mesh.p99, "µs");
    row(
        "new connection + 64 B echo (4 workers)",
        direct.conns,
        mesh.conns,
        "/s",
    );
    println!(
        "\nztunnel CPU (A+B) during bulk: {cpu_per_gb:.2} CPU-s per GB ({:.2} GB moved)",
        mesh.bytes as f64 / 1e9
    );
    println!(
        "ztunnel RSS: idle A {:.1} MB, B {:.1} MB; peak A {:.1} MB, B {:.1} MB",
        idle_rss.0 as f64 / 1024.0,
        idle_rss.1 as f64 / 1024.0,
        peak_rss.0 as f64 / 1024.0,
        peak_rss.1 as f64 / 1024.0
    );
    drop(a);
    drop(b);
    let _ = std::fs::remove_dir_all(&dir);
    Ok(())
}

//! Data-plane benchmark on the namespace mini-cluster, pod → pod across nodes, three paths
//! measured in the same run and interleaved round by round:
//! - mesh: BPF capture + source ztunnel → HBONE/mTLS → destination ztunnel → pod;
//! - floor: two bare userspace relays on the same nodes (see `meshwork_e2e::floor`), the
//!   hop count of the mesh without any of its work;
//! - no mesh: plaintext pod → pod.
//!
//! Prints a markdown table for docs/benchmarks.md.
//!
//! `cargo build --release --workspace && target/release/ebpf-bench [--secs N] [--rounds N]
//! [--network bridge|kind-ptp|cilium-like] [--capture node|inpod]`
//! (root; binaries from the same directory or $MESHWORK_BIN_DIR).
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::time::Duration;

use anyhow::{anyhow, Context};
use meshwork_e2e::bench::{self, LoadResult};
use meshwork_e2e::floor::Relay;
use meshwork_e2e::{Binaries, CaptureMode, NetnsMesh, Network};

const HTTP_PORT: u16 = 8080;
const BULK_PORT: u16 = 9000;
/// Floor relays: source node listens on FLOOR_PORT (+1 for bulk), destination node on
/// FLOOR_PORT + 2 (+3 for bulk).
const FLOOR_PORT: u16 = 17000;

struct PathResult {
    fixed: LoadResult,
    /// None with `--fixed-only`.
    max: Option<LoadResult>,
    bulk_gbps: Option<f64>,
    /// CPU of one proxy (the mean of the two nodes') per 1,000 rps in the fixed phase.
    proxy_cpu_per_krps: Option<f64>,
    /// Resident set of one proxy (the mean of the two) right after the fixed phase, MB.
    proxy_rss_mb: Option<f64>,
}

/// Where a path starts, where it connects to and whose CPU counts as the proxies'.
struct Path<'a> {
    from: &'a str,
    http: SocketAddr,
    bulk: SocketAddr,
    /// Sink pod of the bulk stream.
    bulk_pod: &'a str,
    cpu: Box<dyn Fn() -> Option<Duration> + 'a>,
    /// Mean resident set of the two proxies, MB (None: not separate processes).
    rss: Box<dyn Fn() -> Option<f64> + 'a>,
}

fn load(
    mesh: &NetnsMesh,
    from: &str,
    dst: SocketAddr,
    conns: u32,
    rate: Option<u32>,
    secs: u64,
) -> anyhow::Result<LoadResult> {
    let r = mesh.cluster.in_netns(from, move || {
        let rt = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?;
        Ok::<_, std::io::Error>(rt.block_on(bench::http_load(
            dst,
            "/api/orders?size=1024",
            conns,
            rate,
            Duration::from_secs(secs),
        )))
    })??;
    Ok(r)
}

fn bulk(mesh: &NetnsMesh, p: &Path, secs: u64) -> anyhow::Result<f64> {
    let listener = mesh.cluster.in_netns(p.bulk_pod, || {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, BULK_PORT))
    })??;
    let sink = std::thread::spawn(move || bench::bulk_sink(listener));
    let dst = p.bulk;
    mesh.cluster.in_netns(p.from, move || {
        bench::bulk_source(dst, Duration::from_secs(secs))
    })??;
    let (bytes, elapsed) = sink.join().map_err(|_| anyhow!("bulk sink panicked"))??;
    Ok(bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9)
}

fn ztunnels_cpu(mesh: &NetnsMesh) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for n in ["n0", "n1"] {
        total += bench::process_cpu(mesh.ztunnel_pid(n)?).ok()?;
    }
    Some(total)
}

fn ztunnels_rss_mb(mesh: &NetnsMesh) -> Option<f64> {
    let mut total = 0.0;
    for n in ["n0", "n1"] {
        total += bench::process_memory_kb(mesh.ztunnel_pid(n)?, "VmRSS:")? as f64 / 1024.0;
    }
    Some(total / 2.0)
}

fn run_path(mesh: &NetnsMesh, p: &Path, args: &Args) -> anyhow::Result<PathResult> {
    let secs = args.secs;
    // Warm-up: connections, certificates, pools.
    load(mesh, p.from, p.http, 4, None, 1)?;
    let before = (p.cpu)();
    let fixed = load(mesh, p.from, p.http, 10, Some(1000), secs)?;
    let after = (p.cpu)();
    let proxy_rss_mb = (p.rss)();
    let proxy_cpu_per_krps = match (before, after) {
        (Some(b), Some(a)) if fixed.rps() > 0.0 => {
            Some((a - b).as_secs_f64() / fixed.elapsed.as_secs_f64() / (fixed.rps() / 1000.0) / 2.0)
        }
        _ => None,
    };
    let (max, bulk_gbps) = if args.fixed_only {
        (None, None)
    } else {
        (
            Some(load(mesh, p.from, p.http, 32, None, secs)?),
            Some(bulk(mesh, p, secs)?),
        )
    };
    Ok(PathResult {
        fixed,
        max,
        bulk_gbps,
        proxy_cpu_per_krps,
        proxy_rss_mb,
    })
}

fn row(name: &str, r: &PathResult, base: Option<&PathResult>) -> String {
    let added = |f: fn(&LoadResult) -> f64| {
        base.map(|b| format!("{:+.2}", f(&r.fixed) - f(&b.fixed)))
            .unwrap_or_else(|| "-".into())
    };
    let max = r.max.as_ref().map_or_else(
        || "- | - | - | -".to_string(),
        |m| {
            format!(
                "{:.0} | {:.2} | {:.2} | {}",
                m.rps(),
                m.p50_ms,
                m.p99_ms,
                m.errors
            )
        },
    );
    let bulk = r
        .bulk_gbps
        .map_or_else(|| "-".to_string(), |g| format!("{g:.2}"));
    format!(
        "| {name} | {:.0} | {:.2} | {:.2} | {:.2} | {} | {} | {} | {max} | {bulk} | {} |",
        r.fixed.rps(),
        r.fixed.p50_ms,
        r.fixed.p90_ms,
        r.fixed.p99_ms,
        added(|l| l.p50_ms),
        added(|l| l.p99_ms),
        r.fixed.errors,
        r.proxy_cpu_per_krps
            .map(|c| format!("{c:.3}"))
            .unwrap_or_else(|| "-".into()),
    )
}

fn median(mut v: Vec<f64>) -> f64 {
    v.sort_by(f64::total_cmp);
    match v.len() {
        0 => f64::NAN,
        n if n % 2 == 1 => v[n / 2],
        n => (v[n / 2 - 1] + v[n / 2]) / 2.0,
    }
}

/// Median, minimum and maximum; None for no values.
fn spread(v: Vec<f64>) -> Option<(f64, f64, f64)> {
    let lo = v.iter().copied().reduce(f64::min)?;
    let hi = v.iter().copied().reduce(f64::max)?;
    Some((median(v), lo, hi))
}

/// Per path, the median over rounds of the fixed-rate figures (each round's "added" is
/// against the plaintext path of the same round).
fn medians(rounds: &[Vec<PathResult>]) -> String {
    let mut out = format!(
        "Median of {} rounds at 1,000 rps:\n\n| path | p50 ms | p90 ms | p99 ms | added p50 | added p99 | CPU per 1k rps, per proxy |\n|---|---|---|---|---|---|---|\n",
        rounds.len()
    );
    for (i, name) in ["mesh", "floor", "no mesh"].iter().enumerate() {
        let of = |f: &dyn Fn(&Vec<PathResult>) -> f64| median(rounds.iter().map(f).collect());
        let added = |g: fn(&LoadResult) -> f64| {
            if i == 2 {
                "-".to_string()
            } else {
                format!("{:+.3}", of(&|r| g(&r[i].fixed) - g(&r[2].fixed)))
            }
        };
        let cpu = if i == 2 {
            "-".to_string()
        } else {
            format!(
                "{:.3}",
                of(&|r| r[i].proxy_cpu_per_krps.unwrap_or(f64::NAN))
            )
        };
        out += &format!(
            "| {name} | {:.3} | {:.3} | {:.3} | {} | {} | {cpu} |\n",
            of(&|r| r[i].fixed.p50_ms),
            of(&|r| r[i].fixed.p90_ms),
            of(&|r| r[i].fixed.p99_ms),
            added(|l| l.p50_ms),
            added(|l| l.p99_ms),
        );
    }
    // Host drift moves both proxies' CPU together; their ratio within a round does not.
    let ratios: Vec<f64> = rounds
        .iter()
        .filter_map(|r| Some(r[0].proxy_cpu_per_krps? / r[1].proxy_cpu_per_krps?))
        .collect();
    if let Some((mid, lo, hi)) = spread(ratios) {
        out += &format!(
            "\nCPU per request, mesh / floor within each round: median {mid:.2} ({lo:.2}–{hi:.2})\n"
        );
    }
    // Istio states ztunnel memory per 1,000 rps: the resident set at that rate.
    let rss: Vec<f64> = rounds.iter().filter_map(|r| r[0].proxy_rss_mb).collect();
    if let Some((mid, lo, hi)) = spread(rss) {
        out += &format!(
            "ztunnel resident set after each 1,000 rps phase: median {mid:.1} MB ({lo:.1}–{hi:.1})\n"
        );
    }
    out
}

/// What the guest does with an idle vCPU: it sets the price of every wake-up.
fn idle_policy() -> String {
    let read = |p: &str| {
        std::fs::read_to_string(p)
            .ok()
            .map(|s| s.trim().to_string())
    };
    let driver =
        read("/sys/devices/system/cpu/cpuidle/current_driver").unwrap_or_else(|| "?".into());
    match read("/sys/module/haltpoll/parameters/guest_halt_poll_ns") {
        Some(ns) => format!("cpuidle driver {driver}, guest_halt_poll_ns={ns}"),
        None => format!("cpuidle driver {driver}"),
    }
}

struct Args {
    secs: u64,
    rounds: u32,
    /// Only the fixed-rate phase (latency and CPU), for quick comparisons.
    fixed_only: bool,
    network: Network,
    capture: CaptureMode,
}

fn parse_args() -> anyhow::Result<Args> {
    let mut a = Args {
        secs: 5,
        rounds: 2,
        fixed_only: false,
        network: Network::Bridge,
        capture: CaptureMode::Node,
    };
    let mut args = std::env::args().skip(1);
    while let Some(flag) = args.next() {
        let mut value = |range: std::ops::RangeInclusive<u64>| -> anyhow::Result<u64> {
            let v: u64 = args
                .next()
                .with_context(|| format!("{flag} needs a value"))?
                .parse()
                .with_context(|| format!("{flag}: not a number"))?;
            if !range.contains(&v) {
                return Err(anyhow!(
                    "{flag}: must be {}..={}",
                    range.start(),
                    range.end()
                ));
            }
            Ok(v)
        };
        match flag.as_str() {
            "--secs" => a.secs = value(1..=120)?,
            "--rounds" => a.rounds = value(1..=10)? as u32,
            "--fixed-only" => a.fixed_only = true,
            "--network" => {
                a.network = match args.next().as_deref() {
                    Some("bridge") => Network::Bridge,
                    Some("kind-ptp") => Network::KindPtp,
                    Some("cilium-like") => Network::CiliumLike,
                    other => {
                        return Err(anyhow!(
                            "--network {other:?}: bridge, kind-ptp or cilium-like"
                        ))
                    }
                }
            }
            "--capture" => {
                a.capture = match args.next().as_deref() {
                    Some("node") => CaptureMode::Node,
                    Some("inpod") => CaptureMode::InPod,
                    other => return Err(anyhow!("--capture {other:?}: node or inpod")),
                }
            }
            other => {
                return Err(anyhow!(
                    "unknown argument {other:?} (expected --secs N, --rounds N, --fixed-only, \
                     --network bridge|kind-ptp|cilium-like, --capture node|inpod)"
                ))
            }
        }
    }
    Ok(a)
}

fn main() -> anyhow::Result<()> {
    let args = parse_args()?;
    let mesh = NetnsMesh::start_with(Binaries::locate()?, args.network, args.capture)
        .map_err(|e| anyhow!("{e}"))?;
    let c = &mesh.cluster;
    let (n0, n1) = (c.node("n0")?, c.node("n1")?);
    // The policy fixture denies plaintext into production; the plaintext and floor pairs
    // live in the non-mesh "legacy" namespace, the mesh pair in production: all cross
    // nodes n0 → n1.
    let server = |pod: &str, port| -> anyhow::Result<SocketAddr> {
        Ok(SocketAddr::new(c.pod(pod)?.ip.into(), port))
    };
    let at = |ip: Ipv4Addr, port| SocketAddr::new(ip.into(), port);
    let mut relays = Vec::new();
    for (offset, port) in [(0, HTTP_PORT), (1, BULK_PORT)] {
        let far = at(n1.ip, FLOOR_PORT + 2 + offset);
        relays.push(Relay::start(&n1.netns, far, server("plain-server", port)?)?);
        relays.push(Relay::start(
            &n0.netns,
            at(n0.ip, FLOOR_PORT + offset),
            far,
        )?);
    }
    let paths = [
        Path {
            from: "client",
            http: server("orders-v1", HTTP_PORT)?,
            bulk: server("orders-v1", BULK_PORT)?,
            bulk_pod: "orders-v1",
            cpu: Box::new(|| ztunnels_cpu(&mesh)),
            rss: Box::new(|| ztunnels_rss_mb(&mesh)),
        },
        Path {
            from: "outsider",
            http: at(n0.ip, FLOOR_PORT),
            bulk: at(n0.ip, FLOOR_PORT + 1),
            bulk_pod: "plain-server",
            cpu: Box::new(|| Some(relays.iter().map(Relay::cpu).sum())),
            rss: Box::new(|| None),
        },
        Path {
            from: "outsider",
            http: server("plain-server", HTTP_PORT)?,
            bulk: server("plain-server", BULK_PORT)?,
            bulk_pod: "plain-server",
            cpu: Box::new(|| None),
            rss: Box::new(|| None),
        },
    ];
    println!(
        "{}s per phase, {} round(s); 1 KB HTTP/1.1 responses; pods on different nodes; network {}, capture {}; {}\n",
        args.secs,
        args.rounds,
        args.network.name(),
        args.capture.name(),
        idle_policy()
    );
    println!("| path | 1k rps: achieved | p50 ms | p90 ms | p99 ms | added p50 | added p99 | errors | max rps (32 conns) | p50 ms | p99 ms | errors | bulk Gbit/s | CPU per 1k rps, per proxy |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|---|---|---|");
    let mut rounds = Vec::new();
    for round in 1..=args.rounds {
        let mut results = Vec::new();
        for p in &paths {
            results.push(run_path(&mesh, p, &args)?);
        }
        let base = &results[2];
        println!(
            "{}",
            row(
                &format!("mesh (BPF + ztunnel HBONE), round {round}"),
                &results[0],
                Some(base)
            )
        );
        println!(
            "{}",
            row(
                &format!("floor (two bare relays), round {round}"),
                &results[1],
                Some(base)
            )
        );
        println!(
            "{}",
            row(&format!("no mesh (plaintext), round {round}"), base, None)
        );
        rounds.push(results);
    }
    if rounds.len() > 1 {
        println!("\n{}", medians(&rounds));
    }
    drop(paths);
    drop(relays);
    Ok(())
}

//! Data-plane benchmark on the namespace mini-cluster: pod → pod across nodes through the
//! mesh (BPF capture + ztunnel HBONE) and without it (plaintext, pods not enrolled), in the
//! same run. Prints a markdown table for docs/benchmarks.md.
//!
//! `cargo build --release --workspace && target/release/ebpf-bench [--secs N]`
//! (root; binaries from the same directory or $MESHWORK_BIN_DIR).
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::time::Duration;

use anyhow::{anyhow, Context};
use meshwork_e2e::bench::{self, LoadResult};
use meshwork_e2e::{Binaries, NetnsMesh};

const BULK_PORT: u16 = 9000;

struct PathResult {
    fixed: LoadResult,
    max: LoadResult,
    bulk_gbps: f64,
    ztunnel_cpu_per_krps: Option<f64>,
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

fn bulk(mesh: &NetnsMesh, from: &str, to: &str, secs: u64) -> anyhow::Result<f64> {
    let to_ip = mesh.cluster.pod(to)?.ip;
    let listener = mesh.cluster.in_netns(to, || {
        TcpListener::bind(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, BULK_PORT))
    })??;
    let sink = std::thread::spawn(move || bench::bulk_sink(listener));
    let dst = SocketAddr::new(to_ip.into(), BULK_PORT);
    mesh.cluster.in_netns(from, move || {
        bench::bulk_source(dst, Duration::from_secs(secs))
    })??;
    let (bytes, elapsed) = sink.join().map_err(|_| anyhow!("bulk sink panicked"))??;
    Ok(bytes as f64 * 8.0 / elapsed.as_secs_f64() / 1e9)
}

fn cpu(mesh: &NetnsMesh) -> Option<Duration> {
    let mut total = Duration::ZERO;
    for n in ["n0", "n1"] {
        total += bench::process_cpu(mesh.ztunnel_pid(n)?).ok()?;
    }
    Some(total)
}

fn run_path(
    mesh: &NetnsMesh,
    from: &str,
    to: &str,
    secs: u64,
    measure_cpu: bool,
) -> anyhow::Result<PathResult> {
    let dst = SocketAddr::new(mesh.cluster.pod(to)?.ip.into(), 8080);
    // Warm-up: connections, certificates, pools.
    load(mesh, from, dst, 4, None, 1)?;
    let before = cpu(mesh);
    let fixed = load(mesh, from, dst, 10, Some(1000), secs)?;
    let after = cpu(mesh);
    let ztunnel_cpu_per_krps = match (measure_cpu, before, after) {
        (true, Some(b), Some(a)) if fixed.rps() > 0.0 => {
            Some((a - b).as_secs_f64() / fixed.elapsed.as_secs_f64() / (fixed.rps() / 1000.0))
        }
        _ => None,
    };
    let max = load(mesh, from, dst, 32, None, secs)?;
    let bulk_gbps = bulk(mesh, from, to, secs)?;
    Ok(PathResult {
        fixed,
        max,
        bulk_gbps,
        ztunnel_cpu_per_krps,
    })
}

fn row(name: &str, r: &PathResult) -> String {
    format!(
        "| {name} | {:.0} | {:.2} | {:.2} | {} | {:.0} | {:.2} | {:.2} | {} | {:.2} | {} |",
        r.fixed.rps(),
        r.fixed.p50_ms,
        r.fixed.p99_ms,
        r.fixed.errors,
        r.max.rps(),
        r.max.p50_ms,
        r.max.p99_ms,
        r.max.errors,
        r.bulk_gbps,
        r.ztunnel_cpu_per_krps
            .map(|c| format!("{:.1}%", c * 100.0))
            .unwrap_or_else(|| "-".into()),
    )
}

fn main() -> anyhow::Result<()> {
    let mut secs = 5u64;
    let mut args = std::env::args().skip(1);
    while let Some(a) = args.next() {
        match a.as_str() {
            "--secs" => {
                secs = args
                    .next()
                    .context("--secs needs a value")?
                    .parse()
                    .context("--secs: not a number")?;
                if !(1..=120).contains(&secs) {
                    return Err(anyhow!("--secs: must be 1..=120"));
                }
            }
            other => return Err(anyhow!("unknown argument {other:?} (expected --secs N)")),
        }
    }
    let mesh = NetnsMesh::start(Binaries::locate()?).map_err(|e| anyhow!("{e}"))?;
    // The policy fixture denies plaintext into production; the baseline pair lives in the
    // non-mesh "legacy" namespace, the mesh pair in production: both cross nodes n0 → n1.
    let mesh_r = run_path(&mesh, "client", "orders-v1", secs, true)?;
    let base_r = run_path(&mesh, "outsider", "plain-server", secs, false)?;
    println!(
        "{}s per phase; 1 KB HTTP/1.1 responses; pods on different nodes\n",
        secs
    );
    println!("| path | 1k rps: achieved | p50 ms | p99 ms | errors | max rps (32 conns) | p50 ms | p99 ms | errors | bulk Gbit/s | ztunnel CPU per 1k rps (both nodes) |");
    println!("|---|---|---|---|---|---|---|---|---|---|---|");
    println!("{}", row("mesh (BPF + ztunnel HBONE)", &mesh_r));
    println!("{}", row("no mesh (plaintext)", &base_r));
    Ok(())
}

//! `meshwork demo`: the whole mesh on one machine, the five seed patterns and a canary
//! release (progressive delivery by the control plane's canary controller) driven with
//! real traffic, and a report of what the running mesh did.
//!
//! Two modes, the same patterns and report (the mode and why it was chosen are printed):
//!
//! * netns: the netlab mini-cluster (`meshwork-netlab`): every pod is a network namespace behind
//!   a veth on its node's namespace, each node's ztunnel captures its pods with the eBPF
//!   redirection, the waypoint runs uncaptured in its own pod, and client traffic is the
//!   client pod's own plain TCP to the service VIP. Needs root and a kernel that loads the
//!   redirection (probed in a throw-away namespace, not guessed). Everything (namespaces,
//!   veths, BPF pins, processes) is removed at the end, on Ctrl-C and on SIGTERM.
//! * loopback: every pod is its own `127.a.b.x` address, traffic enters through the
//!   ztunnels' SOCKS5 entry (username = source workload). Any user.
//!
//! Either way traffic crosses the mesh as HBONE mTLS to the waypoint and on to the
//! destination pod's ztunnel. `--mode auto` (the default) picks netns when it can.

mod manifests;
mod mesh;
mod observe;
mod patterns;
mod report;
mod topology;
mod wasm_manifest;

use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Instant;

use tokio::signal::unix::{signal, Signal, SignalKind};

pub use meshwork_localmesh::Error as DemoError;
pub use meshwork_localmesh::Mode;
use meshwork_localmesh::{connect, http, Chosen};

use mesh::Mesh;
use report::Report;

#[derive(clap::Args, Debug)]
pub struct Args {
    /// Print one JSON document on stdout instead of the human report.
    #[arg(long)]
    pub json: bool,
    /// Leave the mesh running after the report (Ctrl-C stops it).
    #[arg(long)]
    pub keep: bool,
    #[arg(long, value_enum, default_value_t)]
    pub mode: Mode,
    /// Use the YAML files of this directory instead of the built-in copies of the five
    /// seed manifests (the demo cluster's namespaces, pods and waypoint are still added).
    #[arg(long, value_name = "DIR")]
    pub seed_dir: Option<PathBuf>,
}

/// A progress line on stderr (`demo: …`).
pub fn progress(line: &str) {
    meshwork_localmesh::set_progress_prefix("demo");
    meshwork_localmesh::progress(line);
}

fn seed() -> u64 {
    let nanos = std::time::SystemTime::now()
        .duration_since(std::time::UNIX_EPOCH)
        .map(|d| d.as_nanos() as u64)
        .unwrap_or(0);
    nanos ^ (u64::from(std::process::id()) << 32)
}

async fn drive(mesh: &Mesh) -> Vec<report::Section> {
    let sequence = async {
        (
            patterns::enrolment(mesh).await,
            patterns::traffic(mesh).await,
            patterns::resilience(mesh).await,
            patterns::zero_trust(mesh).await,
            patterns::tracing(mesh).await,
        )
    };
    let (probe, (mut s1, mut s2, s3, s5, s4)) =
        tokio::join!(patterns::timeout_probe(mesh), sequence);
    patterns::add_timeout(&mut s2, mesh, &probe);
    // After the others: its steady load and timed steps would blur their numbers.
    let s6 = patterns::progressive(mesh).await;
    patterns::add_identities(&mut s1, mesh).await;
    patterns::add_capture(&mut s1, mesh).await;
    // After the seed patterns: its plugins see only its own Service's traffic.
    let s7 = patterns::wasm(mesh).await;
    vec![s1, s2, s3, s4, s5, s6, s7]
}

/// SIGINT (Ctrl-C) and SIGTERM, listened to from the start so a signal arriving between
/// two waits is not lost.
struct StopSignals {
    interrupt: Signal,
    terminate: Signal,
}

impl StopSignals {
    fn new() -> std::io::Result<Self> {
        Ok(StopSignals {
            interrupt: signal(SignalKind::interrupt())?,
            terminate: signal(SignalKind::terminate())?,
        })
    }

    async fn wait(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    let started = Instant::now();
    let mut stop = StopSignals::new()?;
    let seed_files = match &args.seed_dir {
        Some(d) => Some(manifests::read_seed_dir(d)?),
        None => None,
    };
    meshwork_localmesh::set_progress_prefix("demo");
    let (chosen, reason) = tokio::select! {
        c = meshwork_localmesh::mode::choose(args.mode) => c?,
        _ = stop.wait() => return Err(DemoError::Interrupted.into()),
    };
    let mode = chosen.name().to_string();
    progress(&format!("mode: {mode} ({reason})"));
    let start = Mesh::start(chosen, seed(), seed_files.as_deref());
    let mesh = tokio::select! {
        m = start => m?,
        _ = stop.wait() => return Err(DemoError::Interrupted.into()),
    };
    progress(&format!(
        "mesh up in {:.1}s {}",
        started.elapsed().as_secs_f64(),
        mesh.location()
    ));
    let sections = tokio::select! {
        s = drive(&mesh) => s,
        _ = stop.wait() => return Err(DemoError::Interrupted.into()),
    };
    let report = Report::new(
        mode.clone(),
        reason.clone(),
        sections,
        started.elapsed().as_millis() as u64,
    );
    if args.json {
        println!("{}", serde_json::to_string(&report)?);
    } else {
        println!("meshwork demo — mode: {mode} ({reason})");
        print!("{}", report.render());
    }
    if args.keep {
        use std::io::Write;
        let _ = write!(std::io::stderr(), "{}", mesh.keep_banner());
        stop.wait().await;
        progress("stopping");
    }
    if chosen == Chosen::Netns {
        progress("removing the network namespaces, veths, BPF pins and processes");
    }
    drop(mesh);
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

//! `meshwork demo`: the whole mesh on one machine, the five seed patterns driven with
//! real traffic, and a report of what the running mesh did.
//!
//! Loopback mode: every pod is its own `127.a.b.x` address, traffic enters through the
//! ztunnels' SOCKS5 entry (username = source workload), crosses the mesh as HBONE mTLS to
//! the waypoint and on to the destination pod's ztunnel.

mod collector;
mod http;
mod manifests;
mod mesh;
mod observe;
mod patterns;
mod procs;
mod report;
mod topology;

use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::{Duration, Instant};

use clap::ValueEnum;
use tokio::signal::unix::{signal, Signal, SignalKind};

use mesh::Mesh;
use report::Report;

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, ValueEnum)]
pub enum Mode {
    /// Network namespaces with eBPF when possible, else loopback.
    #[default]
    Auto,
    /// Network namespaces with eBPF redirection (root, capable kernel).
    Netns,
    /// Loopback addresses and the ztunnels' SOCKS5 entry (any user).
    Loopback,
}

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

#[derive(Debug, thiserror::Error)]
pub enum DemoError {
    #[error("cannot find the {name} binary (looked in {searched}, …); build it with scripts/demo or `cargo build --workspace`, or set MESHWORK_BIN_DIR")]
    MissingBinary { name: String, searched: String },
    // The I/O errors are printed in the message (not chained as sources) so the one-line
    // `error: …` output does not repeat them.
    #[error("starting {name} ({path}): {error}")]
    Spawn {
        name: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("binding {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("no free 127.x.y.0/24 network for the demo pods (ports 8080 and 15008 taken everywhere tried)")]
    NoFreeNet,
    #[error("node token for {node}: {detail}")]
    Token { node: String, detail: String },
    #[error("{0}")]
    ChildDied(String),
    #[error("{what} not ready within {timeout:?}")]
    NotReady { what: String, timeout: Duration },
    #[error("{cause}; the run directory is kept for inspection: {logs}")]
    StartFailed { cause: Box<DemoError>, logs: String },
    #[error("{0}: no YAML files (*.yaml, *.yml) in the --seed-dir directory")]
    EmptySeedDir(PathBuf),
    #[error("--mode netns is not available yet: meshwork demo runs in loopback mode only (netns + eBPF is a later step)")]
    NetnsUnavailable,
    #[error("interrupted")]
    Interrupted,
}

/// A progress line on stderr.
pub fn progress(line: &str) {
    eprintln!("demo: {line}");
}

fn choose_mode(mode: Mode) -> Result<(String, String), DemoError> {
    match mode {
        Mode::Netns => Err(DemoError::NetnsUnavailable),
        Mode::Loopback => Ok(("loopback".into(), "requested with --mode loopback".into())),
        Mode::Auto => Ok((
            "loopback".into(),
            "netns + eBPF mode is not implemented in `meshwork demo` yet; loopback works for any user".into(),
        )),
    }
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
    patterns::add_identities(&mut s1, mesh).await;
    vec![s1, s2, s3, s4, s5]
}

fn keep_banner(mesh: &Mesh) -> String {
    let socks = mesh.socks["node-a"];
    format!(
        "the mesh keeps running (Ctrl-C stops it and removes {}):\n\
         \x20 curl --socks5-hostname {socks} --proxy-user production/order-client:x http://order-service:8080/api/orders\n\
         \x20 curl --socks5-hostname {socks} --proxy-user production/order-client:x -H 'x-canary: true' http://order-service:8080/api/orders\n\
         \x20 curl --socks5-hostname {socks} --proxy-user production/order-client:x -X POST http://payment-service:8080/api/payments/charge\n\
         \x20 control plane admin: http://{}/debug/model   waypoint admin: http://{}/metrics\n\
         \x20 ztunnel metrics: {}\n",
        mesh.dir().display(),
        mesh.control_plane_admin,
        mesh.waypoint_admin,
        mesh.ztunnel_metrics
            .iter()
            .map(|(n, a)| format!("{n} http://{a}/metrics"))
            .collect::<Vec<_>>()
            .join(", "),
    )
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
    let (mode, reason) = choose_mode(args.mode)?;
    progress(&format!("mode: {mode} ({reason})"));
    let seed_files = match &args.seed_dir {
        Some(d) => Some(manifests::read_seed_dir(d)?),
        None => None,
    };
    let mesh = tokio::select! {
        m = Mesh::start(seed(), seed_files.as_deref()) => m?,
        _ = stop.wait() => return Err(DemoError::Interrupted.into()),
    };
    progress(&format!(
        "mesh up in {:.1}s on 127.{}.{}.0/24",
        started.elapsed().as_secs_f64(),
        mesh.net.a,
        mesh.net.b
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
        eprint!("{}", keep_banner(&mesh));
        stop.wait().await;
        progress("stopping");
    }
    drop(mesh);
    Ok(if report.ok {
        ExitCode::SUCCESS
    } else {
        ExitCode::from(1)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_choice_says_why() {
        let (m, why) = choose_mode(Mode::Auto).unwrap();
        assert_eq!(m, "loopback");
        assert!(why.contains("netns"));
        assert!(matches!(
            choose_mode(Mode::Netns),
            Err(DemoError::NetnsUnavailable)
        ));
    }
}

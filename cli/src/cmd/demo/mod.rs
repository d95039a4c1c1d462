//! `meshwork demo`: the whole mesh on one machine, the five seed patterns driven with
//! real traffic, and a report of what the running mesh did.
//!
//! Two modes, the same patterns and report (the mode and why it was chosen are printed):
//!
//! * netns: the e2e mini-cluster (`meshwork-e2e`): every pod is a network namespace behind
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

mod collector;
mod connect;
mod http;
mod loopback;
mod manifests;
mod mesh;
mod netns;
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

use loopback::Loopback;
use mesh::Mesh;
use netns::Netns;
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
    #[error("--mode netns is not possible here: {0} (--mode loopback works for any user)")]
    NetnsUnavailable(String),
    #[error("netns mesh: {0}")]
    Netns(String),
    #[error("interrupted")]
    Interrupted,
}

/// A progress line on stderr. A closed stderr (`meshwork demo 2>&1 | head`) is ignored
/// rather than a panic, so the teardown still runs normally.
pub fn progress(line: &str) {
    use std::io::Write;
    let _ = writeln!(std::io::stderr(), "demo: {line}");
}

/// The two ways a demo can run.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
enum Chosen {
    Netns,
    Loopback,
}

impl Chosen {
    fn name(self) -> &'static str {
        match self {
            Chosen::Netns => "netns",
            Chosen::Loopback => "loopback",
        }
    }
}

/// The mode to run in and why; `probe` says whether netns + eBPF can run here.
fn decide(
    mode: Mode,
    probe: impl FnOnce() -> Result<(), String>,
) -> Result<(Chosen, String), DemoError> {
    match mode {
        Mode::Loopback => Ok((Chosen::Loopback, "requested with --mode loopback".into())),
        Mode::Netns => match probe() {
            Ok(()) => Ok((
                Chosen::Netns,
                "requested with --mode netns; the eBPF redirection loads here".into(),
            )),
            Err(why) => Err(DemoError::NetnsUnavailable(why)),
        },
        Mode::Auto => Ok(match probe() {
            Ok(()) => (
                Chosen::Netns,
                "running as root and the eBPF redirection loads (probed in a throw-away namespace)"
                    .into(),
            ),
            Err(why) => (
                Chosen::Loopback,
                format!("netns + eBPF is not possible here: {why}; loopback works for any user"),
            ),
        }),
    }
}

/// Loads the eBPF redirection into a throw-away namespace (blocking work, off the runtime).
async fn probe_netns() -> Result<(), String> {
    tokio::task::spawn_blocking(|| {
        meshwork_e2e::capability::probe_redirect().map_err(|e| e.to_string())
    })
    .await
    .map_err(|e| e.to_string())?
}

async fn choose_mode(mode: Mode) -> Result<(Chosen, String), DemoError> {
    let probed = match mode {
        Mode::Loopback => Ok(()),
        Mode::Netns | Mode::Auto => probe_netns().await,
    };
    decide(mode, || probed)
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
    patterns::add_capture(&mut s1, mesh).await;
    vec![s1, s2, s3, s4, s5]
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
    let (chosen, reason) = tokio::select! {
        c = choose_mode(args.mode) => c?,
        _ = stop.wait() => return Err(DemoError::Interrupted.into()),
    };
    let mode = chosen.name().to_string();
    progress(&format!("mode: {mode} ({reason})"));
    let start = async {
        match chosen {
            Chosen::Netns => Netns::start(seed_files.as_deref()).await,
            Chosen::Loopback => Loopback::start(seed(), seed_files.as_deref()).await,
        }
    };
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

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn mode_choice_probes_and_says_why() {
        let (m, why) = decide(Mode::Auto, || Err("not running as root".into())).unwrap();
        assert_eq!(m, Chosen::Loopback);
        assert!(why.contains("not running as root"), "{why}");
        let (m, why) = decide(Mode::Auto, || Ok(())).unwrap();
        assert_eq!(m, Chosen::Netns);
        assert!(why.contains("probed"), "{why}");
        let (m, _) = decide(Mode::Netns, || Ok(())).unwrap();
        assert_eq!(m.name(), "netns");
        let e = decide(Mode::Netns, || {
            Err("cannot load the eBPF redirection: x".into())
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.contains("--mode netns") && e.contains("cannot load"),
            "{e}"
        );
        let mut probed = false;
        let (m, _) = decide(Mode::Loopback, || {
            probed = true;
            Ok(())
        })
        .unwrap();
        assert_eq!((m, probed), (Chosen::Loopback, false));
    }
}

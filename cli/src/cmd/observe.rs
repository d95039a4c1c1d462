//! `meshwork top` and `meshwork graph`: the mesh's traffic from the proxies' metrics
//! (`meshwork-observe`): per-edge and per-service rate, success, p50/p99, mTLS and policy
//! denials, as refreshing text tables or a local web page with the service graph.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::path::PathBuf;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use meshwork_observe::graph::Target;
use meshwork_observe::{serve, top, Monitor, ServeOptions};

use crate::cmd::up::state;

/// The proxies to scrape.
#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// Metrics endpoints, comma separated: `HOST:PORT`, a URL (`http://HOST:PORT/metrics`),
    /// or `NS/NAME=URL` to name a waypoint's workload. Default: every proxy of the local
    /// mesh `meshwork up` runs.
    #[arg(long, value_delimiter = ',', env = "MESHWORK_METRICS_TARGETS")]
    pub targets: Vec<String>,
    /// The state directory of `meshwork up`, read when no --targets are given.
    #[arg(long, env = "MESHWORK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Seconds between scrapes (rates cover this window).
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Seconds a target may take to answer.
    #[arg(long, default_value_t = 2.0)]
    pub timeout: f64,
}

impl TargetArgs {
    /// The given --targets, else the metrics endpoints the running `meshwork up` forwards.
    fn targets(&self) -> anyhow::Result<Vec<Target>> {
        let given: Vec<Target> = self
            .targets
            .iter()
            .filter(|t| !t.trim().is_empty())
            .map(|t| Target::parse(t.trim()))
            .collect();
        if !given.is_empty() {
            return Ok(given);
        }
        let dir = state::state_dir(self.state_dir.as_deref());
        let s = state::read(&dir)
            .map_err(|e| anyhow::anyhow!("no --targets given, and no local mesh to scrape: {e}"))?;
        anyhow::ensure!(
            state::alive(s.pid),
            "no --targets given, and the local mesh recorded in {} is not running (pid {} is gone)",
            dir.display(),
            s.pid
        );
        anyhow::ensure!(
            !s.metrics.is_empty(),
            "no --targets given, and the local mesh in {} records no metrics endpoints \
             (started by an older meshwork?)",
            dir.display()
        );
        Ok(s.metrics
            .iter()
            .map(|m| Target::parse(&m.target()))
            .collect())
    }

    fn durations(&self) -> anyhow::Result<(Duration, Duration)> {
        let d = |v: f64, what: &str| {
            Duration::try_from_secs_f64(v)
                .ok()
                .filter(|d| !d.is_zero())
                .with_context(|| format!("--{what} {v}: not a positive number of seconds"))
        };
        Ok((d(self.interval, "interval")?, d(self.timeout, "timeout")?))
    }
}

#[derive(clap::Args, Debug)]
pub struct TopArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Print one picture (two scrapes, one interval apart) and exit.
    #[arg(long)]
    pub once: bool,
    /// Print the graph as JSON (with --once: one document; else one per line).
    #[arg(long)]
    pub json: bool,
}

#[derive(clap::Args, Debug)]
pub struct GraphArgs {
    #[command(flatten)]
    pub targets: TargetArgs,
    /// Address of the page. Loopback only unless --allow-remote.
    #[arg(long, default_value = "127.0.0.1:15090")]
    pub listen: SocketAddr,
    /// Serve on a non-loopback address (the page shows workloads and identities).
    #[arg(long)]
    pub allow_remote: bool,
}

pub async fn top(args: TopArgs) -> anyhow::Result<ExitCode> {
    let (interval, timeout) = args.targets.durations()?;
    let mut monitor = Monitor::new(args.targets.targets()?, timeout);
    let mut g = monitor.step().await;
    let tty = std::io::stdout().is_terminal() && !args.json;
    let mut stop = std::pin::pin!(tokio::signal::ctrl_c());
    loop {
        let next = async {
            tokio::time::sleep(interval).await;
            monitor.step().await
        };
        g = tokio::select! {
            g = next => g,
            _ = &mut stop => break,
        };
        let mut out = std::io::stdout().lock();
        if args.json {
            serde_json::to_writer(&mut out, &g)?;
            writeln!(out)?;
        } else {
            if tty && !args.once {
                write!(out, "\x1b[2J\x1b[H")?;
            }
            write!(out, "{}", top::render(&g))?;
        }
        out.flush()?;
        if args.once {
            break;
        }
    }
    let down = g.proxies.iter().filter(|p| p.error.is_some()).count();
    Ok(if down == g.proxies.len() && down > 0 {
        ExitCode::from(1)
    } else {
        ExitCode::SUCCESS
    })
}

pub async fn graph(args: GraphArgs) -> anyhow::Result<ExitCode> {
    let (interval, timeout) = args.targets.durations()?;
    let server = serve(
        args.targets.targets()?,
        ServeOptions {
            listen: args.listen,
            allow_remote: args.allow_remote,
            interval,
            timeout,
        },
    )
    .await?;
    eprintln!(
        "service graph on {} (JSON: {}api/graph); Ctrl-C stops",
        server.url(),
        server.url()
    );
    tokio::signal::ctrl_c().await?;
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;
    use state::{MetricsState, State};

    fn args(targets: &[&str], dir: &std::path::Path) -> TargetArgs {
        TargetArgs {
            targets: targets.iter().map(|t| t.to_string()).collect(),
            state_dir: Some(dir.to_path_buf()),
            interval: 2.0,
            timeout: 2.0,
        }
    }

    #[test]
    fn targets_come_from_the_flag_else_the_running_local_mesh() {
        let d = tempfile::tempdir().unwrap();
        let given = args(&["127.0.0.1:9", "shop/wp=127.0.0.1:8"], d.path())
            .targets()
            .unwrap();
        assert_eq!(given[1].name.as_deref(), Some("shop/wp"));
        let e = args(&[], d.path()).targets().unwrap_err().to_string();
        assert!(
            e.contains("no --targets given") && e.contains("meshwork up"),
            "{e}"
        );
        let mut s: State = serde_json::from_value(serde_json::json!({
            "pid": std::process::id(), "mode": "loopback", "dir": "/m", "up_ms": 1,
            "location": "", "nodes": [], "pods": [], "services": [],
            "control_plane_admin": "", "otlp_receiver": "", "logs": {}
        }))
        .unwrap();
        state::write(d.path(), &s).unwrap();
        let e = args(&[], d.path()).targets().unwrap_err().to_string();
        assert!(e.contains("no metrics endpoints"), "{e}");
        s.metrics = vec![
            MetricsState {
                name: "ztunnel-node-0".into(),
                addr: "127.0.0.1:41000".into(),
            },
            MetricsState {
                name: "shop/waypoint-0".into(),
                addr: "127.0.0.1:41001".into(),
            },
        ];
        state::write(d.path(), &s).unwrap();
        let t = args(&[], d.path()).targets().unwrap();
        assert_eq!(t[0].url, "http://127.0.0.1:41000/metrics");
        assert_eq!(t[0].name.as_deref(), Some("ztunnel-node-0"));
        assert_eq!(t[1].url, "http://127.0.0.1:41001/metrics");
        assert_eq!(t[1].name.as_deref(), Some("shop/waypoint-0"));
    }
}

//! `meshwork top` and `meshwork graph`: the mesh's traffic from the proxies' metrics
//! (`meshwork-observe`): per-edge and per-service rate, success, p50/p99, mTLS and policy
//! denials, as refreshing text tables or a local web page with the service graph.

use std::io::{IsTerminal, Write};
use std::net::SocketAddr;
use std::process::ExitCode;
use std::time::Duration;

use anyhow::Context;
use meshwork_observe::graph::Target;
use meshwork_observe::{serve, top, Monitor, ServeOptions};

/// The proxies to scrape.
#[derive(clap::Args, Debug)]
pub struct TargetArgs {
    /// Metrics endpoints, comma separated: `HOST:PORT`, a URL (`http://HOST:PORT/metrics`),
    /// or `NS/NAME=URL` to name a waypoint's workload.
    #[arg(
        long,
        value_delimiter = ',',
        required = true,
        env = "MESHWORK_METRICS_TARGETS"
    )]
    pub targets: Vec<String>,
    /// Seconds between scrapes (rates cover this window).
    #[arg(long, default_value_t = 2.0)]
    pub interval: f64,
    /// Seconds a target may take to answer.
    #[arg(long, default_value_t = 2.0)]
    pub timeout: f64,
}

impl TargetArgs {
    fn targets(&self) -> Vec<Target> {
        self.targets
            .iter()
            .filter(|t| !t.trim().is_empty())
            .map(|t| Target::parse(t.trim()))
            .collect()
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
    let mut monitor = Monitor::new(args.targets.targets(), timeout);
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
        args.targets.targets(),
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

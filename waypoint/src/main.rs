//! `waypoint`: Meshwork's per-namespace L7 proxy.

use anyhow::Context;
use clap::Parser;
use meshwork_runtime::log::{Format, Stream};
use meshwork_waypoint::run::{run, Args, LogFormat};

/// The proxy's flags plus the process-level ones that must be known before the runtime
/// starts.
#[derive(Parser)]
#[command(name = "waypoint", about = "Meshwork per-namespace L7 proxy")]
struct Cli {
    /// Tokio worker threads (0: one per CPU; 1: a single-threaded runtime, no cross-thread
    /// hand-offs — what Envoy's `--concurrency 1` is to Envoy).
    #[arg(long, env = "MESHWORK_WORKER_THREADS", default_value_t = 0)]
    worker_threads: usize,
    #[command(flatten)]
    args: Args,
}

fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    let format = match cli.args.log_format {
        LogFormat::Json => Format::Json,
        LogFormat::Plain => Format::Plain,
    };
    // Kept to the end: dropping it writes the lines still queued.
    let _logging = meshwork_runtime::log::init(format, Stream::Stderr, "waypoint-log")
        .context("setting up logging")?;
    meshwork_runtime::limits::raise_open_files_logged();
    let runtime = match cli.worker_threads {
        1 => tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()?,
        n => {
            let mut b = tokio::runtime::Builder::new_multi_thread();
            if n > 1 {
                b.worker_threads(n);
            }
            b.enable_all().build()?
        }
    };
    runtime.block_on(run(cli.args))
}

//! `waypoint`: Meshwork's per-namespace L7 proxy.

use clap::Parser;
use meshwork_waypoint::run::{run, Args, LogFormat};
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let args = Args::parse();
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let fmt = tracing_subscriber::fmt()
        .with_env_filter(filter)
        .with_writer(std::io::stderr);
    match args.log_format {
        LogFormat::Json => fmt.json().init(),
        LogFormat::Plain => fmt.init(),
    }
    run(args).await
}

//! `waypoint`: Meshwork's per-namespace L7 proxy.

use clap::Parser;
use tracing_subscriber::EnvFilter;

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    tracing_subscriber::fmt()
        .with_env_filter(
            EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info")),
        )
        .with_writer(std::io::stderr)
        .init();
    meshwork_waypoint::run::run(meshwork_waypoint::run::Args::parse()).await
}

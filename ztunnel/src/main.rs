//! `ztunnel`: follows the control plane, gets certificates from its CA, serves traffic,
//! drains on SIGTERM.

use std::sync::Arc;

use anyhow::Context;
use clap::Parser;
use meshwork_identity::TrustBundle;
use meshwork_model::client::{self, ConfigHandle, Subscription};
use meshwork_model::pb::config::ProxyKind;
use meshwork_runtime::log::{Format, Logging, Stream};
use meshwork_ztunnel::{
    redirect, CaClient, CertSigner, Config, Deps, DirSigner, LogFormat, Ztunnel,
};

fn init_logging(format: LogFormat) -> anyhow::Result<Logging> {
    let format = match format {
        LogFormat::Json => Format::Json,
        LogFormat::Plain => Format::Plain,
    };
    meshwork_runtime::log::init(format, Stream::Stdout, "ztunnel-log").context("setting up logging")
}

/// `ztunnel redirect-teardown`: removes a node's eBPF redirection (pins and local
/// routing). Run in the node network namespace when the node leaves the mesh; a running
/// ztunnel's pins survive its exit on purpose.
#[derive(Debug, Parser)]
#[command(name = "ztunnel redirect-teardown")]
struct TeardownArgs {
    /// Node whose pins (`<pin root>/<node>/`) are removed.
    #[arg(long, env = "MESHWORK_NODE")]
    node: String,
    #[arg(
        long,
        env = "MESHWORK_REDIRECT_PIN_ROOT",
        default_value = "/sys/fs/bpf/meshwork"
    )]
    redirect_pin_root: std::path::PathBuf,
    #[arg(long, env = "MESHWORK_REDIRECT_MARK", default_value = "0x1000", value_parser = redirect::parse_mark)]
    redirect_mark: u32,
    #[arg(long, env = "MESHWORK_REDIRECT_TABLE", default_value_t = 19799)]
    redirect_table: u32,
}

fn redirect_teardown(args: TeardownArgs) -> anyhow::Result<()> {
    let mut opts = meshwork_redirect::RedirectOptions::new(args.node);
    opts.pin_root = args.redirect_pin_root;
    opts.mark = args.redirect_mark;
    opts.table = args.redirect_table;
    redirect::teardown_node(&opts)?;
    eprintln!("removed the redirection of node {}", opts.node);
    Ok(())
}

fn main() -> anyhow::Result<()> {
    // Before any thread exists (see `alloc`).
    meshwork_ztunnel::alloc::tune_for_relay();
    let mut args: Vec<std::ffi::OsString> = std::env::args_os().collect();
    if args.get(1).is_some_and(|a| a == "redirect-teardown") {
        args.remove(1);
        return redirect_teardown(TeardownArgs::parse_from(args));
    }
    let mut cfg = Config::parse_from(args);
    if cfg.worker_threads == 0 {
        cfg.worker_threads = std::thread::available_parallelism().map_or(1, |n| n.get());
    }
    // Connections are served on their own data-path threads (see `shards`); this runtime
    // only follows the config, renews certificates and serves the admin endpoints.
    let runtime = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()?;
    runtime.block_on(run(cfg))
}

async fn run(cfg: Config) -> anyhow::Result<()> {
    // Kept to the end: dropping it writes the lines still queued.
    let logging = init_logging(cfg.log_format)?;
    meshwork_runtime::limits::raise_open_files_logged();
    let token = cfg.token()?;
    let extra_roots = match &cfg.ca_roots_file {
        Some(p) => {
            let pem = std::fs::read_to_string(p)
                .with_context(|| format!("reading --ca-roots-file {}", p.display()))?;
            Some(
                TrustBundle::from_pem("--ca-roots-file", &pem)
                    .with_context(|| format!("parsing --ca-roots-file {}", p.display()))?,
            )
        }
        None => None,
    };
    let signer: Arc<dyn CertSigner> = match &cfg.cert_dir {
        Some(dir) => Arc::new(DirSigner { dir: dir.clone() }),
        None => Arc::new(CaClient::new(
            cfg.ca_endpoint()?,
            token.clone(),
            cfg.cert_ttl,
            extra_roots,
        )?),
    };
    let config = match &cfg.static_config {
        Some(path) => ConfigHandle::fixed(meshwork_model::static_config::load(path, |_| Ok(()))?),
        None => client::spawn(
            cfg.control_plane_endpoint()?,
            Subscription {
                kind: ProxyKind::Ztunnel,
                node: cfg.node.clone(),
                proxy_id: format!("ztunnel-{}", cfg.node),
                token,
                ..Default::default()
            },
            None,
        ),
    };
    let drain = cfg.drain_timeout;
    let zt = Ztunnel::start(
        cfg,
        Deps {
            config,
            signer,
            log_control: Some(logging.level_control()),
        },
    )
    .await?;
    let mut term = tokio::signal::unix::signal(tokio::signal::unix::SignalKind::terminate())?;
    tokio::select! {
        _ = term.recv() => tracing::info!("SIGTERM"),
        _ = tokio::signal::ctrl_c() => tracing::info!("SIGINT"),
    }
    zt.shutdown(drain).await;
    Ok(())
}

//! `controlplane`: serves the mesh model and the CA from a directory of YAML.

use std::net::SocketAddr;
use std::path::PathBuf;

use anyhow::Context;
use clap::{Parser, Subcommand};
use meshwork_controlplane::run::{self, KubeOptions, Options, Source};

#[derive(Parser, Debug)]
#[command(name = "controlplane", version, about = "Meshwork control plane")]
struct Cli {
    #[command(subcommand)]
    command: Option<Command>,
    /// Where resources come from: a watched directory (`--config-dir`) or the Kubernetes
    /// API (in-cluster config or KUBECONFIG).
    #[arg(long, default_value = "dir", value_parser = ["dir", "kubernetes"])]
    source: String,
    /// Directory of Kubernetes/Istio YAML, applied like `kubectl apply -f DIR` and watched.
    #[arg(long, env = "MESHWORK_CONFIG_DIR")]
    config_dir: Option<PathBuf>,
    /// Mesh trust domain (overrides the mesh config's `trustDomain`).
    #[arg(long)]
    trust_domain: Option<String>,
    /// Mesh root namespace (overrides the mesh config's `rootNamespace`).
    #[arg(long)]
    root_namespace: Option<String>,
    /// Kubernetes: audience of the ztunnels' projected tokens.
    #[arg(long, default_value = "istio-ca")]
    token_audience: String,
    /// Kubernetes: the ztunnels' service account, `namespace/name`.
    #[arg(long, default_value = "istio-system/meshwork-ztunnel")]
    ztunnel_service_account: String,
    /// Kubernetes: service accounts (`namespace/name`, comma-separated) whose pod-bound
    /// projected tokens may subscribe as observers (read the whole model). Observer tokens
    /// from `controlplane token --observer NAME` are accepted in every mode.
    #[arg(long, value_delimiter = ',')]
    observer_service_accounts: Vec<String>,
    /// Kubernetes: elect one replica (through a Lease) to write status conditions and
    /// apply waypoints; `--leader-election=false` makes this replica do it (one replica only).
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    leader_election: bool,
    /// Kubernetes: the Lease that elects the replica writing status conditions.
    #[arg(long, default_value = "meshwork-controlplane")]
    lease_name: String,
    #[arg(long, default_value = "15s", value_parser = parse_duration)]
    lease_duration: std::time::Duration,
    /// Kubernetes: this replica's namespace and name (downward API).
    #[arg(long, env = "POD_NAMESPACE", default_value = "istio-system")]
    pod_namespace: String,
    #[arg(long, env = "POD_NAME", default_value = "meshwork-controlplane")]
    pod_name: String,
    /// Kubernetes: ConfigMap in the root namespace holding the waypoint template (key
    /// `waypoint.yaml`); each `istio-waypoint` Gateway gets its objects. Empty: disabled.
    #[arg(long, default_value = "meshwork-waypoint-template")]
    waypoint_template: String,
    /// Standalone Istio MeshConfig file (trustDomain, rootNamespace, extensionProviders).
    #[arg(long, env = "MESHWORK_MESH_CONFIG")]
    mesh_config: Option<PathBuf>,
    /// Namespace for resources that name none.
    #[arg(long, default_value = "default")]
    default_namespace: String,
    /// gRPC: config distribution and the certificate API.
    #[arg(long, default_value = "127.0.0.1:15010")]
    grpc_addr: SocketAddr,
    /// Admin HTTP endpoint (/ready, /debug/errors, /debug/proxies, /debug/model), not
    /// authenticated: keep it on loopback.
    #[arg(long, default_value = "127.0.0.1:15014")]
    admin_addr: SocketAddr,
    /// Probe HTTP endpoint serving only /ready (for kubelet on the pod IP); unset: none.
    #[arg(long)]
    probe_addr: Option<SocketAddr>,
    /// Where the mesh root CA is kept (created on first start).
    #[arg(long, default_value = "meshwork-ca", env = "MESHWORK_CA_DIR")]
    ca_dir: PathBuf,
    /// Directory source: where the last good version of every resource (and the order in
    /// which resources were first seen) is kept, so a restart while a file is invalid does
    /// not drop its last good version. Default: `<ca-dir>/state`. Ignored, with an error,
    /// when it is owned by another user or writable by group or others. Not used with
    /// `--source=kubernetes` (the API server is the persistent store).
    #[arg(long, env = "MESHWORK_STATE_DIR")]
    state_dir: Option<PathBuf>,
    /// Workload certificate lifetime, e.g. 24h, 90m.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    cert_ttl: std::time::Duration,
    /// Log format.
    #[arg(long, default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
}

#[derive(Subcommand, Debug)]
enum Command {
    /// Prints the bootstrap token a ztunnel on NODE presents (file mode), or with
    /// `--observer NAME` the token an observer (the CLI, a debugging tool) presents to read
    /// the whole model.
    Token {
        #[arg(
            long,
            required_unless_present = "observer",
            conflicts_with = "observer"
        )]
        node: Option<String>,
        #[arg(long)]
        observer: Option<String>,
    },
    /// Prints the CustomResourceDefinitions of the Istio kinds Meshwork reads (for clusters
    /// without Istio's CRDs); `--output chart` prints the Helm template
    /// charts/meshwork/templates/crds.yaml.
    Crds {
        #[arg(long, default_value = "yaml", value_parser = ["yaml", "json", "chart"])]
        output: String,
    },
}

fn parse_duration(s: &str) -> Result<std::time::Duration, String> {
    s.parse::<meshwork_api::Duration>()
        .map(|d| d.0)
        .map_err(|e| e.to_string())
}

#[tokio::main]
async fn main() -> anyhow::Result<()> {
    let cli = Cli::parse();
    if let Some(Command::Crds { output }) = &cli.command {
        let format: meshwork_api::crd::Format = output.parse()?;
        let crds = meshwork_api::crd::istio_crds()?;
        let text = format.render(&crds)?;
        // `controlplane crds | head` is not an error.
        return match std::io::Write::write_all(&mut std::io::stdout().lock(), text.as_bytes()) {
            Err(e) if e.kind() != std::io::ErrorKind::BrokenPipe => {
                Err(e).context("writing the CRDs to stdout")
            }
            _ => Ok(()),
        };
    }
    // Kept to the end: dropping it writes the lines still queued.
    let _logging =
        meshwork_controlplane::logging::init(&cli.log_format).context("setting up logging")?;
    meshwork_runtime::limits::raise_open_files_logged();
    if let Some(Command::Token { node, observer }) = &cli.command {
        let tokens = meshwork_controlplane::ca::NodeTokens::open(&cli.ca_dir)
            .with_context(|| format!("opening the CA directory {}", cli.ca_dir.display()))?;
        let token = match (node, observer) {
            (_, Some(name)) => tokens.observer_token_for(name)?,
            (Some(node), None) => tokens.token_for(node)?,
            (None, None) => anyhow::bail!("--node or --observer is required"),
        };
        println!("{token}");
        return Ok(());
    }
    let source = match (cli.source.as_str(), cli.config_dir) {
        ("kubernetes", _) => {
            let (ns, sa) = cli
                .ztunnel_service_account
                .split_once('/')
                .context("--ztunnel-service-account must be namespace/name")?;
            Source::Kubernetes(KubeOptions {
                token_audience: cli.token_audience,
                ztunnel_service_account: (ns.to_string(), sa.to_string()),
                leader_election: cli.leader_election,
                lease_namespace: cli.pod_namespace,
                lease_name: cli.lease_name,
                lease_duration: cli.lease_duration,
                identity: cli.pod_name,
                waypoint_template: Some(cli.waypoint_template).filter(|t| !t.is_empty()),
                observer_service_accounts: cli
                    .observer_service_accounts
                    .iter()
                    .map(|s| {
                        s.split_once('/')
                            .map(|(ns, sa)| (ns.to_string(), sa.to_string()))
                            .with_context(|| {
                                format!("--observer-service-accounts: {s:?} is not namespace/name")
                            })
                    })
                    .collect::<anyhow::Result<_>>()?,
            })
        }
        (_, Some(dir)) => Source::Dir(dir),
        (_, None) => Source::None,
    };
    let running = run::start(Options {
        source,
        trust_domain: cli.trust_domain,
        root_namespace: cli.root_namespace,
        mesh_config: cli.mesh_config,
        default_namespace: cli.default_namespace,
        grpc_addr: cli.grpc_addr,
        admin_addr: cli.admin_addr,
        probe_addr: cli.probe_addr,
        state_dir: Some(cli.state_dir.unwrap_or_else(|| cli.ca_dir.join("state"))),
        ca_dir: cli.ca_dir,
        cert_ttl: cli.cert_ttl,
    })
    .await
    .context("starting the control plane")?;
    // Tests and scripts read this line to learn the bound addresses.
    println!(
        "controlplane ready grpc={} admin={}",
        running.grpc_addr, running.admin_addr
    );
    shutdown_signal().await;
    tracing::info!("shutting down");
    running.shutdown();
    Ok(())
}

async fn shutdown_signal() {
    use tokio::signal::unix::{signal, SignalKind};
    let mut term = signal(SignalKind::terminate()).expect("SIGTERM handler");
    tokio::select! {
        _ = tokio::signal::ctrl_c() => {}
        _ = term.recv() => {}
    }
}

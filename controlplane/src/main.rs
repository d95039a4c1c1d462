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
    /// Kubernetes: service accounts of node agents, `namespace/name` (repeat or separate
    /// with commas): a token of one proves the node its pod runs on, which may then obtain
    /// certificates for that node's workloads. Add `istio-system/ztunnel` for Istio's ztunnel.
    #[arg(
        long = "node-agent-service-account",
        alias = "ztunnel-service-account",
        value_delimiter = ',',
        default_value = "istio-system/meshwork-ztunnel"
    )]
    node_agent_service_accounts: Vec<String>,
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
    /// Kubernetes: keep the mesh CA in Secrets of this pod's namespace (Istio's `cacerts`
    /// when present, else a root generated once into `meshwork-ca-secret`), so every
    /// replica signs into one chain; `false`: only `--ca-dir`.
    #[arg(long, default_value_t = true, action = clap::ArgAction::Set)]
    ca_from_secrets: bool,
    /// Kubernetes: ConfigMaps (key `root-cert.pem`) the mesh roots are published as in
    /// every namespace (repeat or separate with commas; add `istio-ca-root-cert` for Istio's
    /// ztunnel). Empty: not published.
    #[arg(
        long = "root-cert-configmap",
        value_delimiter = ',',
        default_value = "meshwork-ca-root-cert"
    )]
    root_cert_configmaps: Vec<String>,
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
    /// Plaintext gRPC (config distribution and the certificate API) for processes on this
    /// host: a loopback address, or `off`.
    #[arg(long, default_value = "127.0.0.1:15010", value_parser = parse_listen)]
    grpc_addr: Listen,
    /// TLS gRPC (config distribution and the certificate API), like istiod's 15012: the
    /// port other hosts use, with a certificate from the mesh CA. `off` by default.
    #[arg(long, default_value = "off", value_parser = parse_listen)]
    grpc_tls_addr: Listen,
    /// Names in the TLS port's certificate: DNS names or IP addresses clients dial (repeat
    /// or separate with commas). `localhost`, 127.0.0.1 and ::1 are always included.
    #[arg(long = "serving-san", value_delimiter = ',')]
    serving_sans: Vec<String>,
    /// The control plane's service account (its SPIFFE identity on the TLS port).
    #[arg(
        long,
        env = "POD_SERVICE_ACCOUNT",
        default_value = "meshwork-controlplane"
    )]
    service_account: String,
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
    /// How often the CA's material (its directory, and in Kubernetes its Secret) is checked
    /// for a change (a root rotation).
    #[arg(long, default_value = "10s", value_parser = parse_duration)]
    ca_reload_interval: std::time::Duration,
    /// Workload certificate lifetime, e.g. 24h, 90m.
    #[arg(long, default_value = "24h", value_parser = parse_duration)]
    cert_ttl: std::time::Duration,
    /// Log format.
    #[arg(long, default_value = "plain", value_parser = ["plain", "json"])]
    log_format: String,
    /// Canary controller: Prometheus (`http://HOST:PORT`) for the analysis of Flagger
    /// `Canary` resources; unset: the waypoints' own metrics (--canary-waypoint-metrics).
    #[arg(long, env = "MESHWORK_CANARY_PROMETHEUS")]
    canary_prometheus: Option<String>,
    /// Canary controller without Prometheus: the waypoints' metrics URLs
    /// (`http://HOST:PORT/metrics`), repeatable or comma-separated.
    #[arg(long, value_delimiter = ',')]
    canary_waypoint_metrics: Vec<String>,
    /// Do not run the built-in canary controller (Flagger runs the Canaries).
    #[arg(long)]
    no_canary: bool,
    /// Kubernetes source: run the built-in canary controller on Flagger's Canaries (it
    /// watches Deployments, Canaries and MetricTemplates and, on the leader, applies the
    /// VirtualService/Services as field manager meshwork-canary, writes Canary status and
    /// Events). Off by default; never together with a Flagger running the same Canaries.
    #[arg(long)]
    canary_in_kubernetes: bool,
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

/// A listen address or `off`.
#[derive(Debug, Clone, Copy)]
struct Listen(Option<SocketAddr>);

fn parse_listen(s: &str) -> Result<Listen, String> {
    if s == "off" {
        return Ok(Listen(None));
    }
    s.parse()
        .map(|a| Listen(Some(a)))
        .map_err(|e| format!("{e}: expected ADDRESS:PORT or off"))
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
        // No trailing newline into a file or pipe (`controlplane token > f` is a valid
        // token file byte for byte); a terminal gets one so the prompt starts on its line.
        let mut out = std::io::stdout().lock();
        let end = if std::io::IsTerminal::is_terminal(&out) {
            "\n"
        } else {
            ""
        };
        std::io::Write::write_all(&mut out, format!("{token}{end}").as_bytes())
            .context("writing the token to stdout")?;
        return Ok(());
    }
    let mut serving = run::Serving::local(&cli.pod_namespace, &cli.service_account);
    for san in &cli.serving_sans {
        match san.parse::<std::net::IpAddr>() {
            Ok(ip) if !serving.ips.contains(&ip) => serving.ips.push(ip),
            Ok(_) => {}
            Err(_) => serving.dns_names.push(san.clone()),
        }
    }
    let source = match (cli.source.as_str(), cli.config_dir) {
        ("kubernetes", _) => {
            let node_agent_service_accounts = cli
                .node_agent_service_accounts
                .iter()
                .map(|a| {
                    a.split_once('/')
                        .filter(|(ns, sa)| !ns.is_empty() && !sa.is_empty())
                        .map(|(ns, sa)| (ns.to_string(), sa.to_string()))
                        .with_context(|| {
                            format!("--node-agent-service-account {a:?} must be namespace/name")
                        })
                })
                .collect::<anyhow::Result<Vec<_>>>()?;
            Source::Kubernetes(KubeOptions {
                token_audience: cli.token_audience,
                node_agent_service_accounts,
                leader_election: cli.leader_election,
                ca_from_secrets: cli.ca_from_secrets,
                root_cert_configmaps: cli
                    .root_cert_configmaps
                    .into_iter()
                    .filter(|n| !n.is_empty())
                    .collect(),
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
    let canary = run::CanaryOptions {
        enabled: !cli.no_canary,
        prometheus: cli.canary_prometheus,
        waypoint_metrics: cli.canary_waypoint_metrics,
        kubernetes: cli.canary_in_kubernetes,
    };
    let running = run::start_with(
        Options {
            source,
            trust_domain: cli.trust_domain,
            root_namespace: cli.root_namespace,
            mesh_config: cli.mesh_config,
            default_namespace: cli.default_namespace,
            grpc_addr: cli.grpc_addr.0,
            grpc_tls_addr: cli.grpc_tls_addr.0,
            serving,
            admin_addr: cli.admin_addr,
            probe_addr: cli.probe_addr,
            state_dir: Some(cli.state_dir.unwrap_or_else(|| cli.ca_dir.join("state"))),
            ca_dir: cli.ca_dir,
            cert_ttl: cli.cert_ttl,
            ca_reload_interval: cli.ca_reload_interval,
        },
        canary,
    )
    .await
    .context("starting the control plane")?;
    // Tests and scripts read this line to learn the bound addresses.
    let show = |a: Option<SocketAddr>| a.map_or_else(|| "off".to_string(), |a| a.to_string());
    println!(
        "controlplane ready grpc={} grpc-tls={} admin={}",
        show(running.grpc_addr),
        show(running.grpc_tls_addr),
        running.admin_addr
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

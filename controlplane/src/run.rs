//! Starting the control plane: bind the listeners, load the sources, serve.
//!
//! Used by the `controlplane` binary and, in-process, by tests and `meshwork demo`.

use meshwork_runtime::sync::RwLockExt;
use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::{mpsc, watch};
use tokio::task::JoinHandle;
use tracing::info;

use crate::admin::{self, AdminState};
use crate::ca::{
    self, Ca, CaConfig, CaHandle, NodeAuthenticator, NodeTokens, ServingCerts, ServingIdentity,
};
use crate::distribute::{MeshConfigService, ModelHub, Registry};
use crate::engine::{self, Engine};
use crate::source::dir;
use crate::source::kube::{
    self as kube_src,
    ca_secret::CaSecrets,
    lease::{run_election, Elector, KubeLease},
    root_cert::RootCertPublisher,
    route_status::{self, run_route_status, RouteStatusWriter},
    status::{run_status, tee, StatusWriter},
    waypoints::{self, run_waypoints, Controller, TemplateSource, WaypointApi},
    KubeSourceOptions, TokenReviewAuthenticator,
};
use crate::source::FileEvent;
use crate::state::StateDir;

/// Where the resources come from.
#[derive(Debug, Clone)]
pub enum Source {
    /// Nothing but the mesh config (tests, a CA-only control plane).
    None,
    /// A watched directory of YAML (the embedded default).
    Dir(PathBuf),
    /// A Kubernetes API server (in-cluster config or `KUBECONFIG`).
    Kubernetes(KubeOptions),
}

#[derive(Debug, Clone)]
pub struct KubeOptions {
    /// Audience of the projected tokens ztunnels present.
    pub token_audience: String,
    /// `(namespace, service account)` of the node agents (Meshwork's ztunnels, Istio's
    /// `istio-system/ztunnel`), whose tokens prove the node their pod runs on.
    pub node_agent_service_accounts: Vec<(String, String)>,
    /// Leader election: only the leader writes status conditions and applies waypoints.
    /// `false`: this replica always acts (run a single replica then).
    pub leader_election: bool,
    pub lease_namespace: String,
    pub lease_name: String,
    pub lease_duration: Duration,
    /// This replica's identity in the Lease (the pod name).
    pub identity: String,
    /// Keep the mesh CA in Secrets of `lease_namespace` (`cacerts`, else a generated root
    /// in `meshwork-ca-secret`), shared by every replica; `false`: the CA directory only.
    pub ca_from_secrets: bool,
    /// ConfigMaps (key `root-cert.pem`) the mesh roots are published as, in every
    /// namespace, for proxies to verify the TLS port.
    pub root_cert_configmaps: Vec<String>,
    /// The ConfigMap (in the root namespace) holding the waypoint template; `None`: no
    /// waypoint deployment controller.
    pub waypoint_template: Option<String>,
    /// `(namespace, service account)` whose pod-bound tokens may subscribe as observers.
    pub observer_service_accounts: Vec<(String, String)>,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub source: Source,
    pub mesh_config: Option<PathBuf>,
    /// Overrides of the mesh config (`--trust-domain`, `--root-namespace`).
    pub trust_domain: Option<String>,
    pub root_namespace: Option<String>,
    pub default_namespace: String,
    /// Plaintext gRPC (config and CA) for processes on this host; must be a loopback
    /// address. `None`: off.
    pub grpc_addr: Option<SocketAddr>,
    /// TLS gRPC (config and CA), istiod's 15012: the port other hosts use.
    pub grpc_tls_addr: Option<SocketAddr>,
    /// The names in the TLS port's certificate.
    pub serving: Serving,
    pub admin_addr: SocketAddr,
    /// A listener serving only `/ready` (kubelet probes reach the pod IP while the admin
    /// endpoint, with the model under `/debug`, stays on loopback); `None`: none.
    pub probe_addr: Option<SocketAddr>,
    pub ca_dir: PathBuf,
    pub cert_ttl: Duration,
    /// How often the CA directory is checked for new material (root rotation).
    pub ca_reload_interval: Duration,
    /// Directory source: where the last good config and the first-seen order of objects
    /// are kept across restarts (see [`crate::state`]); `None`: in memory only.
    pub state_dir: Option<PathBuf>,
}

/// The built-in canary controller (see [`crate::canary`]).
#[derive(Debug, Clone)]
pub struct CanaryOptions {
    pub enabled: bool,
    /// Prometheus for the analysis (`http://HOST:PORT`); `None`: the waypoints' metrics.
    pub prometheus: Option<String>,
    /// The waypoints' `/metrics` URLs, judged when there is no Prometheus.
    pub waypoint_metrics: Vec<String>,
    /// Kubernetes source: run the controller there too (watching Deployments, Canaries
    /// and MetricTemplates, writing the routing, the Canary status and Events through the
    /// API). Off by default: Flagger may be running the same Canaries.
    pub kubernetes: bool,
}

impl Default for CanaryOptions {
    fn default() -> Self {
        CanaryOptions {
            enabled: true,
            prometheus: None,
            waypoint_metrics: Vec::new(),
            kubernetes: false,
        }
    }
}

/// Who the control plane is on its TLS port.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Serving {
    /// `(namespace, service account)` of the control plane: its SPIFFE identity.
    pub service_account: (String, String),
    /// DNS names and IP addresses clients dial.
    pub dns_names: Vec<String>,
    pub ips: Vec<std::net::IpAddr>,
    pub ttl: Duration,
}

impl Serving {
    /// Names for local use: `localhost`, `127.0.0.1`, `::1`.
    pub fn local(namespace: &str, service_account: &str) -> Self {
        Serving {
            service_account: (namespace.to_string(), service_account.to_string()),
            dns_names: vec!["localhost".into()],
            ips: vec![
                std::net::Ipv4Addr::LOCALHOST.into(),
                std::net::Ipv6Addr::LOCALHOST.into(),
            ],
            ttl: Duration::from_secs(24 * 3600),
        }
    }
}

#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
    #[error(
        "--grpc-addr {0} is plaintext and must be a loopback address; other hosts use the TLS \
         port (--grpc-tls-addr, 15012)"
    )]
    PlaintextOffHost(SocketAddr),
    #[error(transparent)]
    Source(#[from] dir::DirError),
    #[error("{0}")]
    MeshConfig(String),
    #[error("mesh CA: {0}")]
    Ca(String),
    #[error("Kubernetes source: {0}")]
    Kube(String),
}

/// A running control plane.
pub struct Running {
    pub grpc_addr: Option<SocketAddr>,
    pub grpc_tls_addr: Option<SocketAddr>,
    pub admin_addr: SocketAddr,
    pub probe_addr: Option<SocketAddr>,
    pub hub: Arc<ModelHub>,
    pub registry: Arc<Registry>,
    pub ca: Arc<CaHandle>,
    pub tokens: NodeTokens,
    /// The canary controller's board, when it runs.
    pub canaries: Option<Arc<crate::canary::Board>>,
    tasks: Vec<JoinHandle<()>>,
}

impl Running {
    /// Stops serving (in-process users; the binary just exits).
    pub fn shutdown(self) {
        for t in self.tasks {
            t.abort();
        }
    }
}

pub async fn start(opts: Options) -> Result<Running, RunError> {
    start_with(opts, CanaryOptions::default()).await
}

/// [`start`] with the canary controller's options.
pub async fn start_with(opts: Options, canary: CanaryOptions) -> Result<Running, RunError> {
    if let Some(addr) = opts.grpc_addr.filter(|a| !a.ip().is_loopback()) {
        return Err(RunError::PlaintextOffHost(addr));
    }
    let hub = ModelHub::new();
    let registry = Arc::new(Registry::default());
    let mut engine = Engine::new(hub.clone(), opts.default_namespace.clone());
    engine.set_mesh_config(mesh_config(&opts)?);
    let (ready_tx, ready_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let diagnostics = engine.diagnostics();
    let mut source_health = kube_src::SourceHealth::default();
    // Kubernetes source with the canary controller: where its writes go.
    let mut kube_canary: Option<KubeCanary> = None;

    // The initial load happens before the listeners answer, so the first subscriber sees
    // the whole config rather than an empty model.
    let events = match &opts.source {
        Source::None => None,
        Source::Dir(dir_path) => {
            engine.with_directory_state(opts.state_dir.clone().map(StateDir::new));
            Some(dir::watch(dir_path.clone())?)
        }
        Source::Kubernetes(k) => {
            let want_canary = canary.enabled && canary.kubernetes;
            let (events, kube_tasks, health, kube) =
                kube_source(k, &root_namespace_of(&opts), want_canary).await?;
            tasks.extend(kube_tasks);
            engine.with_source_health(health.clone());
            source_health = health;
            kube_canary = kube;
            Some(events)
        }
    };
    let mut events = events;
    if let Some(events) = events.as_mut() {
        if let Some(initial) = events.recv().await {
            engine.apply_events(initial);
        }
    }

    let mut ca_config = CaConfig::new(trust_domain(&hub));
    ca_config.default_ttl = opts.cert_ttl;
    if let Source::Kubernetes(k) = &opts.source {
        if k.ca_from_secrets {
            let secrets = CaSecrets::new(kube_client().await?, &k.lease_namespace);
            secrets
                .materialize(&opts.ca_dir, &ca_config.trust_domain)
                .await
                .map_err(|e| RunError::Ca(e.to_string()))?;
            tasks.push(tokio::spawn(
                secrets.follow(opts.ca_dir.clone(), opts.ca_reload_interval),
            ));
        }
    }
    let ca = CaHandle::new(
        Ca::open(&opts.ca_dir, ca_config.clone()).map_err(|e| RunError::Ca(e.to_string()))?,
    );
    tasks.push(tokio::spawn(ca::follow_dir(
        opts.ca_dir.clone(),
        ca.clone(),
        ca_config,
        opts.ca_reload_interval,
    )));
    // The engine follows the source and publishes the CA's roots (again at each rotation)
    // in the mesh settings, so proxies renew under new roots as soon as they appear.
    engine.set_ca_roots(ca.current().trust_bundle().to_pem());
    let (generated_tx, generated) = mpsc::unbounded_channel();
    let kubernetes_source = matches!(opts.source, Source::Kubernetes(_));
    if kubernetes_source && canary.enabled && !canary.kubernetes {
        info!("canary controller off in Kubernetes (--canary-in-kubernetes not set): Flagger may run the Canaries");
    }
    let canaries = if canary.enabled && (!kubernetes_source || kube_canary.is_some()) {
        let (inputs_tx, inputs_rx) = watch::channel(Default::default());
        engine.with_canary_inputs(inputs_tx);
        let board = Arc::new(crate::canary::Board::default());
        let judge: Arc<dyn crate::canary::judge::Judge> = match &canary.prometheus {
            Some(addr) => Arc::new(crate::canary::prometheus::PrometheusJudge::new(
                addr.clone(),
            )),
            None => Arc::new(crate::canary::scrape::ScrapeJudge::new(
                canary.waypoint_metrics.clone(),
            )),
        };
        let controller = crate::canary::Controller {
            judge,
            hooks: Arc::new(crate::canary::webhook::HttpHooks::default()),
            router: match kube_canary {
                Some(k) => {
                    let (router, writes) =
                        kube_src::canary::KubeRouter::new(k.client, k.served, k.leader);
                    tasks.push(tokio::spawn(kube_src::canary::run_writes(writes)));
                    Arc::new(router)
                }
                None => Arc::new(crate::canary::act::EngineRouter {
                    events: generated_tx,
                }),
            },
            board: board.clone(),
            retry: Duration::from_secs(5),
        };
        tasks.push(tokio::spawn(controller.run(inputs_rx)));
        Some(board)
    } else {
        None
    };
    tasks.push(tokio::spawn(follow(engine, events, generated, ca.clone())));
    let _ = ready_tx.send(true);

    if let Source::Kubernetes(k) = &opts.source {
        if !k.root_cert_configmaps.is_empty() {
            let publisher =
                RootCertPublisher::new(kube_client().await?, k.root_cert_configmaps.clone());
            let current = ca.clone();
            tasks.push(tokio::spawn(publisher.run(
                move || current.current().trust_bundle().to_pem(),
                ca.subscribe(),
                Duration::from_secs(60),
            )));
        }
    }
    let tokens = NodeTokens::open(&opts.ca_dir).map_err(|e| RunError::Ca(e.to_string()))?;
    // Kubernetes: ztunnel tokens prove their node; a waypoint's token its own service
    // account (the CA signs that identity only; the config stream accepts it as a waypoint
    // of that namespace only).
    let nodes: Arc<dyn NodeAuthenticator> = match &opts.source {
        Source::Kubernetes(k) => Arc::new(TokenReviewAuthenticator::new(
            kube_client().await?,
            k.token_audience.clone(),
            k.node_agent_service_accounts.clone(),
        )),
        _ => Arc::new(tokens.clone()),
    };
    let directory = Arc::new(crate::auth::HubDirectory::new(hub.clone()));
    let observers = crate::auth::ObserverPolicy {
        tokens: Some(tokens.clone()),
        service_accounts: match &opts.source {
            Source::Kubernetes(k) => k.observer_service_accounts.clone(),
            _ => Vec::new(),
        },
    };
    let sub_auth = Arc::new(crate::auth::TokenAuth::new(nodes.clone()).with_observers(observers));

    let admin = TcpListener::bind(opts.admin_addr)
        .await
        .map_err(|e| RunError::Bind(opts.admin_addr, e))?;
    let admin_addr = admin
        .local_addr()
        .map_err(|e| RunError::Bind(opts.admin_addr, e))?;

    let config_svc = MeshConfigService::new(
        hub.clone(),
        registry.clone(),
        sub_auth,
        crate::translate::l4_view,
    )
    .into_server();
    let ca_svc = ca::service(ca.clone(), nodes, directory);
    let grpc_server = || {
        tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(config_svc.clone())
            .add_service(ca_svc.clone())
    };
    let mut grpc_addr = None;
    if let Some(addr) = opts.grpc_addr {
        let grpc = bind(addr).await?;
        grpc_addr = Some(grpc.local_addr().map_err(|e| RunError::Bind(addr, e))?);
        let server = grpc_server();
        tasks.push(tokio::spawn(async move {
            let incoming = meshwork_runtime::accept::incoming(grpc, "grpc");
            if let Err(e) = server.serve_with_incoming(incoming).await {
                tracing::error!(error = %e, "gRPC server stopped");
            }
        }));
    }
    let mut grpc_tls_addr = None;
    if let Some(addr) = opts.grpc_tls_addr {
        let tls = tls_config(&ca, &opts.serving, trust_domain(&hub))?;
        let grpc = bind(addr).await?;
        grpc_tls_addr = Some(grpc.local_addr().map_err(|e| RunError::Bind(addr, e))?);
        let server = grpc_server();
        tasks.push(tokio::spawn(async move {
            let incoming = crate::tls_listener::incoming(grpc, tls, "grpc-tls");
            if let Err(e) = server.serve_with_incoming(incoming).await {
                tracing::error!(error = %e, "gRPC TLS server stopped");
            }
        }));
    }

    let admin_state = AdminState {
        hub: hub.clone(),
        registry: registry.clone(),
        errors: Arc::new(move || {
            let mut d = diagnostics.read_or_recover().clone();
            // Kinds the Kubernetes source cannot watch (403…) are errors of the config.
            d.errors.extend(source_health.errors());
            d.warnings.extend(source_health.warnings());
            serde_json::to_value(&d).unwrap_or_default()
        }),
        ready: ready_rx,
        canaries: canaries.clone(),
    };
    let probe_addr = match opts.probe_addr {
        Some(addr) => {
            let probe = TcpListener::bind(addr)
                .await
                .map_err(|e| RunError::Bind(addr, e))?;
            let bound = probe.local_addr().map_err(|e| RunError::Bind(addr, e))?;
            tasks.push(tokio::spawn(admin::serve_probes(
                probe,
                admin_state.ready.clone(),
            )));
            Some(bound)
        }
        None => None,
    };
    tasks.push(tokio::spawn(admin::serve(admin, admin_state)));
    info!(?grpc_addr, ?grpc_tls_addr, %admin_addr, "control plane serving");
    Ok(Running {
        grpc_addr,
        grpc_tls_addr,
        admin_addr,
        probe_addr,
        hub,
        registry,
        ca,
        tokens,
        canaries,
        tasks,
    })
}

/// Applies source batches and CA changes to the engine until both are gone.
async fn follow(
    mut engine: Engine,
    mut events: Option<mpsc::Receiver<Vec<FileEvent>>>,
    mut generated: mpsc::UnboundedReceiver<Vec<FileEvent>>,
    ca: Arc<CaHandle>,
) {
    let mut ca_changes = ca.subscribe();
    let mut generated_open = true;
    loop {
        tokio::select! {
            batch = generated.recv(), if generated_open => match batch {
                // The canary controller's routing (see `crate::canary::act`).
                Some(batch) => {
                    engine.apply_events(batch);
                }
                None => generated_open = false,
            },
            batch = async { events.as_mut()?.recv().await }, if events.is_some() => match batch {
                Some(batch) => {
                    engine.apply_events(batch);
                }
                None => events = None,
            },
            changed = ca_changes.changed() => {
                if changed.is_err() {
                    return;
                }
                engine.set_ca_roots(ca.current().trust_bundle().to_pem());
            }
        }
    }
}

async fn bind(addr: SocketAddr) -> Result<TcpListener, RunError> {
    TcpListener::bind(addr)
        .await
        .map_err(|e| RunError::Bind(addr, e))
}

/// The TLS port's config: a serving certificate from the mesh CA, renewed as it goes.
fn tls_config(
    ca: &Arc<CaHandle>,
    serving: &Serving,
    trust_domain: String,
) -> Result<Arc<rustls::ServerConfig>, RunError> {
    let (ns, sa) = &serving.service_account;
    let spiffe = meshwork_identity::SpiffeId::new(&trust_domain, ns, sa)
        .map_err(|e| RunError::Ca(format!("control plane identity {ns}/{sa}: {e}")))?;
    let certs = ServingCerts::new(
        ca.clone(),
        ServingIdentity {
            spiffe,
            dns_names: serving.dns_names.clone(),
            ips: serving.ips.clone(),
            ttl: serving.ttl,
        },
    )
    .map_err(|e| RunError::Ca(format!("serving certificate: {e}")))?;
    ca::server_config(certs)
        .map(Arc::new)
        .map_err(|e| RunError::Ca(format!("TLS settings: {e}")))
}

fn trust_domain(hub: &ModelHub) -> String {
    use meshwork_model::pb::config::resource::Kind;
    match hub
        .read()
        .resources
        .get("mesh")
        .and_then(|r| r.kind.as_ref())
    {
        Some(Kind::Mesh(m)) if !m.trust_domain.is_empty() => m.trust_domain.clone(),
        _ => "cluster.local".into(),
    }
}

fn root_namespace_of(opts: &Options) -> String {
    opts.root_namespace
        .clone()
        .unwrap_or_else(|| "istio-system".to_string())
}

/// The mesh config file, with the command line's overrides on top.
fn mesh_config(opts: &Options) -> Result<Option<meshwork_api::MeshConfig>, RunError> {
    let mut mesh = match &opts.mesh_config {
        Some(path) => Some(engine::load_mesh_file(path).map_err(RunError::MeshConfig)?),
        None => None,
    };
    if opts.trust_domain.is_some() || opts.root_namespace.is_some() {
        let m = mesh.get_or_insert_with(Default::default);
        if let Some(td) = &opts.trust_domain {
            m.trust_domain = td.clone();
        }
        if let Some(ns) = &opts.root_namespace {
            m.root_namespace = ns.clone();
        }
    }
    Ok(mesh)
}

async fn kube_client() -> Result<::kube::Client, RunError> {
    ::kube::Client::try_default()
        .await
        .map_err(|e| RunError::Kube(format!("no Kubernetes client configuration: {e}")))
}

type KubeSourceParts = (
    mpsc::Receiver<Vec<FileEvent>>,
    Vec<JoinHandle<()>>,
    kube_src::SourceHealth,
    Option<KubeCanary>,
);

/// What the canary controller needs of the Kubernetes source to write there.
struct KubeCanary {
    client: ::kube::Client,
    served: kube_src::watch::Served,
    leader: watch::Receiver<bool>,
}

/// Starts the watchers, the leader election and the status writer; returns the event
/// batches for the engine (the first one holds the whole initial list), and the source's
/// reports of kinds it cannot watch.
async fn kube_source(
    k: &KubeOptions,
    root_namespace: &str,
    canary: bool,
) -> Result<KubeSourceParts, RunError> {
    let client = kube_client().await?;
    let (events, source) = kube_src::watch(
        client.clone(),
        &KubeSourceOptions {
            root_namespace: root_namespace.to_string(),
            canary,
        },
    );
    let (engine_rx, status_rx) = tee(events);
    let (engine_rx, waypoint_rx) = waypoints::tee(engine_rx);
    let (engine_rx, route_status_rx) = route_status::tee(engine_rx);
    let mut tasks = Vec::new();
    let leader_rx = if k.leader_election {
        let (leader_tx, leader_rx) = watch::channel(false);
        tasks.push(tokio::spawn(run_election(
            KubeLease::new(client.clone(), &k.lease_namespace, k.lease_name.clone()),
            Elector::new(k.identity.clone(), k.lease_duration),
            Duration::from_secs(2),
            leader_tx,
        )));
        leader_rx
    } else {
        info!("leader election disabled: this replica writes status and applies waypoints");
        let (leader_tx, leader_rx) = watch::channel(true);
        // Held for the life of the source: the writers stop when the sender is gone.
        tasks.push(tokio::spawn(async move {
            let _leader = leader_tx;
            std::future::pending::<()>().await
        }));
        leader_rx
    };
    match &k.waypoint_template {
        Some(configmap) => {
            let source = TemplateSource {
                configmap: configmap.clone(),
                ..TemplateSource::chart_default(root_namespace)
            };
            info!(template = %source.describe(), "waypoint deployment controller enabled");
            tasks.push(tokio::spawn(run_waypoints(
                WaypointApi::new(client.clone()),
                Controller::new(source),
                waypoint_rx,
                leader_rx.clone(),
            )));
            tasks.push(tokio::spawn(waypoints::run_class(
                client.clone(),
                leader_rx.clone(),
            )));
        }
        // Nobody reads the waypoint batches: dropping the receiver lets the tee skip them.
        None => drop(waypoint_rx),
    }
    tasks.push(tokio::spawn(run_route_status(
        RouteStatusWriter::with_served(client.clone(), source.served.clone()),
        route_status_rx,
        leader_rx.clone(),
    )));
    let kube_canary = canary.then(|| KubeCanary {
        client: client.clone(),
        served: source.served.clone(),
        leader: leader_rx.clone(),
    });
    let status = run_status(
        StatusWriter::with_served(client, source.served.clone()),
        status_rx,
        leader_rx,
    );
    info!(lease = %k.lease_name, identity = %k.identity, "watching the Kubernetes API");
    tasks.push(tokio::spawn(status));
    Ok((engine_rx, tasks, source.health, kube_canary))
}

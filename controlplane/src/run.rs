//! Starting the control plane: bind the listeners, load the sources, serve.
//!
//! Used by the `controlplane` binary and, in-process, by tests and `meshwork demo`.

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
use crate::ca::{self, Ca, CaConfig, NodeAuthenticator, NodeTokens};
use crate::distribute::{MeshConfigService, ModelHub, Registry};
use crate::engine::{self, Engine};
use crate::source::dir::{self, FileEvent};
use crate::source::kube::{
    self as kube_src,
    lease::{run_election, Elector, KubeLease},
    route_status::{self, run_route_status, RouteStatusWriter},
    status::{run_status, tee, StatusWriter},
    waypoints::{self, run_waypoints, Controller, TemplateSource, WaypointApi},
    KubeSourceOptions, TokenReviewAuthenticator,
};
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
    /// `(namespace, service account)` of the ztunnels, whose tokens prove a node.
    pub ztunnel_service_account: (String, String),
    /// Leader election: only the leader writes status conditions and applies waypoints.
    /// `false`: this replica always acts (run a single replica then).
    pub leader_election: bool,
    pub lease_namespace: String,
    pub lease_name: String,
    pub lease_duration: Duration,
    /// This replica's identity in the Lease (the pod name).
    pub identity: String,
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
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    /// A listener serving only `/ready` (kubelet probes reach the pod IP while the admin
    /// endpoint, with the model under `/debug`, stays on loopback); `None`: none.
    pub probe_addr: Option<SocketAddr>,
    pub ca_dir: PathBuf,
    pub cert_ttl: Duration,
    /// Directory source: where the last good config and the first-seen order of objects
    /// are kept across restarts (see [`crate::state`]); `None`: in memory only.
    pub state_dir: Option<PathBuf>,
}

#[derive(Debug, Error)]
pub enum RunError {
    #[error("cannot listen on {0}: {1}")]
    Bind(SocketAddr, std::io::Error),
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
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub probe_addr: Option<SocketAddr>,
    pub hub: Arc<ModelHub>,
    pub registry: Arc<Registry>,
    pub ca: Arc<Ca>,
    pub tokens: NodeTokens,
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
    let hub = ModelHub::new();
    let registry = Arc::new(Registry::default());
    let mut engine = Engine::new(hub.clone(), opts.default_namespace.clone());
    engine.set_mesh_config(mesh_config(&opts)?);
    let (ready_tx, ready_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let diagnostics = engine.diagnostics();

    // The initial load happens before the listeners answer, so the first subscriber sees
    // the whole config rather than an empty model.
    let events = match &opts.source {
        Source::None => None,
        Source::Dir(dir_path) => {
            engine.with_directory_state(opts.state_dir.clone().map(StateDir::new));
            Some(dir::watch(dir_path.clone())?)
        }
        Source::Kubernetes(k) => {
            let (events, kube_tasks) = kube_source(k, &root_namespace_of(&opts)).await?;
            tasks.extend(kube_tasks);
            Some(events)
        }
    };
    if let Some(mut events) = events {
        if let Some(initial) = events.recv().await {
            engine.apply_events(initial);
        }
        tasks.push(tokio::spawn(async move {
            while let Some(batch) = events.recv().await {
                engine.apply_events(batch);
            }
        }));
    }
    let _ = ready_tx.send(true);

    let mut ca_config = CaConfig::new(trust_domain(&hub));
    ca_config.default_ttl = opts.cert_ttl;
    let ca = Arc::new(Ca::open(&opts.ca_dir, ca_config).map_err(|e| RunError::Ca(e.to_string()))?);
    let tokens = NodeTokens::open(&opts.ca_dir).map_err(|e| RunError::Ca(e.to_string()))?;
    // Kubernetes: ztunnel tokens prove their node; a waypoint's token its own service
    // account (the CA signs that identity only; the config stream accepts it as a waypoint
    // of that namespace only).
    let nodes: Arc<dyn NodeAuthenticator> = match &opts.source {
        Source::Kubernetes(k) => Arc::new(TokenReviewAuthenticator::new(
            kube_client().await?,
            k.token_audience.clone(),
            [k.ztunnel_service_account.clone()],
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

    let grpc = TcpListener::bind(opts.grpc_addr)
        .await
        .map_err(|e| RunError::Bind(opts.grpc_addr, e))?;
    let admin = TcpListener::bind(opts.admin_addr)
        .await
        .map_err(|e| RunError::Bind(opts.admin_addr, e))?;
    let grpc_addr = grpc
        .local_addr()
        .map_err(|e| RunError::Bind(opts.grpc_addr, e))?;
    let admin_addr = admin
        .local_addr()
        .map_err(|e| RunError::Bind(opts.admin_addr, e))?;

    let config_svc = MeshConfigService::new(
        hub.clone(),
        registry.clone(),
        sub_auth,
        crate::translate::l4_view,
    );
    let ca_svc = ca::service(ca.clone(), nodes, directory);
    tasks.push(tokio::spawn(async move {
        let incoming = meshwork_runtime::accept::incoming(grpc, "grpc");
        let res = tonic::transport::Server::builder()
            .http2_keepalive_interval(Some(Duration::from_secs(30)))
            .add_service(config_svc.into_server())
            .add_service(ca_svc)
            .serve_with_incoming(incoming)
            .await;
        if let Err(e) = res {
            tracing::error!(error = %e, "gRPC server stopped");
        }
    }));

    let admin_state = AdminState {
        hub: hub.clone(),
        registry: registry.clone(),
        errors: Arc::new(move || {
            let d = diagnostics.read().unwrap_or_else(|e| e.into_inner());
            serde_json::to_value(&*d).unwrap_or_default()
        }),
        ready: ready_rx,
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
    info!(%grpc_addr, %admin_addr, "control plane serving");
    Ok(Running {
        grpc_addr,
        admin_addr,
        probe_addr,
        hub,
        registry,
        ca,
        tokens,
        tasks,
    })
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

/// Starts the watchers, the leader election and the status writer; returns the event
/// batches for the engine (the first one holds the whole initial list).
async fn kube_source(
    k: &KubeOptions,
    root_namespace: &str,
) -> Result<(mpsc::Receiver<Vec<FileEvent>>, Vec<JoinHandle<()>>), RunError> {
    let client = kube_client().await?;
    let kinds = kube_src::discover(&client)
        .await
        .map_err(|e| RunError::Kube(e.to_string()))?;
    let resources: Vec<_> = kinds.iter().map(|r| r.resource.clone()).collect();
    let (events, _stores) = kube_src::watch(
        client.clone(),
        kinds,
        &KubeSourceOptions {
            root_namespace: root_namespace.to_string(),
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
        RouteStatusWriter::new(client.clone(), resources.clone()),
        route_status_rx,
        leader_rx.clone(),
    )));
    let status = run_status(StatusWriter::new(client, resources), status_rx, leader_rx);
    info!(lease = %k.lease_name, identity = %k.identity, "watching the Kubernetes API");
    tasks.push(tokio::spawn(status));
    Ok((engine_rx, tasks))
}

//! Starting the control plane: bind the listeners, load the sources, serve.
//!
//! Used by the `controlplane` binary and, in-process, by tests and `meshwork demo`.

use std::net::SocketAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use thiserror::Error;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;
use tracing::info;

use crate::admin::{self, AdminState};
use crate::ca::{self, Ca, CaConfig, NodeTokens};
use crate::distribute::{MeshConfigService, ModelHub, Registry};
use crate::engine::{self, Engine};
use crate::source::dir;

#[derive(Debug, Clone)]
pub struct Options {
    pub config_dir: Option<PathBuf>,
    pub mesh_config: Option<PathBuf>,
    pub default_namespace: String,
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
    pub ca_dir: PathBuf,
    pub cert_ttl: Duration,
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
}

/// A running control plane.
pub struct Running {
    pub grpc_addr: SocketAddr,
    pub admin_addr: SocketAddr,
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
    if let Some(path) = &opts.mesh_config {
        let mesh = engine::load_mesh_file(path).map_err(RunError::MeshConfig)?;
        engine.set_mesh_config(Some(mesh));
    } else {
        engine.set_mesh_config(None);
    }
    let (ready_tx, ready_rx) = watch::channel(false);
    let mut tasks = Vec::new();
    let diagnostics = engine.diagnostics();

    // Initial load happens before the listeners answer, so the first subscriber sees
    // the whole config rather than an empty model.
    if let Some(dir_path) = &opts.config_dir {
        let mut events = dir::watch(dir_path.clone())?;
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
    let directory = Arc::new(crate::auth::HubDirectory::new(hub.clone()));
    let sub_auth = Arc::new(crate::auth::TokenAuth::new(tokens.clone()));

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
    let ca_svc = ca::service(ca.clone(), tokens.clone(), directory);
    tasks.push(tokio::spawn(async move {
        let incoming = tokio_stream::wrappers::TcpListenerStream::new(grpc);
        let res = tonic::transport::Server::builder()
            .tcp_nodelay(true)
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
    tasks.push(tokio::spawn(async move {
        if let Err(e) = admin::serve(admin, admin_state).await {
            tracing::error!(error = %e, "admin endpoint stopped");
        }
    }));
    info!(%grpc_addr, %admin_addr, "control plane serving");
    Ok(Running {
        grpc_addr,
        admin_addr,
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

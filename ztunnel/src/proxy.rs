//! The state shared by every listener of one ztunnel.

use std::collections::HashSet;
use std::sync::{Arc, OnceLock, RwLock};

use meshwork_hbone::{H2Settings, Pool, PoolStats};
use meshwork_model::client::ConfigHandle;
use meshwork_model::Snapshot;
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::accesslog::AccessLog;
use crate::certs::CertManager;
use crate::config::Config;
use crate::connections::Registry;
use crate::metrics::Metrics;
use crate::policy::Authorizer;
use crate::redirect::Redirector;
use crate::state::{workload_ref, RoundRobin, State};

/// The config as seen by this node, with compiled policies.
pub struct Current {
    pub state: State,
    pub authz: Authorizer,
}

/// Changes the process log level (`/logging?level=`); provided by the binary.
pub type LogControl = meshwork_runtime::log::LevelControl;

pub struct Proxy {
    pub cfg: Config,
    current: RwLock<Arc<Current>>,
    pub certs: Arc<CertManager>,
    /// One HBONE pool per shard (`crate::shards`): a pooled connection is driven by the
    /// thread whose connections use it.
    pools: Vec<Pool>,
    pub h2: H2Settings,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub rr: RoundRobin,
    pub access: AccessLog,
    /// Every connection task; drain waits on it.
    pub tracker: TaskTracker,
    /// Stop accepting (drain started).
    pub stop_accept: CancellationToken,
    /// Close everything (drain deadline passed).
    pub force_close: CancellationToken,
    pub xds: ConfigHandle,
    pub log_control: Option<LogControl>,
    /// The node's eBPF redirection (`--redirect ebpf`), set once at start.
    pub redirect: OnceLock<Arc<Redirector>>,
    /// The in-pod pods (`--redirect inpod`), set once at start; weak: they hold the proxy.
    pub inpod: OnceLock<std::sync::Weak<crate::inpod::InPod>>,
    applied: watch::Sender<u64>,
}

impl Proxy {
    pub fn new(
        cfg: Config,
        xds: ConfigHandle,
        certs: Arc<CertManager>,
        pools: Vec<Pool>,
        log_control: Option<LogControl>,
    ) -> Self {
        let snap = xds.snapshot();
        let current = Arc::new(Current {
            state: State::new(snap.clone(), &cfg.node, cfg.hbone_port),
            authz: Authorizer::new(&snap),
        });
        Proxy {
            access: AccessLog {
                enabled: !cfg.no_access_log,
            },
            current: RwLock::new(current),
            certs,
            pools,
            h2: H2Settings::default(),
            metrics: Arc::new(Metrics::new()),
            registry: Arc::default(),
            rr: RoundRobin::default(),
            tracker: TaskTracker::new(),
            stop_accept: CancellationToken::new(),
            force_close: CancellationToken::new(),
            xds,
            log_control,
            redirect: OnceLock::new(),
            inpod: OnceLock::new(),
            applied: watch::channel(0).0,
            cfg,
        }
    }

    /// The HBONE pool of the calling shard (the first one off the data-path threads).
    pub fn pool(&self) -> &Pool {
        let i = crate::shards::current().unwrap_or(0);
        &self.pools[i % self.pools.len()]
    }

    /// Every shard's pool counters, summed.
    pub fn pool_stats(&self) -> PoolStats {
        let mut total = PoolStats {
            connections_opened: 0,
            connections_open: 0,
            streams_opened: 0,
        };
        for p in &self.pools {
            let s = p.stats();
            total.connections_opened += s.connections_opened;
            total.connections_open += s.connections_open;
            total.streams_opened += s.streams_opened;
        }
        total
    }

    pub fn current(&self) -> Arc<Current> {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    /// Number of snapshots applied; wakes watchers on each.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Adopts a new snapshot: swaps lookups and policies, updates the wanted
    /// certificates, evicts metrics of deleted workloads, and closes open connections the
    /// new policies deny.
    pub fn apply(&self, snap: Arc<Snapshot>) {
        let current = Arc::new(Current {
            state: State::new(snap.clone(), &self.cfg.node, self.cfg.hbone_port),
            authz: Authorizer::new(&snap),
        });
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = current.clone();
        self.certs.set_identities(current.state.local_identities());
        if let Some(mesh) = snap.mesh() {
            self.certs.set_mesh_roots(&mesh.ca_roots_pem);
        }
        let live: HashSet<String> = snap.workloads().map(workload_ref).collect();
        self.metrics.evict(&live);
        let closed = self.registry.recheck(|attrs| {
            let v = current.authz.check(&current.state, attrs);
            (!v.allowed).then_some(v.reason)
        });
        tracing::info!(
            version = snap.version,
            resources = snap.len(),
            closed,
            "config applied"
        );
        self.applied.send_modify(|v| *v += 1);
    }

    /// Ready once the config is synced and every local identity has a certificate.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.xds.status().synced {
            return Err("config not synced".into());
        }
        if *self.applied.borrow() == 0 {
            return Err("config not applied".into());
        }
        if !self.certs.ready() {
            return Err("certificates not loaded".into());
        }
        if self.redirect.get().is_some_and(|r| !r.synced()) {
            return Err("redirection not synced".into());
        }
        Ok(())
    }
}

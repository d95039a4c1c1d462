//! Starting and stopping a ztunnel: binds every listener, follows the config, and
//! drains on shutdown.

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use meshwork_hbone::{Pool, PoolSettings, PoolStats};
use meshwork_model::client::ConfigHandle;
use tokio::net::{TcpListener, TcpStream};
use tokio_util::sync::CancellationToken;

use crate::admin::{self, Endpoint};
use crate::args::{Config, Listen};
use crate::certs::{CertManager, CertSigner};
use crate::inpod::{serve_agent, Capture, CaptureError, InPod, InPodError, InPodSettings};
use crate::listeners::{bind_shards, spawn_accept, BindError};
use crate::metrics::Metrics;
use crate::proxy::{LogControl, Proxy};
use crate::redirect::{redirect_options, RedirectMode, RedirectSetupError, Redirector};
use crate::scope::Scope;
use crate::shards::Shards;
use crate::{inbound, inbound_plain, outbound, sockets, socks5};

#[derive(Debug, thiserror::Error)]
pub enum StartError {
    #[error(transparent)]
    Bind(#[from] BindError),
    #[error(transparent)]
    Redirect(#[from] RedirectSetupError),
    #[error("starting the data-path threads: {0}")]
    Threads(std::io::Error),
    #[error("redirect setup task failed: {0}")]
    RedirectTask(String),
    #[error(transparent)]
    Config(#[from] crate::args::ConfigError),
    #[error(transparent)]
    InPod(#[from] InPodError),
    #[error(transparent)]
    Capture(#[from] CaptureError),
    #[error("--cni-socket: {0}")]
    Agent(#[from] meshwork_cni::agent::AgentError),
}

/// Addresses the listeners actually bound (ports resolved when 0 was asked).
#[derive(Debug, Clone, Default)]
pub struct BoundAddrs {
    pub outbound: Option<SocketAddr>,
    pub socks5: Option<SocketAddr>,
    pub inbound_plain: Option<SocketAddr>,
    pub hbone: Vec<SocketAddr>,
    pub admin: Option<SocketAddr>,
    pub metrics: Option<SocketAddr>,
    pub readiness: Option<SocketAddr>,
}

/// What a ztunnel needs besides its flags.
pub struct Deps {
    /// The followed config (`meshwork_model::client::spawn`, or `ConfigHandle::manual`).
    pub config: ConfigHandle,
    /// Issues workload certificates (`CaClient` in production).
    pub signer: Arc<dyn CertSigner>,
    pub log_control: Option<LogControl>,
}

/// A running ztunnel.
pub struct Ztunnel {
    pub addrs: BoundAddrs,
    proxy: Arc<Proxy>,
    inpod: Option<Arc<InPod>>,
    stop_admin: CancellationToken,
    /// Declared last: dropped (data-path threads stopped) after everything else.
    _shards: Shards,
}

fn bind(
    what: &'static str,
    l: Listen,
    transparent: bool,
    reuse_port: bool,
) -> Result<Option<TcpListener>, StartError> {
    match l.0 {
        None => Ok(None),
        Some(addr) => sockets::listen_with(addr, transparent, reuse_port)
            .map(Some)
            .map_err(|source| StartError::Bind(BindError { what, addr, source })),
    }
}

impl Ztunnel {
    /// Binds every configured listener and starts serving. Must run inside a tokio runtime.
    /// Connections are served on `cfg.worker_threads` data-path threads (`crate::shards`),
    /// or on the caller's runtime when it is 0.
    pub async fn start(cfg: Config, deps: Deps) -> Result<Ztunnel, StartError> {
        cfg.validate()?;
        let shards = match cfg.worker_threads {
            0 => Shards::inline(),
            n => Shards::start(n).map_err(StartError::Threads)?,
        };
        let pool = PoolSettings {
            max_streams_per_conn: cfg.max_streams_per_conn,
            idle_timeout: cfg.pool_idle_timeout,
            connect_timeout: cfg.connect_timeout,
            ..Default::default()
        };
        let pools = (0..shards.len()).map(|_| Pool::new(pool.clone())).collect();
        let certs = CertManager::new(deps.signer);
        let proxy = Arc::new(Proxy::new(
            cfg.clone(),
            deps.config.clone(),
            certs,
            pools,
            deps.log_control,
        ));
        let mut addrs = BoundAddrs::default();
        let stop_admin = CancellationToken::new();

        // With the redirection, a new ztunnel takes over the node's listeners while the old
        // one drains (SO_REUSEPORT; see `redirect`): no window without a listener.
        let share = cfg.redirect != RedirectMode::Off;
        let node = Scope::node();
        // In-pod mode opens the data listeners in each enrolled pod's namespace
        // (`crate::inpod`), never in its own.
        let inpod_mode = cfg.redirect == RedirectMode::InPod;
        let own = |l: Listen| if inpod_mode { Listen(None) } else { l };
        let outbound = bind_shards(
            "outbound",
            own(cfg.outbound_addr),
            true,
            share,
            shards.handles(),
            &node,
        )?;
        let socks = bind_shards(
            "socks5",
            cfg.socks5_addr,
            false,
            share,
            shards.handles(),
            &node,
        )?;
        let plain = bind_shards(
            "inbound plaintext",
            own(cfg.inbound_plain_addr),
            true,
            share,
            shards.handles(),
            &node,
        )?;
        let mut hbone = Vec::new();
        for a in cfg.hbone_addrs.iter().filter(|_| !inpod_mode) {
            hbone.extend(bind_shards(
                "hbone",
                Listen(Some(*a)),
                true,
                share,
                shards.handles(),
                &node,
            )?);
        }
        let admin_l = bind("admin", cfg.admin_addr, false, share)?;
        let metrics_l = bind("metrics", cfg.metrics_addr, false, share)?;
        let ready_l = bind("readiness", cfg.readiness_addr, false, share)?;

        // Listeners first: a restarted ztunnel's adopted programs find them at once.
        if cfg.redirect == RedirectMode::Ebpf {
            let opts = redirect_options(&cfg)?;
            let uplink = cfg.redirect_uplink.clone();
            let r = tokio::task::spawn_blocking(move || Redirector::setup(opts, uplink))
                .await
                .map_err(|e| StartError::RedirectTask(e.to_string()))??;
            let r = Arc::new(r);
            let _ = proxy.redirect.set(r.clone());
            // A draining ztunnel leaves the maps to its successor (handover).
            r.follow(
                deps.config.clone(),
                cfg.node.clone(),
                proxy.stop_accept.clone(),
            );
        }

        // Follow the config before accepting anything.
        proxy.apply(deps.config.snapshot());
        let p = proxy.clone();
        let mut watch = deps.config.watch();
        let stop = stop_admin.clone();
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = watch.changed() => if r.is_err() { return },
                    _ = stop.cancelled() => return,
                }
                let snap = watch.borrow_and_update().clone();
                p.apply(snap);
            }
        });
        let inpod = if inpod_mode {
            Some(start_inpod(&cfg, &proxy, &shards, &stop_admin).await?)
        } else {
            None
        };

        if let Some(ls) = outbound {
            let addr = ls.addr;
            addrs.outbound = Some(addr);
            spawn_accept(
                &proxy,
                shards.handles(),
                "outbound",
                ls,
                proxy.stop_accept.clone(),
                move |p, sock, peer| async move {
                    match sockets::captured_dst(&sock, addr) {
                        Some(dst) => {
                            outbound::handle_captured(p, sock, peer, dst, Scope::node()).await
                        }
                        None => {
                            tracing::warn!(%peer, "outbound: connection without an original destination (not captured)")
                        }
                    }
                },
            );
        }
        if let Some(ls) = socks {
            addrs.socks5 = Some(ls.addr);
            spawn_accept(
                &proxy,
                shards.handles(),
                "socks5",
                ls,
                proxy.stop_accept.clone(),
                socks5::handle,
            );
        }
        if let Some(ls) = plain {
            let addr = ls.addr;
            addrs.inbound_plain = Some(addr);
            spawn_accept(
                &proxy,
                shards.handles(),
                "inbound plaintext",
                ls,
                proxy.stop_accept.clone(),
                move |p, sock, peer| async move {
                    match sockets::captured_dst(&sock, addr) {
                        Some(dst) => inbound_plain::handle(p, sock, peer, dst, Scope::node()).await,
                        None => {
                            tracing::warn!(%peer, "plaintext inbound: connection without an original destination (not captured)")
                        }
                    }
                },
            );
        }
        for ls in hbone {
            addrs.hbone.push(ls.addr);
            spawn_accept(
                &proxy,
                shards.handles(),
                "hbone",
                ls,
                proxy.stop_accept.clone(),
                |p, sock, peer| inbound::serve(p, sock, peer, Scope::node()),
            );
        }
        for (l, ep, slot) in [
            (admin_l, Endpoint::Admin, &mut addrs.admin),
            (metrics_l, Endpoint::Metrics, &mut addrs.metrics),
            (ready_l, Endpoint::Readiness, &mut addrs.readiness),
        ] {
            if let Some(l) = l {
                *slot = l.local_addr().ok();
                let weak = inpod.as_ref().map(Arc::downgrade);
                tokio::spawn(admin::serve(proxy.clone(), weak, l, ep, stop_admin.clone()));
            }
        }
        tracing::info!(node = %cfg.node, ?addrs, data_threads = cfg.worker_threads, "ztunnel started");
        Ok(Ztunnel {
            addrs,
            proxy,
            inpod,
            stop_admin,
            _shards: shards,
        })
    }

    /// The in-pod pods (`--redirect inpod`).
    pub fn inpod(&self) -> Option<&Arc<InPod>> {
        self.inpod.as_ref()
    }

    pub fn pool_stats(&self) -> PoolStats {
        self.proxy.pool_stats()
    }

    pub fn metrics(&self) -> &Metrics {
        &self.proxy.metrics
    }

    pub fn certs(&self) -> &Arc<CertManager> {
        &self.proxy.certs
    }

    /// Open inbound connections.
    pub fn inbound_connections(&self) -> usize {
        self.proxy.registry.len()
    }

    pub fn readiness(&self) -> Result<(), String> {
        self.proxy.readiness()
    }

    /// Waits until ready (config applied and certificates loaded), up to `timeout`.
    pub async fn wait_ready(&self, timeout: Duration) -> Result<(), String> {
        let mut certs = self.proxy.certs.subscribe();
        let mut applied = self.proxy.applied();
        let fut = async {
            loop {
                if self.readiness().is_ok() {
                    return;
                }
                tokio::select! {
                    _ = certs.changed() => {}
                    _ = applied.changed() => {}
                    _ = tokio::time::sleep(Duration::from_millis(50)) => {}
                }
            }
        };
        tokio::time::timeout(timeout, fut)
            .await
            .map_err(|_| self.readiness().err().unwrap_or_default())
    }

    /// Waits until `n` snapshots have been applied (tests pushing config changes).
    pub async fn wait_applied(&self, n: u64) {
        let mut applied = self.proxy.applied();
        let _ = applied.wait_for(|v| *v >= n).await;
    }

    /// Number of snapshots applied so far.
    pub fn applied_count(&self) -> u64 {
        *self.proxy.applied().borrow()
    }

    /// Handles a captured outbound connection whose original destination is known to the
    /// caller (capture mechanisms that hand over sockets, tests).
    pub fn outbound_conn(&self, sock: TcpStream, dst: SocketAddr) {
        let Ok(peer) = sock.peer_addr() else { return };
        let p = self.proxy.clone();
        self.proxy
            .tracker
            .spawn(outbound::handle_captured(p, sock, peer, dst, Scope::node()));
    }

    /// Handles a captured plaintext inbound connection to `dst`.
    pub fn inbound_plain_conn(&self, sock: TcpStream, dst: SocketAddr) {
        let Ok(peer) = sock.peer_addr() else { return };
        let p = self.proxy.clone();
        self.proxy
            .tracker
            .spawn(inbound_plain::handle(p, sock, peer, dst, Scope::node()));
    }

    /// Graceful drain: stop accepting (HBONE peers get GOAWAY), let open connections
    /// finish for up to `deadline`, then close what is left.
    pub async fn shutdown(self, deadline: Duration) {
        tracing::info!(?deadline, "draining");
        self.proxy.stop_accept.cancel();
        self.proxy.tracker.close();
        if tokio::time::timeout(deadline, self.proxy.tracker.wait())
            .await
            .is_err()
        {
            tracing::warn!("drain deadline passed; closing remaining connections");
            self.proxy.force_close.cancel();
            let _ = tokio::time::timeout(Duration::from_secs(1), self.proxy.tracker.wait()).await;
        }
        if let (Some(inpod), Some(file)) = (&self.inpod, &self.proxy.cfg.inpod_stop_decision_file) {
            inpod.on_stop(file, Duration::from_secs(5)).await;
        }
        self.stop_admin.cancel();
        tracing::info!("drained");
    }
}

/// `--redirect inpod`: loads the pods' capture programs, re-opens the recorded pods,
/// follows the config and serves the node-agent socket.
async fn start_inpod(
    cfg: &Config,
    proxy: &Arc<Proxy>,
    shards: &Shards,
    stop: &CancellationToken,
) -> Result<Arc<InPod>, StartError> {
    let opts = redirect_options(cfg)?;
    let any = |port| Listen(Some(SocketAddr::from(([0, 0, 0, 0], port))));
    let settings = InPodSettings {
        outbound: any(opts.outbound_port),
        inbound_plain: any(opts.inbound_port),
        hbone: any(opts.hbone_port),
        bypass_mark: opts.pod_bypass_mark,
        enroll_timeout: cfg.inpod_enroll_timeout,
        state_dir: cfg.inpod_state_dir.clone(),
        netns_dir: cfg.inpod_netns_dir.clone(),
    };
    let node_ips = cfg.node_ips.clone();
    let pod_cgroup = cfg.inpod_pod_cgroup.clone();
    let capture =
        tokio::task::spawn_blocking(move || Capture::load(opts, &node_ips, pod_cgroup.as_deref()))
            .await
            .map_err(|e| StartError::RedirectTask(e.to_string()))??;
    let inpod = InPod::start(proxy.clone(), shards.handles().to_vec(), settings, capture).await?;
    inpod.follow(stop.clone());
    let server = meshwork_cni::agent::AgentServer::bind(&cfg.cni_socket)?;
    tokio::spawn(serve_agent(server, inpod.clone(), stop.clone()));
    Ok(inpod)
}

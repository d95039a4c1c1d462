//! The `MeshConfig` gRPC service: one task per proxy stream ([`super::stream`]).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use meshwork_model::pb::config::{proxy_message, ProxyKind, ProxyMessage, Subscribe};
use serde::Serialize;
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use super::filter::{Filter, L4View};
use super::hub::ModelHub;
use super::stream::StreamTask;
use super::wire::{EncodedUpdate, MeshConfigServer};

/// How many streams may have a full (re)sync in flight at once. A full update to a
/// ztunnel is the whole model (tens of MB at 100,000 pods), held encoded until the proxy
/// ACKs it: when 1,000 ztunnels connect at once, this bounds the control plane's memory
/// (Istio's istiod similarly throttles concurrent pushes).
pub const MAX_CONCURRENT_FULL_SYNCS: usize = 8;

/// Decides whether a subscription may be served (node tokens in file mode, TokenReview
/// in Kubernetes).
#[tonic::async_trait]
pub trait SubscriptionAuth: Send + Sync {
    async fn check(&self, sub: &Subscribe) -> Result<(), Status>;
}

/// What the admin endpoint shows about a connected proxy.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyInfo {
    pub id: u64,
    pub kind: String,
    pub node: String,
    pub gateway: String,
    pub proxy_id: String,
    pub peer: Option<SocketAddr>,
    pub connected_at_unix: u64,
    /// Model generation of the last ACKed update.
    pub acked_version: u64,
    pub resources: usize,
    pub acks: u64,
    pub nacks: u64,
    pub last_nack: Option<String>,
}

#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    proxies: Mutex<HashMap<u64, ProxyInfo>>,
    /// Woken on every ACK (benchmarks wait on it).
    acked: tokio::sync::Notify,
}

impl Registry {
    /// How many connected proxies have ACKed generation `generation` or a later one.
    pub fn acked_at_least(&self, generation: u64) -> usize {
        self.lock()
            .values()
            .filter(|p| p.acked_version >= generation)
            .count()
    }

    /// Waits until `n` proxies have ACKed `generation` or later.
    pub async fn wait_acked(&self, generation: u64, n: usize) {
        loop {
            let woken = self.acked.notified();
            if self.acked_at_least(generation) >= n {
                return;
            }
            woken.await;
        }
    }

    pub fn list(&self) -> Vec<ProxyInfo> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|p| p.id);
        v
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ProxyInfo>> {
        self.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }

    pub(super) fn update(&self, id: u64, f: impl FnOnce(&mut ProxyInfo)) {
        if let Some(p) = self.lock().get_mut(&id) {
            f(p);
        }
    }

    pub(super) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub(super) fn notify_acked(&self) {
        self.acked.notify_waiters();
    }
}

#[derive(Clone)]
pub struct MeshConfigService {
    hub: Arc<ModelHub>,
    registry: Arc<Registry>,
    auth: Arc<dyn SubscriptionAuth>,
    l4_view: L4View,
    full_syncs: Arc<Semaphore>,
}

impl MeshConfigService {
    pub fn new(
        hub: Arc<ModelHub>,
        registry: Arc<Registry>,
        auth: Arc<dyn SubscriptionAuth>,
        l4_view: L4View,
    ) -> Self {
        MeshConfigService {
            hub,
            registry,
            auth,
            l4_view,
            full_syncs: Arc::new(Semaphore::new(MAX_CONCURRENT_FULL_SYNCS)),
        }
    }

    pub fn into_server(self) -> MeshConfigServer {
        MeshConfigServer::new(self, 16 * 1024 * 1024, 512 * 1024 * 1024)
    }
}

pub type UpdateStream = Pin<Box<dyn Stream<Item = Result<EncodedUpdate, Status>> + Send>>;

impl MeshConfigService {
    pub async fn stream(
        &self,
        req: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<UpdateStream>, Status> {
        let peer = req.remote_addr();
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Subscribe within 10s"))??
            .ok_or_else(|| Status::invalid_argument("stream closed before Subscribe"))?;
        let Some(proxy_message::Msg::Subscribe(sub)) = first.msg else {
            return Err(Status::invalid_argument(
                "the first message on a stream must be Subscribe",
            ));
        };
        let kind = ProxyKind::try_from(sub.kind).unwrap_or(ProxyKind::Unspecified);
        match kind {
            ProxyKind::Ztunnel if sub.node.is_empty() => {
                return Err(Status::invalid_argument(
                    "ztunnel subscription without node",
                ))
            }
            ProxyKind::Waypoint if sub.namespace.is_empty() || sub.name.is_empty() => {
                return Err(Status::invalid_argument(
                    "waypoint subscription without namespace/name",
                ))
            }
            ProxyKind::Unspecified => {
                return Err(Status::invalid_argument("subscription without proxy kind"))
            }
            _ => {}
        }
        self.auth.check(&sub).await?;

        let id = self.registry.next.fetch_add(1, Ordering::Relaxed) + 1;
        self.registry.lock().insert(
            id,
            ProxyInfo {
                id,
                kind: kind.as_str_name().to_ascii_lowercase(),
                node: sub.node.clone(),
                gateway: if sub.name.is_empty() {
                    String::new()
                } else {
                    format!("{}/{}", sub.namespace, sub.name)
                },
                proxy_id: sub.proxy_id.clone(),
                peer,
                connected_at_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                acked_version: 0,
                resources: 0,
                acks: 0,
                nacks: 0,
                last_nack: None,
            },
        );
        info!(id, kind = ?kind, node = %sub.node, proxy = %sub.proxy_id, ?peer, "proxy subscribed");
        let (tx, rx) = mpsc::channel(4);
        let task = StreamTask::new(
            id,
            self.hub.clone(),
            self.registry.clone(),
            Filter::new(kind, &sub.node, &sub.namespace, &sub.name, self.l4_view),
            sub.known.into_iter().collect(),
            sub.accepts_parts,
        );
        tokio::spawn(task.run(inbound, tx, self.full_syncs.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

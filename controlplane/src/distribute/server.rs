//! The `MeshConfig` gRPC service: one task per proxy stream.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use meshwork_model::pb::config::{
    mesh_config_server::{MeshConfig, MeshConfigServer},
    proxy_message, resource, ConfigUpdate, ProxyKind, ProxyMessage, Resource, Subscribe,
};
use serde::Serialize;
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;
use tonic::{Request, Response, Status, Streaming};
use tracing::{debug, info, warn};

use super::filter::{Filter, L4View, NodeContext};
use super::hub::{HubState, ModelHub};

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
}

impl Registry {
    pub fn list(&self) -> Vec<ProxyInfo> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|p| p.id);
        v
    }

    fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ProxyInfo>> {
        self.proxies.lock().unwrap_or_else(|e| e.into_inner())
    }

    fn update(&self, id: u64, f: impl FnOnce(&mut ProxyInfo)) {
        if let Some(p) = self.lock().get_mut(&id) {
            f(p);
        }
    }
}

#[derive(Clone)]
pub struct MeshConfigService {
    hub: Arc<ModelHub>,
    registry: Arc<Registry>,
    auth: Arc<dyn SubscriptionAuth>,
    l4_view: L4View,
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
        }
    }

    pub fn into_server(self) -> MeshConfigServer<MeshConfigService> {
        MeshConfigServer::new(self)
            .max_decoding_message_size(16 * 1024 * 1024)
            .max_encoding_message_size(512 * 1024 * 1024)
    }
}

type UpdateStream = Pin<Box<dyn Stream<Item = Result<ConfigUpdate, Status>> + Send>>;

#[tonic::async_trait]
impl MeshConfig for MeshConfigService {
    type StreamStream = UpdateStream;

    async fn stream(
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
        let task = StreamTask {
            id,
            hub: self.hub.clone(),
            registry: self.registry.clone(),
            filter: Filter {
                kind,
                node: sub.node.clone(),
                root_namespace: String::new(),
                l4_view: self.l4_view,
                node_ctx: NodeContext::default(),
            },
            held: sub.known.into_iter().collect(),
            in_flight: None,
            seen_gen: 0,
            first: true,
            nonce: 0,
        };
        tokio::spawn(task.run(inbound, tx));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

/// Nonce, generation and the changes to `held` once the in-flight update is ACKed
/// (new version, or None for a removal).
type InFlight = (String, u64, Vec<(String, Option<String>)>);

struct StreamTask {
    id: u64,
    hub: Arc<ModelHub>,
    registry: Arc<Registry>,
    filter: Filter,
    /// Key -> version the proxy holds (as of its last ACK).
    held: HashMap<String, String>,
    in_flight: Option<InFlight>,
    seen_gen: u64,
    first: bool,
    nonce: u64,
}

impl StreamTask {
    async fn run(
        mut self,
        mut inbound: Streaming<ProxyMessage>,
        tx: mpsc::Sender<Result<ConfigUpdate, Status>>,
    ) {
        let mut gen_rx = self.hub.watch();
        loop {
            if self.in_flight.is_none() && (self.first || self.hub.generation() > self.seen_gen) {
                if let Some(update) = self.next_update() {
                    debug!(id = self.id, nonce = %update.nonce, upserts = update.resources.len(),
                        removed = update.removed.len(), "sending config update");
                    if tx.send(Ok(update)).await.is_err() {
                        break;
                    }
                }
            }
            tokio::select! {
                msg = inbound.message() => match msg {
                    Ok(Some(m)) => self.on_message(m),
                    Ok(None) => break,
                    Err(e) => {
                        debug!(id = self.id, error = %e, "proxy stream error");
                        break;
                    }
                },
                changed = gen_rx.changed() => if changed.is_err() { break },
                _ = tx.closed() => break,
            }
        }
        info!(id = self.id, "proxy disconnected");
        self.registry.lock().remove(&self.id);
    }

    fn on_message(&mut self, m: ProxyMessage) {
        let Some(proxy_message::Msg::Ack(ack)) = m.msg else {
            warn!(
                id = self.id,
                "ignoring a second Subscribe on the same stream"
            );
            return;
        };
        let Some((nonce, generation, next)) = self.in_flight.take() else {
            return;
        };
        if ack.nonce != nonce {
            warn!(id = self.id, got = %ack.nonce, expected = %nonce, "ACK for an unknown nonce");
            self.in_flight = Some((nonce, generation, next));
            return;
        }
        if ack.error.is_empty() {
            for (key, version) in next {
                match version {
                    Some(v) => self.held.insert(key, v),
                    None => self.held.remove(&key),
                };
            }
            let held = self.held.len();
            self.registry.update(self.id, |p| {
                p.acks += 1;
                p.acked_version = generation;
                p.resources = held;
            });
        } else {
            warn!(id = self.id, nonce = %nonce, error = %ack.error, "proxy rejected config update");
            self.registry.update(self.id, |p| {
                p.nacks += 1;
                p.last_nack = Some(ack.error.clone());
            });
        }
    }

    /// Diffs the model (filtered for this proxy) against what the proxy holds.
    fn next_update(&mut self) -> Option<ConfigUpdate> {
        let hub = self.hub.clone();
        let state = hub.read();
        let generation = state.generation;
        self.filter.root_namespace = root_namespace(&state);
        let changed = if self.first {
            None
        } else {
            state.changed_since(self.seen_gen)
        };
        let mut recheck_authz = false;
        if self.filter.kind == ProxyKind::Ztunnel
            && changed
                .as_ref()
                .is_none_or(|c| c.iter().any(|k| self.filter.affects_context(&state, k)))
        {
            let ctx = NodeContext::compute(&state, &self.filter.node);
            recheck_authz = ctx != self.filter.node_ctx;
            self.filter.node_ctx = ctx;
        }
        let mut keys: Vec<String> = match changed {
            None => state
                .resources
                .keys()
                .chain(self.held.keys())
                .cloned()
                .collect(),
            Some(c) => c.into_iter().collect(),
        };
        if recheck_authz {
            keys.extend(
                state
                    .resources
                    .keys()
                    .chain(self.held.keys())
                    .filter(|k| k.starts_with("authz/"))
                    .cloned(),
            );
        }
        keys.sort();
        keys.dedup();

        let mut next = Vec::new();
        let mut upserts: Vec<Resource> = Vec::new();
        let mut removed = Vec::new();
        for key in keys {
            let desired = state
                .resources
                .get(&key)
                .and_then(|r| self.filter.desired(&key, r));
            match (desired, self.held.get(&key)) {
                (Some(d), Some(v)) if &d.version == v => {}
                (Some(d), _) => {
                    next.push((key, Some(d.version.clone())));
                    upserts.push((*d).clone());
                }
                (None, Some(_)) => {
                    next.push((key.clone(), None));
                    removed.push(key);
                }
                (None, None) => {}
            }
        }
        drop(state);
        self.seen_gen = generation;
        let initial = std::mem::take(&mut self.first);
        if upserts.is_empty() && removed.is_empty() && !initial {
            return None;
        }
        self.nonce += 1;
        let nonce = format!("{}-{}", self.id, self.nonce);
        self.in_flight = Some((nonce.clone(), generation, next));
        Some(ConfigUpdate {
            nonce,
            version: generation,
            initial,
            resources: upserts,
            removed,
        })
    }
}

fn root_namespace(state: &HubState) -> String {
    match state.resources.get("mesh").and_then(|r| r.kind.as_ref()) {
        Some(resource::Kind::Mesh(m)) if !m.root_namespace.is_empty() => m.root_namespace.clone(),
        _ => "istio-system".to_string(),
    }
}

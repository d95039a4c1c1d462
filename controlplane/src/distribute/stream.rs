//! One proxy's stream: what it holds, what to send it next, and ACK/NACK bookkeeping.
//!
//! The state per proxy is kept small, so that 1,000 ztunnels of a 100,000-pod model fit:
//! for the keys its filter takes or drops by kind alone (*unscoped*: workloads, services,
//! the mesh…), the proxy holds the hub's resource as of generation `synced`, except for
//! the few *deviant* keys whose update it rejected (NACK) and which are not re-sent until
//! they change again. Only *scoped* keys (a ztunnel's policies, a waypoint's namespaced
//! policies, routes and telemetry) have their held version tracked key by key. The hub's
//! change log says, for each key changed since `synced`, what its version was then (and,
//! for a workload, its compact view's: a ztunnel held that one unless the workload was on
//! its node).

use std::collections::{HashMap, HashSet};
use std::sync::Arc;
use std::time::Duration;

use meshwork_model::pb::config::{proxy_message, resource, ProxyMessage};
use tokio::sync::{mpsc, OwnedSemaphorePermit, Semaphore};
use tokio::time::Instant;
use tonic::{Status, Streaming};
use tracing::{debug, info, warn};

use super::filter::Filter;
use super::hub::{Before, HubState, ModelHub};
use super::registry::Registry;
use super::wire::{self, EncodedUpdate};

/// How long an unanswered full update may hold one of the full-sync permits.
const FULL_SYNC_PERMIT_TIMEOUT: Duration = Duration::from_secs(60);

/// A key sent in a delta, with the version the proxy held before and holds after it.
struct Sent {
    key: String,
    scoped: bool,
    before: Option<String>,
    after: Option<String>,
}

struct InFlight {
    nonce: String,
    generation: u64,
    initial: bool,
    /// Delta: the keys it sends.
    sent: Vec<Sent>,
    /// Initial update: the scoped versions and the resource count once applied.
    initial_scoped: HashMap<String, String>,
    count_after: usize,
}

pub(super) struct StreamTask {
    id: u64,
    hub: Arc<ModelHub>,
    registry: Arc<Registry>,
    filter: Filter,
    /// The proxy assembles updates sent in parts.
    accepts_parts: bool,
    /// What the proxy said it held when it subscribed: the basis of the first update, and
    /// still what it holds (outside `deviant`) while it has not ACKed a first update.
    known: Option<HashMap<String, String>>,
    /// The generation the proxy's unscoped keys are as of.
    synced: u64,
    /// Scoped keys: key -> version held.
    scoped: HashMap<String, String>,
    /// Unscoped keys the proxy holds in another version than `synced`'s (None: absent).
    deviant: HashMap<String, Option<String>>,
    /// Resources held (for the admin view).
    count: usize,
    in_flight: Option<InFlight>,
    first: bool,
    nonce: u64,
    permit: Option<(OwnedSemaphorePermit, Instant)>,
}

impl StreamTask {
    pub(super) fn new(
        id: u64,
        hub: Arc<ModelHub>,
        registry: Arc<Registry>,
        filter: Filter,
        known: HashMap<String, String>,
        accepts_parts: bool,
    ) -> Self {
        StreamTask {
            id,
            hub,
            registry,
            filter,
            accepts_parts,
            count: known.len(),
            known: Some(known),
            synced: 0,
            scoped: HashMap::new(),
            deviant: HashMap::new(),
            in_flight: None,
            first: true,
            nonce: 0,
            permit: None,
        }
    }

    pub(super) async fn run(
        mut self,
        mut inbound: Streaming<ProxyMessage>,
        tx: mpsc::Sender<Result<EncodedUpdate, Status>>,
        full_syncs: Arc<Semaphore>,
    ) {
        let mut gen_rx = self.hub.watch();
        'stream: loop {
            if self.in_flight.is_none() && (self.first || self.hub.generation() > self.synced) {
                if self.first && self.permit.is_none() {
                    tokio::select! {
                        p = full_syncs.clone().acquire_owned() => {
                            self.permit = p.ok().map(|p| (p, Instant::now() + FULL_SYNC_PERMIT_TIMEOUT));
                        }
                        _ = tx.closed() => break 'stream,
                    }
                }
                match self.next_update() {
                    Ok(Some(update)) => {
                        debug!(id = self.id, nonce = %update.nonce, upserts = update.resources.len(),
                            removed = update.removed.len(), "sending config update");
                        let limit = if self.accepts_parts {
                            wire::PART_BYTES
                        } else {
                            usize::MAX
                        };
                        for part in wire::split(update, limit) {
                            if tx.send(Ok(part)).await.is_err() {
                                break 'stream;
                            }
                        }
                    }
                    Ok(None) => {}
                    Err(status) => {
                        warn!(id = self.id, %status, "closing the proxy stream");
                        let _ = tx.send(Err(status)).await;
                        break;
                    }
                }
            }
            let permit_deadline = self.permit.as_ref().map(|(_, d)| *d);
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
                _ = async {
                    match permit_deadline {
                        Some(d) => tokio::time::sleep_until(d).await,
                        None => std::future::pending().await,
                    }
                } => {
                    warn!(id = self.id, "no answer to the full update in time; releasing its sync slot");
                    self.permit = None;
                }
            }
        }
        info!(id = self.id, "proxy disconnected");
        self.registry.remove(self.id);
    }

    fn on_message(&mut self, m: ProxyMessage) {
        let Some(proxy_message::Msg::Ack(ack)) = m.msg else {
            warn!(
                id = self.id,
                "ignoring a second Subscribe on the same stream"
            );
            return;
        };
        let Some(f) = self.in_flight.take() else {
            return;
        };
        if ack.nonce != f.nonce {
            warn!(id = self.id, got = %ack.nonce, expected = %f.nonce, "ACK for an unknown nonce");
            self.in_flight = Some(f);
            return;
        }
        if f.initial {
            self.permit = None;
        }
        self.synced = f.generation;
        if ack.error.is_empty() {
            self.acked(f);
            let (count, generation) = (self.count, self.synced);
            self.registry.update(self.id, |p| {
                p.acks += 1;
                p.acked_version = generation;
                p.resources = count;
            });
            self.registry.notify_acked();
        } else {
            warn!(id = self.id, nonce = %f.nonce, error = %ack.error, "proxy rejected config update");
            self.rejected(f);
            self.registry.update(self.id, |p| {
                p.nacks += 1;
                p.last_nack = Some(ack.error.clone());
            });
        }
    }

    /// The proxy applied `f`.
    fn acked(&mut self, f: InFlight) {
        if f.initial {
            self.scoped = f.initial_scoped;
            self.deviant.clear();
            self.known = None;
            self.count = f.count_after;
            return;
        }
        for s in f.sent {
            match (s.before.is_some(), s.after.is_some()) {
                (false, true) => self.count += 1,
                (true, false) => self.count = self.count.saturating_sub(1),
                _ => {}
            }
            if s.scoped {
                match s.after {
                    Some(v) => self.scoped.insert(s.key, v),
                    None => self.scoped.remove(&s.key),
                };
            } else if self.known.is_some() {
                self.deviant.insert(s.key, s.after);
            } else {
                self.deviant.remove(&s.key);
            }
        }
    }

    /// The proxy rejected `f` and keeps what it held; the rejected resources are not
    /// re-sent until they change again.
    fn rejected(&mut self, f: InFlight) {
        if f.initial {
            let known = self.known.get_or_insert_with(HashMap::new);
            self.scoped = known
                .iter()
                .filter(|(k, _)| self.filter.is_scoped(k))
                .map(|(k, v)| (k.clone(), v.clone()))
                .collect();
            self.count = known.len();
            return;
        }
        for s in f.sent.into_iter().filter(|s| !s.scoped) {
            self.deviant.insert(s.key, s.before);
        }
    }

    /// The version of unscoped `key` the proxy holds; `then` is what the hub had under it
    /// as of `synced` (the key changed since), `was_local` whether it was on this proxy's
    /// node then.
    fn held_unscoped(&self, key: &str, then: Option<&Before>, was_local: bool) -> Option<String> {
        if let Some(d) = self.deviant.get(key) {
            return d.clone();
        }
        if let Some(known) = &self.known {
            return known.get(key).cloned();
        }
        then.and_then(|b| self.filter.version_then(key, b, was_local))
    }

    /// Diffs the model (filtered for this proxy) against what the proxy holds.
    fn next_update(&mut self) -> Result<Option<EncodedUpdate>, Status> {
        let hub = self.hub.clone();
        let state = hub.read();
        let generation = state.generation;
        self.filter.root_namespace = root_namespace(&state);
        let initial = std::mem::take(&mut self.first);
        let mut f = InFlight {
            nonce: String::new(),
            generation,
            initial,
            sent: Vec::new(),
            initial_scoped: HashMap::new(),
            count_after: 0,
        };
        let (mut resources, mut removed) = (Vec::new(), Vec::new());
        if initial {
            self.filter.refresh_context(&state, None);
            let empty = HashMap::new();
            let known = self.known.as_ref().unwrap_or(&empty);
            for (key, res) in state.resources.iter() {
                let Some(d) = self.filter.desired(&state, key, res) else {
                    continue;
                };
                f.count_after += 1;
                if self.filter.is_scoped(key) {
                    f.initial_scoped
                        .insert(key.clone(), d.version().to_string());
                }
                if known.get(key).map(String::as_str) != Some(d.version()) {
                    resources.push(d.encode(&state, key));
                }
            }
            removed.extend(
                known
                    .keys()
                    .filter(|k| {
                        state
                            .resources
                            .get(*k)
                            .and_then(|r| self.filter.desired(&state, k, r))
                            .is_none()
                    })
                    .cloned(),
            );
        } else {
            let changed = state.changed_since(self.synced).ok_or_else(|| {
                Status::aborted("the proxy fell behind the change log; subscribe again to resync")
            })?;
            let changed_keys: HashSet<String> = changed.keys().cloned().collect();
            // Which form a ztunnel holds a workload in depends on where it was.
            let was_local: HashSet<&String> =
                changed.keys().filter(|k| self.filter.is_local(k)).collect();
            let recheck = self.filter.refresh_context(&state, Some(&changed_keys));
            let mut keys: Vec<&String> = changed.keys().collect();
            let scoped_keys: Vec<String> = if recheck {
                state
                    .resources
                    .keys()
                    .chain(self.scoped.keys())
                    .filter(|k| self.filter.is_scoped(k))
                    .cloned()
                    .collect()
            } else {
                Vec::new()
            };
            keys.extend(scoped_keys.iter());
            keys.sort();
            keys.dedup();
            for key in keys {
                let res = state.resources.get(key);
                let desired = res.and_then(|r| self.filter.desired(&state, key, r));
                let scoped = self.filter.is_scoped(key);
                let before = if scoped {
                    self.scoped.get(key).cloned()
                } else {
                    self.held_unscoped(key, changed.get(key), was_local.contains(key))
                };
                let after = desired.as_ref().map(|d| d.version().to_string());
                if before == after {
                    continue;
                }
                match &desired {
                    Some(d) => resources.push(d.encode(&state, key)),
                    None => removed.push(key.clone()),
                }
                f.sent.push(Sent {
                    key: key.clone(),
                    scoped,
                    before,
                    after,
                });
            }
        }
        drop(state);
        if !initial && f.sent.is_empty() {
            // Nothing this proxy holds changed: it is in sync with `generation` as it is.
            self.synced = generation;
            if self.known.is_none() {
                self.registry
                    .update(self.id, |p| p.acked_version = generation);
                self.registry.notify_acked();
            }
            return Ok(None);
        }
        self.nonce += 1;
        f.nonce = format!("{}-{}", self.id, self.nonce);
        let update = EncodedUpdate {
            nonce: f.nonce.clone(),
            version: generation,
            initial,
            resources,
            removed,
            more: false,
        };
        self.in_flight = Some(f);
        Ok(Some(update))
    }
}

fn root_namespace(state: &HubState) -> String {
    match state.resources.get("mesh").and_then(|r| r.kind.as_ref()) {
        Some(resource::Kind::Mesh(m)) if !m.root_namespace.is_empty() => m.root_namespace.clone(),
        _ => "istio-system".to_string(),
    }
}

#[cfg(test)]
mod tests;

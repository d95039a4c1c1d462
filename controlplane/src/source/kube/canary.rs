//! The canary controller's writes in Kubernetes mode ([`KubeRouter`], a
//! [`crate::canary::act::Router`]): the Services `<service>-primary`/`-canary` and the
//! VirtualService `<service>` with the weights are server-side applied as field manager
//! [`FIELD_MANAGER`] (forced: those fields are the controller's), the Canary's Flagger-shaped
//! `status` is applied to its `status` subresource, and each step that changed the status
//! is recorded as a core/v1 Event on the Canary (reason: the phase, message: the decision).
//!
//! The controller's calls only queue the latest desired state per object; one task writes
//! it while this replica holds the Lease (only the leader runs the Canaries, see
//! [`crate::canary::act::Router::active`]) and retries failed writes after
//! [`super::leader_writes::RETRY`]. The written objects come back through the watch like
//! any VirtualService, so the model follows the API server, not the controller's memory.

use std::collections::BTreeMap;
use std::sync::{Arc, Mutex};

use ::kube::api::{Api, Patch, PatchParams, PostParams};
use ::kube::core::{ApiResource, DynamicObject};
use ::kube::Client;
use k8s_openapi::api::core::v1::{Event, EventSource, ObjectReference};
use k8s_openapi::apimachinery::pkg::apis::meta::v1::{ObjectMeta, Time};
use k8s_openapi::jiff::Timestamp;
use meshwork_runtime::sync::RwLockExt;
use serde_json::{json, Value};
use thiserror::Error;
use tokio::sync::{watch, Notify};
use tracing::{debug, info, warn};

use super::leader_writes::RETRY;
use super::resources::watched;
use super::status::apply_body;
use super::watch::Served;
use crate::canary::act::{objects, Router};
use crate::canary::machine::Routing;
use crate::canary::spec::Plan;
use crate::canary::status::Status;

/// Field manager of everything the canary controller writes.
pub const FIELD_MANAGER: &str = "meshwork-canary";
/// Events kept queued at most (the oldest are dropped when the API server is unreachable).
const MAX_QUEUED_EVENTS: usize = 256;

#[derive(Debug, Error)]
pub enum CanaryWriteError {
    #[error("{kind} {namespace}/{name}: no API resource known for kind {kind}")]
    UnknownKind {
        kind: String,
        namespace: String,
        name: String,
    },
    #[error("applying {kind} {namespace}/{name} (canary routing): {source}")]
    Apply {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: Box<::kube::Error>,
    },
    #[error("writing status of Canary {namespace}/{name}: {source}")]
    Status {
        namespace: String,
        name: String,
        #[source]
        source: Box<::kube::Error>,
    },
    #[error("recording an event on Canary {namespace}/{name}: {source}")]
    Event {
        namespace: String,
        name: String,
        #[source]
        source: Box<::kube::Error>,
    },
}

/// `(kind, namespace, name)` of a written object.
type Key = (String, String, String);

/// What is still to be written.
#[derive(Debug, Default)]
struct Pending {
    objects: BTreeMap<Key, Value>,
    /// Canary `namespace/name` → its `status`.
    statuses: BTreeMap<(String, String), Value>,
    events: Vec<Event>,
}

impl Pending {
    fn is_empty(&self) -> bool {
        self.objects.is_empty() && self.statuses.is_empty() && self.events.is_empty()
    }
}

/// The Kubernetes [`Router`]: queues, and [`run_writes`] writes.
pub struct KubeRouter {
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    leader: watch::Receiver<bool>,
}

/// The writing side of a [`KubeRouter`]; pass it to [`run_writes`].
pub struct Writes {
    pending: Arc<Mutex<Pending>>,
    wake: Arc<Notify>,
    leader: watch::Receiver<bool>,
    client: Client,
    served: Served,
}

impl KubeRouter {
    /// A router and its writer. `served`: the versions the source watches (the
    /// VirtualService and Canary versions of this cluster).
    pub fn new(client: Client, served: Served, leader: watch::Receiver<bool>) -> (Self, Writes) {
        let pending = Arc::new(Mutex::new(Pending::default()));
        let wake = Arc::new(Notify::new());
        let writes = Writes {
            pending: pending.clone(),
            wake: wake.clone(),
            leader: leader.clone(),
            client,
            served,
        };
        (
            KubeRouter {
                pending,
                wake,
                leader,
            },
            writes,
        )
    }

    fn queue(&self, f: impl FnOnce(&mut Pending)) {
        f(&mut self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        self.wake.notify_one();
    }
}

/// The Canary's `status` as Flagger writes it.
pub fn status_body(status: &Status) -> Value {
    json!({
        "phase": status.phase.as_str(),
        "canaryWeight": status.canary_weight,
        "failedChecks": status.failed_checks,
        "iterations": status.iterations,
        "lastAppliedSpec": status.last_applied_spec,
        "lastPromotedSpec": status.last_promoted_spec,
        "lastTransitionTime": status.last_transition_time,
        "conditions": status.conditions,
    })
}

/// The Event recording one step of the Canary `namespace/name` at `now`.
pub fn step_event(
    namespace: &str,
    name: &str,
    status: &Status,
    decision: &str,
    now: Timestamp,
) -> Event {
    let warning = matches!(status.phase, crate::canary::status::Phase::Failed)
        || decision.starts_with("halt");
    let time = Time(now);
    Event {
        metadata: ObjectMeta {
            generate_name: Some(format!("{name}.")),
            namespace: Some(namespace.to_string()),
            ..ObjectMeta::default()
        },
        involved_object: ObjectReference {
            api_version: Some("flagger.app/v1beta1".into()),
            kind: Some("Canary".into()),
            name: Some(name.to_string()),
            namespace: Some(namespace.to_string()),
            ..ObjectReference::default()
        },
        reason: Some(status.phase.as_str().to_string()),
        message: Some(if decision.is_empty() {
            format!(
                "{} (canary weight {})",
                status.phase.as_str(),
                status.canary_weight
            )
        } else {
            format!("{decision} (canary weight {})", status.canary_weight)
        }),
        type_: Some(if warning { "Warning" } else { "Normal" }.into()),
        source: Some(EventSource {
            component: Some(FIELD_MANAGER.into()),
            ..EventSource::default()
        }),
        reporting_component: Some(FIELD_MANAGER.into()),
        count: Some(1),
        first_timestamp: Some(time.clone()),
        last_timestamp: Some(time),
        ..Event::default()
    }
}

impl Router for KubeRouter {
    fn apply(&self, plan: &Plan, routing: &Routing) -> Result<(), String> {
        let objs = objects(plan, routing);
        self.queue(|p| {
            for o in objs {
                let s = |f: &str| o["metadata"][f].as_str().unwrap_or_default().to_string();
                let kind = o["kind"].as_str().unwrap_or_default().to_string();
                p.objects.insert((kind, s("namespace"), s("name")), o);
            }
        });
        Ok(())
    }

    /// The routing stays as it was (Flagger without `revertOnDeletion` does the same, but
    /// also garbage-collects its objects through ownerReferences; these carry none yet);
    /// nothing more is written for the Canary.
    fn remove(&self, namespace: &str, name: &str) {
        self.queue(|p| {
            p.statuses
                .remove(&(namespace.to_string(), name.to_string()));
        });
    }

    fn status(&self, namespace: &str, name: &str, status: &Status, decision: &str) {
        let body = status_body(status);
        let event = step_event(namespace, name, status, decision, Timestamp::now());
        self.queue(|p| {
            p.statuses
                .insert((namespace.to_string(), name.to_string()), body);
            if p.events.len() >= MAX_QUEUED_EVENTS {
                p.events.remove(0);
            }
            p.events.push(event);
        });
    }

    fn active(&self) -> bool {
        *self.leader.borrow()
    }
}

impl Writes {
    /// The API resource `kind` is served at (the watched version), else its preferred one.
    fn resource(&self, kind: &str) -> Option<ApiResource> {
        if let Some(ar) = self.served.read_or_recover().get(kind) {
            return Some(ar.clone());
        }
        watched(kind).map(|w| w.preferred())
    }

    async fn apply_object(&self, key: &Key, obj: &Value) -> Result<(), CanaryWriteError> {
        let (kind, namespace, name) = key;
        let err = |source| CanaryWriteError::Apply {
            kind: kind.clone(),
            namespace: namespace.clone(),
            name: name.clone(),
            source: Box::new(source),
        };
        let ar = self
            .resource(kind)
            .ok_or_else(|| CanaryWriteError::UnknownKind {
                kind: kind.clone(),
                namespace: namespace.clone(),
                name: name.clone(),
            })?;
        let mut obj = obj.clone();
        // The cluster's served version of the kind (e.g. v1beta1 on an older Istio).
        obj["apiVersion"] = json!(ar.api_version);
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        // Not forced: a Service or VirtualService someone else manages (a hand-written
        // `<service>` VirtualService, say) is not taken over; the apply fails with a
        // conflict that is logged and retried, and that object's fields stay theirs.
        let params = PatchParams::apply(FIELD_MANAGER);
        api.patch(name, &params, &Patch::Apply(&obj))
            .await
            .map_err(err)?;
        debug!(%kind, %namespace, %name, "canary routing object applied");
        Ok(())
    }

    async fn write_status(
        &self,
        namespace: &str,
        name: &str,
        status: &Value,
    ) -> Result<(), CanaryWriteError> {
        let err = |source| CanaryWriteError::Status {
            namespace: namespace.to_string(),
            name: name.to_string(),
            source: Box::new(source),
        };
        let Some(ar) = self.resource("Canary") else {
            return Ok(());
        };
        let api: Api<DynamicObject> = Api::namespaced_with(self.client.clone(), namespace, &ar);
        let body = apply_body(
            &ar.api_version,
            "Canary",
            Some(namespace),
            name,
            status.clone(),
        );
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api.patch_status(name, &params, &Patch::Apply(&body)).await {
            Ok(_) => Ok(()),
            // Deleted meanwhile.
            Err(::kube::Error::Api(s)) if s.code == 404 => Ok(()),
            Err(e) => Err(err(e)),
        }
    }

    async fn record(&self, event: &Event) -> Result<(), CanaryWriteError> {
        let namespace = event.metadata.namespace.clone().unwrap_or_default();
        let api: Api<Event> = Api::namespaced(self.client.clone(), &namespace);
        api.create(&PostParams::default(), event)
            .await
            .map(|_| ())
            .map_err(|source| CanaryWriteError::Event {
                namespace,
                name: event.involved_object.name.clone().unwrap_or_default(),
                source: Box::new(source),
            })
    }

    /// Writes everything pending: routing first, then statuses, then events. What fails
    /// is queued again unless something newer replaced it; `false` when anything failed.
    async fn write_pending(&self) -> bool {
        let taken = std::mem::take(&mut *self.pending.lock().unwrap_or_else(|e| e.into_inner()));
        let mut failed = Pending::default();
        for (key, obj) in taken.objects {
            if let Err(e) = self.apply_object(&key, &obj).await {
                warn!(error = %e, "canary routing write failed; retrying");
                failed.objects.insert(key, obj);
            }
        }
        for ((ns, name), status) in taken.statuses {
            match self.write_status(&ns, &name, &status).await {
                Ok(()) => debug!(canary = %format!("{ns}/{name}"), "canary status written"),
                Err(e) => {
                    warn!(error = %e, "canary status write failed; retrying");
                    failed.statuses.insert((ns, name), status);
                }
            }
        }
        for event in taken.events {
            if let Err(e) = self.record(&event).await {
                // Events are best effort: logged, not retried forever.
                warn!(error = %e, "canary event not recorded");
            }
        }
        let ok = failed.is_empty();
        let mut p = self.pending.lock().unwrap_or_else(|e| e.into_inner());
        for (k, v) in failed.objects {
            p.objects.entry(k).or_insert(v);
        }
        for (k, v) in failed.statuses {
            p.statuses.entry(k).or_insert(v);
        }
        ok
    }
}

/// Writes what the router queues while this replica leads; retries failures after
/// [`RETRY`]. Ends when the leader channel's sender is dropped.
pub async fn run_writes(mut w: Writes) {
    info!(
        field_manager = FIELD_MANAGER,
        "canary controller writes to the Kubernetes API"
    );
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            _ = w.wake.notified() => {}
            changed = w.leader.changed() => {
                if changed.is_err() {
                    return;
                }
            }
            _ = retry => retry_at = None,
        }
        if !*w.leader.borrow() {
            // A follower writes nothing; the new leader's controller starts afresh.
            *w.pending.lock().unwrap_or_else(|e| e.into_inner()) = Pending::default();
            continue;
        }
        if !w.write_pending().await {
            retry_at = Some(tokio::time::Instant::now() + RETRY);
        }
    }
}

#[cfg(test)]
mod tests;

//! Status conditions written back on Istio resources: `Accepted=True` when Meshwork
//! accepts the object, `Accepted=False` with reason `Invalid` and the validation errors
//! otherwise. The verdict is the api crate's own parse + validation of the pseudo-file
//! (the same the store applies), so status and behavior cannot disagree.
//!
//! [`StatusTracker`] keeps the desired condition of every Istio object and what was
//! last written, so each change is written once; [`StatusWriter`] writes one with
//! server-side apply of `…/<plural>/<name>/status` as field manager [`FIELD_MANAGER`]
//! (forced: the `Accepted` condition is ours), sending only our condition: the
//! conditions other controllers own stay (`status.conditions` is a list map keyed by
//! `type` in Meshwork's CRDs). Only the Lease holder writes
//! (see [`super::lease`]): [`run_status`] waits for leadership and rewrites everything
//! when it is gained.

use meshwork_runtime::sync::RwLockExt;
use std::collections::BTreeMap;
use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::sync::{Arc, RwLock};

use ::kube::api::{Api, Patch, PatchParams};
use ::kube::core::{ApiResource, DynamicObject};
use ::kube::Client;
use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};
use thiserror::Error;
use tokio::sync::{mpsc, watch};
use tracing::{debug, warn};

use super::leader_writes::{self, PendingWrites};
use super::pseudo;
use super::resources::watched;
use super::watch::Served;
use crate::source::FileEvent;

/// Field manager of the status patches.
pub const FIELD_MANAGER: &str = "meshwork-controlplane";

/// The server-side apply body of `status` on the object `kind` `namespace/name`: the
/// apply configuration names the object and holds only the status fields we own.
pub fn apply_body(
    api_version: &str,
    kind: &str,
    namespace: Option<&str>,
    name: &str,
    status: Value,
) -> Value {
    let mut metadata = json!({"name": name});
    if let Some(ns) = namespace {
        metadata["namespace"] = json!(ns);
    }
    json!({"apiVersion": api_version, "kind": kind, "metadata": metadata, "status": status})
}

/// The object a condition is for.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct ObjectRef {
    pub kind: String,
    pub namespace: String,
    pub name: String,
}

/// The `Accepted` condition of one object.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Condition {
    pub accepted: bool,
    /// `Accepted` or `Invalid`.
    pub reason: String,
    pub message: String,
    pub observed_generation: Option<i64>,
}

impl Condition {
    /// The `status` of the apply body setting this condition at `now`.
    pub fn patch(&self, now: Timestamp) -> Value {
        let mut cond = json!({
            "type": "Accepted",
            "status": if self.accepted { "True" } else { "False" },
            "reason": self.reason,
            "message": self.message,
            "lastTransitionTime": now.to_string(),
        });
        if let Some(g) = self.observed_generation {
            cond["observedGeneration"] = json!(g);
        }
        json!({"status": {"conditions": [cond]}})
    }
}

/// The condition of an Istio object's pseudo-file; `None` for kinds without status.
pub fn condition_for(path: &Path, text: &str) -> Option<(ObjectRef, Condition)> {
    let (kind, namespace, name) = pseudo::parse_path(path)?;
    if !watched(kind)?.writes_status {
        return None;
    }
    let obj = ObjectRef {
        kind: kind.to_string(),
        namespace: namespace.unwrap_or_default().to_string(),
        name: name.to_string(),
    };
    let generation = serde_json::from_str::<Value>(text)
        .ok()
        .and_then(|v| v["metadata"]["generation"].as_i64());
    let parsed = meshwork_api::parse_file(path, text, &obj.namespace);
    let errors: Vec<String> = parsed
        .errors()
        .map(|e| {
            if e.field.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.field, e.message)
            }
        })
        .collect();
    let cond = if errors.is_empty() && parsed.objects().next().is_some() {
        Condition {
            accepted: true,
            reason: "Accepted".into(),
            message: "accepted by Meshwork".into(),
            observed_generation: generation,
        }
    } else {
        Condition {
            accepted: false,
            reason: "Invalid".into(),
            message: if errors.is_empty() {
                "no object could be read".into()
            } else {
                errors.join("; ")
            },
            observed_generation: generation,
        }
    };
    Some((obj, cond))
}

/// Desired vs written conditions.
#[derive(Debug, Default)]
pub struct StatusTracker {
    desired: BTreeMap<PathBuf, (ObjectRef, Condition)>,
    written: BTreeMap<PathBuf, Condition>,
}

impl Tracker for StatusTracker {
    type Status = Condition;

    fn observe(&mut self, events: &[FileEvent]) {
        for ev in events {
            match ev {
                FileEvent::Changed(path, text) => {
                    if let Some(c) = condition_for(path, text) {
                        self.desired.insert(path.clone(), c);
                    }
                }
                FileEvent::Removed(path) => {
                    self.desired.remove(path);
                    self.written.remove(path);
                }
            }
        }
    }

    fn pending(&self) -> Vec<(PathBuf, ObjectRef, Condition)> {
        self.desired
            .iter()
            .filter(|(p, (_, c))| self.written.get(*p) != Some(c))
            .map(|(p, (o, c))| (p.clone(), o.clone(), c.clone()))
            .collect()
    }

    fn mark_written(&mut self, path: PathBuf, cond: Condition) {
        self.written.insert(path, cond);
    }

    fn reset_written(&mut self) {
        self.written.clear();
    }
}

#[derive(Debug, Error)]
pub enum StatusError {
    #[error("no API resource known for kind {0}")]
    UnknownKind(String),
    #[error("writing status of {kind} {namespace}/{name}: {source}")]
    Patch {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: Box<::kube::Error>,
    },
}

/// The `status` subresources of the watched kinds: the API of an object, and patches
/// that tolerate the object being gone. Shared by the condition and route writers.
#[derive(Clone)]
pub struct StatusApis {
    client: Client,
    resources: Served,
}

impl StatusApis {
    /// `resources`: the API resource (version) each kind is watched at.
    pub fn new(client: Client, resources: impl IntoIterator<Item = ApiResource>) -> Self {
        let map = resources.into_iter().map(|r| (r.kind.clone(), r)).collect();
        Self::with_served(client, Arc::new(RwLock::new(map)))
    }

    /// The versions are those the source watches now (they change as CRDs do).
    pub fn with_served(client: Client, resources: Served) -> Self {
        StatusApis { client, resources }
    }

    /// The API resource of `obj`'s kind.
    pub fn resource(&self, obj: &ObjectRef) -> Result<ApiResource, StatusError> {
        let r = self.resources.read_or_recover();
        r.get(&obj.kind)
            .cloned()
            .ok_or_else(|| StatusError::UnknownKind(obj.kind.clone()))
    }

    /// The API `obj` lives at.
    pub fn api(&self, obj: &ObjectRef) -> Result<Api<DynamicObject>, StatusError> {
        let ar = self.resource(obj)?;
        Ok(Api::namespaced_with(
            self.client.clone(),
            &obj.namespace,
            &ar,
        ))
    }

    /// Server-side applies `status` (the fields we own) to `obj`, as [`FIELD_MANAGER`],
    /// forced. An object deleted meanwhile (404) is not an error.
    pub async fn apply_status(&self, obj: &ObjectRef, status: Value) -> Result<(), StatusError> {
        let ar = self.resource(obj)?;
        let api = self.api(obj)?;
        let body = apply_body(
            &ar.api_version,
            &ar.kind,
            Some(&obj.namespace),
            &obj.name,
            status,
        );
        let params = PatchParams::apply(FIELD_MANAGER).force();
        match api
            .patch_status(&obj.name, &params, &Patch::Apply(&body))
            .await
        {
            Ok(_) => Ok(()),
            Err(::kube::Error::Api(s)) if s.code == 404 => {
                debug!(kind = %obj.kind, namespace = %obj.namespace, name = %obj.name, "object gone before its status was written");
                Ok(())
            }
            Err(source) => Err(Self::failed(obj, source)),
        }
    }

    /// The error of a failed call about `obj`.
    pub fn failed(obj: &ObjectRef, source: ::kube::Error) -> StatusError {
        StatusError::Patch {
            kind: obj.kind.clone(),
            namespace: obj.namespace.clone(),
            name: obj.name.clone(),
            source: Box::new(source),
        }
    }
}

/// Writes conditions with server-side apply.
#[derive(Clone)]
pub struct StatusWriter {
    apis: StatusApis,
}

impl WriteStatus<Condition> for StatusWriter {
    fn write<'a>(
        &'a self,
        obj: &'a ObjectRef,
        status: &'a Condition,
        now: Timestamp,
    ) -> Pin<Box<dyn Future<Output = Result<(), StatusError>> + Send + 'a>> {
        Box::pin(StatusWriter::write(self, obj, status, now))
    }
}

impl StatusWriter {
    /// `resources`: the API resource (version) each kind is watched at.
    pub fn new(client: Client, resources: impl IntoIterator<Item = ApiResource>) -> Self {
        StatusWriter {
            apis: StatusApis::new(client, resources),
        }
    }

    /// The versions are those the source watches now.
    pub fn with_served(client: Client, served: Served) -> Self {
        StatusWriter {
            apis: StatusApis::with_served(client, served),
        }
    }

    /// Writes `cond` on `obj`. An object deleted meanwhile (404) is not an error.
    pub async fn write(
        &self,
        obj: &ObjectRef,
        cond: &Condition,
        now: Timestamp,
    ) -> Result<(), StatusError> {
        let mut body = cond.patch(now);
        let status = body["status"].take();
        self.apis.apply_status(obj, status).await
    }
}

pub use super::leader_writes::RETRY;

/// Writes the conditions of the batches received on `events` while `leader` is true.
/// Ends when `events` is closed.
pub async fn run_status(
    writer: StatusWriter,
    events: mpsc::Receiver<Vec<FileEvent>>,
    leader: watch::Receiver<bool>,
) {
    let writes = TrackedWrites {
        writer,
        tracker: StatusTracker::default(),
        what: "status",
    };
    leader_writes::run(writes, events, leader).await
}

/// The statuses the source's objects should have, and which of them were written: what a
/// leader-only status writer keeps ([`TrackedWrites`]).
pub trait Tracker: Send {
    type Status: Send + Sync + 'static;
    /// Takes a batch of source events into account.
    fn observe(&mut self, events: &[FileEvent]);
    /// Statuses not written yet (or changed since), in path order.
    fn pending(&self) -> Vec<(PathBuf, ObjectRef, Self::Status)>;
    fn mark_written(&mut self, path: PathBuf, status: Self::Status);
    /// Forget what was written (leadership regained: another replica may have written).
    fn reset_written(&mut self);
}

/// Writes one object's status.
pub trait WriteStatus<S>: Send + Sync {
    fn write<'a>(
        &'a self,
        obj: &'a ObjectRef,
        status: &'a S,
        now: Timestamp,
    ) -> Pin<Box<dyn Future<Output = Result<(), StatusError>> + Send + 'a>>;
}

/// A tracker and the writer of its statuses, as [`leader_writes::run`] drives them;
/// `what` names them in logs.
pub struct TrackedWrites<W, T> {
    pub writer: W,
    pub tracker: T,
    pub what: &'static str,
}

impl<W: WriteStatus<T::Status>, T: Tracker> PendingWrites for TrackedWrites<W, T> {
    fn observe(&mut self, batch: &[FileEvent]) {
        self.tracker.observe(batch);
    }

    fn reset_written(&mut self) {
        self.tracker.reset_written();
    }

    fn write_pending(&mut self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let mut ok = true;
            for (path, obj, status) in self.tracker.pending() {
                match self.writer.write(&obj, &status, Timestamp::now()).await {
                    Ok(()) => self.tracker.mark_written(path, status),
                    Err(e) => {
                        warn!(error = %e, what = self.what, "status write failed; retrying");
                        ok = false;
                    }
                }
            }
            ok
        })
    }
}

/// Splits the source's batches: all go to the engine, and the Istio resources' events to
/// the status task.
pub fn tee(
    source: mpsc::Receiver<Vec<FileEvent>>,
) -> (
    mpsc::Receiver<Vec<FileEvent>>,
    mpsc::Receiver<Vec<FileEvent>>,
) {
    leader_writes::tee(source, writes_status)
}

fn writes_status(e: &FileEvent) -> bool {
    pseudo::kind_of(e)
        .and_then(watched)
        .is_some_and(|w| w.writes_status)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn pa(mode: &str, generation: i64) -> (PathBuf, String) {
        (
            PathBuf::from("k8s://PeerAuthentication/production/strict"),
            json!({"apiVersion": "security.istio.io/v1", "kind": "PeerAuthentication",
                   "metadata": {"name": "strict", "namespace": "production", "generation": generation},
                   "spec": {"mtls": {"mode": mode}}})
            .to_string(),
        )
    }

    #[test]
    fn valid_object_is_accepted_invalid_one_names_the_field() {
        let (p, t) = pa("STRICT", 3);
        let (obj, c) = condition_for(&p, &t).unwrap();
        assert_eq!(obj.kind, "PeerAuthentication");
        assert_eq!(obj.namespace, "production");
        assert!(c.accepted);
        assert_eq!(c.observed_generation, Some(3));
        let (p, t) = pa("SOMETIMES", 4);
        let (_, c) = condition_for(&p, &t).unwrap();
        assert!(!c.accepted);
        assert_eq!(c.reason, "Invalid");
        assert!(c.message.contains("mtls"), "{}", c.message);
        assert_eq!(
            condition_for(Path::new("k8s://Pod/ns/p"), "{}"),
            None,
            "no status on pods"
        );
    }

    #[test]
    fn tracker_writes_each_change_once_and_forgets_deleted_objects() {
        let mut t = StatusTracker::default();
        let (p, text) = pa("STRICT", 1);
        t.observe(&[FileEvent::Changed(p.clone(), text)]);
        let pending = t.pending();
        assert_eq!(pending.len(), 1);
        t.mark_written(p.clone(), pending[0].2.clone());
        assert!(t.pending().is_empty());
        let (_, bad) = pa("SOMETIMES", 2);
        t.observe(&[FileEvent::Changed(p.clone(), bad)]);
        assert!(!t.pending()[0].2.accepted);
        t.observe(&[FileEvent::Removed(p)]);
        assert!(t.pending().is_empty());
    }

    #[test]
    fn patch_body_is_an_accepted_condition() {
        let c = Condition {
            accepted: false,
            reason: "Invalid".into(),
            message: "spec.mtls.mode: bad".into(),
            observed_generation: Some(2),
        };
        let now: Timestamp = "2026-01-02T03:04:05Z".parse().unwrap();
        assert_eq!(
            c.patch(now),
            json!({"status": {"conditions": [{
                "type": "Accepted", "status": "False", "reason": "Invalid",
                "message": "spec.mtls.mode: bad", "observedGeneration": 2,
                "lastTransitionTime": "2026-01-02T03:04:05Z"}]}})
        );
    }
}

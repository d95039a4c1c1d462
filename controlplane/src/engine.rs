//! The engine: source events → validated store → incremental translation → model hub.
//!
//! Single-threaded by design: one task owns the store and the translator and applies
//! batches in order; the hub fans the result out to every proxy stream.

use meshwork_runtime::sync::RwLockExt;
use std::collections::BTreeSet;
use std::path::{Path, PathBuf};
use std::sync::{Arc, RwLock};
use std::time::Instant;

use meshwork_api::{ApiError, Change, Kind, MeshConfig, Object, Store};
use tracing::{error, info, warn};

use crate::distribute::ModelHub;
use crate::fail_closed;
use crate::source::kube::SourceHealth;
use crate::source::FileEvent;
use crate::state::{FirstSeen, Saved, StateDir};
use crate::translate::Translator;

/// Errors and warnings of the sources, as last published by the engine.
#[derive(Debug, Default, Clone, serde::Serialize)]
pub struct Diagnostics {
    pub errors: Vec<String>,
    pub warnings: Vec<String>,
}

pub struct Engine {
    store: Store,
    translator: Translator,
    hub: Arc<ModelHub>,
    default_namespace: String,
    diagnostics: Arc<RwLock<Diagnostics>>,
    /// Directory source: objects are ordered by when they were first seen, not by a
    /// `creationTimestamp` written in the file (see [`crate::state`]).
    first_seen: Option<FirstSeen>,
    /// Where the last good config is persisted (directory source).
    state: Option<StateDir>,
    saved: Saved,
    /// Files restored from the state directory, not yet matched with the files on disk.
    seeded: Option<BTreeSet<PathBuf>>,
    /// Changes of the restore, published with the first batch.
    seed_changes: Vec<Change>,
    /// Namespaces currently denied because a policy failed to load (see [`fail_closed`]).
    denied: BTreeSet<String>,
    denied_reports: Vec<String>,
    /// Namespaces currently requiring mTLS because a PeerAuthentication failed to load.
    strict: BTreeSet<String>,
    /// Kubernetes source: the kinds it cannot read.
    source_health: Option<SourceHealth>,
    /// Where the Canaries (with their MetricTemplates and Deployments) are published for
    /// the canary controller after each batch.
    canary_inputs: Option<tokio::sync::watch::Sender<crate::canary::spec::Inputs>>,
}

impl Engine {
    pub fn new(hub: Arc<ModelHub>, default_namespace: impl Into<String>) -> Engine {
        Engine {
            store: Store::new(),
            translator: Translator::new(),
            hub,
            default_namespace: default_namespace.into(),
            diagnostics: Arc::default(),
            first_seen: None,
            state: None,
            saved: Saved::default(),
            seeded: None,
            seed_changes: Vec::new(),
            denied: BTreeSet::new(),
            denied_reports: Vec::new(),
            strict: BTreeSet::new(),
            source_health: None,
            canary_inputs: None,
        }
    }

    /// Publishes the canary controller's inputs after every batch (and now).
    pub fn with_canary_inputs(
        &mut self,
        tx: tokio::sync::watch::Sender<crate::canary::spec::Inputs>,
    ) {
        self.canary_inputs = Some(tx);
        self.publish_canary_inputs();
    }

    fn publish_canary_inputs(&self) {
        let Some(tx) = &self.canary_inputs else {
            return;
        };
        let objects: Vec<Arc<Object>> = self
            .store
            .objects()
            .filter(|(k, _)| {
                matches!(
                    k.kind,
                    Kind::Canary | Kind::MetricTemplate | Kind::Deployment
                )
            })
            .map(|(_, s)| s.object.clone())
            .collect();
        let inputs = crate::canary::spec::Inputs::collect(objects.iter());
        tx.send_replace(inputs);
    }

    /// Kubernetes source: a policy kind it could never list (RBAC) may hide policies, so
    /// the root namespace fails closed (mesh-wide) until it can (a kind listed before and
    /// unreadable now keeps its last listed policies instead): AuthorizationPolicy
    /// denies, PeerAuthentication requires mTLS. Re-evaluated with every batch (the source
    /// sends one when its reports change).
    pub fn with_source_health(&mut self, health: SourceHealth) {
        self.source_health = Some(health);
    }

    /// Unreadable policy kinds of the source, as `(root namespace, cause)`.
    fn unreadable(&self, kind: Kind) -> Option<(String, String)> {
        let cause = self.source_health.as_ref()?.unreadable(kind.as_str())?;
        Some((self.translator.mesh().root_namespace.clone(), cause))
    }

    /// Directory source: order objects by first sight and, with a state directory, keep
    /// the last good config across restarts. Call before the first batch: the saved files
    /// are restored and the first batch (the whole directory) is applied over them; saved
    /// files missing from it are removed.
    pub fn with_directory_state(&mut self, state: Option<StateDir>) {
        let saved = match state.as_ref().map(|s| (s, s.load())) {
            None => Saved::default(),
            Some((_, Ok(saved))) => saved,
            Some((s, Err(e))) => {
                error!(error = %e, dir = %s.path().display(), "cannot read the saved config; starting without last good versions");
                Saved::default()
            }
        };
        self.first_seen = Some(FirstSeen::from_saved(&saved.first_seen));
        let mut seeded = BTreeSet::new();
        for (path, text) in &saved.files {
            let changes = self.store.apply_file(path, text, &self.default_namespace);
            self.seed_changes.extend(changes);
            seeded.insert(path.clone());
        }
        if !seeded.is_empty() {
            info!(files = seeded.len(), "restored the last good config");
        }
        self.seeded = Some(seeded);
        self.saved = saved;
        self.state = state;
    }

    /// Shared view of the current diagnostics (for the admin endpoint).
    pub fn diagnostics(&self) -> Arc<RwLock<Diagnostics>> {
        self.diagnostics.clone()
    }

    pub fn translator(&self) -> &Translator {
        &self.translator
    }

    /// Sets the standalone mesh config (from `--mesh-config`), if any.
    pub fn set_mesh_config(&mut self, mesh: Option<MeshConfig>) -> u64 {
        let changes = self.translator.set_mesh_file(mesh);
        self.publish(changes)
    }

    /// Publishes the CA's trust bundle (PEM) in the mesh settings.
    pub fn set_ca_roots(&mut self, pem: String) -> u64 {
        let changes = self.translator.set_ca_roots(pem);
        self.publish(changes)
    }

    /// Applies a batch of file events; returns the hub generation afterwards.
    pub fn apply_events(&mut self, events: Vec<FileEvent>) -> u64 {
        let started = Instant::now();
        let mut changes: Vec<Change> = std::mem::take(&mut self.seed_changes);
        let mut seeded = self.seeded.take().unwrap_or_default();
        for ev in events {
            seeded.remove(ev.path());
            match ev {
                FileEvent::Changed(path, text) => {
                    changes.extend(self.store.apply_file(&path, &text, &self.default_namespace))
                }
                FileEvent::Removed(path) => changes.extend(self.store.remove_file(&path)),
            }
        }
        // Restored files that are no longer on disk.
        for path in seeded {
            changes.extend(self.store.remove_file(&path));
        }
        let object_changes = changes.len();
        let mut changes = self.stamp(changes);
        changes.extend(self.fail_closed());
        let model = self.translator.apply_batch(&changes);
        let generation = self.publish(model);
        self.refresh_diagnostics();
        self.persist();
        self.publish_canary_inputs();
        info!(
            object_changes,
            generation,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "config applied"
        );
        generation
    }

    /// Directory source: sets each object's creation time to its first-seen time.
    fn stamp(&mut self, changes: Vec<Change>) -> Vec<Change> {
        let Some(first_seen) = self.first_seen.as_mut() else {
            return changes;
        };
        changes
            .into_iter()
            .map(|c| match c {
                Change::Upsert(o) => {
                    let t = first_seen.stamp(&o.key());
                    Change::Upsert(Arc::new(Object {
                        creation_timestamp: Some(t),
                        ..(*o).clone()
                    }))
                }
                Change::Delete(k) => {
                    first_seen.forget(&k);
                    Change::Delete(k)
                }
            })
            .collect()
    }

    /// Adds or removes the synthetic DENY-all of namespaces whose policy failed to load, and
    /// the synthetic STRICT PeerAuthentication of those whose PeerAuthentication did.
    fn fail_closed(&mut self) -> Vec<Change> {
        let failed = self.store.failed_without_last_good();
        let mut deny = fail_closed::namespaces_to_deny(&failed, &self.default_namespace);
        if let Some((root, cause)) = self.unreadable(Kind::AuthorizationPolicy) {
            deny.entry(root).or_default().push(cause);
        }
        let namespaces: BTreeSet<String> = deny.keys().cloned().collect();
        let mut changes = fail_closed::diff(&self.denied, &namespaces);
        self.denied_reports = deny
            .iter()
            .map(|(ns, causes)| fail_closed::report(ns, causes))
            .collect();
        self.denied = namespaces;
        let mut strict = fail_closed::namespaces_to_require_mtls(&failed, &self.default_namespace);
        if let Some((root, cause)) = self.unreadable(Kind::PeerAuthentication) {
            strict.entry(root).or_default().push(cause);
        }
        let namespaces: BTreeSet<String> = strict.keys().cloned().collect();
        changes.extend(fail_closed::diff_mtls(&self.strict, &namespaces));
        self.denied_reports.extend(
            strict
                .iter()
                .map(|(ns, causes)| fail_closed::mtls_report(ns, causes)),
        );
        self.strict = namespaces;
        changes
    }

    /// Writes the last good config to the state directory when it changed.
    fn persist(&mut self) {
        let Some(state) = &self.state else {
            return;
        };
        let mut files = self.store.last_good_files();
        // The canary controller's generated routing is rebuilt at start, never saved.
        files.retain(|p, _| {
            !p.to_string_lossy()
                .starts_with(crate::canary::act::PSEUDO_FILE_PREFIX)
        });
        let now = Saved {
            files,
            first_seen: self
                .first_seen
                .as_ref()
                .map(FirstSeen::saved)
                .unwrap_or_default(),
        };
        if now == self.saved {
            return;
        }
        match state.save(&now) {
            Ok(()) => self.saved = now,
            Err(e) => error!(error = %e, "cannot save the last good config"),
        }
    }

    fn publish(&mut self, changes: Vec<crate::translate::ModelChange>) -> u64 {
        self.hub
            .apply(changes.into_iter().map(|c| (c.key, c.resource)))
    }

    fn refresh_diagnostics(&mut self) {
        let mut errors: Vec<String> = self.store.errors().iter().map(|e| e.to_string()).collect();
        errors.extend(self.denied_reports.iter().cloned());
        let mut warnings: Vec<String> = self
            .store
            .warnings()
            .iter()
            .map(|e| e.to_string())
            .collect();
        warnings.extend(self.undefined_subsets());
        let d = Diagnostics { errors, warnings };
        for e in &d.errors {
            error!(error = %e, "invalid config");
        }
        for w in &d.warnings {
            warn!(warning = %w, "config warning");
        }
        *self.diagnostics.write_or_recover() = d;
    }
}

impl Engine {
    /// Routes to undefined subsets, as warnings naming the file, resource and field.
    fn undefined_subsets(&self) -> Vec<String> {
        self.translator
            .undefined_subsets()
            .into_iter()
            .map(|(key, u)| {
                let file = self.store.get(&key).map(|s| s.file.clone());
                ApiError {
                    file: file.unwrap_or_default(),
                    document: 0,
                    line: 0,
                    kind: key.kind.to_string(),
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    field: u.field.clone(),
                    message: format!("{}; fix: {}", u.message(), u.fix()),
                }
                .to_string()
            })
            .collect()
    }
}

/// Reads a standalone mesh config file (`--mesh-config`).
pub fn load_mesh_file(path: &Path) -> Result<MeshConfig, String> {
    let text = std::fs::read_to_string(path)
        .map_err(|e| format!("mesh config {}: {e}", path.display()))?;
    let (overlay, unknown) = meshwork_api::MeshConfigOverlay::from_yaml(&text)
        .map_err(|e| format!("mesh config {}: {e}", path.display()))?;
    for u in unknown {
        warn!(file = %path.display(), field = %u, "unknown mesh config field");
    }
    Ok(MeshConfig::from_overlays([&overlay]))
}

//! The engine: source events → validated store → incremental translation → model hub.
//!
//! Single-threaded by design: one task owns the store and the translator and applies
//! batches in order; the hub fans the result out to every proxy stream.

use std::path::Path;
use std::sync::{Arc, RwLock};
use std::time::Instant;

use meshwork_api::{Change, MeshConfig, Store};
use tracing::{error, info, warn};

use crate::distribute::ModelHub;
use crate::source::dir::FileEvent;
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
}

impl Engine {
    pub fn new(hub: Arc<ModelHub>, default_namespace: impl Into<String>) -> Engine {
        Engine {
            store: Store::new(),
            translator: Translator::new(),
            hub,
            default_namespace: default_namespace.into(),
            diagnostics: Arc::default(),
        }
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

    /// Applies a batch of file events; returns the hub generation afterwards.
    pub fn apply_events(&mut self, events: Vec<FileEvent>) -> u64 {
        let started = Instant::now();
        let mut changes: Vec<Change> = Vec::new();
        for ev in events {
            match ev {
                FileEvent::Changed(path, text) => {
                    changes.extend(self.store.apply_file(&path, &text, &self.default_namespace))
                }
                FileEvent::Removed(path) => changes.extend(self.store.remove_file(&path)),
            }
        }
        let object_changes = changes.len();
        let model = self.translator.apply_batch(&changes);
        let generation = self.publish(model);
        self.refresh_diagnostics();
        info!(
            object_changes,
            generation,
            elapsed_ms = started.elapsed().as_secs_f64() * 1e3,
            "config applied"
        );
        generation
    }

    fn publish(&mut self, changes: Vec<crate::translate::ModelChange>) -> u64 {
        self.hub
            .apply(changes.into_iter().map(|c| (c.key, c.resource)))
    }

    fn refresh_diagnostics(&mut self) {
        let d = Diagnostics {
            errors: self.store.errors().iter().map(|e| e.to_string()).collect(),
            warnings: self
                .store
                .warnings()
                .iter()
                .map(|e| e.to_string())
                .collect(),
        };
        for e in &d.errors {
            error!(error = %e, "invalid config");
        }
        for w in &d.warnings {
            warn!(warning = %w, "config warning");
        }
        *self.diagnostics.write().unwrap_or_else(|e| e.into_inner()) = d;
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

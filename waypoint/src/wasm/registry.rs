//! The plugins of the current config, loaded.
//!
//! [`Plugins::current`] is asked once per request with the request's snapshot. When the
//! snapshot's WasmPlugins differ from those last loaded, a load starts (in its own task, so a
//! request that gives up does not cancel it): plugins whose spec is unchanged keep their
//! loaded instance, the others are fetched and compiled. Requests wait for the set of their
//! config; a set is an `Arc`, so requests in flight keep the plugins they started with.

use std::collections::HashMap;
use std::path::PathBuf;
use std::sync::{Arc, Mutex};

use futures::future::{BoxFuture, FutureExt, Shared};
use meshwork_model::pb::config as pb;
use meshwork_model::snapshot::Snapshot;
use meshwork_runtime::sync::LockExt;
use meshwork_wasm::fetch::Fetcher;
use meshwork_wasm::host::{Host, HostContext, Limits, Plugin, PluginMetrics, PluginSpec};
use tokio::sync::watch;
use tracing::{info, warn};

use crate::config::WaypointId;

/// How the waypoint runs plugins.
#[derive(Debug, Clone)]
pub struct WasmOptions {
    /// Where fetched modules are kept (by digest); `None`: no cache.
    pub cache_dir: Option<PathBuf>,
    /// Instances per plugin (Envoy has one per worker thread).
    pub workers: usize,
    pub limits: Limits,
}

impl Default for WasmOptions {
    fn default() -> Self {
        WasmOptions {
            cache_dir: None,
            workers: std::thread::available_parallelism().map_or(2, |n| n.get()),
            limits: Limits::default(),
        }
    }
}

/// One WasmPlugin as loaded: its spec, and the plugin or why it could not be loaded.
#[derive(Debug)]
pub struct Loaded {
    pub spec: pb::WasmPlugin,
    pub plugin: Result<Plugin, String>,
}

impl Loaded {
    /// `<namespace>/<name>`.
    pub fn name(&self) -> String {
        format!("{}/{}", self.spec.namespace, self.spec.name)
    }

    /// `failStrategy: FAIL_OPEN`.
    pub fn fail_open(&self) -> bool {
        self.spec.fail_strategy == pb::WasmFailStrategy::FailOpen as i32
    }
}

/// The plugins loaded for one config, in key order.
#[derive(Debug, Default)]
pub struct PluginSet {
    pub plugins: Vec<Arc<Loaded>>,
}

/// The set of a config, once loaded.
pub type Pending = Shared<BoxFuture<'static, Arc<PluginSet>>>;

struct State {
    /// The snapshot last asked about, and whether it had any plugin for this waypoint.
    snapshot: Option<Arc<Snapshot>>,
    /// The specs of the set being loaded or loaded.
    specs: Vec<pb::WasmPlugin>,
    set: Pending,
}

/// The waypoint's loaded plugins. Cheap to share (`Arc`).
pub struct Plugins {
    waypoint: WaypointId,
    fetcher: Fetcher,
    cx: HostContext,
    opts: WasmOptions,
    state: Mutex<State>,
}

impl std::fmt::Debug for Plugins {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugins")
            .field("waypoint", &self.waypoint)
            .finish()
    }
}

fn ready(set: PluginSet) -> Pending {
    let set = Arc::new(set);
    async move { set }.boxed().shared()
}

impl Plugins {
    pub fn new(waypoint: WaypointId, cx: HostContext, opts: WasmOptions) -> Plugins {
        let mut fetcher = Fetcher::new();
        if let Some(dir) = &opts.cache_dir {
            fetcher = fetcher.with_cache(dir.clone());
        }
        Plugins {
            waypoint,
            fetcher,
            cx,
            opts,
            state: Mutex::new(State {
                snapshot: None,
                specs: Vec::new(),
                set: ready(PluginSet::default()),
            }),
        }
    }

    /// The metrics every plugin defines (exported on `/metrics`).
    pub fn metrics(&self) -> &Arc<PluginMetrics> {
        &self.cx.metrics
    }

    /// The plugins of `snap`, loading what changed: a future of the set, owned (it borrows
    /// nothing, so the request path can hold it across its awaits). `None` (at once): `snap`
    /// has no plugin this waypoint could run.
    pub fn current(self: &Arc<Self>, snap: &Arc<Snapshot>) -> Option<Pending> {
        let mut st = self.state.lock_or_recover();
        if !st.snapshot.as_ref().is_some_and(|s| Arc::ptr_eq(s, snap)) {
            let specs = self.specs(snap);
            if specs != st.specs {
                st.set = self.reload(st.set.clone(), specs.clone());
                st.specs = specs;
            }
            st.snapshot = Some(snap.clone());
        }
        (!st.specs.is_empty()).then(|| st.set.clone())
    }

    /// Loads the plugins of every snapshot `config` publishes as it arrives, so requests
    /// seldom wait for a load (they still wait when they are first). Needs a runtime; ends
    /// with the config's publisher or when the plugins are dropped.
    pub fn follow(self: &Arc<Self>, mut config: watch::Receiver<Arc<Snapshot>>) {
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        let weak = Arc::downgrade(self);
        rt.spawn(async move {
            loop {
                let snap = config.borrow_and_update().clone();
                match weak.upgrade() {
                    Some(p) => drop(p.current(&snap)),
                    None => return,
                }
                if config.changed().await.is_err() {
                    return;
                }
            }
        });
    }

    /// The snapshot's WasmPlugins this waypoint may run: HTTP plugins attached by
    /// `targetRefs` to this waypoint's Gateway or to a Service. (Istio ambient attaches
    /// plugins to waypoints by `targetRefs` only.)
    fn specs(&self, snap: &Snapshot) -> Vec<pb::WasmPlugin> {
        snap.wasm_plugins()
            .filter(|p| p.r#type != pb::WasmPluginType::WasmNetwork as i32)
            .filter(|p| {
                p.target_refs
                    .iter()
                    .any(|r| is_this_gateway(r, &self.waypoint) || r.kind == "Service")
            })
            .cloned()
            .collect()
    }

    /// Loads `specs` in a task of its own, reusing what `previous` loaded for the same spec.
    fn reload(self: &Arc<Self>, previous: Pending, specs: Vec<pb::WasmPlugin>) -> Pending {
        let this = self.clone();
        let task = tokio::spawn(async move {
            let old = previous.await;
            let mut reuse: HashMap<(String, String), Arc<Loaded>> = old
                .plugins
                .iter()
                .map(|l| ((l.spec.namespace.clone(), l.spec.name.clone()), l.clone()))
                .collect();
            let mut plugins = Vec::with_capacity(specs.len());
            for spec in specs {
                let key = (spec.namespace.clone(), spec.name.clone());
                match reuse.remove(&key) {
                    Some(l) if l.spec == spec => plugins.push(l),
                    _ => plugins.push(Arc::new(this.load(spec).await)),
                }
            }
            Arc::new(PluginSet { plugins })
        });
        async move {
            task.await.unwrap_or_else(|e| {
                warn!("loading WasmPlugins failed: {e}");
                Arc::new(PluginSet::default())
            })
        }
        .boxed()
        .shared()
    }

    /// Fetches and compiles one plugin; a failure is kept (the plugin's `failStrategy`
    /// decides what its requests get).
    async fn load(&self, spec: pb::WasmPlugin) -> Loaded {
        let name = format!("{}/{}", spec.namespace, spec.name);
        let plugin = match self.fetcher.fetch(&spec).await {
            Err(e) => Err(e.to_string()),
            Ok(module) => {
                let pspec = PluginSpec {
                    name: name.clone(),
                    root_id: spec.plugin_name.clone(),
                    vm_id: String::new(),
                    plugin_config: spec.plugin_config_json.clone().into_bytes(),
                    vm_config: Vec::new(),
                    env: env_of(&spec),
                    workers: self.opts.workers,
                    limits: self.opts.limits,
                    pause_limit: None,
                };
                let cx = self.cx.clone();
                tokio::task::spawn_blocking(move || {
                    let host = Host::shared().map_err(|e| e.to_string())?;
                    Plugin::load(&host, pspec, &module.bytes, cx).map_err(|e| e.to_string())
                })
                .await
                .unwrap_or_else(|e| Err(format!("WasmPlugin {name}: loading: {e}")))
            }
        };
        match &plugin {
            Ok(_) => info!(plugin = %name, url = %spec.url, "WasmPlugin loaded"),
            Err(e) => warn!(plugin = %name, "WasmPlugin not loaded: {e}"),
        }
        Loaded { spec, plugin }
    }
}

/// `r` names waypoint Gateway `w`.
pub fn is_this_gateway(r: &pb::TargetRef, w: &WaypointId) -> bool {
    r.kind == "Gateway"
        && matches!(r.group.as_str(), "" | "gateway.networking.k8s.io")
        && r.name == w.name
        && (r.namespace.is_empty() || r.namespace == w.namespace)
}

/// `vmConfig.env`: INLINE values as given, HOST ones from the waypoint's environment
/// (absent variables are left out, as Envoy does).
fn env_of(spec: &pb::WasmPlugin) -> Vec<(String, String)> {
    spec.env
        .iter()
        .filter_map(|e| match e.value_from.as_str() {
            "HOST" => std::env::var(&e.name).ok().map(|v| (e.name.clone(), v)),
            _ => Some((e.name.clone(), e.value.clone())),
        })
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn env_inline_and_host() {
        let spec = pb::WasmPlugin {
            env: vec![
                pb::WasmEnvVar {
                    name: "A".into(),
                    value_from: "INLINE".into(),
                    value: "1".into(),
                },
                pb::WasmEnvVar {
                    name: "PATH".into(),
                    value_from: "HOST".into(),
                    value: String::new(),
                },
                pb::WasmEnvVar {
                    name: "MESHWORK_SURELY_UNSET_VARIABLE".into(),
                    value_from: "HOST".into(),
                    value: String::new(),
                },
            ],
            ..Default::default()
        };
        let env = env_of(&spec);
        assert_eq!(env[0], ("A".to_string(), "1".to_string()));
        assert_eq!(env[1].0, "PATH");
        assert_eq!(env.len(), 2);
    }
}

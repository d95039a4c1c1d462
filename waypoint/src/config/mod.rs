//! The config snapshot compiled for request handling: route configs (regexes) and
//! authorization policies, rebuilt when the control plane publishes a new snapshot.

use meshwork_runtime::sync::LockExt;
use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use meshwork_authz::{applicable, Policy, PolicyTarget};
use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config as pb;
use meshwork_model::snapshot::Snapshot;
use tracing::warn;

pub mod service_cache;

use service_cache::Nested;
pub use service_cache::{ServiceCache, WaypointId};

use crate::request::routing::CompiledRouteConfig;
use crate::telemetry::label_cache::LabelCache;
use crate::telemetry::policy::{TelemetryCache, TelemetryPolicy};
use crate::telemetry::tracing::sampler::{self, Effective};

/// Cached tracing settings of one service (`None`: not traced).
type TracingEntry = Option<Arc<Effective>>;

/// The host under which the control plane publishes the routes bound to waypoint Gateway
/// `name` (the mesh's one rule, [`meshwork_model::rules::gateway_host`]).
pub use meshwork_model::rules::gateway_host as gateway_route_host;

/// A snapshot with compiled routes and policies.
#[derive(Debug)]
pub struct Compiled {
    pub snapshot: Arc<Snapshot>,
    /// namespace → hostname → routes.
    routes: Nested<Arc<CompiledRouteConfig>>,
    /// namespace → Gateway name → the routes bound to it (also in `routes`).
    gateway_routes: Nested<Arc<CompiledRouteConfig>>,
    policies: HashMap<String, Arc<Policy>>,
    root_namespace: String,
    /// Applicable policies per (waypoint, service namespace, service name), filled lazily.
    by_service: ServiceCache<Arc<[Arc<Policy>]>>,
    /// Effective tracing settings per (waypoint, service namespace, hostname), filled lazily.
    tracing: ServiceCache<TracingEntry>,
    /// Metrics and access log settings per service, filled lazily.
    telemetry: TelemetryCache,
    /// Request metric label sets seen with this config.
    pub labels: LabelCache,
}

impl Compiled {
    pub fn build(snapshot: Arc<Snapshot>) -> Compiled {
        let mut routes: Nested<Arc<CompiledRouteConfig>> = HashMap::new();
        for r in snapshot.routes() {
            match CompiledRouteConfig::compile(r) {
                Ok(c) => {
                    routes
                        .entry(r.namespace.clone())
                        .or_default()
                        .insert(r.hostname.clone(), Arc::new(c));
                }
                Err(e) => warn!("skipping route config: {e}"),
            }
        }
        let mut gateway_routes: Nested<Arc<CompiledRouteConfig>> = HashMap::new();
        for (ns, hosts) in &routes {
            for (host, c) in hosts {
                if let Some(name) = meshwork_model::rules::gateway_of_host(host) {
                    gateway_routes
                        .entry(ns.clone())
                        .or_default()
                        .insert(name.to_string(), c.clone());
                }
            }
        }
        let policies = snapshot
            .authorizations()
            .map(|a| {
                let p = Policy::compile(a);
                for e in p.errors() {
                    warn!("{e}");
                }
                (p.key.clone(), Arc::new(p))
            })
            .collect();
        let root_namespace = snapshot
            .mesh()
            .map(|m| m.root_namespace.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| "istio-system".to_string());
        Compiled {
            snapshot,
            routes,
            gateway_routes,
            policies,
            root_namespace,
            by_service: ServiceCache::default(),
            tracing: ServiceCache::default(),
            telemetry: TelemetryCache::default(),
            labels: LabelCache::default(),
        }
    }

    /// Routes for a service's hostname.
    pub fn route(&self, service: &pb::Service) -> Option<&Arc<CompiledRouteConfig>> {
        self.routes_of(&service.namespace, &service.hostname)
    }

    fn routes_of(&self, namespace: &str, hostname: &str) -> Option<&Arc<CompiledRouteConfig>> {
        self.routes.get(namespace)?.get(hostname)
    }

    /// The snapshot's route config for (namespace, hostname), as [`Snapshot::route`].
    pub fn route_config(&self, namespace: &str, hostname: &str) -> Option<&pb::RouteConfig> {
        match self.routes_of(namespace, hostname) {
            Some(c) => Some(&c.config),
            // Not compiled (invalid): the snapshot still has it.
            None => self.snapshot.route(namespace, hostname),
        }
    }

    /// Routes bound to the waypoint's own Gateway (HTTPRoute/GRPCRoute `parentRefs` naming
    /// it), which the control plane publishes under the reserved host
    /// [`gateway_route_host`]`(name)` in the Gateway's namespace.
    pub fn gateway_routes(&self, waypoint: &WaypointId) -> Option<&Arc<CompiledRouteConfig>> {
        self.gateway_routes
            .get(&waypoint.namespace)?
            .get(&waypoint.name)
    }

    /// Compiled policies that apply to traffic for `service` through this waypoint: its
    /// TARGET_REF policies, and the policies selecting the service's pods (so selector-bound
    /// L7 policies are enforced here as sidecars would).
    pub fn policies(&self, waypoint: &WaypointId, service: &pb::Service) -> Arc<[Arc<Policy>]> {
        self.by_service
            .get_or_insert_with(waypoint, &service.namespace, &service.name, || {
                self.select(waypoint, service).into()
            })
    }

    /// The tracing settings for traffic to `service` through `waypoint`; `None` when no
    /// Telemetry enables tracing for it.
    pub fn tracing(&self, waypoint: &WaypointId, service: &pb::Service) -> Option<Arc<Effective>> {
        self.tracing
            .get_or_insert_with(waypoint, &service.namespace, &service.hostname, || {
                let gw = (waypoint.namespace.as_str(), waypoint.name.as_str());
                let tels = sampler::applicable(&self.snapshot, gw, service);
                sampler::effective(&self.snapshot, &tels).map(Arc::new)
            })
    }

    /// The Telemetry metrics and access log settings for traffic to `service` through
    /// `waypoint` (configuration errors are logged once per config version).
    pub fn telemetry(&self, waypoint: &WaypointId, service: &pb::Service) -> Arc<TelemetryPolicy> {
        self.telemetry.get(&self.snapshot, waypoint, service)
    }

    fn select(&self, waypoint: &WaypointId, service: &pb::Service) -> Vec<Arc<Policy>> {
        let target = PolicyTarget::Waypoint {
            namespace: &waypoint.namespace,
            name: &waypoint.name,
            service: Some((&service.namespace, &service.name)),
            pods: (!service.selector.is_empty()).then_some((&service.namespace, &service.selector)),
        };
        applicable(
            self.snapshot.authorizations(),
            &target,
            &self.root_namespace,
        )
        .into_iter()
        .filter_map(|a| {
            self.policies
                .get(&format!("{}/{}", a.namespace, a.name))
                .cloned()
        })
        .collect()
    }
}

/// Checks a candidate snapshot (the subscription validator): routes must compile.
pub fn validate(snapshot: &Snapshot) -> Result<(), String> {
    for r in snapshot.routes() {
        CompiledRouteConfig::compile(r).map_err(|e| e.to_string())?;
    }
    Ok(())
}

/// Follows a [`ConfigHandle`] and recompiles on change.
pub struct ConfigCache {
    handle: ConfigHandle,
    current: Mutex<Arc<Compiled>>,
}

impl ConfigCache {
    pub fn new(handle: ConfigHandle) -> Self {
        let current = Mutex::new(Arc::new(Compiled::build(handle.snapshot())));
        ConfigCache { handle, current }
    }

    pub fn get(&self) -> Arc<Compiled> {
        let snap = self.handle.snapshot();
        let mut cur = self.current.lock_or_recover();
        if !Arc::ptr_eq(&cur.snapshot, &snap) {
            *cur = Arc::new(Compiled::build(snap));
        }
        cur.clone()
    }
}

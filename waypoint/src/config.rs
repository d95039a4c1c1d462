//! The config snapshot compiled for request handling: route configs (regexes) and
//! authorization policies, rebuilt when the control plane publishes a new snapshot.

use std::collections::HashMap;
use std::sync::{Arc, Mutex};

use meshwork_authz::{applicable, Policy, PolicyTarget};
use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config as pb;
use meshwork_model::snapshot::Snapshot;
use tracing::warn;

use crate::routing::CompiledRouteConfig;
use crate::telemetry_policy::{TelemetryCache, TelemetryPolicy};
use crate::tracing::sampler::{self, Effective};

/// Which waypoint this is (its Gateway).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct WaypointId {
    pub namespace: String,
    pub name: String,
}

/// (waypoint, service namespace, service name).
type PolicyKey = (WaypointId, String, String);

/// Cached tracing settings of one service (`None`: not traced).
type TracingEntry = Option<Arc<Effective>>;

/// The host under which the control plane publishes the routes bound to waypoint Gateway
/// `name`: `gateway~<name>` (`~` cannot occur in a DNS name; the control plane's
/// `translate::route::gateway_host` produces the same).
pub fn gateway_route_host(name: &str) -> String {
    format!("gateway~{name}")
}

/// A snapshot with compiled routes and policies.
#[derive(Debug)]
pub struct Compiled {
    pub snapshot: Arc<Snapshot>,
    routes: HashMap<(String, String), Arc<CompiledRouteConfig>>,
    policies: HashMap<String, Arc<Policy>>,
    root_namespace: String,
    /// Applicable policies per (waypoint, service namespace, service name), filled lazily.
    by_service: Mutex<HashMap<PolicyKey, Arc<[Arc<Policy>]>>>,
    /// Effective tracing settings per (service namespace, hostname), filled lazily.
    tracing: Mutex<HashMap<(WaypointId, String, String), TracingEntry>>,
    /// Metrics and access log settings per service, filled lazily.
    telemetry: TelemetryCache,
}

impl Compiled {
    pub fn build(snapshot: Arc<Snapshot>) -> Compiled {
        let mut routes = HashMap::new();
        for r in snapshot.routes() {
            match CompiledRouteConfig::compile(r) {
                Ok(c) => {
                    routes.insert((r.namespace.clone(), r.hostname.clone()), Arc::new(c));
                }
                Err(e) => warn!("skipping route config: {e}"),
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
            policies,
            root_namespace,
            by_service: Mutex::new(HashMap::new()),
            tracing: Mutex::new(HashMap::new()),
            telemetry: TelemetryCache::default(),
        }
    }

    /// Routes for a service's hostname.
    pub fn route(&self, service: &pb::Service) -> Option<&Arc<CompiledRouteConfig>> {
        self.routes
            .get(&(service.namespace.clone(), service.hostname.clone()))
    }

    /// Routes bound to the waypoint's own Gateway (HTTPRoute/GRPCRoute `parentRefs` naming
    /// it), which the control plane publishes under the reserved host
    /// [`gateway_route_host`]`(name)` in the Gateway's namespace.
    pub fn gateway_routes(&self, waypoint: &WaypointId) -> Option<&Arc<CompiledRouteConfig>> {
        self.routes.get(&(
            waypoint.namespace.clone(),
            gateway_route_host(&waypoint.name),
        ))
    }

    /// Compiled policies that apply to traffic for `service` through this waypoint: its
    /// TARGET_REF policies, and the policies selecting the service's pods (so selector-bound
    /// L7 policies are enforced here as sidecars would).
    pub fn policies(&self, waypoint: &WaypointId, service: &pb::Service) -> Arc<[Arc<Policy>]> {
        let key = (
            waypoint.clone(),
            service.namespace.clone(),
            service.name.clone(),
        );
        let mut cache = self.by_service.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(p) = cache.get(&key) {
            return p.clone();
        }
        let p: Arc<[Arc<Policy>]> = self.select(waypoint, service).into();
        cache.insert(key, p.clone());
        p
    }

    /// The tracing settings for traffic to `service` through `waypoint`; `None` when no
    /// Telemetry enables tracing for it.
    pub fn tracing(&self, waypoint: &WaypointId, service: &pb::Service) -> Option<Arc<Effective>> {
        let key = (
            waypoint.clone(),
            service.namespace.clone(),
            service.hostname.clone(),
        );
        let mut cache = self.tracing.lock().unwrap_or_else(|e| e.into_inner());
        cache
            .entry(key)
            .or_insert_with(|| {
                let gw = (waypoint.namespace.as_str(), waypoint.name.as_str());
                let tels = sampler::applicable(&self.snapshot, gw, service);
                sampler::effective(&self.snapshot, &tels).map(Arc::new)
            })
            .clone()
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
        let mut cur = self.current.lock().unwrap_or_else(|e| e.into_inner());
        if !Arc::ptr_eq(&cur.snapshot, &snap) {
            *cur = Arc::new(Compiled::build(snap));
        }
        cur.clone()
    }
}

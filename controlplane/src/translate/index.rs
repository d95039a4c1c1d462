//! The translator's view of the typed objects, indexed for incremental recomputation.

use std::collections::{BTreeMap, HashMap};
use std::sync::Arc;

use meshwork_api::{Kind, Object, ObjectKey};

/// Objects of one kind grouped by namespace, ordered by name inside a namespace.
#[derive(Debug, Default)]
pub struct ByNamespace {
    map: HashMap<String, BTreeMap<String, Arc<Object>>>,
}

impl ByNamespace {
    pub fn insert(&mut self, obj: Arc<Object>) -> Option<Arc<Object>> {
        self.map
            .entry(obj.namespace.clone())
            .or_default()
            .insert(obj.name.clone(), obj)
    }
    pub fn remove(&mut self, ns: &str, name: &str) -> Option<Arc<Object>> {
        let m = self.map.get_mut(ns)?;
        let old = m.remove(name);
        if m.is_empty() {
            self.map.remove(ns);
        }
        old
    }
    pub fn get(&self, ns: &str, name: &str) -> Option<&Arc<Object>> {
        self.map.get(ns)?.get(name)
    }
    /// Objects in `ns`, ordered by name.
    pub fn in_ns(&self, ns: &str) -> impl Iterator<Item = &Arc<Object>> {
        self.map.get(ns).into_iter().flat_map(|m| m.values())
    }
    pub fn namespaces(&self) -> impl Iterator<Item = &String> {
        self.map.keys()
    }
    pub fn all(&self) -> impl Iterator<Item = &Arc<Object>> {
        self.map.values().flat_map(|m| m.values())
    }
}

/// Every object the translator uses.
#[derive(Debug, Default)]
pub struct Indexes {
    pub namespaces: HashMap<String, Arc<Object>>,
    pub pods: ByNamespace,
    pub services: ByNamespace,
    pub peer_authentications: ByNamespace,
    pub authorization_policies: ByNamespace,
    pub telemetries: ByNamespace,
    pub wasm_plugins: ByNamespace,
    pub gateways: ByNamespace,
    pub virtual_services: ByNamespace,
    pub destination_rules: ByNamespace,
    pub http_routes: ByNamespace,
    pub grpc_routes: ByNamespace,
    /// ConfigMaps with a `mesh` key, by (namespace, name).
    pub mesh_config_maps: BTreeMap<(String, String), Arc<Object>>,
    /// Waypoint pods: (namespace, gateway name) -> pod names.
    pub waypoint_pods: HashMap<(String, String), BTreeMap<String, ()>>,
}

impl Indexes {
    pub fn by_kind_mut(&mut self, kind: Kind) -> Option<&mut ByNamespace> {
        Some(match kind {
            Kind::Pod => &mut self.pods,
            Kind::Service => &mut self.services,
            Kind::PeerAuthentication => &mut self.peer_authentications,
            Kind::AuthorizationPolicy => &mut self.authorization_policies,
            Kind::Telemetry => &mut self.telemetries,
            Kind::WasmPlugin => &mut self.wasm_plugins,
            Kind::Gateway => &mut self.gateways,
            Kind::VirtualService => &mut self.virtual_services,
            Kind::DestinationRule => &mut self.destination_rules,
            Kind::HttpRoute => &mut self.http_routes,
            Kind::GrpcRoute => &mut self.grpc_routes,
            _ => return None,
        })
    }

    pub fn get(&self, key: &ObjectKey) -> Option<&Arc<Object>> {
        let by = match key.kind {
            Kind::Namespace => return self.namespaces.get(&key.name),
            Kind::ConfigMap => {
                return self
                    .mesh_config_maps
                    .get(&(key.namespace.clone(), key.name.clone()))
            }
            Kind::Pod => &self.pods,
            Kind::Service => &self.services,
            Kind::PeerAuthentication => &self.peer_authentications,
            Kind::AuthorizationPolicy => &self.authorization_policies,
            Kind::Telemetry => &self.telemetries,
            Kind::WasmPlugin => &self.wasm_plugins,
            Kind::Gateway => &self.gateways,
            Kind::VirtualService => &self.virtual_services,
            Kind::DestinationRule => &self.destination_rules,
            Kind::HttpRoute => &self.http_routes,
            Kind::GrpcRoute => &self.grpc_routes,
            _ => return None,
        };
        by.get(&key.namespace, &key.name)
    }

    pub fn namespace_labels(&self, ns: &str) -> Option<&BTreeMap<String, String>> {
        self.namespaces.get(ns).map(|o| &o.labels)
    }
}

/// Ordering Istio uses to break ties between policies: oldest first, then by name.
pub fn age_order(a: &Object, b: &Object) -> std::cmp::Ordering {
    a.creation_timestamp
        .cmp(&b.creation_timestamp)
        .then_with(|| a.namespace.cmp(&b.namespace))
        .then_with(|| a.name.cmp(&b.name))
}

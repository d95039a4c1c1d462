//! An immutable, indexed view of the resources a proxy holds.
//!
//! Proxies look things up by address on every connection, so the snapshot keeps the
//! indexes they need; a new snapshot is built for each applied update and swapped in
//! atomically (readers keep the one they started with).

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::sync::Arc;

use imbl::ordmap::DiffItem;
use imbl::{HashMap, OrdMap, OrdSet};

use meshwork_identity::{SpiffeId, SpiffeIdError};

use crate::keys::Kind;
use crate::pb::config::{
    resource, Authorization, GatewayAddress, MeshSettings, Resource, RouteConfig, Service,
    ServicePorts, TelemetryConfig, Workload,
};

/// Trust domain of the mesh when its settings name none.
pub const DEFAULT_TRUST_DOMAIN: &str = "cluster.local";

/// A resource added, changed or removed between two snapshots
/// ([`Snapshot::changes_since`]).
#[derive(Debug, Clone, Copy)]
pub struct Change<'a> {
    pub key: &'a str,
    /// `None`: added.
    pub old: Option<&'a Arc<Resource>>,
    /// `None`: removed.
    pub new: Option<&'a Arc<Resource>>,
}

impl Change<'_> {
    pub fn kind(&self) -> Option<Kind> {
        Kind::of_key(self.key)
    }
}

/// Persistent maps: cloning a snapshot is O(1) and applying a delta costs O(changes ·
/// log n), so a proxy holding 10,000 workloads does not copy them on every update.
#[derive(Debug, Default, Clone)]
pub struct Snapshot {
    /// Control plane generation this snapshot corresponds to (0 before the first update).
    pub version: u64,
    resources: OrdMap<String, Arc<Resource>>,
    workloads_by_ip: HashMap<IpAddr, String>,
    services_by_vip: HashMap<IpAddr, String>,
    /// FQDN and aliases -> service keys (an alias like `order-service` may exist in
    /// several namespaces).
    services_by_host: HashMap<String, OrdSet<String>>,
    /// `<ns>/<hostname>` -> workload keys that are members.
    members: HashMap<String, OrdSet<String>>,
}

impl Snapshot {
    pub fn new(version: u64, resources: BTreeMap<String, Arc<Resource>>) -> Snapshot {
        let mut s = Snapshot {
            version,
            ..Default::default()
        };
        for (key, r) in resources {
            s.insert(key, r);
        }
        s
    }

    fn insert(&mut self, key: String, r: Arc<Resource>) {
        if let Some(old) = self.resources.insert(key.clone(), r.clone()) {
            self.unindex(&key, &old);
        }
        self.index(&key, &r);
    }

    fn remove(&mut self, key: &str) {
        if let Some(old) = self.resources.remove(key) {
            self.unindex(key, &old);
        }
    }

    fn index(&mut self, key: &str, r: &Resource) {
        match &r.kind {
            Some(resource::Kind::Workload(w)) => {
                for ip in w.addresses.iter().filter_map(|a| a.parse().ok()) {
                    self.workloads_by_ip.insert(ip, key.to_string());
                }
                for sp in &w.services {
                    self.members
                        .entry(sp.service.clone())
                        .or_default()
                        .insert(key.to_string());
                }
            }
            Some(resource::Kind::Service(s)) => {
                for ip in s.vips.iter().filter_map(|v| v.parse().ok()) {
                    self.services_by_vip.insert(ip, key.to_string());
                }
                for h in std::iter::once(&s.hostname).chain(&s.aliases) {
                    self.services_by_host
                        .entry(h.clone())
                        .or_default()
                        .insert(key.to_string());
                }
            }
            _ => {}
        }
    }

    fn unindex(&mut self, key: &str, r: &Resource) {
        fn drop_from(map: &mut HashMap<String, OrdSet<String>>, name: &str, key: &str) {
            if let Some(set) = map.get_mut(name) {
                set.remove(key);
                if set.is_empty() {
                    map.remove(name);
                }
            }
        }
        match &r.kind {
            Some(resource::Kind::Workload(w)) => {
                for ip in w.addresses.iter().filter_map(|a| a.parse::<IpAddr>().ok()) {
                    if self.workloads_by_ip.get(&ip).map(String::as_str) == Some(key) {
                        self.workloads_by_ip.remove(&ip);
                    }
                }
                for sp in &w.services {
                    drop_from(&mut self.members, &sp.service, key);
                }
            }
            Some(resource::Kind::Service(s)) => {
                for ip in s.vips.iter().filter_map(|v| v.parse::<IpAddr>().ok()) {
                    if self.services_by_vip.get(&ip).map(String::as_str) == Some(key) {
                        self.services_by_vip.remove(&ip);
                    }
                }
                for h in std::iter::once(&s.hostname).chain(&s.aliases) {
                    drop_from(&mut self.services_by_host, h, key);
                }
            }
            _ => {}
        }
    }

    /// Applies an update's upserts and removals, giving the next snapshot.
    pub fn apply(&self, version: u64, upserts: Vec<Resource>, removed: &[String]) -> Snapshot {
        let mut next = self.clone();
        next.version = version;
        for k in removed {
            next.remove(k);
        }
        for r in upserts {
            next.insert(r.key.clone(), Arc::new(r));
        }
        next
    }

    /// What differs between `older` and this snapshot, key by key. A snapshot made from
    /// another by [`Snapshot::apply`] shares the structure of everything unchanged, which
    /// is skipped: O(changes · log n), not O(n) (unrelated snapshots cost O(n)).
    pub fn changes_since<'a>(&'a self, older: &'a Snapshot) -> impl Iterator<Item = Change<'a>> {
        older.resources.diff(&self.resources).map(|d| match d {
            DiffItem::Add(k, r) => Change {
                key: k,
                old: None,
                new: Some(r),
            },
            DiffItem::Update { old, new } => Change {
                key: new.0,
                old: Some(old.1),
                new: Some(new.1),
            },
            DiffItem::Remove(k, r) => Change {
                key: k,
                old: Some(r),
                new: None,
            },
        })
    }

    pub fn len(&self) -> usize {
        self.resources.len()
    }

    pub fn is_empty(&self) -> bool {
        self.resources.is_empty()
    }

    pub fn get(&self, key: &str) -> Option<&Arc<Resource>> {
        self.resources.get(key)
    }

    pub fn resources(&self) -> impl Iterator<Item = &Arc<Resource>> {
        self.resources.values()
    }

    /// Key -> version of everything held (sent on reconnect so the control plane
    /// only sends what changed).
    pub fn versions(&self) -> BTreeMap<String, String> {
        self.resources
            .iter()
            .map(|(k, r)| (k.clone(), r.version.clone()))
            .collect()
    }

    fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &resource::Kind> {
        let prefix = kind.prefix();
        self.resources
            .range(format!("{prefix}/")..)
            .take_while(move |(k, _)| k.starts_with(prefix))
            .filter_map(|(_, r)| r.kind.as_ref())
    }

    pub fn mesh(&self) -> Option<&MeshSettings> {
        match self.get(Kind::Mesh.prefix()).and_then(|r| r.kind.as_ref()) {
            Some(resource::Kind::Mesh(m)) => Some(m),
            _ => None,
        }
    }

    /// The mesh's trust domain ([`DEFAULT_TRUST_DOMAIN`] unless its settings name one).
    pub fn trust_domain(&self) -> &str {
        self.mesh()
            .map(|m| m.trust_domain.as_str())
            .filter(|t| !t.is_empty())
            .unwrap_or(DEFAULT_TRUST_DOMAIN)
    }

    /// The first of `candidates` (addresses a connection may stand for: its source, an
    /// address named in a `forwarded` header) whose workload runs as `identity`, with that
    /// workload. A proxy acts on an address only when the authenticated peer vouches for
    /// it, so no mesh identity can borrow another pod's address.
    pub fn vouched_workload(
        &self,
        candidates: impl IntoIterator<Item = IpAddr>,
        identity: &SpiffeId,
    ) -> Option<(IpAddr, &Workload)> {
        candidates.into_iter().find_map(|ip| {
            let w = self.workload_by_ip(ip)?;
            (self.workload_identity(w).ok().as_ref() == Some(identity)).then_some((ip, w))
        })
    }

    /// The SPIFFE identity a workload runs as: its own trust domain or the mesh's, its
    /// namespace, and its service account (`default` when none is named, as in Kubernetes).
    pub fn workload_identity(&self, w: &Workload) -> Result<SpiffeId, SpiffeIdError> {
        let td = if w.trust_domain.is_empty() {
            self.trust_domain()
        } else {
            &w.trust_domain
        };
        let sa = if w.service_account.is_empty() {
            "default"
        } else {
            &w.service_account
        };
        SpiffeId::new(td, &w.namespace, sa)
    }

    pub fn workloads(&self) -> impl Iterator<Item = &Workload> {
        self.of_kind(Kind::Workload).filter_map(|k| match k {
            resource::Kind::Workload(w) => Some(w),
            _ => None,
        })
    }

    pub fn services(&self) -> impl Iterator<Item = &Service> {
        self.of_kind(Kind::Service).filter_map(|k| match k {
            resource::Kind::Service(s) => Some(s),
            _ => None,
        })
    }

    pub fn authorizations(&self) -> impl Iterator<Item = &Authorization> {
        self.of_kind(Kind::Authorization).filter_map(|k| match k {
            resource::Kind::Authorization(a) => Some(a),
            _ => None,
        })
    }

    pub fn routes(&self) -> impl Iterator<Item = &RouteConfig> {
        self.of_kind(Kind::Route).filter_map(|k| match k {
            resource::Kind::Route(r) => Some(r),
            _ => None,
        })
    }

    /// The WasmPlugins (sent to waypoints only), in key order.
    pub fn wasm_plugins(&self) -> impl Iterator<Item = &crate::pb::config::WasmPlugin> {
        self.of_kind(Kind::WasmPlugin).filter_map(|k| match k {
            resource::Kind::WasmPlugin(w) => Some(w),
            _ => None,
        })
    }

    pub fn telemetries(&self) -> impl Iterator<Item = &TelemetryConfig> {
        self.of_kind(Kind::Telemetry).filter_map(|k| match k {
            resource::Kind::Telemetry(t) => Some(t),
            _ => None,
        })
    }

    pub fn workload(&self, key: &str) -> Option<&Workload> {
        match self.get(key)?.kind.as_ref()? {
            resource::Kind::Workload(w) => Some(w),
            _ => None,
        }
    }

    pub fn service(&self, key: &str) -> Option<&Service> {
        match self.get(key)?.kind.as_ref()? {
            resource::Kind::Service(s) => Some(s),
            _ => None,
        }
    }

    pub fn authorization(&self, namespace: &str, name: &str) -> Option<&Authorization> {
        match self
            .get(&Kind::Authorization.key(namespace, name))?
            .kind
            .as_ref()?
        {
            resource::Kind::Authorization(a) => Some(a),
            _ => None,
        }
    }

    pub fn route(&self, namespace: &str, hostname: &str) -> Option<&RouteConfig> {
        match self
            .get(&Kind::Route.key(namespace, hostname))?
            .kind
            .as_ref()?
        {
            resource::Kind::Route(r) => Some(r),
            _ => None,
        }
    }

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Workload> {
        self.workload(self.workloads_by_ip.get(&ip)?)
    }

    pub fn service_by_vip(&self, ip: IpAddr) -> Option<&Service> {
        self.service(self.services_by_vip.get(&ip)?)
    }

    /// Resolves a hostname as a client in `client_namespace` would: a FQDN matches
    /// exactly; a short alias prefers the client's own namespace.
    pub fn service_by_host(&self, host: &str, client_namespace: &str) -> Option<&Service> {
        let keys = self.services_by_host.get(host.trim_end_matches('.'))?;
        let pick = keys
            .iter()
            .filter_map(|k| self.service(k))
            .find(|s| s.hostname == host || s.namespace == client_namespace)
            .or_else(|| keys.get_min().and_then(|k| self.service(k)))?;
        Some(pick)
    }

    /// The waypoint a service's traffic goes through (`istio.io/use-waypoint` on the
    /// Service, else its namespace), when that waypoint is running (has an address).
    pub fn service_waypoint<'a>(&self, service: &'a Service) -> Option<&'a GatewayAddress> {
        GatewayAddress::usable(service.waypoint.as_ref())
    }

    /// The waypoint serving workload `w`: its own (`istio.io/use-waypoint` on the pod or its
    /// namespace), else the first of its services' that has one. This is the one binding
    /// rule: ztunnels send a workload's traffic to it and admit only it as the source, and a
    /// waypoint serves only the workloads it names.
    pub fn waypoint_of<'a>(&'a self, w: &'a Workload) -> Option<&'a GatewayAddress> {
        w.own_waypoint().or_else(|| {
            w.services.iter().find_map(|sp| {
                let (ns, host) = sp.service.split_once('/')?;
                self.service_waypoint(self.service(&Kind::Service.key(ns, host))?)
            })
        })
    }

    /// Member workloads of a service with their port mapping.
    pub fn service_members<'a>(
        &'a self,
        service: &Service,
    ) -> impl Iterator<Item = (&'a Workload, &'a ServicePorts)> + 'a {
        let service_ref = service_ref(service);
        self.members
            .get(&service_ref)
            .into_iter()
            .flatten()
            .filter_map(move |k| {
                let w = self.workload(k)?;
                let sp = w.services.iter().find(|sp| sp.service == service_ref)?;
                Some((w, sp))
            })
    }
}

/// The `<ns>/<hostname>` reference a workload's `ServicePorts.service` uses.
pub fn service_ref(service: &Service) -> String {
    format!("{}/{}", service.namespace, service.hostname)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::make_resource;

    fn sample() -> Snapshot {
        let svc = Service {
            name: "order-service".into(),
            namespace: "production".into(),
            hostname: "order-service.production.svc.cluster.local".into(),
            aliases: vec!["order-service".into(), "order-service.production".into()],
            vips: vec!["10.96.0.10".into()],
            ..Default::default()
        };
        let other = Service {
            name: "order-service".into(),
            namespace: "staging".into(),
            hostname: "order-service.staging.svc.cluster.local".into(),
            aliases: vec!["order-service".into()],
            ..Default::default()
        };
        let w = Workload {
            uid: "production/order-v1".into(),
            name: "order-v1".into(),
            namespace: "production".into(),
            addresses: vec!["10.244.1.5".into()],
            services: vec![ServicePorts {
                service: service_ref(&svc),
                ports: [(8080, 8080)].into(),
            }],
            ..Default::default()
        };
        let mut m = BTreeMap::new();
        for r in [
            make_resource(
                "service/production/order-service.production.svc.cluster.local".into(),
                resource::Kind::Service(svc),
            ),
            make_resource(
                "service/staging/order-service.staging.svc.cluster.local".into(),
                resource::Kind::Service(other),
            ),
            make_resource(
                "workload/production/order-v1".into(),
                resource::Kind::Workload(w),
            ),
        ] {
            m.insert(r.key.clone(), Arc::new(r));
        }
        Snapshot::new(1, m)
    }

    #[test]
    fn waypoint_of_is_the_workloads_own_else_its_services() {
        let gw = |name: &str, address: &str| GatewayAddress {
            namespace: "production".into(),
            name: name.into(),
            address: address.into(),
            ..Default::default()
        };
        let snap = sample();
        let key = "service/production/order-service.production.svc.cluster.local";
        let mut svc = snap.service(key).unwrap().clone();
        let mut w = snap
            .workload("workload/production/order-v1")
            .unwrap()
            .clone();
        assert!(snap.waypoint_of(&w).is_none());
        svc.waypoint = Some(gw("svc-wp", "10.0.0.9"));
        let snap = snap.apply(
            2,
            vec![make_resource(
                key.into(),
                resource::Kind::Service(svc.clone()),
            )],
            &[],
        );
        assert!(snap.waypoint_of(&w).unwrap().is("production", "svc-wp"));
        assert!(snap
            .service_waypoint(&svc)
            .unwrap()
            .is("production", "svc-wp"));
        w.waypoint = Some(gw("own-wp", "10.0.0.8"));
        assert!(snap.waypoint_of(&w).unwrap().is("production", "own-wp"));
        // A waypoint without an address is not running: it serves nothing.
        w.waypoint = Some(gw("own-wp", ""));
        assert!(snap.waypoint_of(&w).unwrap().is("production", "svc-wp"));
        svc.waypoint = Some(gw("svc-wp", ""));
        assert!(snap.service_waypoint(&svc).is_none());
    }

    #[test]
    fn workload_identity_uses_the_mesh_trust_domain_and_default_account() {
        let w = Workload {
            name: "a".into(),
            namespace: "prod".into(),
            ..Default::default()
        };
        let plain = Snapshot::default();
        assert_eq!(
            plain.workload_identity(&w).unwrap().to_string(),
            "spiffe://cluster.local/ns/prod/sa/default"
        );
        let key = Kind::Mesh.prefix().to_string();
        let mesh = make_resource(
            key.clone(),
            resource::Kind::Mesh(MeshSettings {
                trust_domain: "example.org".into(),
                ..Default::default()
            }),
        );
        let snap = Snapshot::new(1, BTreeMap::from([(key, Arc::new(mesh))]));
        let own = Workload {
            service_account: "orders".into(),
            ..w.clone()
        };
        assert_eq!(
            snap.workload_identity(&own).unwrap().to_string(),
            "spiffe://example.org/ns/prod/sa/orders"
        );
        let elsewhere = Workload {
            trust_domain: "other.org".into(),
            ..own
        };
        assert_eq!(
            snap.workload_identity(&elsewhere).unwrap().trust_domain(),
            "other.org"
        );
    }

    #[test]
    fn lookups_by_address_and_name() {
        let s = sample();
        let w = s.workload_by_ip("10.244.1.5".parse().unwrap()).unwrap();
        assert_eq!(w.name, "order-v1");
        let svc = s.service_by_vip("10.96.0.10".parse().unwrap()).unwrap();
        assert_eq!(svc.namespace, "production");
        assert_eq!(
            s.service_by_host("order-service", "staging")
                .unwrap()
                .namespace,
            "staging"
        );
        assert_eq!(
            s.service_by_host("order-service.production.svc.cluster.local", "staging")
                .unwrap()
                .namespace,
            "production"
        );
        let members: Vec<_> = s.service_members(svc).map(|(w, _)| &w.name).collect();
        assert_eq!(members, ["order-v1"]);
        assert_eq!(s.workloads().count(), 1);
        assert_eq!(s.services().count(), 2);
    }

    #[test]
    fn apply_upserts_and_removes() {
        let s = sample();
        let next = s.apply(2, vec![], &["workload/production/order-v1".to_string()]);
        assert_eq!(next.version, 2);
        assert!(next.workload_by_ip("10.244.1.5".parse().unwrap()).is_none());
        assert_eq!(s.len(), 3, "the old snapshot is untouched");
        assert!(s.workload_by_ip("10.244.1.5".parse().unwrap()).is_some());
    }

    #[test]
    fn apply_keeps_indexes_in_step() {
        let s = sample();
        let key = "workload/production/order-v1".to_string();
        let mut moved = s.workload(&key).unwrap().clone();
        moved.addresses = vec!["10.244.9.9".into()];
        moved.services.clear();
        let next = s.apply(
            2,
            vec![make_resource(key.clone(), resource::Kind::Workload(moved))],
            &["service/staging/order-service.staging.svc.cluster.local".to_string()],
        );
        assert!(next.workload_by_ip("10.244.1.5".parse().unwrap()).is_none());
        assert_eq!(
            next.workload_by_ip("10.244.9.9".parse().unwrap())
                .unwrap()
                .name,
            "order-v1"
        );
        let svc = next.service_by_vip("10.96.0.10".parse().unwrap()).unwrap();
        assert_eq!(next.service_members(svc).count(), 0);
        assert_eq!(
            next.service_by_host("order-service", "staging")
                .unwrap()
                .namespace,
            "production",
            "the staging alias went with its service"
        );
    }

    #[test]
    fn changes_since_lists_only_what_an_update_changed() {
        let pod = |i: usize, label: &str| {
            make_resource(
                format!("workload/ns/pod-{i}"),
                resource::Kind::Workload(Workload {
                    name: format!("pod-{i}"),
                    namespace: "ns".into(),
                    labels: [("v".to_string(), label.to_string())].into(),
                    ..Default::default()
                }),
            )
        };
        let base = Snapshot::new(
            1,
            (0..5000)
                .map(|i| pod(i, "a"))
                .map(|r| (r.key.clone(), Arc::new(r)))
                .collect(),
        );
        assert_eq!(base.changes_since(&base).count(), 0);
        let next = base.apply(
            2,
            vec![pod(7, "b"), pod(9000, "a"), pod(8, "a")],
            &["workload/ns/pod-42".to_string()],
        );
        let mut seen: Vec<(String, bool, bool)> = next
            .changes_since(&base)
            .map(|c| (c.key.to_string(), c.old.is_some(), c.new.is_some()))
            .collect();
        seen.sort();
        // pod-8 was sent again unchanged: not a change.
        assert_eq!(
            seen,
            vec![
                ("workload/ns/pod-42".to_string(), true, false),
                ("workload/ns/pod-7".to_string(), true, true),
                ("workload/ns/pod-9000".to_string(), false, true),
            ]
        );
        let c = next.changes_since(&base).next().unwrap();
        assert_eq!(c.kind(), Some(Kind::Workload));
        // Against an unrelated snapshot with the same content: still no change.
        let copy = Snapshot::new(
            3,
            base.resources
                .iter()
                .map(|(k, r)| (k.clone(), r.clone()))
                .collect(),
        );
        assert_eq!(copy.changes_since(&base).count(), 0);
    }
}

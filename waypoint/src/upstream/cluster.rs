//! Upstream clusters: a service port and subset with its traffic policy, endpoints, pool,
//! outlier detector and balancer.

use meshwork_runtime::sync::LockExt;
use std::collections::{BTreeMap, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use meshwork_model::pb::config as pb;
use meshwork_model::snapshot::Snapshot;
use meshwork_model::view::PeerName;

use crate::upstream::connector::Connector;
use crate::upstream::endpoint::Endpoint;
use crate::upstream::lb::{Balancer, LbPolicy, Warmup};
use crate::upstream::outlier::{Outlier, OutlierConfig};
use crate::upstream::pool::{ClusterPool, PoolLimits, Proto};

/// `outbound|<port>|<subset>|<hostname>` like Istio names clusters.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct ClusterKey {
    pub namespace: String,
    pub hostname: String,
    pub port: u16,
    pub subset: String,
}

impl ClusterKey {
    pub fn name(&self) -> String {
        format!("outbound|{}|{}|{}", self.port, self.subset, self.hostname)
    }
}

/// A cluster's endpoints, shared.
pub type Endpoints = Arc<Vec<Arc<Endpoint>>>;

/// A cluster's endpoints and the snapshot they were computed from.
type CachedEndpoints = (Arc<Snapshot>, Endpoints);

#[derive(Debug)]
pub struct Cluster {
    pub key: ClusterKey,
    /// `outbound|<port>|<subset>|<hostname>` ([`ClusterKey::name`]).
    pub name: String,
    pub pool: ClusterPool,
    pub outlier: Option<Outlier>,
    pub lb: Balancer,
    pub proto: Proto,
    policy: Option<pb::TrafficPolicy>,
    /// Endpoints computed for the snapshot they came from.
    endpoints: Mutex<Option<CachedEndpoints>>,
}

impl Cluster {
    /// The cluster's endpoints in `snapshot`, computed once per snapshot.
    pub fn endpoints(
        &self,
        snapshot: &Arc<Snapshot>,
        service: &pb::Service,
        subset: Option<&BTreeMap<String, String>>,
    ) -> Endpoints {
        let mut cached = self.endpoints.lock_or_recover();
        if let Some((snap, eps)) = cached.as_ref() {
            if Arc::ptr_eq(snap, snapshot) {
                return eps.clone();
            }
        }
        let eps = Arc::new(endpoints(snapshot, service, self.key.port, subset));
        *cached = Some((snapshot.clone(), eps.clone()));
        eps
    }
}

/// The effective traffic policy of a destination: the subset's (already merged) or the host's.
pub fn traffic_policy<'a>(
    route: Option<&'a pb::RouteConfig>,
    subset: &str,
) -> (
    Option<&'a pb::TrafficPolicy>,
    Option<&'a BTreeMap<String, String>>,
) {
    let Some(route) = route else {
        return (None, None);
    };
    let s = route.subsets.iter().find(|s| s.name == subset);
    let policy = s
        .and_then(|s| s.traffic_policy.as_ref())
        .or(route.traffic_policy.as_ref());
    (policy, s.map(|s| &s.labels))
}

/// Whether the upstream speaks HTTP/2: gRPC requests, gRPC/HTTP2 service ports, or
/// h2UpgradePolicy UPGRADE.
pub fn upstream_proto(
    service: &pb::Service,
    port: u16,
    policy: Option<&pb::TrafficPolicy>,
    grpc_request: bool,
) -> Proto {
    if grpc_request {
        return Proto::Http2;
    }
    let upgrade = policy
        .and_then(|p| p.connection_pool.as_ref())
        .is_some_and(|c| c.h2_upgrade_policy.eq_ignore_ascii_case("UPGRADE"));
    let h2_port = service
        .ports
        .iter()
        .find(|p| p.port == u32::from(port))
        .is_some_and(|p| {
            let proto = p.protocol.to_ascii_uppercase();
            proto == "HTTP2"
                || proto == "GRPC"
                || proto == "GRPC-WEB"
                || p.name.starts_with("grpc")
                || p.name.starts_with("http2")
        });
    if upgrade || h2_port {
        Proto::Http2
    } else {
        Proto::Http1
    }
}

/// The SPIFFE identity the workload's ztunnel presents for it.
fn workload_identity(snapshot: &Snapshot, w: &pb::Workload) -> Option<String> {
    snapshot.workload_identity(w).ok().map(|id| id.to_string())
}

/// One workload addressed directly at `addr` (its IP and a port).
pub fn workload_endpoint(
    snapshot: &Snapshot,
    w: &pb::Workload,
    addr: SocketAddr,
) -> Option<Endpoint> {
    w.healthy.then(|| Endpoint {
        addr,
        identity: workload_identity(snapshot, w),
        name: PeerName::of(w),
    })
}

/// Healthy member endpoints of `service` on `port`, restricted to `subset` labels.
pub fn endpoints(
    snapshot: &Snapshot,
    service: &pb::Service,
    port: u16,
    subset: Option<&BTreeMap<String, String>>,
) -> Vec<Arc<Endpoint>> {
    let service_port = service.ports.iter().find(|p| p.port == u32::from(port));
    let mut out = Vec::new();
    for (w, sp) in snapshot.service_members(service) {
        // A waypoint never forwards into a waypoint (a loop), even one a Service selects.
        if !w.healthy
            || w.is_waypoint
            || subset.is_some_and(|s| !crate::request::routing::subset_matches(s, &w.labels))
        {
            continue;
        }
        let target = sp
            .ports
            .get(&u32::from(port))
            .copied()
            .or_else(|| service_port.map(|p| p.target_port).filter(|p| *p != 0))
            .unwrap_or(u32::from(port));
        let Ok(target) = u16::try_from(target) else {
            continue;
        };
        let Some(ip) = w.addresses.iter().find_map(|a| a.parse::<IpAddr>().ok()) else {
            continue;
        };
        let identity = workload_identity(snapshot, w);
        out.push(Arc::new(Endpoint {
            addr: SocketAddr::new(ip, target),
            identity,
            name: PeerName::of(w),
        }));
    }
    out.sort_by_key(|e| e.addr);
    out
}

/// All clusters, created on first use and replaced when their traffic policy changes.
pub struct Clusters {
    connector: Arc<dyn Connector>,
    map: Mutex<HashMap<(ClusterKey, Proto), Arc<Cluster>>>,
}

impl Clusters {
    pub fn new(connector: Arc<dyn Connector>) -> Self {
        Clusters {
            connector,
            map: Mutex::new(HashMap::new()),
        }
    }

    pub fn get(
        &self,
        key: ClusterKey,
        policy: Option<&pb::TrafficPolicy>,
        proto: Proto,
    ) -> Arc<Cluster> {
        let mut map = self.map.lock_or_recover();
        let map_key = (key, proto);
        if let Some(c) = map.get(&map_key) {
            if c.policy.as_ref() == policy {
                return c.clone();
            }
        }
        let c = Arc::new(Cluster {
            pool: ClusterPool::new(
                PoolLimits::from_pb(policy.and_then(|p| p.connection_pool.as_ref())),
                self.connector.clone(),
            ),
            outlier: OutlierConfig::from_pb(policy.and_then(|p| p.outlier_detection.as_ref()))
                .map(Outlier::new),
            lb: {
                let lb = policy.and_then(|p| p.load_balancer.as_ref());
                Balancer::new(LbPolicy::from_pb(lb)).with_warmup(Warmup::from_pb(lb))
            },
            proto,
            policy: policy.cloned(),
            endpoints: Mutex::new(None),
            name: map_key.0.name(),
            key: map_key.0.clone(),
        });
        map.insert(map_key, c.clone());
        c
    }

    /// Every cluster created so far, sorted by name then protocol.
    pub fn list(&self) -> Vec<Arc<Cluster>> {
        let map = self.map.lock_or_recover();
        let mut all: Vec<Arc<Cluster>> = map.values().cloned().collect();
        drop(map);
        all.sort_by_key(|c| (c.key.name(), c.proto == Proto::Http2));
        all
    }
}

//! Lookups over the current config snapshot: local workloads, identities, and where an
//! outbound connection goes (HBONE to a pod or waypoint, or passthrough).

use meshwork_runtime::sync::LockExt;
use std::collections::{BTreeSet, HashMap};
use std::net::{IpAddr, SocketAddr};
use std::sync::{Arc, Mutex};

use meshwork_identity::{SpiffeId, SpiffeIdError};
use meshwork_model::pb::config::{GatewayAddress, MtlsMode, Service, Workload};
use meshwork_model::{Kind, Snapshot};

#[derive(Debug, thiserror::Error)]
pub enum StateError {
    #[error("workload {namespace}/{name}: invalid identity: {source}")]
    Identity {
        namespace: String,
        name: String,
        source: Box<SpiffeIdError>,
    },
    #[error("waypoint {namespace}/{name}: invalid address {address:?}")]
    WaypointAddress {
        namespace: String,
        name: String,
        address: String,
    },
    #[error("waypoint {namespace}/{name}: invalid identity {identity:?}: {source}")]
    WaypointIdentity {
        namespace: String,
        name: String,
        identity: String,
        source: Box<SpiffeIdError>,
    },
    #[error("service {namespace}/{hostname}: no healthy endpoint for port {port}")]
    NoEndpoint {
        namespace: String,
        hostname: String,
        port: u16,
    },
    #[error("workload {namespace}/{name} has no usable address")]
    NoAddress { namespace: String, name: String },
}

/// Where an outbound connection was headed.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Target {
    Addr(SocketAddr),
    Host(String, u16),
}

impl std::fmt::Display for Target {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        match self {
            Target::Addr(a) => write!(f, "{a}"),
            Target::Host(h, p) => write!(f, "{h}:{p}"),
        }
    }
}

/// How to carry an outbound connection.
#[derive(Debug, Clone)]
pub enum Route {
    /// HBONE CONNECT to `hbone_addr`, expecting `identity`.
    Hbone {
        hbone_addr: SocketAddr,
        authority: String,
        identity: SpiffeId,
        /// The destination pod (None when the waypoint picks it).
        workload: Option<Arc<Workload>>,
        service: Option<Arc<Service>>,
        via_waypoint: bool,
    },
    /// Plain TCP to a destination outside the mesh.
    Passthrough { target: Target },
}

/// Round-robin cursors per service.
#[derive(Debug, Default)]
pub struct RoundRobin(Mutex<HashMap<String, usize>>);

impl RoundRobin {
    fn next(&self, key: &str, n: usize) -> usize {
        let mut m = self.0.lock_or_recover();
        let c = m.entry(key.to_string()).or_insert(0);
        let i = *c % n;
        *c = c.wrapping_add(1);
        i
    }
}

/// The snapshot seen from one node.
#[derive(Debug, Clone)]
pub struct State {
    pub snapshot: Arc<Snapshot>,
    pub node: String,
    /// Port of HBONE listeners on pod addresses.
    pub hbone_port: u16,
}

/// `<ns>/<name>` of a workload.
pub fn workload_ref(w: &Workload) -> String {
    format!("{}/{}", w.namespace, w.name)
}

impl State {
    pub fn new(snapshot: Arc<Snapshot>, node: &str, hbone_port: u16) -> Self {
        State {
            snapshot,
            node: node.to_string(),
            hbone_port,
        }
    }

    pub fn trust_domain(&self) -> &str {
        self.snapshot.trust_domain()
    }

    pub fn identity(&self, w: &Workload) -> Result<SpiffeId, StateError> {
        self.snapshot
            .workload_identity(w)
            .map_err(|source| StateError::Identity {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
                source: Box::new(source),
            })
    }

    pub fn is_local(&self, w: &Workload) -> bool {
        w.node == self.node
    }

    pub fn workload_by_ip(&self, ip: IpAddr) -> Option<&Workload> {
        self.snapshot.workload_by_ip(ip)
    }

    /// A workload on this node owning `ip`.
    pub fn local_workload_by_ip(&self, ip: IpAddr) -> Option<&Workload> {
        self.workload_by_ip(ip).filter(|w| self.is_local(w))
    }

    /// A workload by `<ns>/<name>`.
    pub fn workload_by_ref(&self, r: &str) -> Option<&Workload> {
        let (ns, name) = r.split_once('/')?;
        self.snapshot.workload(&Kind::Workload.key(ns, name))
    }

    pub fn local_workloads(&self) -> impl Iterator<Item = &Workload> {
        self.snapshot.workloads().filter(|w| self.is_local(w))
    }

    /// Identities this node needs certificates for.
    pub fn local_identities(&self) -> BTreeSet<SpiffeId> {
        self.local_workloads()
            .filter_map(|w| match self.identity(w) {
                Ok(id) => Some(id),
                Err(e) => {
                    tracing::warn!(error = %e, "skipping workload without a valid identity");
                    None
                }
            })
            .collect()
    }

    /// Effective mTLS mode of `w` for `port` (UNSET means PERMISSIVE, as in Istio).
    pub fn mtls_mode(w: &Workload, port: u16) -> MtlsMode {
        w.mtls_mode_for_port(port)
    }

    /// The waypoint serving `w` (its own, else one of its services'), if any.
    pub fn waypoint_of(&self, w: &Workload) -> Option<GatewayAddress> {
        self.snapshot.waypoint_of(w).cloned()
    }

    fn waypoint_route(
        &self,
        gw: &GatewayAddress,
        authority: String,
        service: Option<&Service>,
        workload: Option<&Workload>,
    ) -> Result<Route, StateError> {
        let ip: IpAddr = gw
            .address
            .parse()
            .map_err(|_| StateError::WaypointAddress {
                namespace: gw.namespace.clone(),
                name: gw.name.clone(),
                address: gw.address.clone(),
            })?;
        let port = if gw.hbone_port == 0 {
            self.hbone_port
        } else {
            gw.hbone_port as u16
        };
        let identity = self.waypoint_identity(gw)?;
        Ok(Route::Hbone {
            hbone_addr: SocketAddr::new(ip, port),
            authority,
            identity,
            workload: workload.map(|w| Arc::new(w.clone())),
            service: service.map(|s| Arc::new(s.clone())),
            via_waypoint: true,
        })
    }

    pub fn waypoint_identity(&self, gw: &GatewayAddress) -> Result<SpiffeId, StateError> {
        gw.identity
            .parse()
            .or_else(|_| SpiffeId::from_principal(&gw.identity))
            .map_err(|source| StateError::WaypointIdentity {
                namespace: gw.namespace.clone(),
                name: gw.name.clone(),
                identity: gw.identity.clone(),
                source: Box::new(source),
            })
    }

    fn pod_route(
        &self,
        w: &Workload,
        port: u16,
        service: Option<&Service>,
    ) -> Result<Route, StateError> {
        let ip: IpAddr = w
            .addresses
            .iter()
            .find_map(|a| a.parse().ok())
            .ok_or_else(|| StateError::NoAddress {
                namespace: w.namespace.clone(),
                name: w.name.clone(),
            })?;
        Ok(Route::Hbone {
            hbone_addr: SocketAddr::new(ip, self.hbone_port),
            authority: SocketAddr::new(ip, port).to_string(),
            identity: self.identity(w)?,
            workload: Some(Arc::new(w.clone())),
            service: service.map(|s| Arc::new(s.clone())),
            via_waypoint: false,
        })
    }

    /// Routes a connection from `src` to `target`.
    pub fn route(
        &self,
        src: &Workload,
        target: &Target,
        rr: &RoundRobin,
    ) -> Result<Route, StateError> {
        let (service, port) = match target {
            Target::Addr(addr) => {
                if let Some(s) = self.snapshot.service_by_vip(addr.ip()) {
                    (s, addr.port())
                } else if let Some(w) = self.workload_by_ip(addr.ip()) {
                    return self.workload_route(src, w, addr.port(), None);
                } else {
                    return Ok(Route::Passthrough {
                        target: target.clone(),
                    });
                }
            }
            Target::Host(host, port) => match self.snapshot.service_by_host(host, &src.namespace) {
                Some(s) => (s, *port),
                None => {
                    return Ok(Route::Passthrough {
                        target: target.clone(),
                    })
                }
            },
        };
        let authority = match service.vips.first() {
            Some(vip) => match vip.parse::<IpAddr>() {
                Ok(ip) => SocketAddr::new(ip, port).to_string(),
                Err(_) => format!("{}:{port}", service.hostname),
            },
            None => format!("{}:{port}", service.hostname),
        };
        let src_is_waypoint = src.is_waypoint;
        if let Some(gw) = self.snapshot.service_waypoint(service) {
            if !src_is_waypoint {
                return self.waypoint_route(gw, authority, Some(service), None);
            }
        }
        let members: Vec<(&Workload, u16)> = self
            .snapshot
            .service_members(service)
            .filter(|(w, _)| w.healthy)
            .filter_map(|(w, sp)| {
                let target_port = sp.ports.get(&(port as u32)).copied().or_else(|| {
                    service
                        .ports
                        .iter()
                        .find(|p| p.port == port as u32)
                        .map(|p| {
                            if p.target_port == 0 {
                                p.port
                            } else {
                                p.target_port
                            }
                        })
                })?;
                Some((w, target_port as u16))
            })
            .collect();
        if members.is_empty() {
            return Err(StateError::NoEndpoint {
                namespace: service.namespace.clone(),
                hostname: service.hostname.clone(),
                port,
            });
        }
        let key = format!("{}/{}", service.namespace, service.hostname);
        let (w, target_port) = members[rr.next(&key, members.len())];
        self.workload_route(src, w, target_port, Some(service))
    }

    fn workload_route(
        &self,
        src: &Workload,
        w: &Workload,
        port: u16,
        service: Option<&Service>,
    ) -> Result<Route, StateError> {
        if !w.captured {
            let ip = w
                .addresses
                .iter()
                .find_map(|a| a.parse().ok())
                .ok_or_else(|| StateError::NoAddress {
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                })?;
            return Ok(Route::Passthrough {
                target: Target::Addr(SocketAddr::new(ip, port)),
            });
        }
        if !src.is_waypoint {
            if let Some(gw) = w.own_waypoint() {
                let ip = w.addresses.first().cloned().unwrap_or_default();
                return self.waypoint_route(gw, format!("{ip}:{port}"), service, Some(w));
            }
        }
        self.pod_route(w, port, service)
    }
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::{resource, ServicePort, ServicePorts};
    use std::collections::BTreeMap;

    pub fn workload(ns: &str, name: &str, node: &str, ip: &str) -> Workload {
        Workload {
            uid: format!("{ns}/{name}"),
            name: name.into(),
            namespace: ns.into(),
            service_account: name.into(),
            node: node.into(),
            addresses: vec![ip.into()],
            captured: true,
            healthy: true,
            ..Default::default()
        }
    }

    pub fn snapshot(workloads: Vec<Workload>, services: Vec<Service>) -> Arc<Snapshot> {
        let mut m = BTreeMap::new();
        for w in workloads {
            let k = Kind::Workload.key(&w.namespace, &w.name);
            m.insert(
                k.clone(),
                Arc::new(make_resource(k, resource::Kind::Workload(w))),
            );
        }
        for s in services {
            let k = Kind::Service.key(&s.namespace, &s.hostname);
            m.insert(
                k.clone(),
                Arc::new(make_resource(k, resource::Kind::Service(s))),
            );
        }
        Arc::new(Snapshot::new(1, m))
    }

    fn svc() -> Service {
        Service {
            name: "api".into(),
            namespace: "prod".into(),
            hostname: "api.prod.svc.cluster.local".into(),
            aliases: vec!["api".into()],
            vips: vec!["10.96.0.10".into()],
            ports: vec![ServicePort {
                port: 80,
                target_port: 8080,
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn member(mut w: Workload) -> Workload {
        w.services.push(ServicePorts {
            service: "prod/api.prod.svc.cluster.local".into(),
            ports: [(80, 8080)].into_iter().collect(),
        });
        w
    }

    #[test]
    fn vip_round_robins_over_healthy_members() {
        let client = workload("prod", "client", "n1", "10.0.0.1");
        let a = member(workload("prod", "a", "n2", "10.0.0.2"));
        let b = member(workload("prod", "b", "n2", "10.0.0.3"));
        let mut sick = member(workload("prod", "c", "n2", "10.0.0.4"));
        sick.healthy = false;
        let st = State::new(
            snapshot(vec![client.clone(), a, b, sick], vec![svc()]),
            "n1",
            15008,
        );
        let rr = RoundRobin::default();
        let mut seen = BTreeSet::new();
        for _ in 0..4 {
            match st
                .route(
                    &client,
                    &Target::Addr("10.96.0.10:80".parse().unwrap()),
                    &rr,
                )
                .unwrap()
            {
                Route::Hbone {
                    hbone_addr,
                    authority,
                    identity,
                    via_waypoint,
                    ..
                } => {
                    assert_eq!(hbone_addr.port(), 15008);
                    assert_eq!(authority, format!("{}:8080", hbone_addr.ip()));
                    assert!(identity
                        .to_string()
                        .starts_with("spiffe://cluster.local/ns/prod/sa/"));
                    assert!(!via_waypoint);
                    seen.insert(hbone_addr.ip().to_string());
                }
                r => panic!("{r:?}"),
            }
        }
        assert_eq!(
            seen,
            ["10.0.0.2".to_string(), "10.0.0.3".to_string()].into()
        );
    }

    #[test]
    fn hostname_and_waypoint() {
        let client = workload("prod", "client", "n1", "10.0.0.1");
        let a = member(workload("prod", "a", "n2", "10.0.0.2"));
        let mut s = svc();
        s.waypoint = Some(GatewayAddress {
            namespace: "prod".into(),
            name: "waypoint".into(),
            address: "10.0.0.9".into(),
            hbone_port: 15008,
            identity: "spiffe://cluster.local/ns/prod/sa/waypoint".into(),
        });
        let st = State::new(snapshot(vec![client.clone(), a], vec![s]), "n1", 15008);
        let r = st
            .route(
                &client,
                &Target::Host("api".into(), 80),
                &RoundRobin::default(),
            )
            .unwrap();
        match r {
            Route::Hbone {
                hbone_addr,
                authority,
                identity,
                via_waypoint,
                ..
            } => {
                assert_eq!(hbone_addr, "10.0.0.9:15008".parse().unwrap());
                assert_eq!(authority, "10.96.0.10:80");
                assert_eq!(identity.service_account(), "waypoint");
                assert!(via_waypoint);
            }
            r => panic!("{r:?}"),
        }
    }

    #[test]
    fn outside_mesh_is_passthrough_and_empty_service_errors() {
        let client = workload("prod", "client", "n1", "10.0.0.1");
        let mut plain = workload("prod", "legacy", "n2", "10.0.0.7");
        plain.captured = false;
        let st = State::new(
            snapshot(vec![client.clone(), plain], vec![svc()]),
            "n1",
            15008,
        );
        let rr = RoundRobin::default();
        let ext: SocketAddr = "127.0.0.1:9".parse().unwrap();
        assert!(matches!(
            st.route(&client, &Target::Addr(ext), &rr).unwrap(),
            Route::Passthrough { .. }
        ));
        assert!(matches!(
            st.route(&client, &Target::Addr("10.0.0.7:80".parse().unwrap()), &rr)
                .unwrap(),
            Route::Passthrough { .. }
        ));
        let e = st
            .route(
                &client,
                &Target::Addr("10.96.0.10:80".parse().unwrap()),
                &rr,
            )
            .unwrap_err();
        assert!(e.to_string().contains("api.prod.svc.cluster.local"), "{e}");
    }

    #[test]
    fn mtls_mode_port_override() {
        let mut w = workload("prod", "a", "n1", "10.0.0.2");
        assert_eq!(State::mtls_mode(&w, 80), MtlsMode::Permissive);
        w.mtls_mode = MtlsMode::Strict as i32;
        w.port_mtls.insert(9090, MtlsMode::Permissive as i32);
        assert_eq!(State::mtls_mode(&w, 80), MtlsMode::Strict);
        assert_eq!(State::mtls_mode(&w, 9090), MtlsMode::Permissive);
    }
}

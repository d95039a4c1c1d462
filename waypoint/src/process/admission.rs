//! Which HBONE CONNECTs this waypoint serves, decided before the tunnel is accepted.
//!
//! As Istio's waypoint does, it serves only destinations bound to it (the model's one
//! binding rule: [`Snapshot::service_waypoint`] for a service VIP, [`Snapshot::waypoint_of`]
//! for a pod IP), so it never forwards, with its own identity, to a workload that does not
//! use it (a confused deputy laundering the caller's identity). It never serves a CONNECT
//! to itself or to another waypoint, nor one from a peer running as its own identity (a
//! tunnel it opened itself): a forwarding loop cannot form, whatever path leads back.

use std::net::SocketAddr;

use http::StatusCode;
use meshwork_identity::SpiffeId;
use meshwork_model::Snapshot;

use crate::config::WaypointId;
use crate::request::flags;

/// Why a CONNECT is refused.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum Refusal {
    #[error("CONNECT {destination}: that is this waypoint's own address")]
    OwnAddress { destination: SocketAddr },
    #[error("CONNECT {destination}: that is waypoint {workload}'s address")]
    WaypointAddress {
        destination: SocketAddr,
        workload: String,
    },
    #[error("CONNECT from {peer}: the peer is this waypoint's own identity (a forwarding loop)")]
    OwnIdentity { peer: String },
    #[error("CONNECT {destination}: {what} is not bound to waypoint {waypoint}")]
    NotBound {
        destination: SocketAddr,
        what: String,
        waypoint: String,
    },
    #[error("CONNECT {destination}: no service VIP or workload has that address")]
    Unknown { destination: SocketAddr },
}

impl Refusal {
    /// The CONNECT response status: 508 Loop Detected for a hop back into a waypoint, 421
    /// Misdirected Request for a destination this waypoint does not serve.
    pub fn status(&self) -> StatusCode {
        match self {
            Refusal::OwnAddress { .. }
            | Refusal::WaypointAddress { .. }
            | Refusal::OwnIdentity { .. } => StatusCode::LOOP_DETECTED,
            Refusal::NotBound { .. } | Refusal::Unknown { .. } => StatusCode::MISDIRECTED_REQUEST,
        }
    }

    /// The access log's response flag (Envoy's `NR`: no route / no filter chain matched).
    pub fn flag(&self) -> &'static str {
        flags::NO_ROUTE
    }

    /// The access log's `response_code_details`.
    pub fn details(&self) -> &'static str {
        match self {
            Refusal::OwnAddress { .. }
            | Refusal::WaypointAddress { .. }
            | Refusal::OwnIdentity { .. } => "waypoint_loop_detected",
            Refusal::NotBound { .. } | Refusal::Unknown { .. } => "waypoint_destination_not_bound",
        }
    }
}

/// One CONNECT, as the admission sees it.
#[derive(Debug, Clone, Copy)]
pub struct Connect<'a> {
    /// The CONNECT target.
    pub destination: SocketAddr,
    /// The address the tunnel's TCP connection arrived on (this waypoint's pod IP).
    pub local: SocketAddr,
    /// The tunnel's verified peer identity.
    pub peer: &'a SpiffeId,
}

/// This waypoint: its Gateway and the identity it runs as.
#[derive(Debug, Clone, Copy)]
pub struct Me<'a> {
    pub waypoint: &'a WaypointId,
    pub identity: &'a SpiffeId,
}

/// Admits `c` when this waypoint serves its destination: the loop guards first, then the
/// binding rule.
pub fn admit(snap: &Snapshot, me: Me<'_>, c: Connect<'_>) -> Result<(), Refusal> {
    let destination = c.destination;
    if c.peer == me.identity {
        return Err(Refusal::OwnIdentity {
            peer: c.peer.to_string(),
        });
    }
    if destination.ip() == c.local.ip() {
        return Err(Refusal::OwnAddress { destination });
    }
    let bound_here = |gw: Option<&meshwork_model::pb::config::GatewayAddress>| {
        gw.is_some_and(|g| g.is(&me.waypoint.namespace, &me.waypoint.name))
    };
    let not_bound = |what: String| Refusal::NotBound {
        destination,
        what,
        waypoint: format!("{}/{}", me.waypoint.namespace, me.waypoint.name),
    };
    if let Some(s) = snap.service_by_vip(destination.ip()) {
        return if bound_here(snap.service_waypoint(s)) {
            Ok(())
        } else {
            Err(not_bound(format!("service {}/{}", s.namespace, s.hostname)))
        };
    }
    let Some(w) = snap.workload_by_ip(destination.ip()) else {
        return Err(Refusal::Unknown { destination });
    };
    if w.is_waypoint {
        return Err(Refusal::WaypointAddress {
            destination,
            workload: format!("{}/{}", w.namespace, w.name),
        });
    }
    if bound_here(snap.waypoint_of(w)) {
        Ok(())
    } else {
        Err(not_bound(format!("workload {}/{}", w.namespace, w.name)))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::{resource, GatewayAddress, Service, Workload};
    use meshwork_model::Kind;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn gw(name: &str) -> Option<GatewayAddress> {
        Some(GatewayAddress {
            namespace: "shop".into(),
            name: name.into(),
            address: "10.0.0.100".into(),
            hbone_port: 15008,
            identity: format!("spiffe://cluster.local/ns/shop/sa/{name}"),
        })
    }

    fn snapshot() -> Snapshot {
        let mut res = BTreeMap::new();
        let mut put = |key: String, kind| {
            res.insert(key.clone(), Arc::new(make_resource(key, kind)));
        };
        for (name, vip, waypoint) in [
            ("bound", "10.96.0.1", gw("waypoint")),
            ("other", "10.96.0.2", gw("elsewhere")),
            ("none", "10.96.0.3", None),
        ] {
            let hostname = format!("{name}.shop.svc.cluster.local");
            let s = Service {
                name: name.into(),
                namespace: "shop".into(),
                hostname: hostname.clone(),
                vips: vec![vip.into()],
                waypoint,
                ..Default::default()
            };
            put(
                Kind::Service.key("shop", &hostname),
                resource::Kind::Service(s),
            );
        }
        for (name, ip, waypoint, is_waypoint) in [
            ("own", "10.0.0.1", gw("waypoint"), false),
            ("foreign", "10.0.0.2", gw("elsewhere"), false),
            ("plain", "10.0.0.3", None, false),
            ("waypoint-0", "10.0.0.100", None, true),
        ] {
            let w = Workload {
                name: name.into(),
                namespace: "shop".into(),
                addresses: vec![ip.into()],
                waypoint,
                is_waypoint,
                ..Default::default()
            };
            put(
                Kind::Workload.key("shop", name),
                resource::Kind::Workload(w),
            );
        }
        Snapshot::new(1, res)
    }

    fn waypoint() -> WaypointId {
        WaypointId {
            namespace: "shop".into(),
            name: "waypoint".into(),
        }
    }

    fn identity() -> SpiffeId {
        SpiffeId::new("cluster.local", "shop", "waypoint").unwrap()
    }

    fn me<'a>(waypoint: &'a WaypointId, identity: &'a SpiffeId) -> Me<'a> {
        Me { waypoint, identity }
    }

    fn check(dest: &str, peer: &SpiffeId) -> Result<(), Refusal> {
        admit(
            &snapshot(),
            me(&waypoint(), &identity()),
            Connect {
                destination: dest.parse().unwrap(),
                local: "10.0.0.100:15008".parse().unwrap(),
                peer,
            },
        )
    }

    #[test]
    fn serves_only_what_is_bound_to_it_and_never_itself() {
        let client = SpiffeId::new("cluster.local", "shop", "web").unwrap();
        assert_eq!(check("10.96.0.1:80", &client), Ok(()));
        assert_eq!(check("10.0.0.1:8080", &client), Ok(()));
        for (dest, status) in [
            ("10.96.0.2:80", StatusCode::MISDIRECTED_REQUEST),
            ("10.96.0.3:80", StatusCode::MISDIRECTED_REQUEST),
            ("10.0.0.2:8080", StatusCode::MISDIRECTED_REQUEST),
            ("10.0.0.3:8080", StatusCode::MISDIRECTED_REQUEST),
            ("192.0.2.1:80", StatusCode::MISDIRECTED_REQUEST),
            ("10.0.0.100:15008", StatusCode::LOOP_DETECTED),
            ("10.0.0.100:80", StatusCode::LOOP_DETECTED),
        ] {
            let r = check(dest, &client).unwrap_err();
            assert_eq!(r.status(), status, "{dest}: {r}");
            assert_eq!(r.flag(), "NR");
        }
        // A tunnel from this waypoint's own identity is a loop even to a bound destination.
        let r = check("10.96.0.1:80", &identity()).unwrap_err();
        assert_eq!(r.status(), StatusCode::LOOP_DETECTED, "{r}");
    }

    #[test]
    fn another_waypoints_pod_is_a_loop() {
        let client = SpiffeId::new("cluster.local", "shop", "web").unwrap();
        let r = admit(
            &snapshot(),
            me(&waypoint(), &identity()),
            Connect {
                destination: "10.0.0.100:15008".parse().unwrap(),
                local: "10.0.0.101:15008".parse().unwrap(),
                peer: &client,
            },
        )
        .unwrap_err();
        assert!(matches!(r, Refusal::WaypointAddress { .. }), "{r}");
        assert_eq!(r.details(), "waypoint_loop_detected");
    }
}

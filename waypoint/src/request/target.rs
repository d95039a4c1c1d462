//! Which service a request is for, and on which port.
//!
//! A connection sent to an address (an HBONE CONNECT) is for:
//! - the service whose VIP it was sent to, when that service is bound to this waypoint;
//! - else the workload whose pod IP it was sent to, when that workload is bound to this
//!   waypoint, as a synthetic service standing for that one workload;
//! - else nothing: the Host header never picks another destination (the CONNECT's
//!   admission refuses these first; this is the second line).
//!
//! A connection without an address (the plaintext listener) is for the service the Host
//! header names. Host names are case-insensitive, and the client's namespace resolves
//! short names.

use std::borrow::Cow;
use std::sync::Arc;

use meshwork_model::pb::config as pb;
use meshwork_model::Snapshot;

use crate::config::WaypointId;
use crate::request::conn::ConnContext;
use crate::upstream::cluster;
use crate::upstream::endpoint::Endpoint;

/// The service of a request.
#[derive(Debug)]
pub struct Target<'a> {
    pub service: Cow<'a, pb::Service>,
    pub port: u16,
    /// Set when the request was addressed to this workload directly (pod IP).
    pub direct: Option<Arc<Endpoint>>,
}

/// The namespace of the client's SPIFFE identity (`""` when there is none).
pub fn source_namespace(conn: &ConnContext) -> &str {
    conn.source_identity
        .as_deref()
        .and_then(|id| id.split("/ns/").nth(1))
        .and_then(|rest| rest.split('/').next())
        .unwrap_or("")
}

/// The target of a request to `host` (and `host_port`, from the Host header) on `conn`
/// at `waypoint`; `None` when no service matches.
pub fn resolve<'a>(
    snap: &'a Snapshot,
    waypoint: &WaypointId,
    conn: &ConnContext,
    host: &str,
    host_port: Option<u16>,
) -> Option<Target<'a>> {
    let bound = |gw: Option<&pb::GatewayAddress>| {
        gw.is_some_and(|g| g.is(&waypoint.namespace, &waypoint.name))
    };
    let mut direct = None;
    let service = match conn.destination {
        Some(d) => match snap.service_by_vip(d.ip()) {
            Some(s) if bound(snap.service_waypoint(s)) => Cow::Borrowed(s),
            Some(_) => return None,
            None => {
                let w = snap
                    .workload_by_ip(d.ip())
                    .filter(|w| !w.is_waypoint && bound(snap.waypoint_of(w)))?;
                direct = Some(Arc::new(cluster::workload_endpoint(snap, w, d)?));
                Cow::Owned(pb::Service {
                    name: format!("pod:{}", w.name),
                    namespace: w.namespace.clone(),
                    hostname: d.ip().to_string(),
                    selector: w.labels.clone(),
                    ports: vec![pb::ServicePort {
                        port: u32::from(d.port()),
                        target_port: u32::from(d.port()),
                        ..Default::default()
                    }],
                    ..Default::default()
                })
            }
        },
        None => {
            Cow::Borrowed(snap.service_by_host(&host.to_ascii_lowercase(), source_namespace(conn))?)
        }
    };
    // The VIP's port, else the Host header's, else the service's only port, else 80.
    let port = conn
        .destination
        .filter(|d| snap.service_by_vip(d.ip()).is_some())
        .map(|d| d.port())
        .or(host_port)
        .or_else(|| (service.ports.len() == 1).then(|| service.ports[0].port as u16))
        .unwrap_or(80);
    Some(Target {
        service,
        port,
        direct,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn conn(identity: Option<&str>) -> ConnContext {
        ConnContext {
            source_identity: identity.map(String::from),
            source: None,
            destination: None,
        }
    }

    #[test]
    fn the_source_namespace_comes_from_the_spiffe_identity() {
        let c = conn(Some("spiffe://cluster.local/ns/shop/sa/web"));
        assert_eq!(source_namespace(&c), "shop");
        assert_eq!(source_namespace(&conn(None)), "");
    }

    #[test]
    fn no_service_no_target() {
        let snap = Snapshot::default();
        let wp = WaypointId::default();
        assert!(resolve(
            &snap,
            &wp,
            &conn(None),
            "orders.shop.svc.cluster.local",
            None
        )
        .is_none());
    }
}

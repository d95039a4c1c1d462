//! Which service a request is for, and on which port.
//!
//! In order:
//! - the service whose VIP the connection was sent to;
//! - else the workload whose pod IP it was sent to, as a synthetic service standing for
//!   that one workload (an HBONE CONNECT to a pod that uses this waypoint);
//! - else the service the Host header names. Host names are case-insensitive, and the
//!   client's namespace resolves short names.

use std::borrow::Cow;
use std::sync::Arc;

use meshwork_model::pb::config as pb;
use meshwork_model::Snapshot;

use crate::cluster;
use crate::endpoint::Endpoint;
use crate::service::ConnContext;

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

/// The target of a request to `host` (and `host_port`, from the Host header) on `conn`;
/// `None` when no service matches.
pub fn resolve<'a>(
    snap: &'a Snapshot,
    conn: &ConnContext,
    host: &str,
    host_port: Option<u16>,
) -> Option<Target<'a>> {
    let by_vip = conn
        .destination
        .and_then(|d| snap.service_by_vip(d.ip()))
        .map(Cow::Borrowed);
    let mut direct = None;
    let service = by_vip.or_else(|| {
        let d = conn.destination?;
        let w = snap.workload_by_ip(d.ip())?;
        direct = Some(Arc::new(cluster::workload_endpoint(snap, w, d)?));
        Some(Cow::Owned(pb::Service {
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
        }))
    });
    let service = service.or_else(|| {
        snap.service_by_host(&host.to_ascii_lowercase(), source_namespace(conn))
            .map(Cow::Borrowed)
    })?;
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
        assert!(resolve(&snap, &conn(None), "orders.shop.svc.cluster.local", None).is_none());
    }
}

//! The Istio labels that say who talks to whom, shared by the ztunnel's `istio_tcp_*` and
//! the waypoint's `istio_request*` series (Istio's common traffic labels), so dashboards,
//! Kiali-style graphs and Flagger's queries read both proxies alike.

use prometheus_client::encoding::EncodeLabelSet;

use meshwork_model::pb::config::Service;
use meshwork_model::view::{PeerName, UNKNOWN};

/// Source, destination and service labels of one series.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct PeerLabels {
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
}

/// One side of a connection or request, as the proxy knows it.
#[derive(Debug, Clone, Copy, Default)]
pub struct Peer<'a> {
    pub name: Option<&'a PeerName>,
    /// The SPIFFE identity, when the side proved one (mTLS) or is known to have it.
    pub principal: Option<&'a str>,
}

impl PeerLabels {
    /// The label names, in exposition order.
    pub const NAMES: [&'static str; 13] = [
        "source_workload",
        "source_workload_namespace",
        "source_principal",
        "source_app",
        "source_version",
        "destination_workload",
        "destination_workload_namespace",
        "destination_principal",
        "destination_app",
        "destination_version",
        "destination_service",
        "destination_service_name",
        "destination_service_namespace",
    ];

    /// Unknown peers and services are `unknown`, as Istio prints them.
    pub fn new(source: Peer<'_>, destination: Peer<'_>, service: Option<&Service>) -> PeerLabels {
        let unknown = PeerName::unknown();
        let s = source.name.unwrap_or(&unknown);
        let d = destination.name.unwrap_or(&unknown);
        let principal =
            |p: Option<&str>| p.filter(|p| !p.is_empty()).unwrap_or(UNKNOWN).to_string();
        let svc = |f: fn(&Service) -> &String| {
            service
                .map(f)
                .filter(|v| !v.is_empty())
                .map_or_else(|| UNKNOWN.to_string(), Clone::clone)
        };
        PeerLabels {
            source_workload: s.workload.clone(),
            source_workload_namespace: s.namespace.clone(),
            source_principal: principal(source.principal),
            source_app: s.app.clone(),
            source_version: s.version.clone(),
            destination_workload: d.workload.clone(),
            destination_workload_namespace: d.namespace.clone(),
            destination_principal: principal(destination.principal),
            destination_app: d.app.clone(),
            destination_version: d.version.clone(),
            destination_service: svc(|s| &s.hostname),
            destination_service_name: svc(|s| &s.name),
            destination_service_namespace: svc(|s| &s.namespace),
        }
    }

    /// The label called `name` (Telemetry `tagOverrides` write them by name).
    pub fn field_mut(&mut self, name: &str) -> Option<&mut String> {
        Some(match name {
            "source_workload" => &mut self.source_workload,
            "source_workload_namespace" => &mut self.source_workload_namespace,
            "source_principal" => &mut self.source_principal,
            "source_app" => &mut self.source_app,
            "source_version" => &mut self.source_version,
            "destination_workload" => &mut self.destination_workload,
            "destination_workload_namespace" => &mut self.destination_workload_namespace,
            "destination_principal" => &mut self.destination_principal,
            "destination_app" => &mut self.destination_app,
            "destination_version" => &mut self.destination_version,
            "destination_service" => &mut self.destination_service,
            "destination_service_name" => &mut self.destination_service_name,
            "destination_service_namespace" => &mut self.destination_service_namespace,
            _ => return None,
        })
    }
}

/// Istio's `connection_security_policy`.
pub fn security_policy(mtls: bool) -> &'static str {
    if mtls {
        "mutual_tls"
    } else {
        "none"
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::pb::config::Workload;

    #[test]
    fn names_both_sides_and_the_service() {
        let w = Workload {
            name: "cart-7f9c-x2".into(),
            workload_name: "cart".into(),
            namespace: "shop".into(),
            canonical_name: "cart".into(),
            canonical_revision: "v2".into(),
            ..Default::default()
        };
        let svc = Service {
            name: "cart".into(),
            namespace: "shop".into(),
            hostname: "cart.shop.svc.cluster.local".into(),
            ..Default::default()
        };
        let dst = PeerName::of(&w);
        let l = PeerLabels::new(
            Peer::default(),
            Peer {
                name: Some(&dst),
                principal: Some("spiffe://td/ns/shop/sa/cart"),
            },
            Some(&svc),
        );
        assert_eq!(l.source_workload, "unknown");
        assert_eq!(l.source_principal, "unknown");
        assert_eq!(l.destination_workload, "cart");
        assert_eq!(l.destination_version, "v2");
        assert_eq!(l.destination_principal, "spiffe://td/ns/shop/sa/cart");
        assert_eq!(
            (
                l.destination_service.as_str(),
                l.destination_service_name.as_str(),
                l.destination_service_namespace.as_str()
            ),
            ("cart.shop.svc.cluster.local", "cart", "shop")
        );
    }

    #[test]
    fn every_name_is_a_field() {
        let mut l = PeerLabels::default();
        for n in PeerLabels::NAMES {
            *l.field_mut(n).unwrap() = n.to_string();
        }
        assert_eq!(
            l.destination_service_namespace,
            "destination_service_namespace"
        );
        assert!(l.field_mut("response_code").is_none());
    }
}

//! The compact remote view of a workload: what a ztunnel needs to know about a pod on
//! another node (see `Workload.compact` in `proto/`).
//!
//! A ztunnel's data path looks at a remote workload to route to it (addresses, node,
//! captured, waypoint, service membership and target ports, health), to know whom it
//! talks to (the SPIFFE identity: trust domain, namespace, service account) and to name
//! it in metrics and access logs (name, workload name, namespace, canonical name and revision, as
//! Istio's `destination_app` / `destination_version`). Labels, policies, telemetry and
//! the PeerAuthentication mode are only enforced on the workload's own node, so they are
//! left out: the view is a fraction of the workload's size, and a change to them does not
//! reach every ztunnel of the mesh.

use crate::pb::config::Workload;

/// What metrics call a workload's app when its source gave no canonical name: the
/// `app.kubernetes.io/name` or `app` label, else the workload's name.
pub fn canonical_name(w: &Workload) -> &str {
    if !w.canonical_name.is_empty() {
        return &w.canonical_name;
    }
    w.labels
        .get("app.kubernetes.io/name")
        .or_else(|| w.labels.get("app"))
        .unwrap_or(&w.name)
}

/// What metrics call a workload's version when its source gave no canonical revision:
/// the `app.kubernetes.io/version` or `version` label, else `latest`.
pub fn canonical_revision(w: &Workload) -> &str {
    if !w.canonical_revision.is_empty() {
        return &w.canonical_revision;
    }
    w.labels
        .get("app.kubernetes.io/version")
        .or_else(|| w.labels.get("version"))
        .map(String::as_str)
        .unwrap_or("latest")
}

/// What metrics call the workload a pod belongs to (Istio's `source_workload` /
/// `destination_workload`): its `workload_name`, else (a source that predates the field)
/// the pod's name.
pub fn workload_name(w: &Workload) -> &str {
    if w.workload_name.is_empty() {
        &w.name
    } else {
        &w.workload_name
    }
}

/// How metrics, access logs and traces name a workload: Istio's `*_workload`,
/// `*_workload_namespace`, `*_app` and `*_version`. One rule for both proxies, so that a
/// ztunnel's `istio_tcp_*` series and a waypoint's `istio_requests_*` series name the
/// same pod the same way (the Deployment, its canonical name and revision).
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PeerName {
    pub workload: String,
    pub namespace: String,
    pub app: String,
    pub version: String,
}

impl PeerName {
    pub fn of(w: &Workload) -> PeerName {
        PeerName {
            workload: or_unknown(workload_name(w)),
            namespace: or_unknown(&w.namespace),
            app: or_unknown(canonical_name(w)),
            version: or_unknown(canonical_revision(w)),
        }
    }

    /// A peer the proxy does not know (outside the mesh, or not in its config).
    pub fn unknown() -> PeerName {
        PeerName {
            workload: UNKNOWN.into(),
            namespace: UNKNOWN.into(),
            app: UNKNOWN.into(),
            version: UNKNOWN.into(),
        }
    }
}

/// What metrics print for a name nobody gave.
pub const UNKNOWN: &str = "unknown";

/// A derived name that is empty is reported as `unknown` (what metrics print for it), so
/// that the view never leaves the field empty for a reader to derive again from labels it
/// does not have.
fn or_unknown(s: &str) -> String {
    if s.is_empty() {
        UNKNOWN.to_string()
    } else {
        s.to_string()
    }
}

/// The compact view of `w` for ztunnels of other nodes.
pub fn remote_workload(w: &Workload) -> Workload {
    Workload {
        name: w.name.clone(),
        workload_name: w.workload_name.clone(),
        namespace: w.namespace.clone(),
        service_account: w.service_account.clone(),
        trust_domain: w.trust_domain.clone(),
        node: w.node.clone(),
        addresses: w.addresses.clone(),
        captured: w.captured,
        waypoint: w.waypoint.clone(),
        services: w.services.clone(),
        canonical_name: or_unknown(canonical_name(w)),
        canonical_revision: or_unknown(canonical_revision(w)),
        healthy: w.healthy,
        is_waypoint: w.is_waypoint,
        compact: true,
        ..Default::default()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::config::{GatewayAddress, MtlsMode, ServicePorts};

    fn full() -> Workload {
        Workload {
            uid: "Kubernetes//Pod/shop/cart-1".into(),
            name: "cart-1".into(),
            namespace: "shop".into(),
            service_account: "cart".into(),
            trust_domain: "example.org".into(),
            node: "node-7".into(),
            addresses: vec!["10.1.2.3".into(), "fd00::3".into()],
            labels: [
                ("app".to_string(), "cart".to_string()),
                ("version".to_string(), "v2".to_string()),
                ("team".to_string(), "checkout".to_string()),
            ]
            .into(),
            captured: true,
            waypoint: Some(GatewayAddress {
                namespace: "shop".into(),
                name: "waypoint".into(),
                address: "10.1.0.9".into(),
                hbone_port: 15008,
                identity: "spiffe://example.org/ns/shop/sa/waypoint".into(),
            }),
            mtls_mode: MtlsMode::Strict as i32,
            port_mtls: [(9090, MtlsMode::Permissive as i32)].into(),
            mtls_source: "shop/strict".into(),
            port_mtls_source: "shop/cart-ports".into(),
            authorization_policies: vec!["shop/allow-frontend".into()],
            services: vec![ServicePorts {
                service: "shop/cart.shop.svc.cluster.local".into(),
                ports: [(80, 8080)].into(),
            }],
            canonical_name: String::new(),
            canonical_revision: String::new(),
            healthy: true,
            is_waypoint: false,
            telemetry: vec!["telemetry/shop/tracing".into()],
            compact: false,
            workload_name: "cart".into(),
        }
    }

    #[test]
    fn peer_name_is_the_workload_and_its_canonical_name() {
        let w = full();
        let n = PeerName::of(&w);
        assert_eq!(
            (
                n.workload.as_str(),
                n.namespace.as_str(),
                n.app.as_str(),
                n.version.as_str()
            ),
            ("cart", "shop", "cart", "v2")
        );
        // The compact view names it the same way: it keeps what the rule reads.
        assert_eq!(PeerName::of(&remote_workload(&w)), n);
        let bare = Workload {
            name: "job-7".into(),
            ..Default::default()
        };
        let n = PeerName::of(&bare);
        assert_eq!(
            (
                n.workload.as_str(),
                n.namespace.as_str(),
                n.app.as_str(),
                n.version.as_str()
            ),
            ("job-7", "unknown", "job-7", "latest")
        );
    }

    #[test]
    fn keeps_what_the_data_path_uses_and_drops_the_rest() {
        let w = full();
        let c = remote_workload(&w);
        assert!(c.compact);
        assert_eq!(
            (&c.name, &c.namespace, &c.service_account, &c.trust_domain),
            (&w.name, &w.namespace, &w.service_account, &w.trust_domain)
        );
        assert_eq!((&c.node, &c.addresses), (&w.node, &w.addresses));
        assert_eq!(workload_name(&c), "cart");
        assert_eq!((&c.waypoint, &c.services), (&w.waypoint, &w.services));
        assert!(c.captured && c.healthy && !c.is_waypoint);
        // Metrics' app and version, derived here from the labels that are left out.
        assert_eq!(
            (c.canonical_name.as_str(), c.canonical_revision.as_str()),
            ("cart", "v2")
        );
        assert_eq!(canonical_name(&c), canonical_name(&w));
        assert_eq!(canonical_revision(&c), canonical_revision(&w));
        assert!(c.uid.is_empty() && c.labels.is_empty() && c.mtls_source.is_empty());
        assert!(c.authorization_policies.is_empty() && c.telemetry.is_empty());
        assert!(c.port_mtls.is_empty());
        assert!(c.port_mtls_source.is_empty());
        assert_eq!(c.mtls_mode, MtlsMode::MtlsUnset as i32);
    }

    #[test]
    fn canonical_fields_follow_the_source_then_labels_then_defaults() {
        let mut w = full();
        w.canonical_name = "cart-svc".into();
        w.canonical_revision = "2024-1".into();
        let c = remote_workload(&w);
        assert_eq!(
            (c.canonical_name.as_str(), c.canonical_revision.as_str()),
            ("cart-svc", "2024-1")
        );
        w.canonical_name.clear();
        w.canonical_revision.clear();
        w.labels.clear();
        let c = remote_workload(&w);
        assert_eq!(
            (c.canonical_name.as_str(), c.canonical_revision.as_str()),
            ("cart-1", "latest")
        );
        w.labels.insert("app".into(), String::new());
        assert_eq!(remote_workload(&w).canonical_name, "unknown");
        w.workload_name.clear();
        assert_eq!(workload_name(&remote_workload(&w)), "cart-1");
    }

    #[test]
    fn fields_outside_the_view_do_not_change_it() {
        let w = full();
        let mut other = full();
        other.labels.insert("team".into(), "payments".into());
        other.uid = "another".into();
        other.authorization_policies.clear();
        other.telemetry.push("telemetry/shop/more".into());
        other.mtls_mode = MtlsMode::Permissive as i32;
        other.mtls_source.clear();
        assert_eq!(remote_workload(&w), remote_workload(&other));
        other.addresses.pop();
        assert_ne!(remote_workload(&w), remote_workload(&other));
    }
}

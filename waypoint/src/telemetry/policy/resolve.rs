//! Which Telemetry resources apply to traffic for a service through a waypoint, least
//! specific first: root namespace, the destination's namespace, selector-scoped resources
//! (the translator lists them per workload in `Workload.telemetry`, most specific last),
//! then `targetRefs` to the waypoint Gateway and to the Service. Shared by tracing
//! ([`crate::telemetry::tracing::sampler`]) and metrics/access logging ([`super::TelemetryPolicy`]).

use meshwork_model::pb::config::{resource, PolicyScope, Service, TelemetryConfig, Workload};
use meshwork_model::snapshot::Snapshot;

fn telemetry<'a>(snap: &'a Snapshot, key: &str) -> Option<&'a TelemetryConfig> {
    match snap.get(key).and_then(|r| r.kind.as_ref()) {
        Some(resource::Kind::Telemetry(t)) => Some(t),
        _ => None,
    }
}

/// A workload behind `service` (or the pod itself when it is addressed by IP), whose
/// `telemetry` list the translator computed.
fn backing_workload<'a>(snap: &'a Snapshot, service: &Service) -> Option<&'a Workload> {
    if let Ok(ip) = service.hostname.parse() {
        if let Some(w) = snap.workload_by_ip(ip) {
            return Some(w);
        }
    }
    let want = format!("{}/{}", service.namespace, service.hostname);
    snap.workloads()
        .find(|w| w.services.iter().any(|s| s.service == want))
}

/// The waypoint Gateway traffic goes through: `(namespace, name)`.
pub type Gateway<'a> = (&'a str, &'a str);

/// Telemetry resources attached by `targetRefs` to the waypoint Gateway, then to the
/// Service (the more specific), each group by name.
fn attached<'a>(
    snap: &'a Snapshot,
    waypoint: Gateway<'_>,
    service: &Service,
) -> Vec<&'a TelemetryConfig> {
    let targets = |kind: &str, ns: &str, name: &str| {
        let mut v: Vec<&TelemetryConfig> = snap
            .telemetries()
            .filter(|t| t.scope == PolicyScope::TargetRef as i32)
            .filter(|t| {
                t.target_refs.iter().any(|r| {
                    r.kind == kind
                        && r.name == name
                        && (if r.namespace.is_empty() {
                            &t.namespace
                        } else {
                            &r.namespace
                        }) == ns
                })
            })
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v
    };
    let mut out = targets("Gateway", waypoint.0, waypoint.1);
    out.extend(targets("Service", &service.namespace, &service.name));
    out
}

/// The Telemetry resources that apply to traffic for `service` through `waypoint`, least
/// specific first.
pub fn applicable<'a>(
    snap: &'a Snapshot,
    waypoint: Gateway<'_>,
    service: &Service,
) -> Vec<&'a TelemetryConfig> {
    let mut out = levels(snap, service);
    out.extend(attached(snap, waypoint, service));
    out
}

/// Root namespace, namespace and selector levels.
fn levels<'a>(snap: &'a Snapshot, service: &Service) -> Vec<&'a TelemetryConfig> {
    if let Some(w) = backing_workload(snap, service) {
        return w
            .telemetry
            .iter()
            .filter_map(|k| telemetry(snap, k))
            .collect();
    }
    // No workload (e.g. only a VIP): root namespace and namespace levels, by name.
    let root = snap
        .mesh()
        .map(|m| m.root_namespace.as_str())
        .filter(|r| !r.is_empty())
        .unwrap_or("istio-system");
    let level = |ns: &str, scope: PolicyScope| {
        let mut v: Vec<&TelemetryConfig> = snap
            .telemetries()
            .filter(|t| t.namespace == ns && t.scope == scope as i32)
            .collect();
        v.sort_by(|a, b| a.name.cmp(&b.name));
        v.into_iter().next()
    };
    let mut out: Vec<&TelemetryConfig> = level(root, PolicyScope::Global).into_iter().collect();
    if service.namespace != root {
        out.extend(level(&service.namespace, PolicyScope::Namespace));
    }
    out
}

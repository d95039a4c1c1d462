//! Pods → `Workload`, Services → `Service`, and waypoint resolution.

use std::collections::BTreeMap;

use meshwork_api::common::label_selector_matches;
use meshwork_api::k8s_openapi::api::core::v1::{Pod, Service as K8sService};
use meshwork_api::k8s_openapi::apimachinery::pkg::util::intstr::IntOrString;
use meshwork_api::security::MtlsMode as ApiMode;
use meshwork_api::{MeshConfig, Object, Spec};
use meshwork_model::pb::config::{
    GatewayAddress, MtlsMode, Service, ServicePort, ServicePorts, Workload,
};

use super::index::{age_order, Indexes};

pub const CLUSTER_DOMAIN: &str = "cluster.local";
pub const HBONE_PORT: u32 = 15008;
pub const LABEL_DATAPLANE_MODE: &str = "istio.io/dataplane-mode";
pub const LABEL_USE_WAYPOINT: &str = "istio.io/use-waypoint";
pub const LABEL_USE_WAYPOINT_NS: &str = "istio.io/use-waypoint-namespace";
pub const LABEL_GATEWAY_NAME: &str = "gateway.networking.k8s.io/gateway-name";

/// `spiffe://<td>/ns/<ns>/sa/<sa>`.
pub fn spiffe_id(trust_domain: &str, ns: &str, sa: &str) -> String {
    format!("spiffe://{trust_domain}/ns/{ns}/sa/{sa}")
}

/// `<name>.<ns>.svc.cluster.local`.
pub fn service_fqdn(name: &str, ns: &str) -> String {
    format!("{name}.{ns}.svc.{CLUSTER_DOMAIN}")
}

pub fn pod_of(obj: &Object) -> Option<&Pod> {
    match &obj.spec {
        Spec::Pod(p) => Some(p),
        _ => None,
    }
}

pub fn service_of(obj: &Object) -> Option<&K8sService> {
    match &obj.spec {
        Spec::Service(s) => Some(s),
        _ => None,
    }
}

/// Pod IPs if the pod is running (has an IP and is not Succeeded/Failed).
pub fn pod_addresses(pod: &Pod) -> Vec<String> {
    let Some(status) = &pod.status else {
        return Vec::new();
    };
    if matches!(status.phase.as_deref(), Some("Succeeded") | Some("Failed")) {
        return Vec::new();
    }
    let mut ips: Vec<String> = status
        .pod_ips
        .iter()
        .flatten()
        .map(|p| p.ip.clone())
        .filter(|ip| !ip.is_empty())
        .collect();
    if let Some(ip) = status.pod_ip.as_ref().filter(|ip| !ip.is_empty()) {
        if !ips.contains(ip) {
            ips.insert(0, ip.clone());
        }
    }
    ips
}

pub fn pod_service_account(pod: &Pod) -> String {
    pod.spec
        .as_ref()
        .and_then(|s| {
            s.service_account_name
                .clone()
                .or_else(|| s.service_account.clone())
        })
        .filter(|s| !s.is_empty())
        .unwrap_or_else(|| "default".into())
}

/// The waypoint a pod or service asks for: (namespace, gateway name), or None.
pub fn waypoint_ref(
    own_labels: &BTreeMap<String, String>,
    own_ns: &str,
    ns_labels: Option<&BTreeMap<String, String>>,
) -> Option<(String, String)> {
    let from = if own_labels.contains_key(LABEL_USE_WAYPOINT) {
        own_labels
    } else {
        ns_labels.filter(|l| l.contains_key(LABEL_USE_WAYPOINT))?
    };
    let name = from.get(LABEL_USE_WAYPOINT)?;
    if name.is_empty() || name == "none" {
        return None;
    }
    let ns = from
        .get(LABEL_USE_WAYPOINT_NS)
        .filter(|n| !n.is_empty())
        .cloned()
        .unwrap_or_else(|| own_ns.to_string());
    Some((ns, name.clone()))
}

/// Address of the waypoint `(ns, name)`: its first (by name) running pod labelled
/// `gateway.networking.k8s.io/gateway-name=<name>` in that namespace.
pub fn waypoint_address(
    idx: &Indexes,
    mesh: &MeshConfig,
    (ns, name): &(String, String),
) -> Option<GatewayAddress> {
    let pods = idx.waypoint_pods.get(&(ns.clone(), name.clone()))?;
    pods.keys().find_map(|pod_name| {
        let obj = idx.pods.get(ns, pod_name)?;
        let pod = pod_of(obj)?;
        let address = pod_addresses(pod).into_iter().next()?;
        Some(GatewayAddress {
            namespace: ns.clone(),
            name: name.clone(),
            address,
            hbone_port: HBONE_PORT,
            identity: spiffe_id(&mesh.trust_domain, ns, &pod_service_account(pod)),
        })
    })
}

fn mode(m: ApiMode) -> MtlsMode {
    match m {
        ApiMode::Unset => MtlsMode::MtlsUnset,
        ApiMode::Disable => MtlsMode::Disable,
        ApiMode::Permissive => MtlsMode::Permissive,
        ApiMode::Strict => MtlsMode::Strict,
    }
}

fn selector_of(obj: &Object) -> Option<&BTreeMap<String, String>> {
    match &obj.spec {
        Spec::PeerAuthentication(p) => p.selector.as_ref().map(|s| &s.match_labels),
        Spec::AuthorizationPolicy(p) => p.selector.as_ref().map(|s| &s.match_labels),
        Spec::Telemetry(t) => t.selector.as_ref().map(|s| &s.match_labels),
        _ => None,
    }
}

fn has_target_refs(obj: &Object) -> bool {
    match &obj.spec {
        Spec::AuthorizationPolicy(p) => p.target_ref.is_some() || !p.target_refs.is_empty(),
        Spec::Telemetry(t) => t.target_ref.is_some() || !t.target_refs.is_empty(),
        _ => false,
    }
}

/// Oldest object in `iter` (Istio's conflict rule).
fn oldest<'a>(iter: impl Iterator<Item = &'a std::sync::Arc<Object>>) -> Option<&'a Object> {
    iter.map(|o| o.as_ref()).min_by(|a, b| age_order(a, b))
}

/// Effective PeerAuthentication for a pod: (mode, per-port modes, deciding policy).
fn peer_authentication(
    idx: &Indexes,
    mesh: &MeshConfig,
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> (MtlsMode, BTreeMap<u32, i32>, String, String) {
    let workload = oldest(
        idx.peer_authentications
            .in_ns(ns)
            .filter(|o| selector_of(o).is_some_and(|s| label_selector_matches(s, labels))),
    );
    let namespace = oldest(
        idx.peer_authentications
            .in_ns(ns)
            .filter(|o| selector_of(o).is_none()),
    );
    let root = if ns == mesh.root_namespace {
        None
    } else {
        oldest(
            idx.peer_authentications
                .in_ns(&mesh.root_namespace)
                .filter(|o| selector_of(o).is_none()),
        )
    };
    let mut effective = (MtlsMode::Permissive, String::new());
    for level in [workload, namespace, root].into_iter().flatten() {
        let Spec::PeerAuthentication(pa) = &level.spec else {
            continue;
        };
        let m = mode(pa.mtls.as_ref().map(|m| m.mode).unwrap_or_default());
        if m != MtlsMode::MtlsUnset {
            effective = (m, level.ns_name());
            break;
        }
    }
    let mut ports = BTreeMap::new();
    let mut ports_source = String::new();
    if let Some(w) = workload {
        if let Spec::PeerAuthentication(pa) = &w.spec {
            for (port, m) in &pa.port_level_mtls {
                // An UNSET port inherits the workload's effective mode, decided (and
                // named) above: only explicit port modes are listed.
                let m = mode(m.mode);
                if m != MtlsMode::MtlsUnset {
                    ports.insert(port.0, m as i32);
                }
            }
            if !ports.is_empty() {
                ports_source = w.ns_name();
            }
        }
    }
    (effective.0, ports, effective.1, ports_source)
}

fn service_ports_for(pod: &Pod, svc_ns: &str, svc_name: &str, svc: &K8sService) -> ServicePorts {
    let container_ports: Vec<(Option<&str>, i32)> = pod
        .spec
        .iter()
        .flat_map(|s| s.containers.iter())
        .flat_map(|c| c.ports.iter().flatten())
        .map(|p| (p.name.as_deref(), p.container_port))
        .collect();
    let mut ports = BTreeMap::new();
    for sp in svc.spec.iter().flat_map(|s| s.ports.iter().flatten()) {
        let Ok(port) = u32::try_from(sp.port) else {
            continue;
        };
        let target = match &sp.target_port {
            None => Some(port),
            Some(IntOrString::Int(0)) => Some(port),
            Some(IntOrString::Int(n)) => u32::try_from(*n).ok(),
            Some(IntOrString::String(name)) => match name.parse::<u32>() {
                Ok(n) => Some(n),
                Err(_) => container_ports
                    .iter()
                    .find(|(n, _)| *n == Some(name.as_str()))
                    .and_then(|(_, p)| u32::try_from(*p).ok()),
            },
        };
        if let Some(t) = target {
            ports.insert(port, t);
        }
    }
    ServicePorts {
        service: format!("{svc_ns}/{}", service_fqdn(svc_name, svc_ns)),
        ports,
    }
}

/// `app`-style canonical name and revision, as Istio derives them.
fn canonical(labels: &BTreeMap<String, String>, pod_name: &str) -> (String, String) {
    let pick = |keys: &[&str]| keys.iter().find_map(|k| labels.get(*k).cloned());
    let name = pick(&[
        "service.istio.io/canonical-name",
        "app.kubernetes.io/name",
        "app",
    ])
    .unwrap_or_else(|| pod_name.to_string());
    let rev = pick(&[
        "service.istio.io/canonical-revision",
        "app.kubernetes.io/version",
        "version",
    ])
    .unwrap_or_else(|| "latest".into());
    (name, rev)
}

/// The workload a pod belongs to, as Istio derives it for `source_workload` /
/// `destination_workload` (from the pod's controller): a ReplicaSet's pods are named
/// after their Deployment (the ReplicaSet name without `-<pod-template-hash>`), a Job's
/// after its CronJob when the Job name ends in the CronJob's `-<scheduled minute>`, the
/// pods of any other controller (StatefulSet, DaemonSet, Job) after it, and a pod that
/// was not generated after itself.
///
/// The controlling `ownerReference` is read when the object carries it (manifests of a
/// directory); the Kubernetes source keeps only `metadata.generateName` of a pod, which
/// is the controller's name and `-`, so that the derivation ends the same.
pub fn workload_name(pod: &Pod, pod_name: &str, labels: &BTreeMap<String, String>) -> String {
    let meta = &pod.metadata;
    let label = |k: &str| labels.get(k).filter(|v| !v.is_empty());
    let controller = meta
        .owner_references
        .iter()
        .flatten()
        .find(|r| r.controller == Some(true))
        .map(|r| (r.kind.as_str(), r.name.clone()));
    let (kind, name) = match controller {
        Some(c) => c,
        None => match meta
            .generate_name
            .as_deref()
            .map(|g| g.trim_end_matches('-'))
        {
            Some(g) if !g.is_empty() => {
                let kind = if label("pod-template-hash").is_some() {
                    "ReplicaSet"
                } else if label("batch.kubernetes.io/job-name")
                    .or_else(|| label("job-name"))
                    .is_some()
                {
                    "Job"
                } else {
                    ""
                };
                (kind, g.to_string())
            }
            _ => return pod_name.to_string(),
        },
    };
    match kind {
        "ReplicaSet" => match label("pod-template-hash") {
            Some(h) => name
                .strip_suffix(h.as_str())
                .and_then(|n| n.strip_suffix('-'))
                .filter(|n| !n.is_empty())
                .map(str::to_string)
                .unwrap_or(name),
            None => name,
        },
        "Job" => match name.rsplit_once('-') {
            Some((cron, t))
                if !cron.is_empty()
                    && (8..=11).contains(&t.len())
                    && t.bytes().all(|b| b.is_ascii_digit()) =>
            {
                cron.to_string()
            }
            _ => name,
        },
        _ => name,
    }
}

/// Telemetry keys that apply to a pod: root namespace, namespace, then selector-scoped
/// (most specific last). At the root and namespace levels only the oldest applies.
fn telemetry_keys(
    idx: &Indexes,
    mesh: &MeshConfig,
    ns: &str,
    labels: &BTreeMap<String, String>,
) -> Vec<String> {
    let key = |o: &Object| format!("telemetry/{}/{}", o.namespace, o.name);
    let level = |n: &str| {
        oldest(
            idx.telemetries
                .in_ns(n)
                .filter(|o| selector_of(o).is_none() && !has_target_refs(o)),
        )
    };
    let mut out = Vec::new();
    if ns != mesh.root_namespace {
        out.extend(level(&mesh.root_namespace).map(key));
    }
    out.extend(level(ns).map(key));
    let mut selected: Vec<&Object> = idx
        .telemetries
        .in_ns(ns)
        .filter(|o| selector_of(o).is_some_and(|s| label_selector_matches(s, labels)))
        .map(|o| o.as_ref())
        .collect();
    selected.sort_by(|a, b| age_order(a, b));
    out.extend(selected.into_iter().map(key));
    out
}

/// Whether a pod without an address yet is being set up on its node: scheduled, not
/// finished, not deleted. Its node's ztunnel must know, before the pod's network exists,
/// whether to capture it (the in-pod capture is installed while the CNI sets the pod up).
fn starting(pod: &Pod) -> bool {
    let scheduled = pod
        .spec
        .as_ref()
        .and_then(|s| s.node_name.as_deref())
        .is_some_and(|n| !n.is_empty());
    let finished = pod
        .status
        .as_ref()
        .and_then(|s| s.phase.as_deref())
        .is_some_and(|p| p == "Succeeded" || p == "Failed");
    scheduled && !finished && pod.metadata.deletion_timestamp.is_none()
}

/// The workload for a pod, or None when the pod has terminated, or has no IP and is not
/// starting on a node. A starting pod's workload has no address and is not healthy: it
/// takes no traffic, but its node's ztunnel can enroll it (`captured`).
/// Also returns the waypoint it refers to (for dependency tracking).
pub fn workload(
    idx: &Indexes,
    mesh: &MeshConfig,
    obj: &Object,
) -> (Option<Workload>, Option<(String, String)>) {
    let Some(pod) = pod_of(obj) else {
        return (None, None);
    };
    let addresses = pod_addresses(pod);
    if addresses.is_empty() && !starting(pod) {
        return (None, None);
    }
    let ns = obj.namespace.as_str();
    let labels = &obj.labels;
    let ns_labels = idx.namespace_labels(ns);
    let is_waypoint = labels.contains_key(LABEL_GATEWAY_NAME);
    let pod_mode = labels.get(LABEL_DATAPLANE_MODE).map(String::as_str);
    let ns_ambient = ns_labels
        .and_then(|l| l.get(LABEL_DATAPLANE_MODE))
        .is_some_and(|m| m == "ambient");
    // Never captured: waypoint proxies (their traffic would loop), host-network pods and
    // pods that already run an Istio sidecar (as in Istio ambient).
    let host_network = pod
        .spec
        .as_ref()
        .and_then(|s| s.host_network)
        .unwrap_or(false);
    let has_sidecar = obj.annotations.contains_key("sidecar.istio.io/status");
    let captured = !is_waypoint
        && !host_network
        && !has_sidecar
        && (pod_mode == Some("ambient") || (ns_ambient && pod_mode != Some("none")));
    let wp_ref = if is_waypoint {
        None
    } else {
        waypoint_ref(labels, ns, ns_labels)
    };
    let waypoint = wp_ref.as_ref().and_then(|r| waypoint_address(idx, mesh, r));
    let (mtls, port_mtls, mtls_source, port_mtls_source) =
        peer_authentication(idx, mesh, ns, labels);
    let mut authz: Vec<&Object> = idx
        .authorization_policies
        .in_ns(ns)
        .filter(|o| selector_of(o).is_some_and(|s| label_selector_matches(s, labels)))
        .map(|o| o.as_ref())
        .collect();
    authz.sort_by(|a, b| age_order(a, b));
    let services = idx
        .services
        .in_ns(ns)
        .filter_map(|s| {
            let svc = service_of(s)?;
            let selector = svc.spec.as_ref()?.selector.as_ref()?;
            if selector.is_empty() || !label_selector_matches(selector, labels) {
                return None;
            }
            Some(service_ports_for(pod, ns, &s.name, svc))
        })
        .collect();
    let (canonical_name, canonical_revision) = canonical(labels, &obj.name);
    let workload_name = workload_name(pod, &obj.name, labels);
    // Terminating pods take no new traffic.
    let terminating = pod.metadata.deletion_timestamp.is_some();
    let healthy = !terminating
        && !addresses.is_empty()
        && match pod.status.as_ref().and_then(|s| s.conditions.as_ref()) {
            None => true,
            Some(conds) => conds
                .iter()
                .find(|c| c.type_ == "Ready")
                .is_none_or(|c| c.status == "True"),
        };
    let spec = pod.spec.as_ref();
    let w = Workload {
        uid: obj
            .uid
            .clone()
            .unwrap_or_else(|| format!("Kubernetes//Pod/{ns}/{}", obj.name)),
        name: obj.name.clone(),
        namespace: ns.to_string(),
        service_account: pod_service_account(pod),
        trust_domain: mesh.trust_domain.clone(),
        node: spec.and_then(|s| s.node_name.clone()).unwrap_or_default(),
        addresses,
        labels: labels.clone(),
        captured,
        waypoint,
        mtls_mode: mtls as i32,
        port_mtls,
        mtls_source,
        port_mtls_source,
        authorization_policies: authz.iter().map(|o| o.ns_name()).collect(),
        services,
        canonical_name,
        canonical_revision,
        healthy,
        is_waypoint,
        telemetry: telemetry_keys(idx, mesh, ns, labels),
        compact: false,
        workload_name,
    };
    (Some(w), wp_ref)
}

/// The model Service, and the waypoint it refers to.
pub fn service(
    idx: &Indexes,
    mesh: &MeshConfig,
    obj: &Object,
) -> (Option<Service>, Option<(String, String)>) {
    let Some(svc) = service_of(obj) else {
        return (None, None);
    };
    let ns = obj.namespace.as_str();
    let spec = svc.spec.clone().unwrap_or_default();
    let mut vips: Vec<String> = Vec::new();
    for ip in spec
        .cluster_ips
        .iter()
        .flatten()
        .chain(spec.cluster_ip.iter())
    {
        if !ip.is_empty() && ip != "None" && !vips.contains(ip) {
            vips.push(ip.clone());
        }
    }
    let ports = spec
        .ports
        .iter()
        .flatten()
        .filter_map(|p| {
            let port = u32::try_from(p.port).ok()?;
            let (target_port, target_port_name) = match &p.target_port {
                None | Some(IntOrString::Int(0)) => (port, String::new()),
                Some(IntOrString::Int(n)) => (u32::try_from(*n).ok()?, String::new()),
                Some(IntOrString::String(s)) => match s.parse::<u32>() {
                    Ok(n) => (n, String::new()),
                    Err(_) => (0, s.clone()),
                },
            };
            Some(ServicePort {
                port,
                target_port,
                name: p.name.clone().unwrap_or_default(),
                protocol: p.protocol.clone().unwrap_or_else(|| "TCP".into()),
                target_port_name,
            })
        })
        .collect();
    // A waypoint's own Service never goes through a waypoint.
    let wp_ref = if obj.labels.contains_key(LABEL_GATEWAY_NAME) {
        None
    } else {
        waypoint_ref(&obj.labels, ns, idx.namespace_labels(ns))
    };
    let s = Service {
        name: obj.name.clone(),
        namespace: ns.to_string(),
        hostname: service_fqdn(&obj.name, ns),
        aliases: vec![
            obj.name.clone(),
            format!("{}.{ns}", obj.name),
            format!("{}.{ns}.svc", obj.name),
        ],
        vips,
        ports,
        waypoint: wp_ref.as_ref().and_then(|r| waypoint_address(idx, mesh, r)),
        labels: obj.labels.clone(),
        selector: spec.selector.unwrap_or_default(),
    };
    (Some(s), wp_ref)
}

#[cfg(test)]
mod workload_name_tests {
    use super::*;

    fn pod(meta: serde_json::Value) -> (Pod, BTreeMap<String, String>) {
        let p: Pod = serde_json::from_value(serde_json::json!({"metadata": meta})).unwrap();
        let labels = p.metadata.labels.clone().unwrap_or_default();
        (p, labels)
    }

    fn name(meta: serde_json::Value) -> String {
        let (p, labels) = pod(meta);
        let n = p.metadata.name.clone().unwrap_or_default();
        workload_name(&p, &n, &labels)
    }

    #[test]
    fn a_deployments_pods_are_named_after_the_deployment() {
        // Flagger's canary and primary Deployments: `podinfo` and `podinfo-primary`.
        for (deploy, hash) in [("podinfo", "7d9c8b5f4"), ("podinfo-primary", "5c6b4d9f8")] {
            let rs = format!("{deploy}-{hash}");
            let owner = serde_json::json!({"name": format!("{rs}-x2k9z"),
                "labels": {"app": deploy, "pod-template-hash": hash},
                "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet",
                    "name": rs, "uid": "u", "controller": true}]});
            assert_eq!(name(owner), deploy);
            // What the Kubernetes source keeps: generateName instead of ownerReferences.
            let pruned = serde_json::json!({"name": format!("{rs}-x2k9z"),
                "generateName": format!("{rs}-"),
                "labels": {"app": deploy, "pod-template-hash": hash}});
            assert_eq!(name(pruned), deploy);
        }
    }

    #[test]
    fn other_controllers_bare_pods_and_cron_jobs() {
        let sts = serde_json::json!({"name": "db-2", "generateName": "db-",
            "labels": {"controller-revision-hash": "db-6f7", "statefulset.kubernetes.io/pod-name": "db-2"}});
        assert_eq!(name(sts), "db");
        let ds = serde_json::json!({"name": "agent-q8x7p", "ownerReferences": [{"apiVersion": "apps/v1",
            "kind": "DaemonSet", "name": "agent", "uid": "u", "controller": true}]});
        assert_eq!(name(ds), "agent");
        let cron = serde_json::json!({"name": "report-29034720-abcde", "generateName": "report-29034720-",
            "labels": {"batch.kubernetes.io/job-name": "report-29034720"}});
        assert_eq!(name(cron), "report");
        let job = serde_json::json!({"name": "migrate-abcde", "generateName": "migrate-",
            "labels": {"job-name": "migrate"}});
        assert_eq!(name(job), "migrate");
        assert_eq!(
            name(serde_json::json!({"name": "debug", "labels": {"app": "x"}})),
            "debug"
        );
        // A ReplicaSet made by hand (no template hash in its name) names its pods.
        let rs = serde_json::json!({"name": "rs-abcde", "labels": {"pod-template-hash": "zzz"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "rs",
                "uid": "u", "controller": true}]});
        assert_eq!(name(rs), "rs");
    }
}

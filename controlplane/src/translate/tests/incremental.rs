//! Incremental behaviour: exactly the expected model changes, nothing for no-ops.

use meshwork_model::pb::config::MtlsMode;

use super::{keys, pod, Harness};

const NS_AMBIENT: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n  labels:\n    istio.io/dataplane-mode: ambient\n";
const NS_PLAIN: &str = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n";
const SVC: &str = "apiVersion: v1\nkind: Service\nmetadata:\n  name: web\nspec:\n  selector:\n    app: web\n  ports:\n  - port: 80\n    targetPort: 8080\n";

fn base() -> Harness {
    let mut h = Harness::new();
    h.apply("ns.yaml", NS_AMBIENT);
    h.apply("svc.yaml", SVC);
    h.apply(
        "a.yaml",
        &pod("a", &[("app", "web")], "web", "n1", "10.1.0.1"),
    );
    h
}

#[test]
fn pod_add_update_delete() {
    let mut h = base();
    let p = pod("b", &[("app", "web")], "web", "n1", "10.1.0.2");
    assert_eq!(keys(&h.apply("b.yaml", &p)), ["workload/production/b"]);
    assert_eq!(h.workload("production", "b").services.len(), 1);
    // Same content again: nothing.
    assert!(h.apply("b.yaml", &p).is_empty());
    // Label change moves it out of the service: only its workload changes.
    let p2 = pod("b", &[("app", "other")], "web", "n1", "10.1.0.2");
    assert_eq!(keys(&h.apply("b.yaml", &p2)), ["workload/production/b"]);
    assert!(h.workload("production", "b").services.is_empty());
    // A scheduled pod without an IP yet (being set up on its node) is a workload with no
    // address: its node's ztunnel can enroll it, and it takes no traffic.
    let no_ip = p2.replace("  podIP: 10.1.0.2\n", "");
    assert_eq!(keys(&h.apply("b.yaml", &no_ip)), ["workload/production/b"]);
    let starting = h.workload("production", "b");
    assert!(starting.addresses.is_empty());
    assert!(starting.captured && !starting.healthy);
    assert_eq!(keys(&h.apply("b.yaml", &p2)), ["workload/production/b"]);
    assert!(h.workload("production", "b").healthy);
    // Not scheduled and no IP: no workload.
    let unscheduled = no_ip.replace("  nodeName: n1\n", "");
    assert_ne!(unscheduled, no_ip, "fixture names its node");
    assert_eq!(
        keys(&h.apply("b.yaml", &unscheduled)),
        ["-workload/production/b"]
    );
    assert_eq!(keys(&h.apply("b.yaml", &p2)), ["workload/production/b"]);
    // Delete.
    assert_eq!(keys(&h.apply("b.yaml", "")), ["-workload/production/b"]);
    assert!(!h.tr.resources().contains_key("workload/production/b"));
    // Terminated pods are not workloads.
    let done = p.replace("phase: Running", "phase: Succeeded");
    assert!(h.apply("b.yaml", &done).is_empty());
}

#[test]
fn namespace_relabel_flips_captured() {
    let mut h = base();
    assert!(h.workload("production", "a").captured);
    assert_eq!(
        keys(&h.apply("ns.yaml", NS_PLAIN)),
        ["workload/production/a"]
    );
    assert!(!h.workload("production", "a").captured);
    assert!(h.apply("ns.yaml", NS_PLAIN).is_empty());
    assert_eq!(
        keys(&h.apply("ns.yaml", NS_AMBIENT)),
        ["workload/production/a"]
    );
    assert!(h.workload("production", "a").captured);
    // Pod-level opt-out.
    let out = pod(
        "a",
        &[("app", "web"), ("istio.io/dataplane-mode", "none")],
        "web",
        "n1",
        "10.1.0.1",
    );
    h.apply("a.yaml", &out);
    assert!(!h.workload("production", "a").captured);
}

#[test]
fn service_change_touches_matching_pods_only() {
    let mut h = base();
    h.apply(
        "c.yaml",
        &pod("c", &[("app", "unrelated")], "x", "n1", "10.1.0.3"),
    );
    let svc2 = SVC.replace("targetPort: 8080", "targetPort: 9090");
    let changed = keys(&h.apply("svc.yaml", &svc2));
    assert_eq!(
        changed,
        [
            "workload/production/a",
            "service/production/web.production.svc.cluster.local"
        ]
    );
    assert_eq!(
        h.workload("production", "a").services[0].ports.get(&80),
        Some(&9090)
    );
    assert_eq!(
        keys(&h.apply("svc.yaml", "")),
        [
            "workload/production/a",
            "-service/production/web.production.svc.cluster.local"
        ]
    );
    assert!(h.workload("production", "a").services.is_empty());
}

#[test]
fn peer_authentication_levels_and_oldest_wins() {
    let mut h = base();
    assert_eq!(
        h.workload("production", "a").mtls_mode,
        MtlsMode::Permissive as i32
    );
    assert_eq!(h.workload("production", "a").mtls_source, "");
    let root = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: STRICT\n";
    assert_eq!(keys(&h.apply("root.yaml", root)), ["workload/production/a"]);
    assert_eq!(
        h.workload("production", "a").mtls_source,
        "istio-system/default"
    );
    // Namespace level with UNSET inherits the root mode but a port-level override applies
    // only through a workload policy.
    let wl = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: web\n  creationTimestamp: \"2024-01-02T00:00:00Z\"\nspec:\n  selector:\n    matchLabels:\n      app: web\n  mtls:\n    mode: UNSET\n  portLevelMtls:\n    8080:\n      mode: DISABLE\n";
    h.apply("wl.yaml", wl);
    let w = h.workload("production", "a");
    assert_eq!(w.mtls_mode, MtlsMode::Strict as i32);
    assert_eq!(w.mtls_source, "istio-system/default");
    assert_eq!(w.port_mtls.get(&8080), Some(&(MtlsMode::Disable as i32)));
    // The port's mode is named after the workload policy that set it (`authz check`).
    assert_eq!(w.port_mtls_source, "production/web");
    // An older workload policy wins over the newer one.
    let older = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: zz-older\n  creationTimestamp: \"2023-01-01T00:00:00Z\"\nspec:\n  selector:\n    matchLabels:\n      app: web\n  mtls:\n    mode: PERMISSIVE\n";
    h.apply("older.yaml", older);
    let w = h.workload("production", "a");
    assert_eq!(w.mtls_mode, MtlsMode::Permissive as i32);
    assert_eq!(w.mtls_source, "production/zz-older");
    assert!(w.port_mtls.is_empty());
    assert_eq!(w.port_mtls_source, "");
}

#[test]
fn waypoint_resolution_follows_waypoint_pod() {
    let mut h = base();
    let gw = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: waypoint\nspec:\n  gatewayClassName: istio-waypoint\n  listeners:\n  - name: mesh\n    port: 15008\n    protocol: HBONE\n";
    h.apply("gw.yaml", gw);
    let ns = format!("{NS_AMBIENT}    istio.io/use-waypoint: waypoint\n");
    h.apply("ns.yaml", &ns);
    assert!(
        h.workload("production", "a").waypoint.is_none(),
        "no waypoint pod yet"
    );
    let wp = pod(
        "waypoint-0",
        &[("gateway.networking.k8s.io/gateway-name", "waypoint")],
        "waypoint",
        "n2",
        "10.1.9.9",
    );
    let changed = keys(&h.apply("wp.yaml", &wp));
    assert!(
        changed.contains(&"workload/production/a".to_string()),
        "{changed:?}"
    );
    assert!(
        changed.contains(&"workload/production/waypoint-0".to_string()),
        "{changed:?}"
    );
    let w = h.workload("production", "a");
    let addr = w.waypoint.as_ref().unwrap();
    assert_eq!(addr.address, "10.1.9.9");
    assert_eq!(addr.hbone_port, 15008);
    assert_eq!(
        addr.identity,
        "spiffe://cluster.local/ns/production/sa/waypoint"
    );
    let wpw = h.workload("production", "waypoint-0");
    assert!(wpw.is_waypoint);
    assert!(!wpw.captured);
    assert!(wpw.waypoint.is_none());
    let svc = h.service("production", "web.production.svc.cluster.local");
    assert_eq!(svc.waypoint.as_ref().unwrap().address, "10.1.9.9");
    let wp_svc = "apiVersion: v1\nkind: Service\nmetadata:\n  name: waypoint\n  labels:\n    gateway.networking.k8s.io/gateway-name: waypoint\nspec:\n  selector:\n    gateway.networking.k8s.io/gateway-name: waypoint\n  ports:\n  - port: 15008\n";
    h.apply("wp-svc.yaml", wp_svc);
    assert!(h
        .service("production", "waypoint.production.svc.cluster.local")
        .waypoint
        .is_none());
    // Waypoint pod moves: users follow.
    let moved = wp.replace("10.1.9.9", "10.1.9.10");
    let changed = keys(&h.apply("wp.yaml", &moved));
    assert_eq!(
        changed,
        [
            "workload/production/a",
            "workload/production/waypoint-0",
            "service/production/web.production.svc.cluster.local"
        ]
    );
    // Pod-level opt-out.
    let out = pod(
        "a",
        &[("app", "web"), ("istio.io/use-waypoint", "none")],
        "web",
        "n1",
        "10.1.0.1",
    );
    h.apply("a.yaml", &out);
    assert!(h.workload("production", "a").waypoint.is_none());
}

#[test]
fn mesh_config_map_changes_trust_domain_everywhere() {
    let mut h = base();
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    trustDomain: example.org\n";
    let changed = keys(&h.apply("cm.yaml", cm));
    assert_eq!(changed, ["mesh", "workload/production/a"]);
    assert_eq!(h.workload("production", "a").trust_domain, "example.org");
    // A ConfigMap outside the root namespace is not mesh config.
    let other = cm
        .replace("istio-system", "production")
        .replace("name: istio", "name: x");
    assert!(h.apply("other.yaml", &other).is_empty());
}

#[test]
fn authorization_policy_add_remove() {
    let mut h = base();
    let ap = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-web\nspec:\n  selector:\n    matchLabels:\n      app: web\n  rules:\n  - from:\n    - source:\n        namespaces: [production]\n";
    assert_eq!(
        keys(&h.apply("ap.yaml", ap)),
        ["workload/production/a", "authz/production/allow-web"]
    );
    assert_eq!(
        h.workload("production", "a").authorization_policies,
        ["production/allow-web"]
    );
    assert!(!h.authz("production", "allow-web").has_l7);
    assert_eq!(
        keys(&h.apply("ap.yaml", "")),
        ["workload/production/a", "-authz/production/allow-web"]
    );
}

#[test]
fn invalid_edit_keeps_the_model() {
    let mut h = base();
    let before = h.tr.resources().clone();
    let bad = pod("a", &[("app", "web")], "web", "n1", "10.1.0.1")
        .replace("serviceAccountName: web", "serviceAccountName: [web]");
    let changes = h
        .store
        .apply_file(std::path::Path::new("a.yaml"), &bad, "production");
    assert!(changes.is_empty());
    assert_eq!(h.store.errors().len(), 1);
    assert!(h.tr.apply_batch(&changes).is_empty());
    assert_eq!(*h.tr.resources(), before);
}

#[test]
fn telemetry_without_providers_uses_mesh_defaults() {
    let mut h = base();
    let t = "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: mesh-default\n  namespace: istio-system\nspec:\n  tracing:\n  - randomSamplingPercentage: 1\n";
    h.apply("t.yaml", t);
    assert!(h.telemetry("istio-system", "mesh-default").tracing[0]
        .providers
        .is_empty());
    let cm = "apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    defaultProviders:\n      tracing: [otel]\n    extensionProviders:\n    - name: otel\n      opentelemetry: {service: collector.o.svc.cluster.local, port: 4317}\n";
    let changed = keys(&h.apply("cm.yaml", cm));
    assert_eq!(changed, ["mesh", "telemetry/istio-system/mesh-default"]);
    assert_eq!(
        h.telemetry("istio-system", "mesh-default").tracing[0].providers,
        ["otel"]
    );
}

#[test]
fn health_follows_ready_condition_and_termination() {
    let mut h = base();
    assert!(
        h.workload("production", "a").healthy,
        "no conditions: healthy"
    );
    let p = pod("a", &[("app", "web")], "web", "n1", "10.1.0.1");
    let not_ready = format!("{p}  conditions:\n  - type: Ready\n    status: \"False\"\n");
    assert_eq!(
        keys(&h.apply("a.yaml", &not_ready)),
        ["workload/production/a"]
    );
    assert!(!h.workload("production", "a").healthy);
    let ready = not_ready.replace("\"False\"", "\"True\"");
    h.apply("a.yaml", &ready);
    assert!(h.workload("production", "a").healthy);
    let terminating = ready.replace(
        "metadata:\n  name: a\n",
        "metadata:\n  name: a\n  deletionTimestamp: \"2026-01-01T00:00:00Z\"\n",
    );
    h.apply("a.yaml", &terminating);
    assert!(!h.workload("production", "a").healthy);
}

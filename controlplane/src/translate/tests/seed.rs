//! The seed manifests translate into the model the seed README describes.

use std::path::{Path, PathBuf};

use meshwork_model::pb::config::{
    custom_tag::Value as TagValue, extension_provider::Provider, resource::Kind as ResKind,
    string_match::Match, Action, Enforcement, MtlsMode, PolicyScope,
};

use super::super::l4_view;
use super::{pod, Harness};

const ORDER: &str = "order-service.production.svc.cluster.local";
const PAYMENT: &str = "payment-service.production.svc.cluster.local";

fn seed_dir() -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/seed"));
    assert!(
        dir.is_dir(),
        "seed manifests directory {} is missing (examples/seed/ in the repository)",
        dir.display()
    );
    dir.to_path_buf()
}

fn seeded() -> Harness {
    let mut h = Harness::new();
    let cluster = [
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n  labels:\n    istio.io/dataplane-mode: ambient\n".to_string(),
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: istio-system\n".to_string(),
        pod("order-service-v1-a", &[("app", "order-service"), ("version", "v1")], "order-service", "node-a", "10.0.0.11"),
        pod("order-service-v2-a", &[("app", "order-service"), ("version", "v2")], "order-service", "node-b", "10.0.0.12"),
        pod("payment-service-a", &[("app", "payment-service"), ("version", "v1")], "payment-service", "node-a", "10.0.0.21"),
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: payment-service\nspec:\n  clusterIP: 10.96.0.21\n  selector:\n    app: payment-service\n  ports:\n  - name: http\n    port: 8080\n    targetPort: http\n".to_string(),
    ]
    .join("---\n");
    h.apply("cluster.yaml", &cluster);
    let mut files: Vec<PathBuf> = std::fs::read_dir(seed_dir())
        .expect("read seed dir")
        .map(|e| e.expect("dir entry").path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    assert_eq!(files.len(), 5, "{files:?}");
    for f in files {
        let text = std::fs::read_to_string(&f).expect("read seed file");
        h.apply(&f.display().to_string(), &text);
    }
    h
}

#[test]
fn order_service_and_membership() {
    let h = seeded();
    let s = h.service("production", ORDER);
    assert_eq!(s.hostname, ORDER);
    assert_eq!(
        s.aliases,
        [
            "order-service",
            "order-service.production",
            "order-service.production.svc"
        ]
    );
    assert_eq!(s.ports.len(), 1);
    assert_eq!((s.ports[0].port, s.ports[0].target_port), (8080, 8080));
    // No clusterIP in the manifest: one is allocated from the service CIDR, as the API
    // server would.
    assert_eq!(s.vips.len(), 1, "{:?}", s.vips);
    let cidr: ipnet::Ipv4Net = crate::translate::vip::DEFAULT_SERVICE_CIDR.parse().unwrap();
    assert!(cidr.contains(&s.vips[0].parse::<std::net::Ipv4Addr>().unwrap()));
    for name in ["order-service-v1-a", "order-service-v2-a"] {
        let w = h.workload("production", name);
        assert!(w.captured);
        assert_eq!(w.service_account, "order-service");
        assert_eq!(w.trust_domain, "cluster.local");
        assert_eq!(w.canonical_name, "order-service");
        assert_eq!(w.services.len(), 1, "{name}");
        assert_eq!(w.services[0].service, format!("production/{ORDER}"));
        assert_eq!(w.services[0].ports.get(&8080), Some(&8080));
        assert_eq!(w.mtls_mode, MtlsMode::Permissive as i32);
        assert_eq!(w.mtls_source, "istio-system/default");
        assert!(w.authorization_policies.is_empty());
        assert_eq!(w.telemetry, ["telemetry/istio-system/default-tracing"]);
    }
    assert_eq!(
        h.workload("production", "order-service-v1-a")
            .canonical_revision,
        "v1"
    );
    assert_eq!(
        h.workload("production", "order-service-v2-a").node,
        "node-b"
    );
    // The named target port resolves through the pod's container ports.
    let p = h.workload("production", "payment-service-a");
    assert_eq!(p.services.len(), 1);
    assert_eq!(p.services[0].service, format!("production/{PAYMENT}"));
    assert_eq!(p.services[0].ports.get(&8080), Some(&8080));
    assert_eq!(h.service("production", PAYMENT).vips, ["10.96.0.21"]);
}

#[test]
fn zero_trust() {
    let h = seeded();
    let p = h.workload("production", "payment-service-a");
    assert_eq!(p.mtls_mode, MtlsMode::Strict as i32);
    assert_eq!(p.mtls_source, "production/payment-service-mtls");
    assert_eq!(
        p.authorization_policies,
        ["production/payment-service-policy"]
    );

    let allow = h.authz("production", "payment-service-policy");
    assert!(allow.has_l7);
    assert_eq!(allow.action, Action::Allow as i32);
    assert_eq!(allow.scope, PolicyScope::WorkloadSelector as i32);
    assert_eq!(allow.enforcement, Enforcement::EnforceZtunnel as i32);
    assert_eq!(allow.rules.len(), 1);
    assert_eq!(allow.rules[0].to[0].methods, ["POST"]);
    assert_eq!(allow.rules[0].to[0].paths, ["/api/payments/*"]);
    assert_eq!(allow.rules[0].when[0].key, "request.headers[x-user-role]");
    assert_eq!(allow.rules[0].when[0].not_values, ["guest"]);
    assert_eq!(
        allow.rules[0].from[0].principals,
        ["cluster.local/ns/production/sa/order-service"]
    );
    let l4 = l4_view(allow);
    assert!(
        l4.rules.is_empty(),
        "ALLOW rule with L7 attributes is dropped for ztunnel"
    );
    assert!(!l4.has_l7);

    let deny = h.authz("production", "deny-all-default");
    assert!(!deny.has_l7);
    assert_eq!(deny.action, Action::Deny as i32);
    assert_eq!(deny.scope, PolicyScope::Namespace as i32);
    assert_eq!(
        deny.rules[0].from[0].not_principals,
        ["cluster.local/ns/production/sa/*"]
    );
    assert_eq!(
        l4_view(deny),
        *deny,
        "pure L4 policy is unchanged in the L4 view"
    );
}

#[test]
fn order_traffic_routes() {
    let h = seeded();
    let r = h.route("production", ORDER);
    assert_eq!(r.hostname, ORDER);
    assert_eq!(
        r.origins,
        [
            "VirtualService/production/order-service-vs",
            "DestinationRule/production/order-service-dr"
        ]
    );
    assert_eq!(r.http.len(), 3);
    let canary = &r.http[0];
    let hdr = &canary.matches[0].headers["x-canary"];
    assert_eq!(hdr.r#match, Some(Match::Exact("true".into())));
    let d = canary.route[0].destination.as_ref().unwrap();
    assert_eq!((d.host.as_str(), d.subset.as_str()), (ORDER, "v2"));
    assert_eq!(canary.route[0].weight, 100);
    let user = &r.http[1];
    assert_eq!(
        user.matches[0].headers["x-user-id"].r#match,
        Some(Match::Regex("^[0-9]*[02468]$".into()))
    );
    let split = &r.http[2];
    assert!(split.matches.is_empty());
    let weights: Vec<(String, u32)> = split
        .route
        .iter()
        .map(|w| (w.destination.as_ref().unwrap().subset.clone(), w.weight))
        .collect();
    assert_eq!(weights, [("v1".into(), 90), ("v2".into(), 10)]);
    assert!(split.has_timeout);
    assert_eq!(split.timeout_ms, 10_000);
    let retry = split.retries.as_ref().unwrap();
    assert_eq!(retry.attempts, 3);
    assert_eq!(retry.per_try_timeout_ms, 3_000);
    assert_eq!(
        retry.retry_on,
        ["5xx", "reset", "connect-failure", "refused-stream"]
    );
    assert!(!canary.has_timeout);

    let host_pool = r
        .traffic_policy
        .as_ref()
        .unwrap()
        .connection_pool
        .as_ref()
        .unwrap();
    assert_eq!(host_pool.max_connections, 100);
    assert_eq!(host_pool.http1_max_pending_requests, 100);
    assert_eq!(host_pool.h2_upgrade_policy, "DEFAULT");
    assert_eq!(r.subsets.len(), 2);
    let v1 = &r.subsets[0];
    assert_eq!(v1.name, "v1");
    assert_eq!(v1.labels.get("version").map(String::as_str), Some("v1"));
    let v1_pool = v1
        .traffic_policy
        .as_ref()
        .unwrap()
        .connection_pool
        .as_ref()
        .unwrap();
    assert_eq!(v1_pool.http1_max_pending_requests, 50, "subset value wins");
    assert_eq!(v1_pool.max_connections, 100, "host value kept");
    assert_eq!(v1_pool.http2_max_requests, 100);
    let v2_pool = r.subsets[1]
        .traffic_policy
        .as_ref()
        .unwrap()
        .connection_pool
        .as_ref()
        .unwrap();
    assert_eq!(v2_pool.http1_max_pending_requests, 100);
}

#[test]
fn payment_resilience() {
    let h = seeded();
    let r = h.route("production", PAYMENT);
    let tp = r.traffic_policy.as_ref().unwrap();
    let od = tp.outlier_detection.as_ref().unwrap();
    assert_eq!(od.consecutive_5xx_errors, 3);
    assert_eq!(od.interval_ms, 30_000);
    assert_eq!(od.base_ejection_time_ms, 60_000);
    assert_eq!(od.max_ejection_percent, 50);
    assert_eq!(od.min_health_percent, 25);
    let pool = tp.connection_pool.as_ref().unwrap();
    assert_eq!(pool.max_connections, 50);
    assert_eq!(pool.connect_timeout_ms, 5_000);
    assert_eq!(pool.http1_max_pending_requests, 30);
    assert_eq!(pool.http2_max_requests, 50);
    assert_eq!(r.http.len(), 1);
    let route = &r.http[0];
    assert_eq!(route.timeout_ms, 5_000);
    assert_eq!(route.route[0].destination.as_ref().unwrap().host, PAYMENT);
    assert_eq!(route.route[0].weight, 100);
    let retry = route.retries.as_ref().unwrap();
    assert_eq!((retry.attempts, retry.per_try_timeout_ms), (2, 2_000));
    assert_eq!(retry.retry_on, ["5xx", "reset"]);
}

#[test]
fn tracing_and_mesh() {
    let h = seeded();
    let t = h.telemetry("istio-system", "default-tracing");
    assert_eq!(t.scope, PolicyScope::Global as i32);
    assert_eq!(t.tracing.len(), 1);
    let tr = &t.tracing[0];
    assert_eq!(tr.providers, ["otel"]);
    assert!(tr.has_sampling);
    assert_eq!(tr.random_sampling_percentage, 10.0);
    assert_eq!(tr.custom_tags.len(), 1);
    assert_eq!(tr.custom_tags[0].name, "user_id");
    assert_eq!(
        tr.custom_tags[0].value,
        Some(TagValue::Header("x-user-id".into()))
    );

    let ResKind::Mesh(m) = h.kind("mesh") else {
        panic!("mesh")
    };
    assert_eq!(m.trust_domain, "cluster.local");
    assert_eq!(m.root_namespace, "istio-system");
    assert_eq!(m.extension_providers.len(), 1);
    assert_eq!(m.extension_providers[0].name, "otel");
    let Some(Provider::Opentelemetry(o)) = &m.extension_providers[0].provider else {
        panic!("otel provider")
    };
    assert_eq!(o.service, "otel-collector.observability.svc.cluster.local");
    assert_eq!(o.port, 4317);
    assert!(o.environment_resource_detector);
}

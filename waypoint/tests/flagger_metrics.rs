//! The labels Flagger's Istio checks filter on, as the waypoint reports them: the
//! destination workload is the pod's workload (its Deployment, as the control plane sends
//! it in `workload_name`), the reporter is `waypoint` (Istio ambient's), and a Telemetry
//! tag override can make it `destination` (the opt-in for Flagger's built-in queries).

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;

use common::*;
use meshwork_model::keys::{make_resource, Kind};
use meshwork_model::pb::config::{self as pb, resource};
use meshwork_model::snapshot::Snapshot;
use meshwork_waypoint::metrics::render;

/// The mesh with order-service's pod named as a Deployment's replica, its workload
/// `order-service`.
async fn mesh() -> (Mesh, Backend) {
    let order = named("order").await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10").workload(
        "order-service-7d9c8b5f4-x2k9z",
        "order-service",
        "v1",
        "order-service",
        order.addr.port(),
    );
    (m, order)
}

/// `snap` with every workload's `workload_name` set from its pod name (the Deployment's
/// name: the pod name without the ReplicaSet hash and pod suffix), and `telemetry` added.
fn with(snap: Snapshot, telemetry: Option<pb::TelemetryConfig>) -> Snapshot {
    let mut map: BTreeMap<_, _> = snap
        .resources()
        .map(|r| (r.key.clone(), r.clone()))
        .collect();
    for res in map.values_mut() {
        if let Some(resource::Kind::Workload(w)) = &res.kind {
            let mut parts: Vec<&str> = w.name.split('-').collect();
            parts.truncate(parts.len().saturating_sub(2));
            let w = pb::Workload {
                workload_name: parts.join("-"),
                ..w.clone()
            };
            *res = Arc::new(make_resource(res.key.clone(), resource::Kind::Workload(w)));
        }
    }
    if let Some(t) = telemetry {
        let key = Kind::Telemetry.key(NS, &t.name);
        map.insert(
            key.clone(),
            Arc::new(make_resource(key, resource::Kind::Telemetry(t))),
        );
    }
    Snapshot::new(2, map)
}

async fn request_line(snap: Snapshot) -> String {
    let p = proxy(snap, Some(ORDER_SA)).await;
    let c = client();
    let (status, _, _) = send(&c, p.addr, "GET", "order-service", "/", &[]).await;
    assert_eq!(status, 200);
    wait_log(&p, 1).await;
    let text = render(&p.registry);
    text.lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains(ORDER_HOST))
        .unwrap_or_else(|| panic!("{text}"))
        .to_string()
}

#[tokio::test]
async fn destination_workload_is_the_deployment_and_reporter_is_waypoint() {
    let (m, _order) = mesh().await;
    let line = request_line(with(m.snapshot(), None)).await;
    assert!(line.contains("reporter=\"waypoint\""), "{line}");
    assert!(
        line.contains("destination_workload=\"order-service\""),
        "{line}"
    );
    assert!(
        line.contains(&format!("destination_workload_namespace=\"{NS}\"")),
        "{line}"
    );
    assert!(line.contains("response_code=\"200\""), "{line}");
}

#[tokio::test]
async fn a_source_without_workload_name_reports_the_pod_name() {
    let (m, _order) = mesh().await;
    let line = request_line(m.snapshot()).await;
    assert!(
        line.contains("destination_workload=\"order-service-7d9c8b5f4-x2k9z\""),
        "{line}"
    );
}

#[tokio::test]
async fn a_telemetry_tag_override_reports_as_destination() {
    let (m, _order) = mesh().await;
    let t = pb::TelemetryConfig {
        name: "flagger-reporter".into(),
        namespace: NS.into(),
        scope: pb::PolicyScope::TargetRef as i32,
        target_refs: vec![pb::TargetRef {
            kind: "Service".into(),
            name: "order-service".into(),
            ..Default::default()
        }],
        metrics: vec![pb::Metrics {
            providers: vec![],
            overrides: vec![pb::MetricOverride {
                metric: "ALL_METRICS".into(),
                tag_upsert: [("reporter".to_string(), "'destination'".to_string())].into(),
                ..Default::default()
            }],
        }],
        ..Default::default()
    };
    let snap = with(m.snapshot(), Some(t));
    let line = request_line(snap).await;
    assert!(line.contains("reporter=\"destination\""), "{line}");
    assert!(
        line.contains("destination_workload=\"order-service\""),
        "{line}"
    );
}

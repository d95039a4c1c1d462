//! Telemetry `metrics` overrides and `accessLogging` (disable, CEL filter) through the
//! waypoint: a disabled REQUEST_COUNT on one service, a `response.code >= 400` filter, and
//! an unsupported filter expression failing open.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use meshwork_model::keys::{make_resource, Kind};
use meshwork_model::pb::config::{self as pb, resource};
use meshwork_model::snapshot::Snapshot;
use meshwork_waypoint::config::Compiled;
use meshwork_waypoint::metrics::render;
use meshwork_waypoint::telemetry_policy::TelemetryError;
use meshwork_waypoint::WaypointId;

/// order-service answers 200 for `/ok` and 503 otherwise; payment-service always 200.
async fn mesh() -> Mesh {
    let order = backend(Arc::new(|_, parts: &http::request::Parts| {
        let status = if parts.uri.path() == "/ok" { 200 } else { 503 };
        (status, "order".to_string(), Duration::ZERO)
    }))
    .await;
    let payment = named("payment").await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload(
            "order-1",
            "order-service",
            "v1",
            "order-service",
            order.addr.port(),
        )
        .service("payment-service", "240.240.0.11")
        .workload(
            "payment-1",
            "payment-service",
            "v1",
            "payment-service",
            payment.addr.port(),
        );
    m
}

/// A Telemetry attached by `targetRefs` to one Service (not listed on workloads).
fn attach(snap: Snapshot, service: &str, t: pb::TelemetryConfig) -> Snapshot {
    let t = pb::TelemetryConfig {
        namespace: NS.into(),
        scope: pb::PolicyScope::TargetRef as i32,
        target_refs: vec![pb::TargetRef {
            kind: "Service".into(),
            name: service.into(),
            ..Default::default()
        }],
        ..t
    };
    let mut map: BTreeMap<_, _> = snap
        .resources()
        .map(|r| (r.key.clone(), r.clone()))
        .collect();
    let key = Kind::Telemetry.key(NS, &t.name);
    map.insert(
        key.clone(),
        Arc::new(make_resource(key, resource::Kind::Telemetry(t))),
    );
    Snapshot::new(2, map)
}

fn count_of(text: &str, service_host: &str) -> u64 {
    text.lines()
        .filter(|l| l.starts_with("istio_requests_total{"))
        .filter(|l| l.contains(&format!("destination_service=\"{service_host}\"")))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum()
}

fn log_filter(name: &str, expr: &str) -> pb::TelemetryConfig {
    pb::TelemetryConfig {
        name: name.into(),
        access_logging: vec![pb::AccessLogging {
            filter: expr.into(),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn disabled_request_count_stops_counting_only_that_service() {
    let m = mesh().await;
    let snap = attach(
        m.snapshot(),
        "order-service",
        pb::TelemetryConfig {
            name: "no-count".into(),
            metrics: vec![pb::Metrics {
                providers: vec!["prometheus".into()],
                overrides: vec![pb::MetricOverride {
                    metric: "REQUEST_COUNT".into(),
                    disabled: true,
                    ..Default::default()
                }],
            }],
            ..Default::default()
        },
    );
    let p = proxy(snap, Some(ORDER_SA)).await;
    let c = client();
    for _ in 0..3 {
        assert_eq!(
            send(&c, p.addr, "GET", "order-service", "/ok", &[]).await.0,
            200
        );
        assert_eq!(
            send(&c, p.addr, "GET", "payment-service", "/", &[]).await.0,
            200
        );
    }
    wait_log(&p, 6).await;
    let text = render(&p.registry);
    assert_eq!(count_of(&text, ORDER_HOST), 0, "{text}");
    assert_eq!(count_of(&text, PAYMENT_HOST), 3, "{text}");
    // The other metrics of order-service are still recorded.
    assert!(
        text.lines().any(
            |l| l.starts_with("istio_request_duration_milliseconds_count{")
                && l.contains(ORDER_HOST)
        ),
        "{text}"
    );
}

#[tokio::test]
async fn tag_overrides_remove_and_upsert_labels() {
    let m = mesh().await;
    let snap = attach(
        m.snapshot(),
        "payment-service",
        pb::TelemetryConfig {
            name: "tags".into(),
            metrics: vec![pb::Metrics {
                providers: vec![],
                overrides: vec![pb::MetricOverride {
                    metric: "REQUEST_COUNT".into(),
                    tag_remove: vec!["source_principal".into()],
                    tag_upsert: [(
                        "destination_version".to_string(),
                        "request.headers['x-canary']".to_string(),
                    )]
                    .into(),
                    ..Default::default()
                }],
            }],
            ..Default::default()
        },
    );
    let p = proxy(snap, Some(ORDER_SA)).await;
    let c = client();
    let (status, _, _) = send(
        &c,
        p.addr,
        "GET",
        "payment-service",
        "/",
        &[("x-canary", "blue")],
    )
    .await;
    assert_eq!(status, 200);
    wait_log(&p, 1).await;
    let text = render(&p.registry);
    let line = text
        .lines()
        .find(|l| l.starts_with("istio_requests_total{") && l.contains(PAYMENT_HOST))
        .unwrap_or_else(|| panic!("{text}"));
    assert!(line.contains("destination_version=\"blue\""), "{line}");
    assert!(line.contains("source_principal=\"\""), "{line}");
}

#[tokio::test]
async fn filter_logs_only_failing_requests() {
    let m = mesh().await;
    let snap = attach(
        m.snapshot(),
        "order-service",
        log_filter("errors-only", "response.code >= 400"),
    );
    let p = proxy(snap, Some(ORDER_SA)).await;
    let c = client();
    for path in ["/ok", "/fail", "/ok", "/broken"] {
        send(&c, p.addr, "GET", "order-service", path, &[]).await;
    }
    // Unfiltered service: logged.
    send(&c, p.addr, "GET", "payment-service", "/", &[]).await;
    let entries = wait_log(&p, 3).await;
    tokio::time::sleep(Duration::from_millis(50)).await;
    let entries = if entries.len() == 3 {
        log_entries(&p)
    } else {
        entries
    };
    let seen: Vec<(String, u64)> = entries
        .iter()
        .map(|e| {
            (
                e["path"].as_str().unwrap().to_string(),
                e["response_code"].as_u64().unwrap(),
            )
        })
        .collect();
    assert_eq!(
        seen,
        vec![
            ("/fail".to_string(), 503),
            ("/broken".to_string(), 503),
            ("/".to_string(), 200)
        ]
    );
}

#[tokio::test]
async fn disabled_access_log_is_silent_for_that_service() {
    let m = mesh().await;
    let snap = attach(
        m.snapshot(),
        "order-service",
        pb::TelemetryConfig {
            name: "quiet".into(),
            access_logging: vec![pb::AccessLogging {
                disabled: true,
                has_disabled: true,
                ..Default::default()
            }],
            ..Default::default()
        },
    );
    let p = proxy(snap, Some(ORDER_SA)).await;
    let c = client();
    send(&c, p.addr, "GET", "order-service", "/ok", &[]).await;
    send(&c, p.addr, "GET", "payment-service", "/", &[]).await;
    send(&c, p.addr, "GET", "order-service", "/fail", &[]).await;
    tokio::time::sleep(Duration::from_millis(100)).await;
    let entries = log_entries(&p);
    assert_eq!(entries.len(), 1, "{entries:?}");
    assert_eq!(entries[0]["authority"], "payment-service");
}

#[tokio::test]
async fn unsupported_filter_is_reported_and_logging_continues() {
    let m = mesh().await;
    let expr = "response.code >= 400 && request.size > 10";
    let snap = attach(
        m.snapshot(),
        "order-service",
        log_filter("bad-filter", expr),
    );
    // The error names the resource and the expression.
    let compiled = Compiled::build(Arc::new(snap.clone()));
    let order = compiled
        .snapshot
        .services()
        .find(|s| s.name == "order-service")
        .unwrap()
        .clone();
    let wp = WaypointId {
        namespace: NS.into(),
        name: "waypoint".into(),
    };
    let policy = compiled.telemetry(&wp, &order);
    assert!(
        matches!(&policy.errors[..], [TelemetryError::Filter { resource, expression, .. }]
            if resource == "production/bad-filter" && expression == expr),
        "{:?}",
        policy.errors
    );
    assert!(policy.errors[0].to_string().contains("request.size"));
    // Logging fails open: every request is logged.
    let p = proxy(snap, Some(ORDER_SA)).await;
    let c = client();
    send(&c, p.addr, "GET", "order-service", "/ok", &[]).await;
    send(&c, p.addr, "GET", "order-service", "/fail", &[]).await;
    let entries = wait_log(&p, 2).await;
    assert_eq!(entries.len(), 2, "{entries:?}");
}

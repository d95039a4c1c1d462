//! JSON views of the waypoint's state for the admin endpoint (`meshwork proxy-config
//! waypoint`): the model it holds with its routes, its upstream clusters with their
//! endpoints, pool occupancy and outlier state, and its certificate.

use std::collections::BTreeSet;
use std::time::SystemTime;

use meshwork_identity::WorkloadCertificate;
use meshwork_model::pb::config as pb;
use meshwork_model::snapshot::Snapshot;
use serde_json::{json, Value};

use crate::config::WaypointId;
use crate::upstream::cluster::{self, Cluster, ClusterKey, Clusters};
use crate::upstream::pool::{PoolLimits, Proto};

/// `/config_dump?format=json`: the snapshot version, every resource key and version, and the
/// route configs in full.
pub fn config_dump(snap: &Snapshot) -> Value {
    let resources: Vec<Value> = snap
        .resources()
        .map(|r| json!({ "key": r.key, "version": r.version }))
        .collect();
    let routes: Vec<Value> = snap
        .routes()
        .map(|r| serde_json::to_value(r).unwrap_or(Value::Null))
        .collect();
    json!({ "version": snap.version, "resources": resources, "routes": routes })
}

/// `/clusters`: every cluster created by traffic, plus the default (no subset) cluster of
/// each port of the services this waypoint serves, with their endpoints.
pub fn clusters(clusters: &Clusters, snap: &Snapshot, waypoint: &WaypointId) -> Value {
    let live = clusters.list();
    let mut seen: BTreeSet<String> = BTreeSet::new();
    let mut out: Vec<Value> = Vec::new();
    for c in &live {
        seen.insert(c.key.name());
        out.push(cluster_view(&c.key, Some(c), snap));
    }
    let mut served: Vec<&pb::Service> = snap
        .services()
        .filter(|s| {
            s.waypoint
                .as_ref()
                .is_some_and(|w| w.namespace == waypoint.namespace && w.name == waypoint.name)
        })
        .collect();
    served.sort_by(|a, b| (&a.namespace, &a.hostname).cmp(&(&b.namespace, &b.hostname)));
    for s in served {
        for p in &s.ports {
            let Ok(port) = u16::try_from(p.port) else {
                continue;
            };
            let key = ClusterKey {
                namespace: s.namespace.clone(),
                hostname: s.hostname.clone(),
                port,
                subset: String::new(),
            };
            if seen.insert(key.name()) {
                out.push(cluster_view(&key, None, snap));
            }
        }
    }
    json!({ "clusters": out })
}

fn cluster_view(key: &ClusterKey, live: Option<&Cluster>, snap: &Snapshot) -> Value {
    let service = snap
        .services()
        .find(|s| s.namespace == key.namespace && s.hostname == key.hostname);
    let route = snap.route(&key.namespace, &key.hostname);
    let (policy, subset) = cluster::traffic_policy(route, &key.subset);
    let endpoints = service
        .map(|s| cluster::endpoints(snap, s, key.port, subset))
        .unwrap_or_default();
    let eps: Vec<Value> = endpoints
        .iter()
        .map(|e| {
            let outlier = live
                .and_then(|c| c.outlier.as_ref())
                .map(|o| o.state(&e.addr));
            let ejected = outlier.as_ref().is_some_and(|o| o.ejected);
            json!({
                "address": e.addr.to_string(),
                "workload": format!("{}/{}", e.name.namespace, e.name.workload),
                "identity": e.identity,
                "health": if ejected { "EJECTED" } else { "HEALTHY" },
                "active_requests": live.map_or(0, |c| c.pool.active_on(&e.addr)),
                "outlier": outlier,
            })
        })
        .collect();
    let limits = live
        .map(|c| c.pool.limits().clone())
        .unwrap_or_else(|| PoolLimits::from_pb(policy.and_then(|p| p.connection_pool.as_ref())));
    let outlier_cfg = live.map_or_else(
        || {
            crate::upstream::outlier::OutlierConfig::from_pb(
                policy.and_then(|p| p.outlier_detection.as_ref()),
            )
        },
        |c| c.outlier.as_ref().map(|o| o.config().clone()),
    );
    json!({
        "name": key.name(),
        "namespace": key.namespace,
        "hostname": key.hostname,
        "port": key.port,
        "subset": key.subset,
        "protocol": match live.map(|c| c.proto) {
            Some(Proto::Http2) => "HTTP2",
            Some(Proto::Http1) => "HTTP1",
            None => "-",
        },
        "active": live.is_some(),
        "limits": limits_view(&limits),
        "pool": live.map(|c| c.pool.stats()).unwrap_or_default(),
        "outlier_detection": outlier_cfg.map(|o| json!({
            "consecutive_5xx": o.consecutive_5xx,
            "consecutive_gateway_errors": o.consecutive_gateway,
            "interval_ms": o.interval.as_millis() as u64,
            "base_ejection_time_ms": o.base_ejection.as_millis() as u64,
            "max_ejection_percent": o.max_ejection_percent,
            "min_health_percent": o.min_health_percent,
            "split_external_local_origin_errors": o.split_local_origin,
            "consecutive_local_origin_failures": o.consecutive_local_origin,
        })),
        "endpoints": eps,
    })
}

/// Limits as numbers; Istio's "unlimited" defaults (2^32-1) show as `null`.
fn limits_view(l: &PoolLimits) -> Value {
    let n = |v: usize| (v < u32::MAX as usize).then_some(v);
    json!({
        "max_connections": n(l.max_connections),
        "max_pending_requests": n(l.max_pending),
        "max_requests": n(l.max_requests),
        "max_retries": n(l.max_retries),
        "max_requests_per_connection": l.max_requests_per_connection,
        "connect_timeout_ms": l.connect_timeout.as_millis() as u64,
        "idle_timeout_ms": l.idle_timeout.as_millis() as u64,
    })
}

/// `/certs`: the certificate the waypoint presents, in the shape ztunnel's `/certs` uses
/// (times in seconds since the epoch).
pub fn certs(cert: Option<&WorkloadCertificate>) -> Value {
    let unix = |t: SystemTime| {
        t.duration_since(SystemTime::UNIX_EPOCH)
            .map(|d| d.as_secs())
            .unwrap_or(0)
    };
    let list: Vec<Value> = cert
        .into_iter()
        .map(|c| {
            json!({
                "identity": c.identity().to_string(),
                "serial": c.serial(),
                "not_before": unix(c.not_before()),
                "not_after": unix(c.not_after()),
                "renew_at": unix(c.renew_at()),
                "chain_pem": c.chain_pem(),
            })
        })
        .collect();
    json!({ "certificates": list })
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::BTreeMap;
    use std::net::SocketAddr;
    use std::sync::Arc;
    use std::time::Duration;

    use meshwork_identity::testing::TestCa;
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::resource;
    use meshwork_model::Kind;

    use crate::upstream::connector::TcpConnector;
    use crate::upstream::outlier::Observation;

    const HOST: &str = "payment.prod.svc.cluster.local";

    fn snapshot() -> Snapshot {
        let mut res = BTreeMap::new();
        let mut put = |key: String, kind: resource::Kind| {
            res.insert(key.clone(), Arc::new(make_resource(key, kind)));
        };
        put(
            Kind::Service.key("prod", HOST),
            resource::Kind::Service(pb::Service {
                name: "payment".into(),
                namespace: "prod".into(),
                hostname: HOST.into(),
                ports: vec![pb::ServicePort {
                    port: 80,
                    target_port: 8080,
                    ..Default::default()
                }],
                waypoint: Some(pb::GatewayAddress {
                    namespace: "prod".into(),
                    name: "waypoint".into(),
                    ..Default::default()
                }),
                ..Default::default()
            }),
        );
        for (i, ip) in ["127.0.0.11", "127.0.0.12"].iter().enumerate() {
            put(
                Kind::Workload.key("prod", &format!("payment-{i}")),
                resource::Kind::Workload(pb::Workload {
                    name: format!("payment-{i}"),
                    namespace: "prod".into(),
                    service_account: "payment".into(),
                    addresses: vec![ip.to_string()],
                    healthy: true,
                    services: vec![pb::ServicePorts {
                        service: format!("prod/{HOST}"),
                        ports: [(80, 8080)].into(),
                    }],
                    ..Default::default()
                }),
            );
        }
        put(
            Kind::Route.key("prod", HOST),
            resource::Kind::Route(pb::RouteConfig {
                hostname: HOST.into(),
                namespace: "prod".into(),
                traffic_policy: Some(policy()),
                ..Default::default()
            }),
        );
        Snapshot::new(3, res)
    }

    fn policy() -> pb::TrafficPolicy {
        pb::TrafficPolicy {
            connection_pool: Some(pb::ConnectionPool {
                max_connections: 50,
                http1_max_pending_requests: 30,
                ..Default::default()
            }),
            outlier_detection: Some(pb::OutlierDetection {
                consecutive_5xx_errors: 3,
                interval_ms: 30_000,
                base_ejection_time_ms: 60_000,
                max_ejection_percent: 50,
                ..Default::default()
            }),
            ..Default::default()
        }
    }

    fn waypoint() -> WaypointId {
        WaypointId {
            namespace: "prod".into(),
            name: "waypoint".into(),
        }
    }

    #[tokio::test(start_paused = true)]
    async fn clusters_show_endpoints_with_outlier_state_and_limits() {
        let snap = snapshot();
        let clusters = Clusters::new(Arc::new(TcpConnector));
        // Before any traffic: the served service's default cluster, all endpoints healthy.
        let v = clusters_view(&clusters, &snap);
        let c = &v["clusters"][0];
        assert_eq!(c["name"], format!("outbound|80||{HOST}"));
        assert_eq!(c["active"], false);
        assert_eq!(c["limits"]["max_connections"], 50);
        assert_eq!(c["limits"]["max_requests"], Value::Null, "unlimited");
        assert_eq!(c["outlier_detection"]["base_ejection_time_ms"], 60_000);
        let eps = c["endpoints"].as_array().unwrap();
        assert_eq!(eps.len(), 2);
        assert!(eps.iter().all(|e| e["health"] == "HEALTHY"));
        assert_eq!(
            eps[0]["identity"],
            "spiffe://cluster.local/ns/prod/sa/payment"
        );

        // Traffic created the cluster; three 5xx eject one endpoint.
        let key = ClusterKey {
            namespace: "prod".into(),
            hostname: HOST.into(),
            port: 80,
            subset: String::new(),
        };
        let cl = clusters.get(key, Some(&policy()), Proto::Http1);
        let bad: SocketAddr = "127.0.0.11:8080".parse().unwrap();
        for _ in 0..3 {
            cl.outlier
                .as_ref()
                .unwrap()
                .record(bad, Observation::Status(503), 2);
        }
        tokio::time::advance(Duration::from_secs(5)).await;
        let v = clusters_view(&clusters, &snap);
        let clusters_list = v["clusters"].as_array().unwrap();
        assert_eq!(
            clusters_list.len(),
            1,
            "the live cluster replaces the default one"
        );
        let c = &clusters_list[0];
        assert_eq!(
            (c["active"].clone(), c["protocol"].clone()),
            (json!(true), json!("HTTP1"))
        );
        assert_eq!(c["pool"]["connections"], 0);
        let e = &c["endpoints"][0];
        assert_eq!(e["address"], "127.0.0.11:8080");
        assert_eq!(e["workload"], "prod/payment-0");
        assert_eq!(e["health"], "EJECTED");
        assert_eq!(e["outlier"]["ejections"], 1);
        // Ejected at t = 0 for 60 s: the tick at 60 s returns it, 55 s from now.
        assert_eq!(e["outlier"]["ejected_for_ms"], 55_000);
        assert_eq!(c["endpoints"][1]["health"], "HEALTHY");
        assert_eq!(c["endpoints"][1]["active_requests"], 0);
    }

    fn clusters_view(c: &Clusters, snap: &Snapshot) -> Value {
        clusters(c, snap, &waypoint())
    }

    #[test]
    fn config_dump_carries_routes() {
        let v = config_dump(&snapshot());
        assert_eq!(v["version"], 3);
        assert_eq!(v["resources"].as_array().unwrap().len(), 4);
        assert_eq!(v["routes"][0]["hostname"], HOST);
        assert_eq!(
            v["routes"][0]["trafficPolicy"]["connectionPool"]["maxConnections"],
            50
        );
    }

    #[test]
    fn certs_in_ztunnel_shape() {
        assert_eq!(certs(None), json!({ "certificates": [] }));
        let ca = TestCa::new("cluster.local");
        let id = "spiffe://cluster.local/ns/prod/sa/waypoint"
            .parse()
            .unwrap();
        let cert = ca.issue(&id, Duration::from_secs(3600));
        let v = certs(Some(&cert));
        let c = &v["certificates"][0];
        assert_eq!(c["identity"], "spiffe://cluster.local/ns/prod/sa/waypoint");
        assert_eq!(c["serial"], cert.serial());
        let (nb, na) = (
            c["not_before"].as_u64().unwrap(),
            c["not_after"].as_u64().unwrap(),
        );
        assert!(na > nb && na - nb <= 3700, "{nb} {na}");
        assert!(c["chain_pem"]
            .as_str()
            .unwrap()
            .contains("BEGIN CERTIFICATE"));
    }
}

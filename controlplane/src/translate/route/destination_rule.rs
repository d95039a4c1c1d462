//! DestinationRule traffic policies and subset merging.

use meshwork_api::networking::{self as net, TrafficPolicy as ApiPolicy};
use meshwork_model::pb::config::{
    consistent_hash::Key as HashKey, load_balancer::Simple, ConnectionPool, ConsistentHash,
    CookieAttribute, LoadBalancer, OutlierDetection, TrafficPolicy, Warmup,
};

use super::ms;

/// Overlays `b` on `a`: every field set in `b` wins.
fn merge_opt<T: Clone>(a: &Option<T>, b: &Option<T>, merge: impl Fn(&T, &T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(merge(a, b)),
        (None, b) => b.clone(),
        (a, None) => a.clone(),
    }
}

fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
    b.clone().or_else(|| a.clone())
}

/// Subset policy merged over the host policy, field by field.
pub fn merge_policy(host: &ApiPolicy, subset: &ApiPolicy) -> ApiPolicy {
    ApiPolicy {
        load_balancer: pick(&host.load_balancer, &subset.load_balancer),
        connection_pool: merge_opt(&host.connection_pool, &subset.connection_pool, |a, b| {
            net::ConnectionPoolSettings {
                tcp: merge_opt(&a.tcp, &b.tcp, |a, b| net::TcpSettings {
                    max_connections: pick(&a.max_connections, &b.max_connections),
                    connect_timeout: pick(&a.connect_timeout, &b.connect_timeout),
                    tcp_keepalive: pick(&a.tcp_keepalive, &b.tcp_keepalive),
                    max_connection_duration: pick(
                        &a.max_connection_duration,
                        &b.max_connection_duration,
                    ),
                    idle_timeout: pick(&a.idle_timeout, &b.idle_timeout),
                }),
                http: merge_opt(&a.http, &b.http, |a, b| net::HttpSettings {
                    http1_max_pending_requests: pick(
                        &a.http1_max_pending_requests,
                        &b.http1_max_pending_requests,
                    ),
                    http2_max_requests: pick(&a.http2_max_requests, &b.http2_max_requests),
                    max_requests_per_connection: pick(
                        &a.max_requests_per_connection,
                        &b.max_requests_per_connection,
                    ),
                    max_retries: pick(&a.max_retries, &b.max_retries),
                    idle_timeout: pick(&a.idle_timeout, &b.idle_timeout),
                    h2_upgrade_policy: pick(&a.h2_upgrade_policy, &b.h2_upgrade_policy),
                    use_client_protocol: pick(&a.use_client_protocol, &b.use_client_protocol),
                    max_concurrent_streams: pick(
                        &a.max_concurrent_streams,
                        &b.max_concurrent_streams,
                    ),
                    http2_keep_alive: pick(&a.http2_keep_alive, &b.http2_keep_alive),
                }),
            }
        }),
        outlier_detection: merge_opt(
            &host.outlier_detection,
            &subset.outlier_detection,
            |a, b| net::OutlierDetection {
                split_external_local_origin_errors: pick(
                    &a.split_external_local_origin_errors,
                    &b.split_external_local_origin_errors,
                ),
                consecutive_local_origin_failures: pick(
                    &a.consecutive_local_origin_failures,
                    &b.consecutive_local_origin_failures,
                ),
                consecutive_gateway_errors: pick(
                    &a.consecutive_gateway_errors,
                    &b.consecutive_gateway_errors,
                ),
                consecutive_5xx_errors: pick(&a.consecutive_5xx_errors, &b.consecutive_5xx_errors),
                consecutive_errors: pick(&a.consecutive_errors, &b.consecutive_errors),
                interval: pick(&a.interval, &b.interval),
                base_ejection_time: pick(&a.base_ejection_time, &b.base_ejection_time),
                max_ejection_percent: pick(&a.max_ejection_percent, &b.max_ejection_percent),
                min_health_percent: pick(&a.min_health_percent, &b.min_health_percent),
            },
        ),
        tls: pick(&host.tls, &subset.tls),
        port_level_settings: if subset.port_level_settings.is_empty() {
            host.port_level_settings.clone()
        } else {
            subset.port_level_settings.clone()
        },
        tunnel: pick(&host.tunnel, &subset.tunnel),
        proxy_protocol: pick(&host.proxy_protocol, &subset.proxy_protocol),
    }
}

/// Istio's defaults where the user left a field out: `baseEjectionTime` 30 s,
/// `interval` 10 s, `maxEjectionPercent` 10, `consecutive5xxErrors` 5.
pub fn traffic_policy(p: &ApiPolicy) -> TrafficPolicy {
    TrafficPolicy {
        connection_pool: p.connection_pool.as_ref().map(|c| {
            let tcp = c.tcp.clone().unwrap_or_default();
            let http = c.http.clone().unwrap_or_default();
            ConnectionPool {
                max_connections: tcp.max_connections.unwrap_or(0),
                connect_timeout_ms: ms(tcp.connect_timeout),
                http1_max_pending_requests: http.http1_max_pending_requests.unwrap_or(0),
                http2_max_requests: http.http2_max_requests.unwrap_or(0),
                max_requests_per_connection: http.max_requests_per_connection.unwrap_or(0),
                max_retries: http.max_retries.unwrap_or(0),
                idle_timeout_ms: ms(http.idle_timeout.or(tcp.idle_timeout)),
                h2_upgrade_policy: http.h2_upgrade_policy.unwrap_or_default(),
                h2_keepalive_interval_ms: ms(http
                    .http2_keep_alive
                    .as_ref()
                    .and_then(|k| k.interval)),
                h2_keepalive_timeout_ms: ms(http.http2_keep_alive.as_ref().and_then(|k| k.timeout)),
            }
        }),
        outlier_detection: p.outlier_detection.as_ref().map(|o| OutlierDetection {
            consecutive_5xx_errors: o
                .consecutive_5xx_errors
                .or(o.consecutive_errors)
                .unwrap_or(5),
            consecutive_gateway_errors: o.consecutive_gateway_errors.unwrap_or(0),
            interval_ms: o.interval.map(|d| d.as_millis()).unwrap_or(10_000),
            base_ejection_time_ms: o
                .base_ejection_time
                .map(|d| d.as_millis())
                .unwrap_or(30_000),
            max_ejection_percent: o.max_ejection_percent.unwrap_or(10),
            min_health_percent: o.min_health_percent.unwrap_or(0),
            split_external_local_origin_errors: o
                .split_external_local_origin_errors
                .unwrap_or(false),
            consecutive_local_origin_failures: o.consecutive_local_origin_failures.unwrap_or(0),
            enabled: true,
        }),
        load_balancer: p.load_balancer.as_ref().map(|lb| LoadBalancer {
            simple: match lb.simple.as_deref() {
                Some("ROUND_ROBIN") => Simple::RoundRobin,
                Some("LEAST_CONN") | Some("LEAST_REQUEST") => Simple::LeastRequest,
                Some("RANDOM") => Simple::Random,
                Some("PASSTHROUGH") => Simple::Passthrough,
                _ => Simple::Unspecified,
            } as i32,
            warmup: lb
                .warmup
                .as_ref()
                .map(|w| Warmup {
                    duration_ms: ms(w.duration),
                    minimum_percent: w.minimum_percent.unwrap_or(0.0),
                    aggression: w.aggression.unwrap_or(0.0),
                })
                .or_else(|| {
                    lb.warmup_duration_secs.map(|d| Warmup {
                        duration_ms: ms(Some(d)),
                        ..Default::default()
                    })
                })
                .filter(|w| w.duration_ms > 0),
            consistent_hash: lb.consistent_hash.as_ref().map(|ch| ConsistentHash {
                key: if let Some(h) = &ch.http_header_name {
                    Some(HashKey::HttpHeaderName(h.clone()))
                } else if let Some(c) = &ch.http_cookie {
                    Some(HashKey::HttpCookie(c.name.clone()))
                } else if ch.use_source_ip == Some(true) {
                    Some(HashKey::UseSourceIp(true))
                } else {
                    ch.http_query_parameter_name
                        .clone()
                        .map(HashKey::HttpQueryParameterName)
                },
                cookie_ttl_ms: ch.http_cookie.as_ref().map(|c| ms(c.ttl)).unwrap_or(0),
                cookie_path: ch
                    .http_cookie
                    .as_ref()
                    .map(|c| c.path.clone())
                    .unwrap_or_default(),
                cookie_attributes: ch
                    .http_cookie
                    .iter()
                    .flat_map(|c| &c.attributes)
                    .map(|a| CookieAttribute {
                        name: a.name.clone(),
                        value: a.value.clone(),
                    })
                    .collect(),
            }),
        }),
        tls_mode: p
            .tls
            .as_ref()
            .and_then(|t| t.mode.clone())
            .unwrap_or_default(),
    }
}

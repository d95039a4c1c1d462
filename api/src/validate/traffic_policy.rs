//! DestinationRule traffic policies: load balancer, connection pool, outlier detection.

use std::collections::BTreeSet;

use super::Problems;
use crate::networking::{
    ConnectionPoolSettings, HttpCookie, LoadBalancerSettings, OutlierDetection, TrafficPolicy,
};

pub(super) fn traffic_policy(f: &str, tp: &TrafficPolicy, p: &mut Problems) {
    if let Some(lb) = &tp.load_balancer {
        load_balancer(&format!("{f}.loadBalancer"), lb, p);
    }
    if let Some(od) = &tp.outlier_detection {
        outlier(&format!("{f}.outlierDetection"), od, p);
    }
    if let Some(cp) = &tp.connection_pool {
        if cp.tcp.is_none() && cp.http.is_none() {
            p.add(
                format!("{f}.connectionPool"),
                "at least one of tcp or http is required",
            );
        }
        connection_pool_durations(&format!("{f}.connectionPool"), cp, p);
    }
    if let Some(h) = tp.connection_pool.as_ref().and_then(|c| c.http.as_ref()) {
        if let Some(ka) = &h.http2_keep_alive {
            let kf = format!("{f}.connectionPool.http.http2KeepAlive");
            for (name, d) in [("interval", &ka.interval), ("timeout", &ka.timeout)] {
                match d {
                    None => p.add(format!("{kf}.{name}"), "required"),
                    Some(d) => p.duration(format!("{kf}.{name}"), d),
                }
            }
        }
        if let Some(policy) = &h.h2_upgrade_policy {
            if !["DEFAULT", "DO_NOT_UPGRADE", "UPGRADE"].contains(&policy.as_str()) {
                p.add(
                    format!("{f}.connectionPool.http.h2UpgradePolicy"),
                    format!("unknown value \"{policy}\" (DEFAULT, DO_NOT_UPGRADE or UPGRADE)"),
                );
            }
        }
    }
    if let Some(mode) = tp.tls.as_ref().and_then(|t| t.mode.as_ref()) {
        if !["DISABLE", "SIMPLE", "MUTUAL", "ISTIO_MUTUAL"].contains(&mode.as_str()) {
            p.add(
                format!("{f}.tls.mode"),
                format!("unknown TLS mode \"{mode}\" (DISABLE, SIMPLE, MUTUAL or ISTIO_MUTUAL)"),
            );
        }
    }
    for (i, pl) in tp.port_level_settings.iter().enumerate() {
        let pf = format!("{f}.portLevelSettings[{i}]");
        if pl.port.is_none_or(|s| s.number == 0) {
            p.add(format!("{pf}.port.number"), "required");
        }
        if let Some(lb) = &pl.load_balancer {
            load_balancer(&format!("{pf}.loadBalancer"), lb, p);
        }
        if let Some(od) = &pl.outlier_detection {
            outlier(&format!("{pf}.outlierDetection"), od, p);
        }
    }
}

fn load_balancer(f: &str, lb: &LoadBalancerSettings, p: &mut Problems) {
    if let Some(s) = &lb.simple {
        const SIMPLE: &[&str] = &[
            "UNSPECIFIED",
            "LEAST_CONN",
            "RANDOM",
            "PASSTHROUGH",
            "ROUND_ROBIN",
            "LEAST_REQUEST",
        ];
        if !SIMPLE.contains(&s.as_str()) {
            p.add(
                format!("{f}.simple"),
                format!("unknown load balancer \"{s}\""),
            );
        }
        if lb.consistent_hash.is_some() {
            p.add(f, "simple and consistentHash are mutually exclusive");
        }
    }
    if lb.locality_lb_setting.is_some() && lb.zone_aware_lb_setting.is_some() {
        p.add(
            f,
            "localityLbSetting and zoneAwareLbSetting are mutually exclusive",
        );
    }
    if let Some(w) = &lb.warmup {
        match &w.duration {
            None => p.add(format!("{f}.warmup.duration"), "required"),
            Some(d) => p.duration(format!("{f}.warmup.duration"), d),
        }
        if let Some(v) = w.minimum_percent {
            p.percent(format!("{f}.warmup.minimumPercent"), v);
        }
        if w.aggression.is_some_and(|a| a.is_nan() || a < 0.0) {
            p.add(format!("{f}.warmup.aggression"), "must not be negative");
        }
    }
    if let Some(ch) = &lb.consistent_hash {
        if let Some(c) = &ch.http_cookie {
            cookie(&format!("{f}.consistentHash.httpCookie"), c, p);
        }
        let keys = usize::from(ch.http_header_name.is_some())
            + usize::from(ch.http_cookie.is_some())
            + usize::from(ch.use_source_ip == Some(true))
            + usize::from(ch.http_query_parameter_name.is_some());
        if keys != 1 {
            p.add(
                format!("{f}.consistentHash"),
                "exactly one of httpHeaderName, httpCookie, useSourceIp or httpQueryParameterName is required",
            );
        }
    }
}

fn outlier(f: &str, od: &OutlierDetection, p: &mut Problems) {
    for (name, d) in [
        ("interval", &od.interval),
        ("baseEjectionTime", &od.base_ejection_time),
    ] {
        if let Some(d) = d {
            p.duration(format!("{f}.{name}"), d);
        }
    }
    if od.consecutive_errors.is_some_and(|n| n != 0) {
        p.warn(
            format!("{f}.consecutiveErrors"),
            "deprecated: use consecutiveGatewayErrors or consecutive5xxErrors",
        );
    }
    if od.split_external_local_origin_errors != Some(true)
        && od.consecutive_local_origin_failures.is_some_and(|n| n > 0)
    {
        p.add(
            format!("{f}.consecutiveLocalOriginFailures"),
            "requires splitExternalLocalOriginErrors: true",
        );
    }
    if let Some(v) = od.max_ejection_percent {
        p.percent(format!("{f}.maxEjectionPercent"), f64::from(v));
    }
    if let Some(v) = od.min_health_percent {
        p.percent(format!("{f}.minHealthPercent"), f64::from(v));
    }
}

/// Istio: a cookie name is required; attribute names are required and unique.
fn cookie(f: &str, c: &HttpCookie, p: &mut Problems) {
    if c.name.is_empty() {
        p.add(format!("{f}.name"), "required");
    }
    let mut seen = BTreeSet::new();
    for (i, a) in c.attributes.iter().enumerate() {
        if a.name.is_empty() {
            p.add(format!("{f}.attributes[{i}].name"), "required");
        } else if !seen.insert(a.name.as_str()) {
            p.add(
                format!("{f}.attributes[{i}].name"),
                format!("duplicate cookie attribute \"{}\"", a.name),
            );
        }
    }
}

/// Istio's `ValidateDuration` on the pool's durations (a TCP idle timeout of 0 disables it).
fn connection_pool_durations(f: &str, cp: &ConnectionPoolSettings, p: &mut Problems) {
    if let Some(t) = &cp.tcp {
        let idle = t.idle_timeout.filter(|d| d.as_millis() != 0);
        let ka = t.tcp_keepalive.as_ref();
        for (name, d) in [
            ("tcp.connectTimeout", t.connect_timeout),
            ("tcp.maxConnectionDuration", t.max_connection_duration),
            ("tcp.idleTimeout", idle),
            ("tcp.tcpKeepalive.time", ka.and_then(|k| k.time)),
            ("tcp.tcpKeepalive.interval", ka.and_then(|k| k.interval)),
        ] {
            if let Some(d) = d {
                p.duration(format!("{f}.{name}"), &d);
            }
        }
    }
    if let Some(h) = &cp.http {
        if let Some(d) = &h.idle_timeout {
            p.duration(format!("{f}.http.idleTimeout"), d);
        }
        if h.h2_upgrade_policy.as_deref() == Some("UPGRADE") && h.use_client_protocol == Some(true)
        {
            p.add(
                format!("{f}.http.useClientProtocol"),
                "must not be true when h2UpgradePolicy is UPGRADE",
            );
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::networking::{HttpSettings, TcpSettings};
    use crate::Duration;

    fn fields(tp: &TrafficPolicy) -> (Vec<String>, Vec<String>) {
        let mut p = Problems::default();
        traffic_policy("tp", tp, &mut p);
        let r = p.into_report();
        let f = |v: Vec<super::super::Problem>| v.into_iter().map(|x| x.field).collect();
        (f(r.errors), f(r.warnings))
    }

    #[test]
    fn pool_durations_are_whole_milliseconds() {
        let tp = TrafficPolicy {
            connection_pool: Some(ConnectionPoolSettings {
                tcp: Some(TcpSettings {
                    connect_timeout: Some(Duration(std::time::Duration::from_micros(1500))),
                    idle_timeout: Some(Duration::from_millis(0)),
                    ..Default::default()
                }),
                http: Some(HttpSettings {
                    idle_timeout: Some(Duration(std::time::Duration::from_micros(10))),
                    ..Default::default()
                }),
            }),
            ..Default::default()
        };
        assert_eq!(
            fields(&tp).0,
            [
                "tp.connectionPool.tcp.connectTimeout",
                "tp.connectionPool.http.idleTimeout"
            ]
        );
    }

    #[test]
    fn empty_pool_and_outlier_rules() {
        let tp = TrafficPolicy {
            connection_pool: Some(ConnectionPoolSettings::default()),
            outlier_detection: Some(OutlierDetection {
                consecutive_errors: Some(5),
                consecutive_local_origin_failures: Some(3),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            fields(&tp),
            (
                vec![
                    "tp.outlierDetection.consecutiveLocalOriginFailures".to_string(),
                    "tp.connectionPool".to_string()
                ],
                vec!["tp.outlierDetection.consecutiveErrors".to_string()]
            )
        );
    }
}

//! DestinationRule traffic policies: load balancer, connection pool, outlier detection.

use std::collections::BTreeSet;

use super::{syntax, Problems};
use crate::networking::{
    ClientTlsSettings, ConnectionPoolSettings, HttpCookie, LoadBalancerSettings, OutlierDetection,
    TrafficPolicy,
};

pub(super) fn traffic_policy(f: &str, tp: &TrafficPolicy, p: &mut Problems) {
    if tp.load_balancer.is_none()
        && tp.connection_pool.is_none()
        && tp.outlier_detection.is_none()
        && tp.tls.is_none()
        && tp.port_level_settings.is_empty()
        && tp.tunnel.is_none()
        && tp.proxy_protocol.is_none()
    {
        p.add(f, "traffic policy must have at least one field");
        return;
    }
    if tp.tunnel.is_some() && tp.proxy_protocol.is_some() {
        p.add(f, "tunnel and proxyProtocol must not be set together");
        return;
    }
    if let Some(lb) = &tp.load_balancer {
        load_balancer(
            &format!("{f}.loadBalancer"),
            lb,
            tp.outlier_detection.is_some(),
            p,
        );
    }
    if let Some(t) = &tp.tls {
        client_tls(&format!("{f}.tls"), t, p);
    }
    if let Some(t) = &tp.tunnel {
        tunnel(&format!("{f}.tunnel"), t, p);
    }
    if let Some(v) = tp
        .proxy_protocol
        .as_ref()
        .and_then(|pp| pp.get("version"))
        .filter(|v| !v.is_null())
    {
        if !matches!(v.as_str(), Some("V1" | "V2")) {
            p.add(
                format!("{f}.proxyProtocol.version"),
                "proxy protocol version must be V1 or V2",
            );
        }
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
        if pl.load_balancer.is_none()
            && pl.connection_pool.is_none()
            && pl.outlier_detection.is_none()
            && pl.tls.is_none()
        {
            p.add(&pf, "port traffic policy must have at least one field");
        }
        if let Some(lb) = &pl.load_balancer {
            load_balancer(
                &format!("{pf}.loadBalancer"),
                lb,
                pl.outlier_detection.is_some(),
                p,
            );
        }
        if let Some(od) = &pl.outlier_detection {
            outlier(&format!("{pf}.outlierDetection"), od, p);
        }
        if let Some(cp) = &pl.connection_pool {
            if cp.tcp.is_none() && cp.http.is_none() {
                p.add(
                    format!("{pf}.connectionPool"),
                    "at least one of tcp or http is required",
                );
            }
            connection_pool_durations(&format!("{pf}.connectionPool"), cp, p);
        }
        if let Some(t) = &pl.tls {
            client_tls(&format!("{pf}.tls"), t, p);
        }
    }
}

/// Istio's `validateTunnelSettings` (the settings are kept raw in the typed API).
fn tunnel(f: &str, t: &crate::networking::Raw, p: &mut Problems) {
    use serde_yaml_ng::Value;
    let protocol = t.get("protocol").and_then(Value::as_str).unwrap_or("");
    if !matches!(protocol, "" | "CONNECT" | "POST") {
        p.add(
            format!("{f}.protocol"),
            "tunnel protocol must be \"CONNECT\" or \"POST\"",
        );
    }
    let host = t.get("targetHost").and_then(Value::as_str).unwrap_or("");
    if syntax::fqdn(host).is_err() && !syntax::is_ip(host) {
        p.add(
            format!("{f}.targetHost"),
            format!("tunnel target host \"{host}\" must be a valid FQDN or IP address"),
        );
    }
    let port = t.get("targetPort").and_then(Value::as_u64).unwrap_or(0);
    syntax::port(
        p,
        format!("{f}.targetPort"),
        u32::try_from(port).unwrap_or(0),
    );
}

/// Istio's `ValidateTLS` for a client TLS policy.
fn client_tls(f: &str, t: &ClientTlsSettings, p: &mut Problems) {
    let mode = t.mode.as_deref().unwrap_or("DISABLE");
    let set = |v: &Option<String>| v.as_deref().is_some_and(|s| !s.is_empty());
    let credential = set(&t.credential_name);
    if t.insecure_skip_verify == Some(true) {
        if mode == "SIMPLE"
            && (set(&t.ca_certificates) || credential || !t.subject_alt_names.is_empty())
        {
            p.add(
                format!("{f}.insecureSkipVerify"),
                "cannot specify caCertificates, credentialName or subjectAltNames when insecureSkipVerify is true",
            );
        }
        if mode == "MUTUAL" && (set(&t.ca_certificates) || !t.subject_alt_names.is_empty()) {
            p.add(
                format!("{f}.insecureSkipVerify"),
                "cannot specify caCertificates or subjectAltNames when insecureSkipVerify is true",
            );
        }
    }
    if matches!(mode, "SIMPLE" | "MUTUAL") && credential {
        if set(&t.client_certificate) || set(&t.ca_certificates) || set(&t.private_key) {
            p.add(
                format!("{f}.credentialName"),
                "cannot specify client certificates or CA certificate if credentialName is set",
            );
        }
        return;
    }
    if mode == "MUTUAL" {
        if !set(&t.client_certificate) {
            p.add(
                format!("{f}.clientCertificate"),
                "client certificate required for mutual tls",
            );
        }
        if !set(&t.private_key) {
            p.add(
                format!("{f}.privateKey"),
                "private key required for mutual tls",
            );
        }
    }
}

/// Istio's `ValidateLocalityLbSetting` (the setting is kept raw in the typed API).
fn locality_lb(f: &str, lb: &crate::networking::Raw, has_outlier: bool, p: &mut Problems) {
    use serde_yaml_ng::Value;
    let list = |key: &str| -> Vec<Value> {
        lb.get(key)
            .and_then(Value::as_sequence)
            .cloned()
            .unwrap_or_default()
    };
    let distribute = list("distribute");
    let failover = list("failover");
    let priority = list("failoverPriority");
    if !distribute.is_empty() && !failover.is_empty() {
        p.add(
            f,
            "can not simultaneously specify 'distribute' and 'failover'",
        );
        return;
    }
    let s = |v: &Value, key: &str| v.get(key).and_then(Value::as_str).unwrap_or("").to_string();
    if !failover.is_empty() {
        for l in &priority {
            if let Some(l) = l.as_str() {
                if matches!(
                    l,
                    "topology.kubernetes.io/region"
                        | "topology.kubernetes.io/zone"
                        | "topology.istio.io/subzone"
                ) {
                    p.add(
                        format!("{f}.failoverPriority"),
                        format!("can not simultaneously set 'failover' and topology label '{l}' in 'failover_priority'"),
                    );
                    return;
                }
            }
        }
    }
    for (i, d) in distribute.iter().enumerate() {
        let mut total = 0u64;
        if let Some(to) = d.get("to").and_then(Value::as_mapping) {
            for w in to.values() {
                let w = w.as_u64().unwrap_or(0);
                if !(1..=100).contains(&w) {
                    p.add(
                        format!("{f}.distribute[{i}].to"),
                        "locality weight must be in range [1, 100]",
                    );
                    return;
                }
                total += w;
            }
        }
        if total != 100 {
            p.add(
                format!("{f}.distribute[{i}].to"),
                format!("total locality weight {total} != 100"),
            );
            return;
        }
    }
    if (!failover.is_empty() || !priority.is_empty()) && !has_outlier {
        p.warn(f, "outlier detection policy must be provided for failover");
    }
    for (i, fo) in failover.iter().enumerate() {
        let (from, to) = (s(fo, "from"), s(fo, "to"));
        let ff = format!("{f}.failover[{i}]");
        if from == to {
            p.add(
                &ff,
                "locality lb failover settings must specify different regions",
            );
        }
        if from.contains('/') || to.contains('/') {
            p.add(&ff, "locality lb failover only specify region");
        }
        if from.contains('*') || to.contains('*') {
            p.add(
                &ff,
                "locality lb failover region should not contain '*' wildcard",
            );
        }
    }
}

fn load_balancer(f: &str, lb: &LoadBalancerSettings, has_outlier: bool, p: &mut Problems) {
    if let Some(l) = &lb.locality_lb_setting {
        locality_lb(&format!("{f}.localityLbSetting"), l, has_outlier, p);
    }
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
        if w.aggression.is_some_and(|a| a.is_nan() || a <= 0.0) {
            p.add(
                format!("{f}.warmup.aggression"),
                "aggression should be greater than 0",
            );
        }
    }
    if let Some(ch) = &lb.consistent_hash {
        if ch.minimum_ring_size.is_some_and(|n| n != 0) {
            p.warn(
                format!("{f}.consistentHash.minimumRingSize"),
                "deprecated: use consistentHash.ringHash instead",
            );
            if ch.ring_hash.is_some() || ch.maglev.is_some() {
                p.add(
                    format!("{f}.consistentHash"),
                    "only one of minimumRingSize or maglev/ringHash can be specified",
                );
            }
        }
        if let Some(m) = &ch.maglev {
            let size = m
                .get("tableSize")
                .and_then(serde_yaml_ng::Value::as_u64)
                .unwrap_or(0);
            let prime = size != 0
                && (size < 4
                    || (size % 2 == 1
                        && (3..)
                            .step_by(2)
                            .take_while(|d| d * d <= size)
                            .all(|d| size % d != 0)));
            if size == 0 || size >= 5_000_011 || !prime {
                p.add(
                    format!("{f}.consistentHash.maglev.tableSize"),
                    "tableSize must be set, a prime number and less than 5000011",
                );
            }
        }
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

    #[test]
    fn tunnel_and_client_tls() {
        let raw = |y: &str| serde_yaml_ng::from_str::<crate::networking::Raw>(y).unwrap();
        let tp = TrafficPolicy {
            tunnel: Some(raw(
                "{protocol: UDP, targetHost: 'bad host', targetPort: 0}",
            )),
            ..Default::default()
        };
        assert_eq!(
            fields(&tp).0,
            [
                "tp.tunnel.protocol",
                "tp.tunnel.targetHost",
                "tp.tunnel.targetPort"
            ]
        );
        let tp = TrafficPolicy {
            tunnel: Some(raw(
                "{protocol: CONNECT, targetHost: 10.0.0.1, targetPort: 8443}",
            )),
            ..Default::default()
        };
        assert_eq!(fields(&tp).0, Vec::<String>::new());
        let tls = |mode: &str, cert: Option<&str>, cred: Option<&str>| TrafficPolicy {
            tls: Some(ClientTlsSettings {
                mode: Some(mode.into()),
                client_certificate: cert.map(Into::into),
                credential_name: cred.map(Into::into),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(
            fields(&tls("MUTUAL", None, None)).0,
            ["tp.tls.clientCertificate", "tp.tls.privateKey"]
        );
        assert_eq!(
            fields(&tls("MUTUAL", None, Some("secret"))).0,
            Vec::<String>::new()
        );
        assert_eq!(
            fields(&tls("SIMPLE", Some("c.pem"), Some("secret"))).0,
            ["tp.tls.credentialName"]
        );
        assert_eq!(
            fields(&TrafficPolicy::default()).0,
            ["tp"],
            "an empty traffic policy is refused"
        );
    }
}

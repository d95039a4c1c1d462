//! VirtualService and DestinationRule rules.

use super::Problems;
use crate::common::StringMatch;
use crate::networking::{
    DestinationRule, HttpRoute, LoadBalancerSettings, OutlierDetection, TrafficPolicy,
    VirtualService,
};

pub(super) fn string_match(field: String, m: &StringMatch, p: &mut Problems) {
    if m.kinds_set() > 1 {
        p.add(field, "only one of exact, prefix or regex may be set");
    }
}

const RETRY_ON: &[&str] = &[
    "5xx",
    "gateway-error",
    "reset",
    "reset-before-request",
    "connect-failure",
    "envoy-ratelimited",
    "retriable-4xx",
    "refused-stream",
    "retriable-status-codes",
    "retriable-headers",
    "http3-post-connect-failure",
    "cancelled",
    "deadline-exceeded",
    "internal",
    "resource-exhausted",
    "unavailable",
];

/// Istio's rule: when weights are given for more than one destination they must total
/// 100 (destinations without a weight count as 0). Without any weight, traffic is split
/// evenly.
fn weights<'a>(
    field: &str,
    weights: impl Iterator<Item = Option<u32>> + Clone + 'a,
    p: &mut Problems,
) {
    let n = weights.clone().count();
    let any_given = weights.clone().any(|w| w.is_some());
    if n > 1 && any_given {
        let sum: u64 = weights.map(|w| u64::from(w.unwrap_or(0))).sum();
        if sum != 100 {
            p.add(
                field,
                format!(
                    "destination weights sum to {sum}; when weights are given they must total 100"
                ),
            );
        }
    } else if let Some(Some(w)) = weights.clone().next() {
        if w > 100 {
            p.add(field, format!("weight {w} exceeds 100"));
        }
    }
}

pub(super) fn virtual_service(vs: &VirtualService, p: &mut Problems) {
    // A VirtualService without hosts is a delegate: only HTTP routes, no nesting.
    if vs.hosts.is_empty() {
        if !vs.tcp.is_empty() || !vs.tls.is_empty() || vs.http.is_empty() {
            p.add(
                "spec.hosts",
                "at least one host is required (a delegate VirtualService without hosts may only have http routes)",
            );
        }
        if !vs.gateways.is_empty() {
            p.add(
                "spec.gateways",
                "a delegate VirtualService (no hosts) must not set gateways",
            );
        }
        for (i, r) in vs.http.iter().enumerate() {
            if r.delegate.is_some() {
                p.add(
                    format!("spec.http[{i}].delegate"),
                    "a delegate VirtualService (no hosts) cannot delegate further",
                );
            }
        }
    }
    for (i, h) in vs.hosts.iter().enumerate() {
        if h.is_empty() {
            p.add(format!("spec.hosts[{i}]"), "empty host");
        }
    }
    for (i, r) in vs.http.iter().enumerate() {
        http_route(&format!("spec.http[{i}]"), r, p);
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        let f = format!("spec.tcp[{i}]");
        if r.route.is_empty() {
            p.add(format!("{f}.route"), "at least one destination is required");
        }
        for (j, d) in r.route.iter().enumerate() {
            if d.destination.host.is_empty() {
                p.add(format!("{f}.route[{j}].destination.host"), "required");
            }
        }
        weights(&format!("{f}.route"), r.route.iter().map(|d| d.weight), p);
    }
    for (i, r) in vs.tls.iter().enumerate() {
        let f = format!("spec.tls[{i}]");
        if r.matches.is_empty() {
            p.add(format!("{f}.match"), "TLS routes need at least one match");
        }
        weights(&format!("{f}.route"), r.route.iter().map(|d| d.weight), p);
    }
}

fn http_route(f: &str, r: &HttpRoute, p: &mut Problems) {
    let targets = usize::from(!r.route.is_empty())
        + usize::from(r.redirect.is_some())
        + usize::from(r.direct_response.is_some())
        + usize::from(r.delegate.is_some());
    if let Some(d) = &r.delegate {
        if d.name.is_empty() {
            p.add(format!("{f}.delegate.name"), "required");
        }
    }
    if targets == 0 {
        p.add(
            f,
            "one of route, redirect, directResponse or delegate is required",
        );
    } else if targets > 1 {
        p.add(
            f,
            "route, redirect, directResponse and delegate are mutually exclusive",
        );
    }
    for (j, m) in r.matches.iter().enumerate() {
        let mf = format!("{f}.match[{j}]");
        for (name, sm) in [
            ("uri", &m.uri),
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                string_match(format!("{mf}.{name}"), sm, p);
            }
        }
        for (map_name, map) in [
            ("headers", &m.headers),
            ("queryParams", &m.query_params),
            ("withoutHeaders", &m.without_headers),
        ] {
            for (k, sm) in map {
                string_match(format!("{mf}.{map_name}.{k}"), sm, p);
            }
        }
    }
    for (j, d) in r.route.iter().enumerate() {
        if d.destination.host.is_empty() {
            p.add(format!("{f}.route[{j}].destination.host"), "required");
        }
    }
    weights(&format!("{f}.route"), r.route.iter().map(|d| d.weight), p);
    if let Some(retry) = &r.retries {
        for token in retry
            .retry_on
            .split(',')
            .map(str::trim)
            .filter(|t| !t.is_empty())
        {
            if !RETRY_ON.contains(&token) && token.parse::<u16>().is_err() {
                p.add(
                    format!("{f}.retries.retryOn"),
                    format!("unknown retry condition \"{token}\""),
                );
            }
        }
    }
    if let Some(fault) = &r.fault {
        if fault.delay.is_none() && fault.abort.is_none() {
            p.add(format!("{f}.fault"), "one of delay or abort is required");
        }
        if let Some(d) = &fault.delay {
            if d.fixed_delay.is_none() && d.exponential_delay.is_none() {
                p.add(format!("{f}.fault.delay.fixedDelay"), "required");
            }
            if let Some(pc) = d.percentage {
                p.percent(format!("{f}.fault.delay.percentage.value"), pc.value);
            }
            if let Some(pc) = d.percent {
                p.percent(format!("{f}.fault.delay.percent"), f64::from(pc));
            }
        }
        if let Some(a) = &fault.abort {
            match (a.http_status, &a.grpc_status, &a.http2_error) {
                (None, None, None) => p.add(
                    format!("{f}.fault.abort"),
                    "httpStatus or grpcStatus is required",
                ),
                (Some(s), _, _) if !(200..=599).contains(&s) => p.add(
                    format!("{f}.fault.abort.httpStatus"),
                    format!("HTTP status {s} must be between 200 and 599"),
                ),
                _ => {}
            }
            if let Some(pc) = a.percentage {
                p.percent(format!("{f}.fault.abort.percentage.value"), pc.value);
            }
        }
    }
    if let Some(pc) = r.mirror_percentage {
        p.percent(format!("{f}.mirrorPercentage.value"), pc.value);
    }
    if let Some(pc) = r.mirror_percent {
        p.percent(format!("{f}.mirrorPercent"), f64::from(pc));
    }
    if let Some(m) = &r.mirror {
        if m.host.is_empty() {
            p.add(format!("{f}.mirror.host"), "required");
        }
    }
    if let Some(rd) = &r.redirect {
        if let Some(code) = rd.redirect_code {
            if !(300..=399).contains(&code) {
                p.add(
                    format!("{f}.redirect.redirectCode"),
                    format!("redirect code {code} must be between 300 and 399"),
                );
            }
        }
    }
    if let Some(dr) = &r.direct_response {
        if !(200..=599).contains(&dr.status) {
            p.add(
                format!("{f}.directResponse.status"),
                format!("status {} must be between 200 and 599", dr.status),
            );
        }
    }
    if let Some(rw) = &r.rewrite {
        if !rw.uri.is_empty() && rw.uri_regex_rewrite.is_some() {
            p.add(
                format!("{f}.rewrite"),
                "uri and uriRegexRewrite are mutually exclusive",
            );
        }
    }
    if let Some(c) = &r.cors_policy {
        for (j, o) in c.allow_origins.iter().enumerate() {
            string_match(format!("{f}.corsPolicy.allowOrigins[{j}]"), o, p);
        }
    }
}

fn traffic_policy(f: &str, tp: &TrafficPolicy, p: &mut Problems) {
    if let Some(lb) = &tp.load_balancer {
        load_balancer(&format!("{f}.loadBalancer"), lb, p);
    }
    if let Some(od) = &tp.outlier_detection {
        outlier(&format!("{f}.outlierDetection"), od, p);
    }
    if let Some(h) = tp.connection_pool.as_ref().and_then(|c| c.http.as_ref()) {
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
    if let Some(ch) = &lb.consistent_hash {
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
    if let Some(v) = od.max_ejection_percent {
        p.percent(format!("{f}.maxEjectionPercent"), f64::from(v));
    }
    if let Some(v) = od.min_health_percent {
        p.percent(format!("{f}.minHealthPercent"), f64::from(v));
    }
}

pub(super) fn destination_rule(dr: &DestinationRule, p: &mut Problems) {
    if dr.host.is_empty() {
        p.add("spec.host", "required");
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy("spec.trafficPolicy", tp, p);
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        if s.name.is_empty() {
            p.add(format!("spec.subsets[{i}].name"), "required");
        } else if !names.insert(s.name.as_str()) {
            p.add(
                format!("spec.subsets[{i}].name"),
                format!("duplicate subset name \"{}\"", s.name),
            );
        }
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(&format!("spec.subsets[{i}].trafficPolicy"), tp, p);
        }
    }
}

//! VirtualService and DestinationRule rules.

use super::traffic_policy::traffic_policy;
use super::Problems;
use crate::common::StringMatch;
use crate::networking::{DestinationRule, HttpRoute, VirtualService};

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

/// Istio's rule: weights are relative, but with several destinations they must not all be
/// 0 (the mesh's one rule, [`meshwork_model::rules::weights::all_zero`]).
fn weights<'a>(
    field: &str,
    weights: impl Iterator<Item = Option<u32>> + Clone + 'a,
    p: &mut Problems,
) {
    if meshwork_model::rules::weights::all_zero(weights) {
        p.add(field, "total destination weight is 0");
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
            for (name, v) in [
                ("fixedDelay", &d.fixed_delay),
                ("exponentialDelay", &d.exponential_delay),
            ] {
                if let Some(v) = v {
                    p.duration(format!("{f}.fault.delay.{name}"), v);
                }
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
        if !r.mirrors.is_empty() {
            p.add(
                format!("{f}.mirrors"),
                "mirror and mirrors are mutually exclusive",
            );
        }
    }
    for (j, m) in r.mirrors.iter().enumerate() {
        if m.destination.host.is_empty() {
            p.add(format!("{f}.mirrors[{j}].destination.host"), "required");
        }
        if let Some(pc) = m.percentage {
            p.percent(format!("{f}.mirrors[{j}].percentage.value"), pc.value);
        }
    }
    if let Some(rd) = &r.redirect {
        if !rd.uri.is_empty() && !rd.prefix_rewrite.is_empty() {
            p.add(
                format!("{f}.redirect"),
                "uri and prefixRewrite are mutually exclusive",
            );
        }
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
        if let Some(d) = &c.max_age {
            p.duration(format!("{f}.corsPolicy.maxAge"), d);
        }
        for (j, o) in c.allow_origins.iter().enumerate() {
            string_match(format!("{f}.corsPolicy.allowOrigins[{j}]"), o, p);
        }
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

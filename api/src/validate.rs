//! Semantic validation per kind (what Istio's webhook would reject), returning named-field
//! problems. Syntax and type errors (bad durations, regexes, wrong types, unknown enum
//! values) are already caught while deserializing.

use std::net::IpAddr;

use crate::common::{check_regex, StringMatch};
use crate::gateway::{GrpcRoute, HttpHeaderMatch, HttpRoute as GwHttpRoute, HttpRouteFilter};
use crate::mesh::MeshConfigOverlay;
use crate::networking::{
    DestinationRule, HttpRoute, LoadBalancerSettings, OutlierDetection, TrafficPolicy,
    VirtualService,
};
use crate::object::{Object, Spec};

/// ConfigMaps with a `mesh` key are validated as mesh config in this namespace.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";
use crate::security::{AuthorizationPolicy, AuthzAction, PeerAuthentication};
use crate::telemetry::Telemetry;

/// A semantic problem in one field of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

#[derive(Default)]
struct Problems(Vec<Problem>);

impl Problems {
    fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.0.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }
    fn percent(&mut self, field: impl Into<String>, v: f64) {
        if !(0.0..=100.0).contains(&v) || v.is_nan() {
            self.add(field, format!("percentage {v} must be between 0 and 100"));
        }
    }
}

/// Validates one object; an empty result means it is acceptable.
pub fn validate(obj: &Object) -> Vec<Problem> {
    let mut p = Problems::default();
    match &obj.spec {
        Spec::VirtualService(vs) => virtual_service(vs, &mut p),
        Spec::DestinationRule(dr) => destination_rule(dr, &mut p),
        Spec::PeerAuthentication(pa) => peer_authentication(pa, &mut p),
        Spec::AuthorizationPolicy(ap) => authorization_policy(ap, &mut p),
        Spec::Telemetry(t) => telemetry(t, &mut p),
        Spec::Gateway(g) => {
            if g.gateway_class_name.is_empty() {
                p.add("spec.gatewayClassName", "required");
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, l) in g.listeners.iter().enumerate() {
                if !names.insert(l.name.as_str()) {
                    p.add(
                        format!("spec.listeners[{i}].name"),
                        format!("duplicate listener name \"{}\"", l.name),
                    );
                }
                if !(1..=65535).contains(&l.port) {
                    p.add(
                        format!("spec.listeners[{i}].port"),
                        format!("port {} out of range 1..=65535", l.port),
                    );
                }
            }
        }
        Spec::HttpRoute(r) => gw_http_route(r, &mut p),
        Spec::GrpcRoute(r) => gw_grpc_route(r, &mut p),
        Spec::ConfigMap(cm) if obj.namespace == DEFAULT_ROOT_NAMESPACE => {
            if let Some(mesh) = cm.data.as_ref().and_then(|d| d.get("mesh")) {
                if let Err(e) = MeshConfigOverlay::from_yaml(mesh) {
                    let field = match e.field() {
                        "" => "data.mesh".to_string(),
                        f => format!("data.mesh.{f}"),
                    };
                    p.add(field, e.message());
                }
            }
        }
        _ => {}
    }
    p.0
}

fn string_match(field: String, m: &StringMatch, p: &mut Problems) {
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

fn virtual_service(vs: &VirtualService, p: &mut Problems) {
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

fn destination_rule(dr: &DestinationRule, p: &mut Problems) {
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

fn peer_authentication(pa: &PeerAuthentication, p: &mut Problems) {
    if !pa.port_level_mtls.is_empty()
        && pa
            .selector
            .as_ref()
            .is_none_or(|s| s.match_labels.is_empty())
    {
        p.add(
            "spec.portLevelMtls",
            "port level mTLS settings require a workload selector",
        );
    }
}

/// Condition keys Istio accepts in `when`.
fn known_condition_key(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "source.ip",
        "source.namespace",
        "source.principal",
        "source.serviceAccount",
        "remote.ip",
        "request.auth.principal",
        "request.auth.audiences",
        "request.auth.presenter",
        "destination.ip",
        "destination.port",
        "connection.sni",
    ];
    EXACT.contains(&key)
        || (key.starts_with("request.headers[") && key.ends_with(']') && key.len() > 17)
        || (key.starts_with("request.auth.claims[") && key.ends_with(']') && key.len() > 21)
        || key.starts_with("experimental.envoy.filters.")
}

fn check_cidr(field: String, v: &str, p: &mut Problems) {
    let (addr, prefix) = match v.split_once('/') {
        Some((a, pfx)) => (a, Some(pfx)),
        None => (v, None),
    };
    let ok = match addr.parse::<IpAddr>() {
        Ok(ip) => match prefix {
            None => true,
            Some(pfx) => pfx
                .parse::<u8>()
                .is_ok_and(|n| n <= if ip.is_ipv4() { 32 } else { 128 }),
        },
        Err(_) => false,
    };
    if !ok {
        p.add(field, format!("invalid IP address or CIDR \"{v}\""));
    }
}

fn check_port(field: String, v: &str, p: &mut Problems) {
    if v.parse::<u16>().is_err() {
        p.add(field, format!("invalid port \"{v}\""));
    }
}

fn authorization_policy(ap: &AuthorizationPolicy, p: &mut Problems) {
    match (ap.action, &ap.provider) {
        (AuthzAction::Custom, None) => p.add("spec.provider", "action CUSTOM requires a provider"),
        (AuthzAction::Custom, Some(pr)) if pr.name.is_empty() => {
            p.add("spec.provider.name", "required")
        }
        (a, Some(_)) if a != AuthzAction::Custom => p.add(
            "spec.provider",
            format!(
                "provider is only allowed with action CUSTOM, not {}",
                a.as_str()
            ),
        ),
        _ => {}
    }
    let has_selector = ap.selector.is_some();
    if has_selector && (ap.target_ref.is_some() || !ap.target_refs.is_empty()) {
        p.add(
            "spec.targetRefs",
            "selector and targetRef/targetRefs are mutually exclusive",
        );
    }
    if ap.target_ref.is_some() && !ap.target_refs.is_empty() {
        p.add(
            "spec.targetRef",
            "targetRef and targetRefs are mutually exclusive",
        );
    }
    for (i, t) in ap.all_target_refs().iter().enumerate() {
        if t.name.is_empty() || t.kind.is_empty() {
            p.add(
                format!("spec.targetRefs[{i}]"),
                "kind and name are required",
            );
        }
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        let rf = format!("spec.rules[{i}]");
        for (j, from) in rule.from.iter().enumerate() {
            let Some(s) = &from.source else {
                p.add(format!("{rf}.from[{j}].source"), "must not be empty");
                continue;
            };
            let sf = format!("{rf}.from[{j}].source");
            for (name, list) in [
                ("ipBlocks", &s.ip_blocks),
                ("notIpBlocks", &s.not_ip_blocks),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
            ] {
                for (k, v) in list.iter().enumerate() {
                    check_cidr(format!("{sf}.{name}[{k}]"), v, p);
                }
            }
            for (name, list) in [
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
                ("requestPrincipals", &s.request_principals),
                ("notRequestPrincipals", &s.not_request_principals),
            ] {
                for (k, v) in list.iter().enumerate() {
                    if v.is_empty() {
                        p.add(format!("{sf}.{name}[{k}]"), "empty value");
                    }
                }
            }
            for (name, list) in [
                ("serviceAccounts", &s.service_accounts),
                ("notServiceAccounts", &s.not_service_accounts),
            ] {
                for (k, v) in list.iter().enumerate() {
                    if v.split('/').count() != 2 || v.contains('*') {
                        p.add(
                            format!("{sf}.{name}[{k}]"),
                            format!(
                                "\"{v}\" must be <namespace>/<service account> without wildcards"
                            ),
                        );
                    }
                }
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let Some(o) = &to.operation else {
                p.add(format!("{rf}.to[{j}].operation"), "must not be empty");
                continue;
            };
            let of = format!("{rf}.to[{j}].operation");
            for (name, list) in [("ports", &o.ports), ("notPorts", &o.not_ports)] {
                for (k, v) in list.iter().enumerate() {
                    check_port(format!("{of}.{name}[{k}]"), v, p);
                }
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            let cf = format!("{rf}.when[{j}]");
            if c.key.is_empty() {
                p.add(format!("{cf}.key"), "required");
            } else if !known_condition_key(&c.key) {
                p.add(
                    format!("{cf}.key"),
                    format!("unknown condition key \"{}\"", c.key),
                );
            }
            if c.values.is_empty() && c.not_values.is_empty() {
                p.add(&cf, "values or notValues is required");
            }
            if c.key == "destination.port" {
                for (k, v) in c.values.iter().enumerate() {
                    check_port(format!("{cf}.values[{k}]"), v, p);
                }
            }
            if matches!(c.key.as_str(), "source.ip" | "remote.ip" | "destination.ip") {
                for (k, v) in c.values.iter().enumerate() {
                    check_cidr(format!("{cf}.values[{k}]"), v, p);
                }
            }
        }
    }
}

fn telemetry(t: &Telemetry, p: &mut Problems) {
    if t.selector.is_some() && !t.all_target_refs().is_empty() {
        p.add(
            "spec.targetRefs",
            "selector and targetRef/targetRefs are mutually exclusive",
        );
    }
    const MODES: &[&str] = &["CLIENT_AND_SERVER", "CLIENT", "SERVER"];
    for (i, tr) in t.tracing.iter().enumerate() {
        let f = format!("spec.tracing[{i}]");
        if let Some(v) = tr.random_sampling_percentage {
            p.percent(format!("{f}.randomSamplingPercentage"), v);
        }
        if let Some(m) = &tr.match_ {
            if !MODES.contains(&m.mode.as_str()) {
                p.add(
                    format!("{f}.match.mode"),
                    format!("unknown mode \"{}\"", m.mode),
                );
            }
        }
        for (name, tag) in &tr.custom_tags {
            let n = usize::from(tag.literal.is_some())
                + usize::from(tag.environment.is_some())
                + usize::from(tag.header.is_some());
            if n != 1 {
                p.add(
                    format!("{f}.customTags.{name}"),
                    "exactly one of literal, environment or header is required",
                );
            }
            if tag.header.as_ref().is_some_and(|h| h.name.is_empty()) {
                p.add(format!("{f}.customTags.{name}.header.name"), "required");
            }
            if tag.environment.as_ref().is_some_and(|h| h.name.is_empty()) {
                p.add(
                    format!("{f}.customTags.{name}.environment.name"),
                    "required",
                );
            }
        }
    }
    const METRICS: &[&str] = &[
        "ALL_METRICS",
        "REQUEST_COUNT",
        "REQUEST_DURATION",
        "REQUEST_SIZE",
        "RESPONSE_SIZE",
        "TCP_OPENED_CONNECTIONS",
        "TCP_CLOSED_CONNECTIONS",
        "TCP_SENT_BYTES",
        "TCP_RECEIVED_BYTES",
        "GRPC_REQUEST_MESSAGES",
        "GRPC_RESPONSE_MESSAGES",
    ];
    for (i, m) in t.metrics.iter().enumerate() {
        for (j, o) in m.overrides.iter().enumerate() {
            let f = format!("spec.metrics[{i}].overrides[{j}]");
            if let Some(sel) = &o.match_ {
                if let Some(metric) = &sel.metric {
                    if !METRICS.contains(&metric.as_str()) {
                        p.add(
                            format!("{f}.match.metric"),
                            format!("unknown metric \"{metric}\""),
                        );
                    }
                }
                if let Some(mode) = &sel.mode {
                    if !MODES.contains(&mode.as_str()) {
                        p.add(
                            format!("{f}.match.mode"),
                            format!("unknown mode \"{mode}\""),
                        );
                    }
                }
            }
            for (tag, ov) in &o.tag_overrides {
                match ov.operation.as_deref().unwrap_or("UPSERT") {
                    "UPSERT" => {
                        if ov.value.as_deref().is_none_or(str::is_empty) {
                            p.add(
                                format!("{f}.tagOverrides.{tag}.value"),
                                "required for operation UPSERT",
                            );
                        }
                    }
                    "REMOVE" => {}
                    other => p.add(
                        format!("{f}.tagOverrides.{tag}.operation"),
                        format!("unknown operation \"{other}\" (UPSERT or REMOVE)"),
                    ),
                }
            }
        }
    }
    for (i, a) in t.access_logging.iter().enumerate() {
        if let Some(m) = &a.match_ {
            if !MODES.contains(&m.mode.as_str()) {
                p.add(
                    format!("spec.accessLogging[{i}].match.mode"),
                    format!("unknown mode \"{}\"", m.mode),
                );
            }
        }
    }
}

fn header_matches(f: &str, hs: &[HttpHeaderMatch], p: &mut Problems) {
    for (k, h) in hs.iter().enumerate() {
        if h.name.is_empty() {
            p.add(format!("{f}[{k}].name"), "required");
        }
        match h.type_.as_deref().unwrap_or("Exact") {
            "Exact" => {}
            "RegularExpression" => {
                if let Err(e) = check_regex(&h.value) {
                    p.add(format!("{f}[{k}].value"), e);
                }
            }
            other => p.add(
                format!("{f}[{k}].type"),
                format!("unknown match type \"{other}\""),
            ),
        }
    }
}

fn filters(f: &str, fs: &[HttpRouteFilter], p: &mut Problems) {
    const TYPES: &[&str] = &[
        "RequestHeaderModifier",
        "ResponseHeaderModifier",
        "RequestMirror",
        "RequestRedirect",
        "URLRewrite",
        "ExtensionRef",
        "CORS",
    ];
    for (i, flt) in fs.iter().enumerate() {
        if !TYPES.contains(&flt.type_.as_str()) {
            p.add(
                format!("{f}[{i}].type"),
                format!("unknown filter type \"{}\"", flt.type_),
            );
        }
    }
}

fn gw_http_route(r: &GwHttpRoute, p: &mut Problems) {
    for (i, rule) in r.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.matches[{j}]");
            if let Some(path) = &m.path {
                match path.type_.as_deref().unwrap_or("PathPrefix") {
                    "Exact" | "PathPrefix" => {}
                    "RegularExpression" => {
                        if let Err(e) = check_regex(path.value.as_deref().unwrap_or("")) {
                            p.add(format!("{mf}.path.value"), e);
                        }
                    }
                    other => p.add(
                        format!("{mf}.path.type"),
                        format!("unknown path match type \"{other}\""),
                    ),
                }
            }
            header_matches(&format!("{mf}.headers"), &m.headers, p);
            header_matches(&format!("{mf}.queryParams"), &m.query_params, p);
        }
        filters(&format!("{f}.filters"), &rule.filters, p);
        if let Some(t) = &rule.timeouts {
            if let (Some(req), Some(be)) = (t.request, t.backend_request) {
                if req.0 != std::time::Duration::ZERO && be > req {
                    p.add(
                        format!("{f}.timeouts.backendRequest"),
                        "must not be greater than timeouts.request",
                    );
                }
            }
        }
    }
}

fn gw_grpc_route(r: &GrpcRoute, p: &mut Problems) {
    for (i, rule) in r.rules.iter().enumerate() {
        let f = format!("spec.rules[{i}]");
        for (j, m) in rule.matches.iter().enumerate() {
            let mf = format!("{f}.matches[{j}]");
            if let Some(method) = &m.method {
                if method.type_.as_deref() == Some("RegularExpression") {
                    for (name, v) in [("service", &method.service), ("method", &method.method)] {
                        if let Some(v) = v {
                            if let Err(e) = check_regex(v) {
                                p.add(format!("{mf}.method.{name}"), e);
                            }
                        }
                    }
                }
            }
            header_matches(&format!("{mf}.headers"), &m.headers, p);
        }
        filters(&format!("{f}.filters"), &rule.filters, p);
    }
}

//! VirtualService and DestinationRule rules.

use super::traffic_policy::traffic_policy;
use super::{syntax, Problems};
use crate::common::StringMatch;
use crate::networking::{
    Destination, DestinationRule, Headers, HttpMatchRequest, HttpRoute, RouteDestination,
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

pub(super) fn virtual_service(vs: &VirtualService, namespace: &str, p: &mut Problems) {
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
    }
    if !vs.hosts.is_empty() && vs.http.is_empty() && vs.tcp.is_empty() && vs.tls.is_empty() {
        p.add(
            "spec",
            "http, tcp or tls must be provided in virtual service",
        );
    }
    // Bound to the mesh (no gateways, or `mesh` among them) or only to gateways.
    let to_gateway = !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh");
    let to_mesh = !to_gateway;
    syntax::gateway_names(p, "spec.gateways", &vs.gateways);
    if !to_gateway {
        for (i, r) in vs.http.iter().enumerate() {
            for (j, m) in r.matches.iter().enumerate() {
                for (map_name, map) in [
                    ("headers", &m.headers),
                    ("withoutHeaders", &m.without_headers),
                ] {
                    for k in map.keys().filter(|k| syntax::is_jwt_claim_route(k)) {
                        p.add(
                            format!("spec.http[{i}].match[{j}].{map_name}.{k}"),
                            "JWT claim based routing is only supported for gateways",
                        );
                    }
                }
            }
        }
    }
    let sni = vs
        .tls
        .iter()
        .any(|t| t.matches.iter().any(|m| !m.sni_hosts.is_empty()));
    let mut all_valid = true;
    for (i, h) in vs.hosts.iter().enumerate() {
        let checked = if to_gateway {
            syntax::gateway_domain(sni, h)
        } else {
            syntax::wildcard_domain(h)
        };
        match checked {
            Err(e) if !syntax::is_ip(h) => {
                p.add(format!("spec.hosts[{i}]"), e);
                all_valid = false;
            }
            Ok(()) if to_mesh && h == "*" => {
                p.add(
                    format!("spec.hosts[{i}]"),
                    "wildcard host * is not allowed for virtual services bound to the mesh gateway",
                );
                all_valid = false;
            }
            _ => {}
        }
    }
    if all_valid {
        for i in 0..vs.hosts.len() {
            for j in i + 1..vs.hosts.len() {
                if host_matches(&vs.hosts[i], &vs.hosts[j]) {
                    p.add(
                        format!("spec.hosts[{j}]"),
                        format!(
                            "duplicate hosts in virtual service: {} & {}",
                            vs.hosts[i], vs.hosts[j]
                        ),
                    );
                }
            }
        }
    }
    for (i, r) in vs.http.iter().enumerate() {
        http_route(&format!("spec.http[{i}]"), r, vs.hosts.is_empty(), p);
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        let f = format!("spec.tcp[{i}]");
        for (j, m) in r.matches.iter().enumerate() {
            let mf = format!("{f}.match[{j}]");
            l4_match(
                &mf,
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
                p,
            );
        }
        l4_route(&f, "TCP", &r.route, p);
    }
    for (i, r) in vs.tls.iter().enumerate() {
        let f = format!("spec.tls[{i}]");
        if r.matches.is_empty() {
            p.add(
                format!("{f}.match"),
                "TLS route must have at least one match condition",
            );
        }
        for (j, m) in r.matches.iter().enumerate() {
            let mf = format!("{f}.match[{j}]");
            if m.sni_hosts.is_empty() {
                p.add(
                    format!("{mf}.sniHosts"),
                    "TLS match must have at least one SNI host",
                );
            }
            for (k, h) in m.sni_hosts.iter().enumerate() {
                sni_host(&format!("{mf}.sniHosts[{k}]"), h, vs, to_gateway, p);
            }
            l4_match(
                &mf,
                &m.destination_subnets,
                m.port,
                &m.source_labels,
                &m.gateways,
                p,
            );
        }
        l4_route(&f, "TLS", &r.route, p);
    }
    syntax::export_to(p, namespace, &vs.export_to, false);
    unreachable_rules(vs, p);
}

/// Istio's `analyzeUnreachable{HTTP,TCP,TLS}Rules`: warnings for rules no request can
/// reach (after a catch-all rule, or all of whose matches an earlier rule already has) and
/// for matches an earlier match covers.
fn unreachable_rules(vs: &VirtualService, p: &mut Problems) {
    let http_name = |i: usize| match vs.http[i].name.as_str() {
        "" => format!("#{i}"),
        n => format!("\"{n}\""),
    };
    let mut catch_all: Option<usize> = None;
    let mut seen: Vec<(HttpMatchRequest, usize)> = Vec::new();
    let mut prefixes: Vec<PrefixMatch> = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        let f = format!("spec.http[{i}]");
        if r.matches.is_empty() {
            if catch_all.is_some() {
                p.warn(
                    &f,
                    format!(
                        "virtualService rule {} not used (only the last rule can have no matches)",
                        http_name(i)
                    ),
                );
            }
            catch_all = Some(i);
            continue;
        }
        let mut dups = 0;
        for (j, m) in r.matches.iter().enumerate() {
            if catch_all.is_some() {
                p.warn(
                    &f,
                    format!(
                        "virtualService rule {} not used (route without matches defined before)",
                        http_name(i)
                    ),
                );
                continue;
            }
            let key = HttpMatchRequest {
                name: String::new(),
                ..m.clone()
            };
            if let Some((_, earlier)) = seen.iter().find(|(k, _)| *k == key) {
                let req = match m.name.as_str() {
                    "" => format!("#{j}"),
                    n => format!("\"{n}\""),
                };
                p.warn(
                    format!("{f}.match[{j}]"),
                    format!(
                        "virtualService rule {} match {req} is not used (duplicate/overlapping match in rule {})",
                        http_name(i),
                        http_name(*earlier)
                    ),
                );
                dups += 1;
                continue;
            }
            seen.push((key, i));
            if let Some(pm) = PrefixMatch::of(m, i, j, &http_name(i)) {
                prefixes.push(pm);
            }
        }
        if dups == r.matches.len() {
            p.warn(
                &f,
                format!(
                    "virtualService rule {} not used (all matches used by prior rules)",
                    http_name(i)
                ),
            );
        }
    }
    for (a, pa) in prefixes.iter().enumerate() {
        for pb in &prefixes[a + 1..] {
            if pb.prefix != pa.prefix && pa.covers(pb) {
                p.warn(
                    format!("spec.http[{}].match[{}]", pb.rule, pb.index),
                    format!(
                        "virtualService rule {} match {} of prefix {} is not used (duplicate/overlapping match in rule {} of prefix {} on {})",
                        pb.route, pb.request, pb.prefix, pa.request, pa.prefix, pa.route
                    ),
                );
            }
        }
    }
    fn l4<T: PartialEq>(kind: &str, rules: &[&[T]], p: &mut Problems) {
        let mut catch_all = false;
        let mut seen: Vec<(&T, usize)> = Vec::new();
        for (i, matches) in rules.iter().enumerate() {
            let f = format!("spec.{kind}[{i}]");
            if matches.is_empty() {
                if catch_all {
                    p.warn(&f, format!("virtualService rule #{i} not used (only the last rule can have no matches)"));
                }
                catch_all = true;
                continue;
            }
            let mut dups = 0;
            for (j, m) in matches.iter().enumerate() {
                if catch_all {
                    p.warn(&f, format!("virtualService rule #{i} not used (route without matches defined before)"));
                    continue;
                }
                if let Some((_, earlier)) = seen.iter().find(|(k, _)| *k == m) {
                    p.warn(
                        format!("{f}.match[{j}]"),
                        format!("virtualService rule #{i} match #{j} is not used (duplicate/overlapping match in rule #{earlier})"),
                    );
                    dups += 1;
                } else {
                    seen.push((m, i));
                }
            }
            if dups == matches.len() {
                p.warn(
                    &f,
                    format!("virtualService rule #{i} not used (all matches used by prior rules)"),
                );
            }
        }
    }
    let tcp: Vec<&[_]> = vs.tcp.iter().map(|r| r.matches.as_slice()).collect();
    l4("tcp", &tcp, p);
    let tls: Vec<&[_]> = vs.tls.iter().map(|r| r.matches.as_slice()).collect();
    l4("tls", &tls, p);
}

/// The parts of a URI-prefix match Istio compares to find a match an earlier one covers.
struct PrefixMatch {
    rule: usize,
    index: usize,
    route: String,
    request: String,
    prefix: String,
    port: u32,
    method: String,
    authority: String,
    headers: std::collections::BTreeMap<String, String>,
    query: std::collections::BTreeMap<String, String>,
    without: std::collections::BTreeMap<String, String>,
}

impl PrefixMatch {
    fn of(m: &HttpMatchRequest, rule: usize, index: usize, route: &str) -> Option<PrefixMatch> {
        let prefix = m
            .uri
            .as_ref()?
            .prefix
            .as_deref()
            .filter(|p| !p.is_empty())?;
        let exact_or_prefix = |sm: Option<&StringMatch>| match sm {
            Some(StringMatch { exact: Some(e), .. }) if !e.is_empty() => format!("exact:{e}"),
            Some(StringMatch {
                prefix: Some(p), ..
            }) if !p.is_empty() => format!("prefix:{p}"),
            _ => String::new(),
        };
        let map = |m: &std::collections::BTreeMap<String, StringMatch>| {
            m.iter()
                .map(|(k, v)| (k.clone(), exact_or_prefix(Some(v))))
                .collect()
        };
        let method = match exact_or_prefix(m.method.as_ref()) {
            s if s.is_empty() => "exact:GET".to_string(),
            s => s,
        };
        Some(PrefixMatch {
            rule,
            index,
            route: route.to_string(),
            request: match m.name.as_str() {
                "" => format!("#{index}"),
                n => format!("\"{n}\""),
            },
            prefix: prefix.to_string(),
            port: m.port.unwrap_or(0),
            method,
            authority: exact_or_prefix(m.authority.as_ref()),
            headers: map(&m.headers),
            query: map(&m.query_params),
            without: map(&m.without_headers),
        })
    }

    /// Istio's `coveredValidation(self, later)`.
    fn covers(&self, later: &PrefixMatch) -> bool {
        let value = |a: &String, b: &String| a == b || a.starts_with(b.as_str());
        let maps = |a: &std::collections::BTreeMap<String, String>,
                    b: &std::collections::BTreeMap<String, String>| {
            a.len() == b.len() && a.iter().all(|(k, v)| b.get(k).is_some_and(|w| value(v, w)))
        };
        later.prefix.starts_with(&self.prefix)
            && self.port == later.port
            && value(&self.method, &later.method)
            && value(&self.authority, &later.authority)
            && maps(&self.headers, &later.headers)
            && maps(&self.query, &later.query)
            && maps(&self.without, &later.without)
    }
}

/// Istio's `host.Name.Matches`: equal, or one a wildcard covering the other.
fn host_matches(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) if sa.len() < sb.len() => sb.ends_with(sa),
        (Some(sa), Some(sb)) => sa.ends_with(sb),
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

/// Istio's `host.Name.SubsetOf`: `a` is matched by `b`.
fn host_subset_of(a: &str, b: &str) -> bool {
    if b == "*" || a == b {
        return true;
    }
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) => sa.ends_with(sb),
        (None, Some(sb)) => a.ends_with(sb),
        _ => false,
    }
}

fn sni_host(f: &str, h: &str, vs: &VirtualService, to_gateway: bool, p: &mut Problems) {
    let checked = if to_gateway {
        syntax::gateway_domain(true, h)
    } else {
        syntax::wildcard_domain(h)
    };
    if let Err(e) = checked {
        if syntax::is_ip(h) {
            p.warn(
                f,
                format!("using an IP address (\"{h}\") goes against SNI spec and most clients do not support this"),
            );
        } else {
            p.add(f, e);
        }
        return;
    }
    if !vs.hosts.iter().any(|vh| host_subset_of(h, vh)) {
        p.add(
            f,
            format!(
                "SNI host \"{h}\" is not a compatible subset of any of the virtual service hosts: [{}]",
                vs.hosts.join(", ")
            ),
        );
    }
}

/// A TCP or TLS route's destinations: at least one, each valid, weights as Istio reads them.
fn l4_route(f: &str, kind: &str, route: &[RouteDestination], p: &mut Problems) {
    if route.is_empty() {
        p.add(format!("{f}.route"), format!("{kind} route is required"));
    }
    for (j, d) in route.iter().enumerate() {
        destination(&format!("{f}.route[{j}].destination"), &d.destination, p);
    }
    weights(&format!("{f}.route"), route.iter().map(|d| d.weight), p);
}

fn l4_match(
    mf: &str,
    subnets: &[String],
    port: Option<u32>,
    source_labels: &std::collections::BTreeMap<String, String>,
    gateways: &[String],
    p: &mut Problems,
) {
    for (k, s) in subnets.iter().enumerate() {
        if let Err(e) = syntax::ip_subnet(s) {
            p.add(format!("{mf}.destinationSubnets[{k}]"), e);
        }
    }
    if let Some(n) = port.filter(|n| *n != 0) {
        syntax::port(p, format!("{mf}.port"), n);
    }
    syntax::labels(p, &format!("{mf}.sourceLabels"), source_labels);
    syntax::gateway_names(p, &format!("{mf}.gateways"), gateways);
}

/// Istio's `validateDestination`: a host (not `*`), a DNS-label subset, a port in range.
fn destination(f: &str, d: &Destination, p: &mut Problems) {
    if d.host == "*" {
        p.add(format!("{f}.host"), "invalid destination host *");
    } else if let Err(e) = syntax::wildcard_domain(&d.host) {
        p.add(format!("{f}.host"), e);
    }
    if !d.subset.is_empty() && !syntax::is_dns1123_label(&d.subset) {
        p.add(
            format!("{f}.subset"),
            format!("subset name is invalid: {}", d.subset),
        );
    }
    if let Some(ps) = d.port {
        syntax::port(p, format!("{f}.port.number"), ps.number);
    }
}

/// Header operations on a route or a destination.
fn header_ops(f: &str, h: &Headers, p: &mut Problems) {
    if let Some(req) = &h.request {
        for (op, map) in [("set", &req.set), ("add", &req.add)] {
            for (k, v) in map {
                if let Err(e) = syntax::set_request_header_name(k) {
                    p.add(format!("{f}.request.{op}"), e);
                }
                if let Err(e) = syntax::header_value(v) {
                    p.add(format!("{f}.request.{op}.{k}"), e);
                }
            }
        }
        for (k, name) in req.remove.iter().enumerate() {
            if let Err(e) = syntax::header_operation_name(name) {
                p.add(format!("{f}.request.remove[{k}]"), e);
            }
        }
    }
    if let Some(resp) = &h.response {
        for (op, map) in [("set", &resp.set), ("add", &resp.add)] {
            for (k, v) in map {
                if let Err(e) = syntax::header_operation_name(k) {
                    p.add(format!("{f}.response.{op}"), e);
                }
                if let Err(e) = syntax::header_value(v) {
                    p.add(format!("{f}.response.{op}.{k}"), e);
                }
            }
        }
        for (k, name) in resp.remove.iter().enumerate() {
            if let Err(e) = syntax::header_operation_name(name) {
                p.add(format!("{f}.response.remove[{k}]"), e);
            }
        }
    }
}

/// Istio's `validateStringMatch`: a prefix or regex may not be empty (a URI prefix may).
fn match_value(field: String, m: &StringMatch, empty_prefix_ok: bool, p: &mut Problems) {
    string_match(field.clone(), m, p);
    if !empty_prefix_ok && m.prefix.as_deref() == Some("") {
        p.add(&field, "prefix string match should not be empty");
    }
    if let Some(re) = &m.regex {
        if re.as_str().is_empty() {
            p.add(&field, "regex string match should not be empty");
        } else if re.as_str().len() > 1024 {
            p.add(&field, "regex is too large, max length allowed is 1024");
        }
    }
}

/// Status codes Go's `net/http.StatusText` knows (Istio accepts them in `retryOn`).
fn known_http_status(n: u16) -> bool {
    matches!(n,
        100..=103 | 200..=208 | 226 | 300..=305 | 307 | 308 | 400..=418 | 421..=426 | 428
        | 429 | 431 | 451 | 500..=508 | 510 | 511)
}

/// Istio's fault percentage: 0, or between 0.0001 and 100.
fn fault_percent(field: String, v: f64, p: &mut Problems) {
    if v.is_nan() || !(0.0..=100.0).contains(&v) || (v > 0.0 && v < 0.0001) {
        p.add(
            field,
            format!("percentage {v} is neither 0.0, nor in range [0.0001, 100.0]"),
        );
    }
}

fn http_route(f: &str, r: &HttpRoute, in_delegate: bool, p: &mut Problems) {
    if let Some(d) = &r.delegate {
        if d.name.is_empty() {
            p.add(format!("{f}.delegate.name"), "required");
        }
        if in_delegate {
            p.add(
                format!("{f}.delegate"),
                "a delegate VirtualService (no hosts) cannot delegate further",
            );
        } else {
            // A root route only delegates.
            if r.redirect.is_some() {
                p.add(
                    format!("{f}.redirect"),
                    "a route with delegate must not specify redirect",
                );
            }
            if !r.route.is_empty() {
                p.add(
                    format!("{f}.route"),
                    "a route with delegate must not specify route",
                );
            }
        }
    }
    if r.delegate.is_none() || in_delegate {
        if r.redirect.is_some() {
            for (name, set) in [
                ("route", !r.route.is_empty()),
                ("fault", r.fault.is_some()),
                ("rewrite", r.rewrite.is_some()),
                ("directResponse", r.direct_response.is_some()),
            ] {
                if set {
                    p.add(
                        format!("{f}.{name}"),
                        format!("HTTP route cannot contain both {name} and redirect"),
                    );
                }
            }
        } else if r.direct_response.is_some() {
            for (name, set) in [
                ("route", !r.route.is_empty()),
                ("fault", r.fault.is_some()),
                ("rewrite", r.rewrite.is_some()),
            ] {
                if set {
                    p.add(
                        format!("{f}.{name}"),
                        format!("HTTP route cannot contain both {name} and directResponse"),
                    );
                }
            }
        } else if r.route.is_empty() && !(in_delegate && r.delegate.is_some()) {
            p.add(
                f,
                "one of route, redirect, directResponse or delegate is required",
            );
        }
    }
    for (j, m) in r.matches.iter().enumerate() {
        let mf = format!("{f}.match[{j}]");
        if let Some(sm) = &m.uri {
            match_value(format!("{mf}.uri"), sm, true, p);
        }
        for (name, sm) in [
            ("scheme", &m.scheme),
            ("method", &m.method),
            ("authority", &m.authority),
        ] {
            if let Some(sm) = sm {
                match_value(format!("{mf}.{name}"), sm, false, p);
            }
        }
        for (k, sm) in &m.headers {
            if let Err(e) = syntax::match_header_name(k) {
                p.add(format!("{mf}.headers"), e);
            }
            match_value(format!("{mf}.headers.{k}"), sm, false, p);
        }
        for (k, sm) in &m.without_headers {
            if let Err(e) = syntax::match_header_name(k) {
                p.add(format!("{mf}.withoutHeaders"), e);
            }
            match_value(format!("{mf}.withoutHeaders.{k}"), sm, false, p);
        }
        for (k, sm) in &m.query_params {
            match_value(format!("{mf}.queryParams.{k}"), sm, false, p);
        }
        if let Some(n) = m.port.filter(|n| *n != 0) {
            syntax::port(p, format!("{mf}.port"), n);
        }
        syntax::labels(p, &format!("{mf}.sourceLabels"), &m.source_labels);
        syntax::gateway_names(p, &format!("{mf}.gateways"), &m.gateways);
        if !m.source_namespace.is_empty() && !syntax::is_dns1123_label(&m.source_namespace) {
            p.add(
                format!("{mf}.sourceNamespace"),
                format!("sourceNamespace match {} is invalid", m.source_namespace),
            );
        }
    }
    if let Some(h) = &r.headers {
        header_ops(&format!("{f}.headers"), h, p);
    }
    for (j, d) in r.route.iter().enumerate() {
        destination(&format!("{f}.route[{j}].destination"), &d.destination, p);
        if let Some(h) = &d.headers {
            header_ops(&format!("{f}.route[{j}].headers"), h, p);
        }
    }
    weights(&format!("{f}.route"), r.route.iter().map(|d| d.weight), p);
    if let Some(t) = &r.timeout {
        p.duration(format!("{f}.timeout"), t);
    }
    if let Some(retry) = &r.retries {
        let rf = format!("{f}.retries");
        if retry.attempts == 0
            && (retry.per_try_timeout.is_some()
                || !retry.retry_on.is_empty()
                || retry.retry_remote_localities.is_some())
        {
            p.add(
                format!("{rf}.attempts"),
                "http retry policy configured when attempts are set to 0 (disabled)",
            );
        }
        if let Some(d) = &retry.per_try_timeout {
            p.duration(format!("{rf}.perTryTimeout"), d);
        }
        if let Some(d) = &retry.backoff {
            p.duration(format!("{rf}.backoff"), d);
        }
        if !retry.retry_on.is_empty() {
            for token in retry.retry_on.split(',') {
                let status_ok = token.parse::<u16>().is_ok_and(known_http_status);
                if !RETRY_ON.contains(&token) && !status_ok {
                    p.add(
                        format!("{rf}.retryOn"),
                        format!("\"{token}\" is not a valid retryOn policy"),
                    );
                }
            }
        }
    }
    if let Some(fault) = &r.fault {
        if fault.delay.is_none() && fault.abort.is_none() {
            p.add(format!("{f}.fault"), "one of delay or abort is required");
        }
        if let Some(d) = &fault.delay {
            if let Some(v) = &d.fixed_delay {
                p.duration(format!("{f}.fault.delay.fixedDelay"), v);
            } else if let Some(v) = &d.exponential_delay {
                p.duration(format!("{f}.fault.delay.exponentialDelay"), v);
                p.add(
                    format!("{f}.fault.delay.exponentialDelay"),
                    "exponentialDelay not supported yet",
                );
            } else {
                p.add(format!("{f}.fault.delay.fixedDelay"), "required");
            }
            if let Some(pc) = d.percentage {
                fault_percent(format!("{f}.fault.delay.percentage.value"), pc.value, p);
            }
            if let Some(pc) = d.percent {
                p.percent(format!("{f}.fault.delay.percent"), f64::from(pc));
            }
        }
        if let Some(a) = &fault.abort {
            let af = format!("{f}.fault.abort");
            if let Some(pc) = a.percentage {
                fault_percent(format!("{af}.percentage.value"), pc.value, p);
            }
            match (a.http_status, &a.grpc_status, &a.http2_error) {
                (Some(s), _, _) => {
                    if !(200..=600).contains(&s) {
                        p.add(
                            format!("{af}.httpStatus"),
                            format!("HTTP status {s} is not in range 200-599"),
                        );
                    }
                }
                (None, Some(g), _) => {
                    if crate::networking::grpc_status_code(g).is_none() {
                        p.add(
                            format!("{af}.grpcStatus"),
                            format!("gRPC status \"{g}\" is not supported (for example NOT_FOUND)"),
                        );
                    }
                }
                (None, None, Some(_)) => p.add(
                    format!("{af}.http2Error"),
                    "HTTP/2 abort fault injection not supported yet",
                ),
                (None, None, None) => p.warn(&af, "abort configured, but error type not set"),
            }
        }
    }
    if let Some(pc) = r.mirror_percentage {
        p.percent(format!("{f}.mirrorPercentage.value"), pc.value);
    }
    if let Some(pc) = r.mirror_percent {
        if pc > 100 {
            p.add(
                format!("{f}.mirrorPercent"),
                format!("mirror_percent must have a max value of 100 (it has {pc})"),
            );
        }
        p.warn(
            format!("{f}.mirrorPercent"),
            "using deprecated setting \"mirrorPercent\", use \"mirrorPercentage\" instead",
        );
    }
    if let Some(m) = &r.mirror {
        destination(&format!("{f}.mirror"), m, p);
        if !r.mirrors.is_empty() {
            p.add(
                format!("{f}.mirrors"),
                "mirror and mirrors are mutually exclusive",
            );
        }
    }
    for (j, m) in r.mirrors.iter().enumerate() {
        destination(&format!("{f}.mirrors[{j}].destination"), &m.destination, p);
        if let Some(pc) = m.percentage {
            p.percent(format!("{f}.mirrors[{j}].percentage.value"), pc.value);
        }
    }
    if let Some(rd) = &r.redirect {
        let rf = format!("{f}.redirect");
        if !rd.uri.is_empty() && !rd.prefix_rewrite.is_empty() {
            p.add(&rf, "uri and prefixRewrite are mutually exclusive");
        }
        if !rd.prefix_rewrite.is_empty()
            && r.matches
                .iter()
                .any(|m| m.uri.as_ref().is_some_and(|u| u.prefix.is_none()))
        {
            p.add(
                format!("{rf}.prefixRewrite"),
                "redirect prefixRewrite requires all URI matches to use prefix match type",
            );
        }
        if rd.uri.is_empty()
            && rd.prefix_rewrite.is_empty()
            && rd.authority.is_empty()
            && rd.port.is_none()
            && rd.derive_port.is_none()
            && rd.scheme.is_empty()
        {
            p.add(&rf, "redirect must specify URI, authority, scheme, or port");
        }
        if let Some(code) = rd.redirect_code.filter(|c| *c != 0) {
            if !(300..=399).contains(&code) {
                p.add(
                    format!("{rf}.redirectCode"),
                    format!("redirect code {code} must be between 300 and 399"),
                );
            }
        }
        if !rd.scheme.is_empty() && rd.scheme != "http" && rd.scheme != "https" {
            p.add(
                format!("{rf}.scheme"),
                "invalid redirect scheme, must be \"http\" or \"https\"",
            );
        }
        if let Some(n) = rd.port.filter(|n| *n > 0) {
            syntax::port(p, format!("{rf}.port"), n);
        }
    }
    if let Some(dr) = &r.direct_response {
        if !(200..=600).contains(&dr.status) {
            p.add(
                format!("{f}.directResponse.status"),
                format!("status {} must be between 200 and 599", dr.status),
            );
        }
        let size = dr
            .body
            .as_ref()
            .map(|b| {
                b.string.as_ref().map(String::len).unwrap_or(0)
                    + b.bytes.as_ref().map(|s| s.len() * 3 / 4).unwrap_or(0)
            })
            .unwrap_or(0);
        if size > 1 << 20 {
            p.add(
                format!("{f}.directResponse.body"),
                "large direct_responses may impact control plane performance, must be less than 1MB",
            );
        } else if size > 100 << 10 {
            p.warn(
                format!("{f}.directResponse.body"),
                "large direct_responses may impact control plane performance",
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
        if rw.uri.is_empty() && rw.uri_regex_rewrite.is_none() && rw.authority.is_empty() {
            p.add(
                format!("{f}.rewrite"),
                "rewrite must specify at least one of uri, uriRegexRewrite or authority",
            );
        }
        if let Some(rr) = &rw.uri_regex_rewrite {
            if rr.pattern.as_str().is_empty() || rr.rewrite.is_empty() {
                p.add(
                    format!("{f}.rewrite.uriRegexRewrite"),
                    "uriRegexRewrite requires both match and rewrite",
                );
            }
        }
    }
    // The authority may be rewritten in one place only.
    let mut authority = r
        .rewrite
        .as_ref()
        .map(|rw| rw.authority.as_str())
        .filter(|a| !a.is_empty());
    if let Some(req) = r.headers.as_ref().and_then(|h| h.request.as_ref()) {
        for (k, v) in req.set.iter().chain(req.add.iter()) {
            if !syntax::is_authority_header(k) {
                continue;
            }
            if let Some(cur) = authority {
                p.add(
                    format!("{f}.headers.request"),
                    format!("authority header cannot be set multiple times: have \"{cur}\", attempting to set \"{v}\""),
                );
            }
            authority = Some(v);
        }
    }
    if let Some(c) = &r.cors_policy {
        let cf = format!("{f}.corsPolicy");
        for (j, o) in c.allow_origins.iter().enumerate() {
            let of = format!("{cf}.allowOrigins[{j}]");
            string_match(of.clone(), o, p);
            let value = o
                .exact
                .as_deref()
                .or(o.prefix.as_deref())
                .or(o.regex.as_ref().map(|r| r.as_str()));
            if value.is_none_or(str::is_empty) {
                p.add(&of, "not a valid match type for CORS allow origins");
            }
        }
        const METHODS: &[&str] = &[
            "GET", "HEAD", "POST", "PUT", "PATCH", "DELETE", "CONNECT", "OPTIONS", "TRACE", "*",
        ];
        for (j, m) in c.allow_methods.iter().enumerate() {
            if !METHODS.contains(&m.as_str()) {
                p.add(
                    format!("{cf}.allowMethods[{j}]"),
                    format!("\"{m}\" is not a supported HTTP method"),
                );
            }
        }
        for (name, list) in [
            ("allowHeaders", &c.allow_headers),
            ("exposeHeaders", &c.expose_headers),
        ] {
            for (j, h) in list.iter().enumerate() {
                if h != "*" && !syntax::is_header_token(h) {
                    p.add(
                        format!("{cf}.{name}[{j}]"),
                        format!("header name \"{h}\" is not a valid header name"),
                    );
                }
            }
        }
        if let Some(d) = &c.max_age {
            p.duration(format!("{cf}.maxAge"), d);
            if d.as_std().subsec_nanos() != 0 {
                p.add(
                    format!("{cf}.maxAge"),
                    "max_age duration is accurate only to seconds precision",
                );
            }
        }
    }
}

pub(super) fn destination_rule(dr: &DestinationRule, namespace: &str, p: &mut Problems) {
    if let Err(e) = syntax::wildcard_domain(&dr.host) {
        p.add("spec.host", e);
    }
    if let Some(tp) = &dr.traffic_policy {
        traffic_policy("spec.trafficPolicy", tp, p);
    }
    let mut names = std::collections::BTreeSet::new();
    for (i, s) in dr.subsets.iter().enumerate() {
        let sf = format!("spec.subsets[{i}]");
        if s.name.is_empty() {
            p.add(format!("{sf}.name"), "required");
        } else if !syntax::is_dns1123_label(&s.name) {
            p.add(
                format!("{sf}.name"),
                format!("subset name is invalid: {}", s.name),
            );
        }
        if !s.name.is_empty() && !names.insert(s.name.as_str()) {
            p.add(
                format!("{sf}.name"),
                format!("duplicate subset name \"{}\"", s.name),
            );
        }
        syntax::labels(p, &format!("{sf}.labels"), &s.labels);
        if let Some(tp) = &s.traffic_policy {
            traffic_policy(&format!("{sf}.trafficPolicy"), tp, p);
        }
    }
    syntax::export_to(p, namespace, &dr.export_to, dr.workload_selector.is_some());
    syntax::workload_selector(p, "spec.workloadSelector", dr.workload_selector.as_ref());
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn host_overlap_follows_istio() {
        assert!(host_matches("*.foo.bar", "*.bar"));
        assert!(host_matches("a.bar", "*.bar"));
        assert!(!host_matches("bar", "*.bar"));
        assert!(!host_matches("a.bar", "b.bar"));
        assert!(host_subset_of("a.foo.com", "*.com"));
        assert!(host_subset_of("*.foo.com", "*.com"));
        assert!(!host_subset_of("*.com", "*.foo.com"));
        assert!(host_subset_of("x", "*"));
    }
}

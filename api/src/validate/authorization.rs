//! AuthorizationPolicy rules (Istio's `ValidateAuthorizationPolicy` and the value checks of
//! `pkg/config/security`).

use std::net::IpAddr;

use super::{syntax, Problems};
use crate::security::{AuthorizationPolicy, AuthzAction, Operation, Rule, Source};

/// Condition keys Istio accepts in `when`.
fn known_condition_key(key: &str) -> bool {
    const EXACT: &[&str] = &[
        "source.ip",
        "source.namespace",
        "source.principal",
        "source.serviceAccount",
        "source.trustDomain",
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

/// Istio's `CheckServiceAccount`: `<sa>` (the policy's namespace) or `<namespace>/<sa>`,
/// no wildcard, at most 16 entries of at most 320 characters.
fn service_accounts(field: &str, list: &[String], p: &mut Problems) {
    if list.len() > 16 {
        p.add(field, "may not have more than 16 values");
    }
    for (k, v) in list.iter().enumerate() {
        let well_formed = match v.split_once('/') {
            None => !v.is_empty(),
            Some((ns, sa)) => !ns.is_empty() && !sa.is_empty() && !sa.contains('/'),
        };
        if !well_formed || v.contains('*') || v.len() > 320 {
            p.add(
                format!("{field}[{k}]"),
                format!(
                    "\"{v}\" must be <service account> or <namespace>/<service account>, without wildcards"
                ),
            );
        }
    }
}

/// Istio's `CheckTrustDomainValues`: non-empty, one wildcard at most and only at the start
/// or end, no `/`.
fn trust_domain(field: String, v: &str, p: &mut Problems) {
    let stars = v.matches('*').count();
    let wildcard_ok = stars == 0 || (stars == 1 && (v.starts_with('*') || v.ends_with('*')));
    if v.is_empty() || !wildcard_ok || v.contains('/') {
        p.add(
            field,
            format!("invalid trust domain \"{v}\" (non-empty, no '/', one wildcard at most, at the start or end)"),
        );
    }
}

pub(super) fn authorization_policy(ap: &AuthorizationPolicy, p: &mut Problems) {
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
    syntax::policy_attachment(
        p,
        ap.selector.as_ref(),
        ap.target_ref.as_ref(),
        &ap.target_refs,
    );
    if ap.action == AuthzAction::Custom {
        custom_limits(ap, p);
    }
    if ap.rules.is_empty() && matches!(ap.action, AuthzAction::Deny | AuthzAction::Custom) {
        p.add(
            "spec.rules",
            format!(
                "{} without rules would never match; add an empty rule {{}} to match every request",
                ap.action.as_str()
            ),
        );
    }
    for (i, rule) in ap.rules.iter().enumerate() {
        let rf = format!("spec.rules[{i}]");
        if ap.action == AuthzAction::Deny && http_only(rule) {
            p.warn(
                &rf,
                "this DENY rule uses only HTTP attributes: it denies all traffic to TCP ports in its scope; specify the ports explicitly",
            );
        }
        for (j, from) in rule.from.iter().enumerate() {
            let Some(s) = &from.source else {
                p.add(format!("{rf}.from[{j}].source"), "must not be empty");
                continue;
            };
            let sf = format!("{rf}.from[{j}].source");
            if source_is_empty(s) {
                p.add(&sf, "must not be empty");
            }
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
                ("ipBlocks", &s.ip_blocks),
                ("notIpBlocks", &s.not_ip_blocks),
                ("remoteIpBlocks", &s.remote_ip_blocks),
                ("notRemoteIpBlocks", &s.not_remote_ip_blocks),
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
                service_accounts(&format!("{sf}.{name}"), list, p);
            }
            for (name, list) in [
                ("trustDomains", &s.trust_domains),
                ("notTrustDomains", &s.not_trust_domains),
            ] {
                for (k, v) in list.iter().enumerate() {
                    trust_domain(format!("{sf}.{name}[{k}]"), v, p);
                }
            }
            let identities = s.principals.len()
                + s.not_principals.len()
                + s.namespaces.len()
                + s.not_namespaces.len();
            if identities > 0 && s.service_accounts.len() + s.not_service_accounts.len() > 0 {
                p.add(
                    format!("{sf}.serviceAccounts"),
                    "cannot be set together with namespaces or principals",
                );
            }
        }
        for (j, to) in rule.to.iter().enumerate() {
            let Some(o) = &to.operation else {
                p.add(format!("{rf}.to[{j}].operation"), "must not be empty");
                continue;
            };
            let of = format!("{rf}.to[{j}].operation");
            operation_values(&of, o, p);
            for (name, list) in [("paths", &o.paths), ("notPaths", &o.not_paths)] {
                for (k, v) in list.iter().enumerate() {
                    path_template(format!("{of}.{name}[{k}]"), v, p);
                }
            }
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
                if !c.key.is_empty() {
                    p.add(&cf, "values or notValues is required");
                }
                continue;
            }
            for (name, list) in [("values", &c.values), ("notValues", &c.not_values)] {
                condition_values(&format!("{cf}.{name}"), &c.key, list, p);
            }
        }
    }
}

/// Istio's `ValidateAttribute`: no empty value, and the syntax the key expects.
fn condition_values(f: &str, key: &str, values: &[String], p: &mut Problems) {
    if let Some(k) = values.iter().position(String::is_empty) {
        p.add(format!("{f}[{k}]"), "empty value");
        return;
    }
    let map_key = |p: &mut Problems| {
        let open = key.find('[');
        if !(key.ends_with(']') && open.is_some_and(|o| o > 0 && o < key.len() - 2)) {
            p.add(f, format!("bad key ({key}): should have format a[b]"));
        }
    };
    match key {
        "source.ip" | "remote.ip" | "destination.ip" => {
            for (k, v) in values.iter().enumerate() {
                check_cidr(format!("{f}[{k}]"), v, p);
            }
        }
        "destination.port" => {
            for (k, v) in values.iter().enumerate() {
                check_port(format!("{f}[{k}]"), v, p);
            }
        }
        "source.serviceAccount" => service_accounts(f, values, p),
        "source.trustDomain" => {
            for (k, v) in values.iter().enumerate() {
                if let Err(e) = wildcard_value(v) {
                    p.add(format!("{f}[{k}]"), e);
                }
            }
        }
        _ if key.starts_with("request.headers")
            || key.starts_with("request.auth.claims")
            || key.starts_with("experimental.envoy.filters.") =>
        {
            map_key(p)
        }
        _ => {}
    }
}

/// Istio's `CheckWildcardValues`: one `*` at most, at the start or the end.
fn wildcard_value(v: &str) -> Result<(), String> {
    let n = v.matches('*').count();
    if n > 1 {
        return Err(format!("at most one wildcard is allowed: \"{v}\""));
    }
    if n == 1 && v != "*" && !v.starts_with('*') && !v.ends_with('*') {
        return Err(format!(
            "wildcard is only allowed at the start or end: \"{v}\""
        ));
    }
    Ok(())
}

/// Istio's `CheckValidPathTemplate`: `{*}` and `{**}` as whole segments, `{**}` last,
/// other segments plain path characters when a template is used.
fn path_template(f: String, path: &str, p: &mut Problems) {
    let templated = path.contains("{*}") || path.contains("{**}");
    let mut any_seen = false;
    for glob in path.trim_matches('/').split('/') {
        match glob {
            "{*}" | "{**}" if any_seen => {
                p.add(
                    &f,
                    format!("invalid or unsupported path {path}: {{**}} is not the last operator"),
                );
                return;
            }
            "{*}" => continue,
            "{**}" => {
                any_seen = true;
                continue;
            }
            _ => {}
        }
        if glob.contains(['{', '}']) {
            p.add(
                &f,
                format!("invalid or unsupported path {path}: '{{' or '}}' beyond a supported path template"),
            );
            return;
        }
        let literal = !glob.is_empty()
            && glob
                .bytes()
                .all(|c| c.is_ascii_alphanumeric() || b"-._~%!$&'()+,;:@=".contains(&c));
        if templated && !literal {
            p.add(
                &f,
                format!(
                    "invalid or unsupported path {path}: segment \"{glob}\" is not a valid literal"
                ),
            );
            return;
        }
    }
}

/// What Istio's CUSTOM action cannot match on (the external authorizer sees no peer
/// identity or JWT claims).
fn custom_limits(ap: &AuthorizationPolicy, p: &mut Problems) {
    for (i, rule) in ap.rules.iter().enumerate() {
        for (j, from) in rule.from.iter().enumerate() {
            let Some(s) = &from.source else { continue };
            for (name, list) in [
                ("namespaces", &s.namespaces),
                ("notNamespaces", &s.not_namespaces),
                ("serviceAccounts", &s.service_accounts),
                ("notServiceAccounts", &s.not_service_accounts),
                ("trustDomains", &s.trust_domains),
                ("notTrustDomains", &s.not_trust_domains),
                ("principals", &s.principals),
                ("notPrincipals", &s.not_principals),
                ("requestPrincipals", &s.request_principals),
                ("notRequestPrincipals", &s.not_request_principals),
            ] {
                if !list.is_empty() {
                    p.add(
                        format!("spec.rules[{i}].from[{j}].source.{name}"),
                        "not supported with action CUSTOM",
                    );
                }
            }
        }
        for (j, c) in rule.when.iter().enumerate() {
            if matches!(
                c.key.as_str(),
                "source.namespace"
                    | "source.serviceAccount"
                    | "source.trustDomain"
                    | "source.principal"
            ) || c.key.starts_with("request.auth.")
            {
                p.add(
                    format!("spec.rules[{i}].when[{j}].key"),
                    format!("{} is not supported with action CUSTOM", c.key),
                );
            }
        }
    }
}

fn source_is_empty(s: &Source) -> bool {
    [
        &s.principals,
        &s.not_principals,
        &s.request_principals,
        &s.not_request_principals,
        &s.namespaces,
        &s.not_namespaces,
        &s.service_accounts,
        &s.not_service_accounts,
        &s.ip_blocks,
        &s.not_ip_blocks,
        &s.remote_ip_blocks,
        &s.not_remote_ip_blocks,
        &s.trust_domains,
        &s.not_trust_domains,
    ]
    .iter()
    .all(|l| l.is_empty())
}

/// Istio: an operation must set something, and no value may be empty.
fn operation_values(of: &str, o: &Operation, p: &mut Problems) {
    let lists = [
        ("hosts", &o.hosts),
        ("notHosts", &o.not_hosts),
        ("ports", &o.ports),
        ("notPorts", &o.not_ports),
        ("methods", &o.methods),
        ("notMethods", &o.not_methods),
        ("paths", &o.paths),
        ("notPaths", &o.not_paths),
    ];
    if lists.iter().all(|(_, l)| l.is_empty()) {
        p.add(of, "must not be empty");
    }
    for (name, list) in lists {
        for (k, v) in list.iter().enumerate() {
            if v.is_empty() {
                p.add(format!("{of}.{name}[{k}]"), "empty value");
            }
        }
    }
}

/// Istio's warning condition: a DENY rule whose `from` or `to` only use HTTP attributes
/// (request principals, methods, paths, hosts) matches every TCP connection.
fn http_only(rule: &Rule) -> bool {
    let sources: Vec<&Source> = rule.from.iter().filter_map(|f| f.source.as_ref()).collect();
    let ops: Vec<&Operation> = rule
        .to
        .iter()
        .filter_map(|t| t.operation.as_ref())
        .collect();
    let tcp_in_from = sources.iter().any(|s| {
        [
            &s.principals,
            &s.not_principals,
            &s.namespaces,
            &s.not_namespaces,
            &s.ip_blocks,
            &s.not_ip_blocks,
            &s.remote_ip_blocks,
            &s.not_remote_ip_blocks,
            &s.service_accounts,
            &s.not_service_accounts,
        ]
        .iter()
        .any(|l| !l.is_empty())
    });
    let tcp_in_to = ops
        .iter()
        .any(|o| !o.ports.is_empty() || !o.not_ports.is_empty());
    (!sources.is_empty() && ops.is_empty() && !tcp_in_from) || (!ops.is_empty() && !tcp_in_to)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::security::RuleTo;

    fn check(ap: &AuthorizationPolicy) -> (Vec<String>, Vec<String>) {
        let mut p = Problems::default();
        authorization_policy(ap, &mut p);
        let r = p.into_report();
        let fields = |v: Vec<super::super::Problem>| v.into_iter().map(|x| x.field).collect();
        (fields(r.errors), fields(r.warnings))
    }

    fn source(f: impl FnOnce(&mut Source)) -> AuthorizationPolicy {
        let mut s = Source::default();
        f(&mut s);
        AuthorizationPolicy {
            rules: vec![Rule {
                from: vec![crate::security::RuleFrom { source: Some(s) }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn service_accounts_bare_or_namespaced() {
        let ok = source(|s| s.service_accounts = vec!["sa".into(), "ns/sa".into()]);
        assert_eq!(check(&ok).0, Vec::<String>::new());
        for bad in ["", "ns/", "/sa", "a/b/c", "ns/*"] {
            let ap = source(|s| s.service_accounts = vec![bad.into()]);
            assert_eq!(
                check(&ap).0,
                ["spec.rules[0].from[0].source.serviceAccounts[0]"],
                "{bad}"
            );
        }
        let mixed = source(|s| {
            s.service_accounts = vec!["sa".into()];
            s.namespaces = vec!["ns".into()];
        });
        assert_eq!(
            check(&mixed).0,
            ["spec.rules[0].from[0].source.serviceAccounts"]
        );
    }

    #[test]
    fn trust_domains() {
        let ok =
            source(|s| s.trust_domains = vec!["cluster.local".into(), "td-*".into(), "*".into()]);
        assert_eq!(check(&ok).0, Vec::<String>::new());
        for bad in ["", "a/b", "a*b", "*a*"] {
            let ap = source(|s| s.trust_domains = vec![bad.into()]);
            assert_eq!(check(&ap).0.len(), 1, "{bad}");
        }
    }

    #[test]
    fn empty_source_and_operation() {
        let ap = source(|_| {});
        assert_eq!(check(&ap).0, ["spec.rules[0].from[0].source"]);
        let ap = AuthorizationPolicy {
            rules: vec![Rule {
                to: vec![RuleTo {
                    operation: Some(Operation {
                        methods: vec!["".into()],
                        ..Default::default()
                    }),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(check(&ap).0, ["spec.rules[0].to[0].operation.methods[0]"]);
    }

    #[test]
    fn deny_needs_rules_and_warns_on_http_only() {
        let none = AuthorizationPolicy {
            action: AuthzAction::Deny,
            ..Default::default()
        };
        assert_eq!(check(&none).0, ["spec.rules"]);
        let http_only = AuthorizationPolicy {
            action: AuthzAction::Deny,
            rules: vec![Rule {
                to: vec![RuleTo {
                    operation: Some(Operation {
                        methods: vec!["GET".into()],
                        ..Default::default()
                    }),
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        assert_eq!(check(&http_only), (vec![], vec!["spec.rules[0]".into()]));
        let mut with_port = http_only.clone();
        if let Some(o) = with_port.rules[0].to[0].operation.as_mut() {
            o.ports = vec!["8080".into()];
        }
        assert_eq!(check(&with_port), (vec![], vec![]));
    }
}

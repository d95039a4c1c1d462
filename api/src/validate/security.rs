//! PeerAuthentication and AuthorizationPolicy rules.

use std::net::IpAddr;

use super::Problems;
use crate::security::{AuthorizationPolicy, AuthzAction, PeerAuthentication};

pub(super) fn peer_authentication(pa: &PeerAuthentication, p: &mut Problems) {
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

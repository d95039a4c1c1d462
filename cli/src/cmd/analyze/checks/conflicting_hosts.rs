//! Istio's IST0109 ConflictingMeshGatewayVirtualServiceHosts: several VirtualServices
//! bound to the mesh define the same host in overlapping `exportTo` scopes. Istio uses one
//! of them (the others are ignored); Meshwork merges them, oldest first. Either way the
//! result depends on resource age, so both tools report it.

use std::collections::{BTreeMap, BTreeSet};

use meshwork_api::{Kind, Spec, StoredObject};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};
use super::hosts::host_key;

/// `exportTo` scope of a VirtualService: `*` (everywhere) or the namespaces it names.
fn scopes(export_to: &[String], ns: &str) -> Vec<String> {
    if export_to.is_empty() || export_to.iter().any(|e| e == "*") {
        return vec!["*".to_string()];
    }
    let set: BTreeSet<String> = export_to
        .iter()
        .map(|e| if e == "." { ns.to_string() } else { e.clone() })
        .collect();
    set.into_iter().collect()
}

/// Istio's `host.Name.Matches`.
fn host_matches(a: &str, b: &str) -> bool {
    match (a.strip_prefix('*'), b.strip_prefix('*')) {
        (Some(sa), Some(sb)) if sa.len() < sb.len() => sb.ends_with(sa),
        (Some(sa), Some(sb)) => sa.ends_with(sb),
        (Some(sa), None) => b.ends_with(sa),
        (None, Some(sb)) => a.ends_with(sb),
        (None, None) => a == b,
    }
}

pub fn check(ctx: &Context) -> Vec<Finding> {
    // (scope, host FQDN) -> VirtualServices.
    let mut by_host: BTreeMap<(String, String), Vec<&StoredObject>> = BTreeMap::new();
    for s in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = &s.object.spec else {
            continue;
        };
        if !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh") {
            continue;
        }
        let ns = &s.object.namespace;
        for scope in scopes(&vs.export_to, ns) {
            for h in &vs.hosts {
                let list = by_host
                    .entry((scope.clone(), host_key(ctx, h, ns)))
                    .or_default();
                if !list.iter().any(|o| o.object.key() == s.object.key()) {
                    list.push(s);
                }
            }
        }
    }
    let mut out = Vec::new();
    let mut reported = BTreeSet::new();
    for ((scope, host), list) in &by_host {
        let mut all: Vec<&StoredObject> = list.clone();
        if scope != "*" {
            for ((other_scope, other_host), more) in &by_host {
                if other_scope == "*" && host_matches(host, other_host) {
                    for m in more {
                        if !all.iter().any(|o| o.object.key() == m.object.key()) {
                            all.push(m);
                        }
                    }
                }
            }
        }
        if all.len() < 2 {
            continue;
        }
        let mut names: Vec<String> = all.iter().map(|s| s.object.ns_name()).collect();
        names.sort();
        let names = names.join(",");
        for s in &all {
            if !reported.insert(s.object.key()) {
                continue;
            }
            let scoped = if scope == "*" {
                host.clone()
            } else {
                format!("{scope}/{host}")
            };
            out.push(
                Finding::new(
                    Severity::Error,
                    "conflicting-mesh-hosts",
                    Context::label(&s.object),
                    Context::file_of(s),
                    format!(
                        "The VirtualServices {names} associated with mesh gateway define the same host {scoped} which can lead to undefined behavior (Istio uses one of them; Meshwork merges them, oldest first)"
                    ),
                    "merge the conflicting VirtualServices into a single resource",
                )
                .with_code("IST0109"),
            );
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn scopes_and_host_overlap() {
        assert_eq!(scopes(&[], "a"), ["*"]);
        assert_eq!(scopes(&[".".into(), "b".into()], "a"), ["a", "b"]);
        assert_eq!(scopes(&["b".into(), "*".into()], "a"), ["*"]);
        assert!(host_matches("*.example.com", "a.example.com"));
        assert!(!host_matches("a.example.com", "b.example.com"));
    }
}

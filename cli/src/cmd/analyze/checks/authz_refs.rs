//! Istio's `authz.AuthorizationPoliciesAnalyzer`: what an AuthorizationPolicy refers to.
//!
//! - `authz-no-workloads` (IST0127 NoMatchingWorkloadsFound, warning): a `selector` no
//!   workload of the policy's namespace carries (of any namespace for a policy in the root
//!   namespace), or a namespace-wide policy in a namespace without workloads. Policies that
//!   attach with `targetRefs` are not checked (Istio's analyzer does not look at them
//!   either for selectors). Workloads are Pods and pod templates of Deployments,
//!   StatefulSets and DaemonSets; nothing is reported when the manifests define none.
//! - `authz-namespace-not-found` (IST0101 ReferencedResourceNotFound, error): a
//!   `source.namespaces` / `notNamespaces` entry (exact, `prefix*`, `*suffix`) matching no
//!   Namespace object; only checked when the manifests define Namespace objects.

use std::collections::BTreeMap;

use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};

/// `k=v,k2=v2`, as Kubernetes prints a label selector.
fn selector_string(labels: &BTreeMap<String, String>) -> String {
    labels
        .iter()
        .map(|(k, v)| format!("{k}={v}"))
        .collect::<Vec<_>>()
        .join(",")
}

fn namespace_matches(ns: &str, pattern: &str) -> bool {
    if pattern == "*" {
        return true;
    }
    if let Some(suffix) = pattern.strip_prefix('*') {
        return ns.ends_with(suffix);
    }
    if let Some(prefix) = pattern.strip_suffix('*') {
        return ns.starts_with(prefix);
    }
    ns.eq_ignore_ascii_case(pattern)
}

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = no_workloads(ctx);
    out.extend(namespaces_not_found(ctx));
    out
}

fn no_workloads(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    let all = ctx.all_workloads();
    if all.is_empty() {
        return out;
    }
    for s in ctx.of_kind(Kind::AuthorizationPolicy) {
        let Spec::AuthorizationPolicy(ap) = &s.object.spec else {
            continue;
        };
        if !ap.all_target_refs().is_empty() {
            continue;
        }
        let ns = &s.object.namespace;
        let root = ns == ctx.root_namespace();
        let labels = match &ap.selector {
            // A mesh-wide policy without selector applies to everything.
            None if root => continue,
            None => {
                if all.iter().any(|w| &w.namespace == ns) {
                    continue;
                }
                String::new()
            }
            Some(sel) => {
                let matched = all
                    .iter()
                    .filter(|w| root || &w.namespace == ns)
                    .any(|w| sel.matches(&w.labels));
                if matched {
                    continue;
                }
                selector_string(&sel.match_labels)
            }
        };
        let scope = if ap.selector.is_none() {
            format!("namespace {ns} has no workloads")
        } else if root {
            "no workload of the mesh carries these labels".to_string()
        } else {
            format!("no workload of namespace {ns} carries these labels")
        };
        out.push(
            Finding::new(
                Severity::Warning,
                "authz-no-workloads",
                Context::label(&s.object),
                Context::file_of(s),
                format!(
                    "No matching workloads for this resource with the following labels: {labels} ({scope}; the policy applies to nothing)"
                ),
                "correct spec.selector.matchLabels (or the namespace) so that it selects the workloads to protect",
            )
            .with_code("IST0127"),
        );
    }
    out
}

fn namespaces_not_found(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    let namespaces: Vec<&str> = ctx
        .of_kind(Kind::Namespace)
        .map(|s| s.object.name.as_str())
        .collect();
    if namespaces.is_empty() {
        return out;
    }
    for s in ctx.of_kind(Kind::AuthorizationPolicy) {
        let Spec::AuthorizationPolicy(ap) = &s.object.spec else {
            continue;
        };
        for (i, rule) in ap.rules.iter().enumerate() {
            for (j, from) in rule.from.iter().enumerate() {
                let Some(src) = &from.source else {
                    continue;
                };
                let lists = [
                    ("namespaces", &src.namespaces),
                    ("notNamespaces", &src.not_namespaces),
                ];
                for (field, list) in lists {
                    for (k, pattern) in list.iter().enumerate() {
                        if namespaces.iter().any(|n| namespace_matches(n, pattern)) {
                            continue;
                        }
                        let path = format!("spec.rules[{i}].from[{j}].source.{field}[{k}]");
                        out.push(
                            Finding::new(
                                Severity::Error,
                                "authz-namespace-not-found",
                                Context::label(&s.object),
                                Context::file_of(s),
                                format!("Referenced namespace not found: {pattern:?} ({path} matches no Namespace of the manifests)"),
                                format!("correct {path} or create the namespace"),
                            )
                            .with_code("IST0101"),
                        );
                    }
                }
            }
        }
    }
    out
}

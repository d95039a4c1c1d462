//! DENY policies with no default posture: no ALLOW policy applies to the workloads they
//! cover and no namespace-wide deny-all (a DENY rule `{}` without selector, in the
//! namespace or the root namespace), so anything the DENY rules do not name is allowed.

use meshwork_api::security::{AuthorizationPolicy, AuthzAction};
use meshwork_api::{Kind, Spec};

use super::super::context::{Context, WorkloadRef};
use super::super::finding::{Finding, Severity};
use super::allow_all::is_empty;

pub fn check(ctx: &Context) -> Vec<Finding> {
    let allows: Vec<(&str, &AuthorizationPolicy)> = ctx
        .of_kind(Kind::AuthorizationPolicy)
        .filter_map(|s| match &s.object.spec {
            Spec::AuthorizationPolicy(p) if p.action == AuthzAction::Allow => {
                Some((s.object.namespace.as_str(), p))
            }
            _ => None,
        })
        .collect();
    // Namespaces with a namespace-wide deny-all: every workload has a posture.
    let deny_all: Vec<&str> = ctx
        .of_kind(Kind::AuthorizationPolicy)
        .filter_map(|s| match &s.object.spec {
            Spec::AuthorizationPolicy(p)
                if p.action == AuthzAction::Deny
                    && p.selector.is_none()
                    && p.all_target_refs().is_empty()
                    && p.rules.iter().any(is_empty) =>
            {
                Some(s.object.namespace.as_str())
            }
            _ => None,
        })
        .collect();
    let root = ctx.root_namespace();
    let posture = |ns: &str| deny_all.iter().any(|d| *d == ns || *d == root);
    let allowed = |w: &WorkloadRef| {
        posture(&w.namespace)
            || allows.iter().any(|(ns, p)| {
                (*ns == w.namespace || *ns == ctx.root_namespace())
                    && p.selector.as_ref().is_none_or(|sel| {
                        sel.match_labels
                            .iter()
                            .all(|(k, v)| w.labels.get(k) == Some(v))
                    })
            })
    };
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::AuthorizationPolicy) {
        let Spec::AuthorizationPolicy(p) = &s.object.spec else {
            continue;
        };
        if p.action != AuthzAction::Deny || !p.all_target_refs().is_empty() {
            continue;
        }
        let ns = &s.object.namespace;
        let sel = p.selector.as_ref().map(|x| &x.match_labels);
        let covered = ctx.selected(ns, sel);
        let open: Vec<String> = if covered.is_empty() {
            let any_allow = allows
                .iter()
                .any(|(n, _)| n == ns || *n == ctx.root_namespace());
            if any_allow {
                continue;
            }
            vec![format!("namespace {ns}")]
        } else {
            covered
                .iter()
                .filter(|w| !allowed(w))
                .map(|w| w.label.clone())
                .collect()
        };
        if open.is_empty() {
            continue;
        }
        out.push(Finding::new(
            Severity::Info,
            "deny-without-default",
            Context::label(&s.object),
            Context::file_of(s),
            format!(
                "DENY without a default allow/deny posture: no ALLOW policy applies to {}, so every request these DENY rules do not match is allowed",
                open.join(", ")
            ),
            format!("add an ALLOW policy listing who may call them, or an allow-nothing policy (`spec: {{}}`) in namespace {ns} to deny by default"),
        ));
    }
    out
}

//! AuthorizationPolicy with L7 rules (methods, paths, hosts, request.* keys) on workloads
//! without a waypoint: ztunnel only sees L4, so ALLOW rules with L7 parts never match
//! (requests are denied). For DENY rules ztunnel does what Istio's does: a source or
//! operation made only of HTTP attributes, or an HTTP condition, matches nothing, so the
//! rule denies less than written (an L7-only rule has no effect); under the opt-in mesh
//! setting `meshwork.ztunnelPolicyFailClosed` the L7 parts are dropped instead and the rule
//! denies more. Workloads with an Istio sidecar enforce L7 rules themselves and are left out.

use meshwork_api::security::AuthzAction;
use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::AuthorizationPolicy) {
        let Spec::AuthorizationPolicy(p) = &s.object.spec else {
            continue;
        };
        if !p.all_target_refs().is_empty() {
            continue; // targetRef policies are enforced by the waypoint itself.
        }
        let ns = &s.object.namespace;
        let Some(model) = ctx.authorization(ns, &s.object.name) else {
            continue;
        };
        if !model.has_l7 {
            continue;
        }
        let sel = p.selector.as_ref().map(|x| &x.match_labels);
        let without: Vec<String> = ctx
            .selected(ns, sel)
            .into_iter()
            .filter(|w| !ctx.has_waypoint(w) && !ctx.has_sidecar(w))
            .map(|w| w.label)
            .collect();
        if without.is_empty() {
            continue;
        }
        let (severity, effect) = match p.action {
            AuthzAction::Allow => (
                Severity::Error,
                "ztunnel cannot evaluate methods/paths/hosts/request.* so these ALLOW rules never match and every request to them is denied",
            ),
            AuthzAction::Deny if ctx.ztunnel_policy_fail_closed() => (
                Severity::Warning,
                "ztunnel cannot evaluate methods/paths/hosts/request.* so, with meshwork.ztunnelPolicyFailClosed, it drops those parts and these DENY rules deny more than written",
            ),
            AuthzAction::Deny => (
                Severity::Warning,
                "ztunnel cannot evaluate methods/paths/hosts/request.*; as in Istio, a source, operation or condition made only of those matches nothing, so these DENY rules deny less than written (a rule with only L7 parts has no effect)",
            ),
            _ => continue,
        };
        out.push(Finding::new(
            severity,
            "l7-policy-without-waypoint",
            Context::label(&s.object),
            Context::file_of(s),
            format!(
                "{} policy has L7 rules but {} has no waypoint; {effect}",
                p.action.as_str(),
                without.join(", ")
            ),
            format!(
                "deploy a waypoint and label namespace {ns} (or the workloads) istio.io/use-waypoint=<waypoint>, or remove the L7 parts of the rules"
            ),
        ));
    }
    out
}

//! A selector AuthorizationPolicy whose workloads are served by a waypoint means something
//! different here than in Istio (`docs/istio-differences.md`):
//!
//! * Meshwork applies it at the waypoint, against the original client, HTTP attributes
//!   included (the destination ztunnel admits only the waypoint).
//! * Istio enforces it at the destination ztunnel, against the waypoint's identity (the peer
//!   that ztunnel sees), L4 attributes only: its ALLOW rules with HTTP attributes are
//!   dropped, and `principals`/`namespaces` name the waypoint, not the client.
//!
//! Written with `targetRefs` (the Service or the waypoint Gateway), a policy means the same
//! in both.

use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::AuthorizationPolicy) {
        let Spec::AuthorizationPolicy(p) = &s.object.spec else {
            continue;
        };
        let Some(selector) = p.selector.as_ref() else {
            continue;
        };
        if !p.all_target_refs().is_empty() {
            continue;
        }
        let ns = &s.object.namespace;
        let behind: Vec<String> = ctx
            .selected(ns, Some(&selector.match_labels))
            .into_iter()
            .filter(|w| ctx.has_waypoint(w) && !ctx.has_sidecar(w))
            .map(|w| w.label)
            .collect();
        if behind.is_empty() {
            continue;
        }
        let l7 = ctx
            .authorization(ns, &s.object.name)
            .is_some_and(|a| a.has_l7);
        let istio = if l7 {
            "Istio enforces it at the destination ztunnel against the waypoint's identity, without its HTTP rules (an ALLOW rule with HTTP attributes never matches there)"
        } else {
            "Istio enforces it at the destination ztunnel against the waypoint's identity, so its principals and namespaces would have to name the waypoint"
        };
        out.push(Finding::new(
            Severity::Warning,
            "selector-policy-behind-waypoint",
            Context::label(&s.object),
            Context::file_of(s),
            format!(
                "{} policy selects {}, served by a waypoint: Meshwork applies it at the waypoint against the original client; {istio}",
                p.action.as_str(),
                behind.join(", ")
            ),
            "to mean the same under Istio, attach it with targetRefs to the Service (or the waypoint Gateway) instead of a selector",
        ));
    }
    out
}

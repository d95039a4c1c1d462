//! How a ztunnel decides a connection (no HTTP attributes), compared with what Istio does.
//!
//! Istio's behaviour, the expectation of each case:
//! * istiod converts a policy for ztunnel in `convertAuthorizationPolicy` / `handleRule`
//!   (istio/istio `pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go`):
//!   CUSTOM and AUDIT are not sent; an ALLOW rule with an HTTP attribute is dropped; in a
//!   DENY rule each source and operation keeps only its L4 fields (an HTTP-only one becomes
//!   an empty match) and each `when` becomes one match holding only the five L4 keys
//!   (`source.ip`, `source.namespace`, `source.principal`, `destination.ip`,
//!   `destination.port`); `remoteIpBlocks` and `requestPrincipals` are HTTP attributes.
//! * ztunnel skips an empty match (`Authorization::matches` in istio/ztunnel `src/rbac.rs`,
//!   "empty clause", and its test `rbac_empty_policy`), so a clause of only empty matches
//!   matches nothing, and the rule with it matches nothing.
//!
//! Each case is also decided as Envoy decides TCP (the waypoint's TCP path, and Meshwork's
//! opt-in `meshwork.ztunnelPolicyFailClosed`), where a DENY rule is enforced without its
//! HTTP attributes and a CUSTOM match rejects (istio.io "Authorization Policy" reference:
//! HTTP-only fields in a DENY policy for TCP traffic make it more restrictive).

mod common;

use common::{peer, policy, s};
use meshwork_authz::{evaluate, Enforcer, Outcome, Policy, RequestContext};
use meshwork_model::pb::config as pb;

fn ctx() -> RequestContext {
    // peer(): source 10.1.0.5, destination 10.1.0.9:8080, no HTTP attributes.
    peer(Some("cluster.local/ns/other/sa/x"))
}

fn src(f: impl FnOnce(&mut pb::Source)) -> pb::Source {
    let mut s = pb::Source::default();
    f(&mut s);
    s
}

fn op(f: impl FnOnce(&mut pb::Operation)) -> pb::Operation {
    let mut o = pb::Operation::default();
    f(&mut o);
    o
}

fn cond(key: &str, values: &[&str]) -> pb::Condition {
    pb::Condition {
        key: key.into(),
        values: s(values),
        ..Default::default()
    }
}

fn rule(from: Vec<pb::Source>, to: Vec<pb::Operation>, when: Vec<pb::Condition>) -> pb::Rule {
    pb::Rule { from, to, when }
}

/// `(name, policy, allowed by Istio's ztunnel, allowed by Envoy's TCP filter)`.
fn cases() -> Vec<(&'static str, pb::Authorization, bool, bool)> {
    use pb::Action::{Allow, Audit, Custom, Deny};
    let get = || op(|o| o.methods = s(&["GET"]));
    vec![
        (
            "DENY with only methods: an empty match, no effect at ztunnel",
            policy("p", Deny, vec![rule(vec![], vec![get()], vec![])]),
            true,
            false,
        ),
        (
            "DENY with an HTTP-only operation or a port operation: the port one matches",
            policy(
                "p",
                Deny,
                vec![rule(
                    vec![],
                    vec![get(), op(|o| o.ports = s(&["8080"]))],
                    vec![],
                )],
            ),
            false,
            false,
        ),
        (
            "DENY methods on port 8080: enforced on the port alone",
            policy(
                "p",
                Deny,
                vec![rule(
                    vec![],
                    vec![op(|o| {
                        o.methods = s(&["POST"]);
                        o.ports = s(&["8080"]);
                    })],
                    vec![],
                )],
            ),
            false,
            false,
        ),
        (
            "DENY with only requestPrincipals: no effect at ztunnel",
            policy(
                "p",
                Deny,
                vec![rule(
                    vec![src(|s0| s0.request_principals = s(&["*"]))],
                    vec![],
                    vec![],
                )],
            ),
            true,
            false,
        ),
        (
            "DENY namespaces plus requestPrincipals: the namespace part is enforced",
            policy(
                "p",
                Deny,
                vec![rule(
                    vec![src(|s0| {
                        s0.namespaces = s(&["other"]);
                        s0.request_principals = s(&["iss/sub"]);
                    })],
                    vec![],
                    vec![],
                )],
            ),
            false,
            false,
        ),
        (
            "DENY namespaces with a header condition: the whole rule matches nothing at ztunnel",
            policy(
                "p",
                Deny,
                vec![rule(
                    vec![src(|s0| s0.namespaces = s(&["other"]))],
                    vec![],
                    vec![cond("request.headers[x-debug]", &["1"])],
                )],
            ),
            true,
            false,
        ),
        (
            "DENY on an L4 condition",
            policy(
                "p",
                Deny,
                vec![rule(
                    vec![],
                    vec![],
                    vec![cond("source.namespace", &["other"])],
                )],
            ),
            false,
            false,
        ),
        (
            "DENY with only remoteIpBlocks: an HTTP attribute for ztunnel, no effect",
            policy(
                "p",
                Deny,
                vec![rule(
                    vec![src(|s0| s0.remote_ip_blocks = s(&["10.1.0.0/16"]))],
                    vec![],
                    vec![],
                )],
            ),
            true,
            false,
        ),
        (
            "DENY ipBlocks plus a non-matching remoteIpBlocks: ztunnel enforces ipBlocks only",
            policy(
                "p",
                Deny,
                vec![rule(
                    vec![src(|s0| {
                        s0.ip_blocks = s(&["10.0.0.0/8"]);
                        s0.remote_ip_blocks = s(&["192.168.0.0/16"]);
                    })],
                    vec![],
                    vec![],
                )],
            ),
            false,
            true,
        ),
        (
            "DENY on an L4 source.ip condition",
            policy(
                "p",
                Deny,
                vec![rule(
                    vec![],
                    vec![],
                    vec![cond("source.ip", &["10.0.0.0/8"])],
                )],
            ),
            false,
            false,
        ),
        (
            "DENY on source.trustDomain: not an L4 key for ztunnel, the rule matches nothing",
            policy(
                "p",
                Deny,
                vec![rule(
                    vec![],
                    vec![],
                    vec![cond("source.trustDomain", &["cluster.local"])],
                )],
            ),
            true,
            false,
        ),
        (
            "ALLOW with remote.ip: dropped at ztunnel, so nothing is allowed",
            policy(
                "p",
                Allow,
                vec![rule(
                    vec![src(|s0| s0.namespaces = s(&["other"]))],
                    vec![],
                    vec![cond("remote.ip", &["10.0.0.0/8"])],
                )],
            ),
            false,
            true,
        ),
        (
            "ALLOW with remoteIpBlocks: dropped at ztunnel",
            policy(
                "p",
                Allow,
                vec![rule(
                    vec![src(|s0| s0.remote_ip_blocks = s(&["10.0.0.0/8"]))],
                    vec![],
                    vec![],
                )],
            ),
            false,
            true,
        ),
        (
            "ALLOW with methods: dropped everywhere without HTTP",
            policy("p", Allow, vec![rule(vec![], vec![get()], vec![])]),
            false,
            false,
        ),
        (
            "ALLOW on principals and port",
            policy(
                "p",
                Allow,
                vec![rule(
                    vec![src(|s0| {
                        s0.principals = s(&["cluster.local/ns/other/sa/x"])
                    })],
                    vec![op(|o| o.ports = s(&["8080"]))],
                    vec![],
                )],
            ),
            true,
            true,
        ),
        (
            "CUSTOM is never sent to ztunnel",
            policy("p", Custom, vec![rule(vec![], vec![get()], vec![])]),
            true,
            false,
        ),
        (
            "AUDIT never decides",
            policy("p", Audit, vec![rule(vec![], vec![], vec![])]),
            true,
            true,
        ),
        (
            "DENY with an empty rule matches everything",
            policy("p", Deny, vec![pb::Rule::default()]),
            false,
            false,
        ),
        (
            "DENY with no rules matches nothing",
            policy("p", Deny, vec![]),
            true,
            true,
        ),
        (
            "ALLOW with no rules allows nothing",
            policy("p", Allow, vec![]),
            false,
            false,
        ),
    ]
}

fn decide(p: &pb::Authorization, enforcer: Enforcer) -> meshwork_authz::Decision {
    evaluate([&Policy::compile_for(p, enforcer)], &ctx())
}

#[test]
fn ztunnel_decides_as_istio_ztunnel() {
    let mut wrong = Vec::new();
    for (name, p, istio, _) in cases() {
        let d = decide(&p, Enforcer::Ztunnel);
        if d.allowed != istio {
            wrong.push(format!("{name}: expected allowed={istio}, got {d}"));
        }
        assert!(
            !matches!(d.outcome, Outcome::Custom { .. }),
            "{name}: CUSTOM decided at ztunnel"
        );
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// The agreement table of `docs/conformance.md`: how many cases each way of deciding at a
/// ztunnel gets as Istio's ztunnel does (Envoy's TCP rules were Meshwork's ztunnel before).
#[test]
fn agreement_with_istio_ztunnel() {
    let all = cases();
    let agree = |e: Enforcer| {
        all.iter()
            .filter(|(_, p, istio, _)| decide(p, e).allowed == *istio)
            .count()
    };
    let (zt, envoy) = (agree(Enforcer::Ztunnel), agree(Enforcer::Envoy));
    eprintln!(
        "ztunnel decisions agreeing with Istio's ztunnel: {zt}/{n} (Envoy TCP rules, the former behaviour: {envoy}/{n})",
        n = all.len()
    );
    assert_eq!(zt, all.len());
    assert_eq!(envoy, 11, "the cases where the two differ changed");
}

#[test]
fn fail_closed_opt_in_decides_as_envoy_tcp() {
    let mut wrong = Vec::new();
    for (name, p, _, envoy) in cases() {
        let d = decide(&p, Enforcer::Envoy);
        if d.allowed != envoy {
            wrong.push(format!("{name}: expected allowed={envoy}, got {d}"));
        }
    }
    assert!(wrong.is_empty(), "{}", wrong.join("\n"));
}

/// Compiling for an enforcer changes nothing once HTTP attributes are present.
#[test]
fn enforcer_does_not_matter_with_http_attributes() {
    for (name, p, _, _) in cases() {
        let ctx = common::with_http(ctx(), common::http("GET", "/", &[("x-debug", "1")]));
        let zt = evaluate([&Policy::compile_for(&p, Enforcer::Ztunnel)], &ctx);
        let envoy = evaluate([&Policy::compile(&p)], &ctx);
        assert_eq!(zt, envoy, "{name}");
    }
}

/// An AUDIT match is reported by Envoy, while istiod does not send AUDIT to ztunnel.
#[test]
fn audit_is_not_reported_at_ztunnel() {
    let p = policy("a", pb::Action::Audit, vec![pb::Rule::default()]);
    assert_eq!(decide(&p, Enforcer::Envoy).audit.len(), 1);
    assert!(decide(&p, Enforcer::Ztunnel).audit.is_empty());
}

#[test]
fn mesh_setting_selects_the_enforcer() {
    assert_eq!(Enforcer::for_ztunnel(None), Enforcer::Ztunnel);
    let mut m = pb::MeshSettings::default();
    assert_eq!(Enforcer::for_ztunnel(Some(&m)), Enforcer::Ztunnel);
    m.ztunnel_policy_fail_closed = true;
    assert_eq!(Enforcer::for_ztunnel(Some(&m)), Enforcer::Envoy);
}

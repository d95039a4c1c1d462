//! Combining actions: DENY over ALLOW, allow-nothing, AUDIT, CUSTOM, dry-run, invalid rules.

mod common;

use common::*;
use meshwork_authz::{evaluate_pb, validate, AuthzError, Outcome};
use meshwork_model::pb::config as pb;

fn any_rule() -> pb::Rule {
    pb::Rule::default()
}

fn ns_rule(ns: &str) -> pb::Rule {
    pb::Rule {
        from: vec![pb::Source {
            namespaces: s(&[ns]),
            ..Default::default()
        }],
        ..Default::default()
    }
}

fn ctx() -> meshwork_authz::RequestContext {
    peer(Some("cluster.local/ns/shop/sa/web"))
}

#[test]
fn no_policies_allows() {
    let d = evaluate_pb([], &ctx());
    assert!(d.allowed);
    assert_eq!(d.outcome, Outcome::AllowedNoPolicy);
}

#[test]
fn empty_rules_match_nothing() {
    let allow_nothing = policy("allow-nothing", pb::Action::Allow, vec![]);
    let d = evaluate_pb([&allow_nothing], &ctx());
    assert!(!d.allowed);
    assert_eq!(d.outcome, Outcome::DeniedNoAllowMatch);
    let deny_nothing = policy("deny-nothing", pb::Action::Deny, vec![]);
    assert!(evaluate_pb([&deny_nothing], &ctx()).allowed);
}

#[test]
fn deny_wins_over_allow() {
    let allow = policy("allow", pb::Action::Allow, vec![any_rule()]);
    let deny = policy("deny", pb::Action::Deny, vec![ns_rule("shop")]);
    let d = evaluate_pb([&allow, &deny], &ctx());
    assert!(!d.allowed);
    assert_eq!(d.policy.as_deref(), Some("production/deny"));
    let deny_other = policy("deny", pb::Action::Deny, vec![ns_rule("other")]);
    let d = evaluate_pb([&allow, &deny_other], &ctx());
    assert!(d.allowed);
    assert_eq!(d.outcome, Outcome::Allowed);
}

#[test]
fn any_allow_policy_suffices() {
    let a = policy("a", pb::Action::Allow, vec![ns_rule("other")]);
    let b = policy("b", pb::Action::Allow, vec![ns_rule("shop")]);
    let d = evaluate_pb([&a, &b], &ctx());
    assert!(d.allowed);
    assert_eq!(d.policy.as_deref(), Some("production/b"));
}

#[test]
fn audit_never_decides() {
    let audit = policy("audit", pb::Action::Audit, vec![any_rule()]);
    let d = evaluate_pb([&audit], &ctx());
    assert!(d.allowed);
    assert_eq!(d.outcome, Outcome::AllowedNoPolicy);
    assert_eq!(d.audit.len(), 1);
    assert_eq!(d.audit[0].policy, "production/audit");
    let deny = policy("deny", pb::Action::Deny, vec![any_rule()]);
    let d = evaluate_pb([&audit, &deny], &ctx());
    assert!(!d.allowed);
    assert_eq!(d.audit.len(), 1);
    let audit_miss = policy("audit", pb::Action::Audit, vec![ns_rule("x")]);
    assert!(evaluate_pb([&audit_miss], &ctx()).audit.is_empty());
}

#[test]
fn custom_is_reported_distinctly() {
    let mut custom = policy("ext", pb::Action::Custom, vec![ns_rule("shop")]);
    custom.provider = "opa".into();
    let allow = policy("allow", pb::Action::Allow, vec![any_rule()]);
    let d = evaluate_pb([&allow, &custom], &ctx());
    assert!(!d.allowed);
    assert_eq!(
        d.outcome,
        Outcome::Custom {
            provider: "opa".into()
        }
    );
    assert!(d.reason.contains("not supported"), "{}", d.reason);
    custom.rules = vec![ns_rule("other")];
    assert!(evaluate_pb([&allow, &custom], &ctx()).allowed);
}

#[test]
fn dry_run_is_not_enforced() {
    let mut deny = policy("deny", pb::Action::Deny, vec![any_rule()]);
    deny.dry_run = true;
    let mut allow_nothing = policy("allow", pb::Action::Allow, vec![]);
    allow_nothing.dry_run = true;
    let d = evaluate_pb([&deny, &allow_nothing], &ctx());
    assert!(d.allowed, "{d}");
    assert_eq!(d.dry_run.len(), 1);
    assert_eq!(d.dry_run[0].action, pb::Action::Deny);
}

#[test]
fn invalid_rules_fail_closed() {
    let bad_ip = pb::Rule {
        from: vec![pb::Source {
            ip_blocks: s(&["10.0.0.300/8"]),
            ..Default::default()
        }],
        ..Default::default()
    };
    let allow = policy("allow", pb::Action::Allow, vec![bad_ip.clone()]);
    let d = evaluate_pb([&allow], &ctx());
    assert!(!d.allowed);
    let deny = policy("deny", pb::Action::Deny, vec![bad_ip]);
    let d = evaluate_pb([&deny], &ctx());
    assert!(!d.allowed);
    assert!(d.reason.contains("invalid"), "{}", d.reason);
}

#[test]
fn validation_errors_name_the_field() {
    let with_rule = |r: pb::Rule| policy("p", pb::Action::Allow, vec![any_rule(), r]);
    let cond = |key: &str, values: &[&str]| pb::Rule {
        when: vec![pb::Condition {
            key: key.into(),
            values: s(values),
            ..Default::default()
        }],
        ..Default::default()
    };
    let err = validate(&with_rule(cond(
        "experimental.envoy.filters.network.mysql_proxy[db.t]",
        &["[update]"],
    )))
    .unwrap_err();
    assert!(
        matches!(err, AuthzError::UnsupportedConditionKey { rule: 1, .. }),
        "{err}"
    );
    assert!(err.to_string().contains("production/p"));
    let err = validate(&with_rule(cond("source.bogus", &["x"]))).unwrap_err();
    assert!(
        matches!(err, AuthzError::UnknownConditionKey { .. }),
        "{err}"
    );
    let err = validate(&with_rule(cond("request.headers[x]", &[]))).unwrap_err();
    assert!(matches!(err, AuthzError::EmptyCondition { .. }), "{err}");
    let err = validate(&with_rule(cond("destination.port", &["http"]))).unwrap_err();
    assert!(
        matches!(
            err,
            AuthzError::InvalidPort {
                field: "when.values",
                ..
            }
        ),
        "{err}"
    );
    let err = validate(&with_rule(cond("source.ip", &["nope"]))).unwrap_err();
    assert!(matches!(err, AuthzError::InvalidIpBlock { .. }), "{err}");
    let err = validate(&with_rule(pb::Rule {
        to: vec![pb::Operation {
            not_ports: s(&["70000"]),
            ..Default::default()
        }],
        ..Default::default()
    }))
    .unwrap_err();
    assert!(err.to_string().contains("to.operation.notPorts"), "{err}");
    let err = validate(&with_rule(pb::Rule {
        to: vec![pb::Operation {
            paths: s(&["/a/{**}/{*}"]),
            ..Default::default()
        }],
        ..Default::default()
    }))
    .unwrap_err();
    assert!(
        matches!(err, AuthzError::InvalidPathTemplate { .. }),
        "{err}"
    );
    assert!(validate(&payment_policy()).is_ok());
    assert!(validate(&deny_all_default()).is_ok());
}

#[test]
fn custom_fails_closed_at_l4() {
    let mut custom = policy(
        "ext",
        pb::Action::Custom,
        vec![pb::Rule {
            to: vec![pb::Operation {
                paths: s(&["/admin/*"]),
                ..Default::default()
            }],
            ..Default::default()
        }],
    );
    custom.provider = "opa".into();
    let d = evaluate_pb([&custom], &ctx());
    assert!(!d.allowed);
    assert!(matches!(d.outcome, Outcome::Custom { .. }));
    let l4 = meshwork_authz::l4_view(&custom);
    assert_eq!(l4.rules.len(), 1);
    assert!(l4.rules[0].to[0].paths.is_empty());
}

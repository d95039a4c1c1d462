//! The seed manifests' zero-trust policies (05-zero-trust.yaml) at L7 and L4.

mod common;

use common::*;
use meshwork_authz::{evaluate_pb, l4_view, Outcome};

const ORDER: &str = "cluster.local/ns/production/sa/order-service";

#[test]
fn deny_all_default_policy() {
    let policies = [deny_all_default()];
    let foreign = evaluate_pb(
        &policies,
        &peer(Some("cluster.local/ns/staging/sa/order-service")),
    );
    assert!(!foreign.allowed);
    assert_eq!(
        foreign.policy.as_deref(),
        Some("production/deny-all-default")
    );
    assert_eq!(foreign.rule, Some(0));
    assert_eq!(foreign.outcome, Outcome::Denied);

    let prod = evaluate_pb(
        &policies,
        &peer(Some("spiffe://cluster.local/ns/production/sa/x")),
    );
    assert!(prod.allowed, "{prod}");
    assert_eq!(prod.outcome, Outcome::AllowedNoPolicy);

    let plaintext = evaluate_pb(&policies, &peer(None));
    assert!(!plaintext.allowed);
    assert_eq!(
        plaintext.policy.as_deref(),
        Some("production/deny-all-default")
    );
}

#[test]
fn payment_policy_l7() {
    let policies = [payment_policy(), deny_all_default()];
    let order = || peer(Some(ORDER));
    let cases = [
        ("POST", "/api/payments/x", vec![], Some(ORDER), true),
        (
            "POST",
            "/api/payments/x?amount=3",
            vec![],
            Some(ORDER),
            true,
        ),
        ("GET", "/api/payments/x", vec![], Some(ORDER), false),
        ("POST", "/api/refunds/x", vec![], Some(ORDER), false),
        (
            "POST",
            "/api/payments/x",
            vec![("x-user-role", "guest")],
            Some(ORDER),
            false,
        ),
        (
            "POST",
            "/api/payments/x",
            vec![("x-user-role", "admin")],
            Some(ORDER),
            true,
        ),
        (
            "POST",
            "/api/payments/x",
            vec![],
            Some("cluster.local/ns/production/sa/frontend"),
            false,
        ),
        (
            "POST",
            "/api/payments/x",
            vec![],
            Some("cluster.local/ns/staging/sa/order-service"),
            false,
        ),
        ("POST", "/api/payments/x", vec![], None, false),
    ];
    for (method, path, headers, principal, want) in cases {
        let mut ctx = order();
        ctx.source_principal = principal.map(String::from);
        let d = evaluate_pb(&policies, &with_http(ctx, http(method, path, &headers)));
        assert_eq!(
            d.allowed, want,
            "{method} {path} {headers:?} {principal:?}: {d}"
        );
    }

    let ok = evaluate_pb(
        &policies,
        &with_http(order(), http("POST", "/api/payments/1", &[])),
    );
    assert_eq!(
        ok.policy.as_deref(),
        Some("production/payment-service-policy")
    );
    assert_eq!(ok.rule, Some(0));
    let get = evaluate_pb(
        &policies,
        &with_http(order(), http("GET", "/api/payments/1", &[])),
    );
    assert_eq!(get.outcome, Outcome::DeniedNoAllowMatch);
    assert_eq!(get.policy, None);
    let foreign = evaluate_pb(
        &policies,
        &with_http(
            peer(Some("cluster.local/ns/other/sa/order-service")),
            http("POST", "/api/payments/1", &[]),
        ),
    );
    assert_eq!(
        foreign.policy.as_deref(),
        Some("production/deny-all-default")
    );
}

/// At L4 the L7 ALLOW rule cannot be checked: payment-service denies everything, and the L4
/// view gives the same answers as the original evaluated without HTTP attributes.
#[test]
fn payment_policy_l4_fails_closed() {
    let policies = [payment_policy(), deny_all_default()];
    let l4: Vec<_> = policies.iter().map(l4_view).collect();
    assert!(l4[0].rules.is_empty());
    assert!(!l4[0].has_l7);
    assert_eq!(l4[1], deny_all_default());
    for principal in [Some(ORDER), Some("cluster.local/ns/x/sa/y"), None] {
        let d = evaluate_pb(&policies, &peer(principal));
        assert!(!d.allowed, "{principal:?}: {d}");
        let v = evaluate_pb(&l4, &peer(principal));
        assert_eq!(d.allowed, v.allowed);
        assert_eq!(d.policy, v.policy);
    }
}

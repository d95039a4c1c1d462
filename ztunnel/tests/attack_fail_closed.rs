//! The control plane fails closed when a namespace's AuthorizationPolicy cannot be loaded
//! and has no last good version: it publishes `meshwork~fail-closed`, a namespace-wide DENY
//! with one empty rule. That promise holds only if the ztunnel really refuses every
//! connection to the namespace with it, which is checked here between two real ztunnels
//! (SOCKS5 entry on A, HBONE mTLS to B) on loopback. The policy is the control plane's
//! exact output, pinned by `controlplane/tests/attack_config_source.rs::
//! attack_first_start_with_invalid_policy_does_not_silently_allow`.

mod common;

use common::*;
use meshwork_model::pb::config::{Action, Authorization, Enforcement, PolicyScope, Rule};

const NOT_ALLOWED: u8 = 2;

/// `meshwork~fail-closed` for `namespace`, as the control plane publishes it.
fn fail_closed(namespace: &str) -> Authorization {
    Authorization {
        name: "meshwork~fail-closed".into(),
        namespace: namespace.into(),
        scope: PolicyScope::Namespace as i32,
        action: Action::Deny as i32,
        rules: vec![Rule::default()],
        enforcement: Enforcement::EnforceZtunnel as i32,
        ..Default::default()
    }
}

#[tokio::test]
async fn attack_fail_closed_deny_all_refuses_connections_into_its_namespace() {
    let (mut s, echo) = setup(61).await;
    s.b_world.policies.push(fail_closed("prod"));
    let p = s.start(echo).await;
    for _ in 0..3 {
        let e = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
            .await
            .expect_err("a connection into the fail-closed namespace was relayed");
        assert_eq!(e, NOT_ALLOWED);
    }
    assert_eq!(
        p.b.metrics()
            .total("opened", |l| l.response_flags == "DENY"),
        3
    );
}

#[tokio::test]
async fn fail_closed_deny_all_of_another_namespace_does_not_touch_this_one() {
    let (mut s, echo) = setup(62).await;
    s.b_world.policies.push(fail_closed("other"));
    let p = s.start(echo).await;
    let mut conn = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .expect("prod is not the failed namespace");
    assert_eq!(roundtrip(&mut conn, b"ping").await.unwrap(), b"ping");
}

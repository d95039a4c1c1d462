//! The seed's payment-service-policy enforced at the waypoint.

mod common;

use common::*;
use meshwork_model::pb::config as pb;

fn payment_policy() -> pb::Authorization {
    pb::Authorization {
        name: "payment-service-policy".into(),
        namespace: NS.into(),
        scope: pb::PolicyScope::WorkloadSelector as i32,
        action: pb::Action::Allow as i32,
        selector: [("app".to_string(), "payment-service".to_string())].into(),
        has_l7: true,
        rules: vec![pb::Rule {
            from: vec![pb::Source {
                principals: s(&["cluster.local/ns/production/sa/order-service"]),
                namespaces: s(&["production"]),
                ..Default::default()
            }],
            to: vec![pb::Operation {
                methods: s(&["POST"]),
                paths: s(&["/api/payments/*"]),
                ..Default::default()
            }],
            when: vec![pb::Condition {
                key: "request.headers[x-user-role]".into(),
                not_values: s(&["guest"]),
                ..Default::default()
            }],
        }],
        ..Default::default()
    }
}

async fn payment_mesh(identity: Option<&str>, policy: pb::Authorization) -> Proxy {
    let b = named("paid").await;
    let mut m = Mesh::default();
    m.service("payment-service", "240.240.0.20")
        .workload(
            "payment-0",
            "payment-service",
            "v1",
            "payment-service",
            b.addr.port(),
        )
        .authz(policy);
    let snap = payment_service_selects_its_pods(m.snapshot());
    proxy(snap, identity).await
}

#[tokio::test]
async fn payment_policy_at_l7() {
    let order = payment_mesh(Some(ORDER_SA), payment_policy()).await;
    let c = client();
    let (status, body, _) = send(
        &c,
        order.addr,
        "POST",
        "payment-service",
        "/api/payments/x",
        &[],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "paid"));
    let (status, body, _) = send(
        &c,
        order.addr,
        "GET",
        "payment-service",
        "/api/payments/x",
        &[],
    )
    .await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));
    let (status, _, _) = send(
        &c,
        order.addr,
        "POST",
        "payment-service",
        "/api/payments/x",
        &[("x-user-role", "guest")],
    )
    .await;
    assert_eq!(status, 403);
    let foreign = payment_mesh(
        Some("spiffe://cluster.local/ns/staging/sa/order-service"),
        payment_policy(),
    )
    .await;
    let (status, _, _) = send(
        &c,
        foreign.addr,
        "POST",
        "payment-service",
        "/api/payments/x",
        &[],
    )
    .await;
    assert_eq!(status, 403);
    let plaintext = payment_mesh(None, payment_policy()).await;
    let (status, _, _) = send(
        &c,
        plaintext.addr,
        "POST",
        "payment-service",
        "/api/payments/x",
        &[],
    )
    .await;
    assert_eq!(status, 403);
    let log = wait_log(&order, 3).await;
    assert_eq!(log[0]["authz_policy"], "production/payment-service-policy");
    assert!(log[1]["response_code_details"]
        .as_str()
        .unwrap()
        .starts_with("rbac_access_denied"));
}

#[tokio::test]
async fn custom_provider_is_rejected_clearly() {
    let mut custom = payment_policy();
    custom.name = "ext-authz".into();
    custom.action = pb::Action::Custom as i32;
    custom.provider = "opa".into();
    custom.rules = vec![pb::Rule::default()];
    let p = payment_mesh(Some(ORDER_SA), custom).await;
    let (status, body, _) = send(
        &client(),
        p.addr,
        "POST",
        "payment-service",
        "/api/payments/x",
        &[],
    )
    .await;
    assert_eq!(status, 403);
    assert!(
        body.contains("CUSTOM authorization provider \"opa\" is not supported"),
        "{body}"
    );
    let log = wait_log(&p, 1).await;
    assert_eq!(log[0]["response_flags"], "UAEX");
}

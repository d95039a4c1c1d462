//! Routes bound to the waypoint's own Gateway (HTTPRoute `parentRefs: [{name: waypoint}]`,
//! published by the control plane as `route/<ns>/gateway~<name>`): they apply to traffic for
//! the services the waypoint serves, restricted by `hostnames` (authority matches), after the
//! service's own routes.

mod common;

use common::*;
use meshwork_model::pb::config as pb;
use pb::string_match::Match;

fn sm(m: Match) -> pb::StringMatch {
    pb::StringMatch {
        r#match: Some(m),
        present: false,
    }
}

fn rule(name: &str, host_regex: Option<&str>, prefix: &str, to: &str) -> pb::HttpRoute {
    pb::HttpRoute {
        name: name.into(),
        matches: vec![pb::RouteMatch {
            uri: Some(sm(Match::Prefix(prefix.into()))),
            authority: host_regex.map(|h| sm(Match::Regex(h.into()))),
            ..Default::default()
        }],
        route: vec![dest(to, "", 1)],
        origin: format!("HTTPRoute/{NS}/{name}"),
        ..Default::default()
    }
}

/// order-service (no routes of its own) and payment-service (a VirtualService for `/api`),
/// with two rules bound to the waypoint Gateway.
async fn mesh() -> (Proxy, Backend, Backend) {
    let order = named("order").await;
    let pay = named("pay").await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload("order-0", "order-service", "v1", "order", order.addr.port())
        .service("payment-service", "240.240.0.20")
        .workload("pay-0", "payment-service", "v1", "pay", pay.addr.port())
        .route(pb::RouteConfig {
            hostname: PAYMENT_HOST.into(),
            namespace: NS.into(),
            http: vec![rule("pay-api", None, "/api", PAYMENT_HOST)],
            ..Default::default()
        })
        .route(pb::RouteConfig {
            hostname: "gateway~waypoint".into(),
            namespace: NS.into(),
            http: vec![
                // hostnames: [order-service] → /beta goes to payment-service.
                rule(
                    "beta",
                    Some("(?i:order-service)(?::[0-9]+)?"),
                    "/beta",
                    PAYMENT_HOST,
                ),
                // No hostnames: every host's /api goes to order-service.
                rule("all-api", None, "/api", ORDER_HOST),
            ],
            ..Default::default()
        });
    (proxy(m.snapshot(), Some(ORDER_SA)).await, order, pay)
}

#[tokio::test]
async fn hostnames_select_the_gateway_rule_case_and_port_insensitive() {
    let (p, _, _) = mesh().await;
    let c = client();
    for host in ["order-service", "ORDER-Service:80"] {
        let (status, body, _) = send(&c, p.addr, "GET", host, "/beta/x", &[]).await;
        assert_eq!((status, body.as_str()), (200, "pay"), "{host}");
    }
    // The same path for another host does not match the hostnames.
    let (status, _, _) = send(&c, p.addr, "GET", "payment-service", "/beta", &[]).await;
    assert_eq!(
        status, 404,
        "payment-service has routes of its own, none matching"
    );
    let log = wait_log(&p, 3).await;
    assert_eq!(log[0]["route_name"], "beta");
}

#[tokio::test]
async fn service_without_routes_falls_back_to_its_default_route() {
    let (p, _, _) = mesh().await;
    let c = client();
    let (status, body, _) = send(&c, p.addr, "GET", "order-service", "/other", &[]).await;
    assert_eq!((status, body.as_str()), (200, "order"));
    // A rule without hostnames applies to every service without a matching route.
    let (status, body, _) = send(&c, p.addr, "GET", "order-service", "/api", &[]).await;
    assert_eq!((status, body.as_str()), (200, "order"));
}

#[tokio::test]
async fn service_attached_routes_take_precedence() {
    let (p, _, _) = mesh().await;
    let c = client();
    // payment-service's own /api route wins over the Gateway's /api rule.
    let (status, body, _) = send(&c, p.addr, "GET", "payment-service", "/api/pay", &[]).await;
    assert_eq!((status, body.as_str()), (200, "pay"));
}

#[tokio::test]
async fn destination_rule_only_host_uses_the_default_route() {
    let order = named("order").await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload("order-0", "order-service", "v1", "order", order.addr.port())
        .route(pb::RouteConfig {
            hostname: ORDER_HOST.into(),
            namespace: NS.into(),
            traffic_policy: Some(pb::TrafficPolicy::default()),
            origins: vec![format!("DestinationRule/{NS}/order")],
            ..Default::default()
        });
    let p = proxy(m.snapshot(), Some(ORDER_SA)).await;
    let (status, body, _) = send(&client(), p.addr, "GET", "order-service", "/", &[]).await;
    assert_eq!((status, body.as_str()), (200, "order"));
}

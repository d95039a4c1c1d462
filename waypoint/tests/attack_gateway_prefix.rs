//! Attack: Gateway API `PathPrefix` taken as a character prefix. The spec matches whole path
//! segments: `/api/cart` matches `/api/cart`, `/api/cart/` and `/api/cart/x`, never
//! `/api/cartoon`. The routes here are what the control plane publishes for HTTPRoutes
//! (`path_prefix`, trailing `/` dropped); Istio's VirtualService `prefix` keeps its
//! character meaning.

mod common;

use common::*;
use meshwork_model::pb::config as pb;
use pb::string_match::Match;

fn path_prefix(p: &str) -> Option<pb::StringMatch> {
    Some(pb::StringMatch {
        r#match: Some(Match::PathPrefix(p.trim_end_matches('/').into())),
        present: false,
    })
}

/// One HTTPRoute rule as translated: a `PathPrefix` match to `to`.
fn rule(name: &str, prefix: &str, to: &str) -> pb::HttpRoute {
    pb::HttpRoute {
        name: name.into(),
        matches: vec![pb::RouteMatch {
            uri: path_prefix(prefix),
            ..Default::default()
        }],
        route: vec![dest(to, "", 1)],
        origin: format!("HTTPRoute/{NS}/{name}"),
        ..Default::default()
    }
}

/// order-service with its own HTTPRoute rules; payment-service as the cart backend.
async fn waypoint(rules: Vec<pb::HttpRoute>) -> (Proxy, Backend, Backend) {
    let order = named("order").await;
    let cart = named("cart").await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload("order-0", "order-service", "v1", "order", order.addr.port())
        .service("payment-service", "240.240.0.20")
        .workload("cart-0", "payment-service", "v1", "cart", cart.addr.port())
        .route(pb::RouteConfig {
            hostname: ORDER_HOST.into(),
            namespace: NS.into(),
            http: rules,
            ..Default::default()
        });
    (proxy(m.snapshot(), Some(ORDER_SA)).await, order, cart)
}

async fn get(p: &Proxy, path: &str) -> (u16, String) {
    let (status, body, _) = send(&client(), p.addr, "GET", "order-service", path, &[]).await;
    (status, body)
}

#[tokio::test]
async fn attack_path_prefix_does_not_capture_longer_segment() {
    for prefix in ["/api/cart", "/api/cart/"] {
        let (p, _, _) = waypoint(vec![
            rule("cart", prefix, PAYMENT_HOST),
            rule("rest", "/", ORDER_HOST),
        ])
        .await;
        for (path, want) in [
            ("/api/cart", "cart"),
            ("/api/cart/", "cart"),
            ("/api/cart/items/1", "cart"),
            ("/api/cart?x=1", "cart"),
            ("/api/cartoon", "order"),
            ("/api/carts/1", "order"),
            ("/api/car", "order"),
            ("/api", "order"),
        ] {
            assert_eq!(get(&p, path).await, (200, want.into()), "{prefix}: {path}");
        }
    }
}

#[tokio::test]
async fn attack_path_prefix_does_not_widen_deny_by_routing() {
    // Only `/public` is routed; any other path must answer 404 without reaching a backend.
    let (p, order, _) = waypoint(vec![rule("public", "/public", ORDER_HOST)]).await;
    assert_eq!(get(&p, "/public/index.html").await, (200, "order".into()));
    for path in [
        "/publicsecrets",
        "/public-admin/x",
        "/public_keys",
        "/publi",
    ] {
        assert_eq!(get(&p, path).await.0, 404, "{path}");
    }
    assert_eq!(order.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn virtual_service_prefix_stays_a_character_prefix() {
    let mut vs = rule("vs", "/", PAYMENT_HOST);
    vs.matches[0].uri = Some(pb::StringMatch {
        r#match: Some(Match::Prefix("/api/cart".into())),
        present: false,
    });
    let (p, _, _) = waypoint(vec![vs, rule("rest", "/", ORDER_HOST)]).await;
    assert_eq!(get(&p, "/api/cartoon").await, (200, "cart".into()));
}

/// PathPrefix judges the normalised path: dot segments and escaped letters cannot move a
/// request into or out of the prefix's segments, and an escaped slash (kept as written
/// under the default BASE normalisation, as in Envoy) is not a segment boundary.
#[tokio::test]
async fn attack_path_prefix_sees_the_normalised_path() {
    let (p, _, _) = waypoint(vec![
        rule("cart", "/api/cart", PAYMENT_HOST),
        rule("rest", "/", ORDER_HOST),
    ])
    .await;
    for (path, want) in [
        ("/api/%63art/items", "cart"),
        ("/api/x/../cart/items", "cart"),
        ("/api/cart/../cartoon", "order"),
        ("/api/cart/%2e%2e/cartoon", "order"),
        ("/api/cart/./", "cart"),
        ("/api/cart%2Fitems", "order"),
        ("/api/cart%2fitems", "order"),
        ("/api\\cart\\items", "cart"),
    ] {
        assert_eq!(get(&p, path).await, (200, want.into()), "{path}");
    }
}

//! Attack: CPU per request through a route's `rewrite.uriRegex`, compiled (with its RE2
//! substitution) for every request. It must be compiled once, when the route config
//! arrives, within the size limit of every other route regex; a bad one rejects the config
//! with the field named. (One test in this binary: it reads a process-wide counter.)

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use meshwork_model::pb::config as pb;
use meshwork_waypoint::rewrite;

fn rewrite_route(uri_regex: &str, substitution: &str) -> pb::RouteConfig {
    pb::RouteConfig {
        hostname: ORDER_HOST.into(),
        namespace: NS.into(),
        http: vec![pb::HttpRoute {
            route: vec![dest(ORDER_HOST, "", 100)],
            rewrite: Some(pb::Rewrite {
                uri_regex: uri_regex.into(),
                uri_regex_rewrite: substitution.into(),
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn attack_rewrite_uri_regex_is_compiled_once_not_per_request() {
    // The backend answers with the path it received.
    let b = backend(Arc::new(|_, parts| {
        (200, parts.uri.path().to_string(), Duration::ZERO)
    }))
    .await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload("order-0", "order-service", "v1", "order", b.addr.port())
        .route(rewrite_route(r"^/service/([^/]+)(/.*)$", r"\2/instance/\1"));
    let p = proxy(m.snapshot(), Some(ORDER_SA)).await;
    let c = client();
    let (status, body, _) = send(&c, p.addr, "GET", "order-service", "/service/a/v1", &[]).await;
    assert_eq!((status, body.as_str()), (200, "/v1/instance/a"));
    let compiled = rewrite::regex_compilations();
    assert!(compiled >= 1);
    for i in 0..50 {
        let path = format!("/service/s{i}/api/x");
        let (status, body, _) = send(&c, p.addr, "GET", "order-service", &path, &[]).await;
        // Behaviour unchanged: every request rewritten with its own groups.
        assert_eq!((status, body), (200, format!("/api/x/instance/s{i}")));
    }
    let (_, body, _) = send(&c, p.addr, "GET", "order-service", "/other", &[]).await;
    assert_eq!(body, "/other");
    assert_eq!(
        rewrite::regex_compilations(),
        compiled,
        "rewrite regexes were compiled while serving requests"
    );

    // A bad or oversized regex rejects the route config, naming the field.
    for bad in ["/service/(", "(?:a{1000}){1000}"] {
        let mut m = Mesh::default();
        m.service("order-service", "240.240.0.10")
            .route(rewrite_route(bad, "/x"));
        let e = meshwork_waypoint::config::validate(&m.snapshot()).unwrap_err();
        assert!(e.contains("http[0].rewrite.uriRegex: invalid regex"), "{e}");
    }
}

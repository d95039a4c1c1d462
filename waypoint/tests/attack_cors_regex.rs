//! Attack: CPU per request through a CORS `allowOrigins.regex` compiled for every request.
//! The regex must be compiled once, when the route config arrives, within the size limit of
//! every other route regex; a bad one rejects the config. (One test in this binary: it
//! reads a process-wide counter.)

mod common;

use common::*;
use meshwork_model::pb::config as pb;
use meshwork_waypoint::cors;
use pb::string_match::Match;

fn cors_route(origin_regex: &str) -> pb::RouteConfig {
    pb::RouteConfig {
        hostname: ORDER_HOST.into(),
        namespace: NS.into(),
        http: vec![pb::HttpRoute {
            route: vec![dest(ORDER_HOST, "", 100)],
            cors: Some(pb::CorsPolicy {
                allow_origins: vec![pb::StringMatch {
                    r#match: Some(Match::Regex(origin_regex.into())),
                    present: false,
                }],
                allow_methods: vec!["GET".into()],
                ..Default::default()
            }),
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn attack_cors_origin_regex_is_compiled_once_not_per_request() {
    let b = named("order").await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload("order-0", "order-service", "v1", "order", b.addr.port())
        .route(cors_route(r"https://[a-z]+\.shop\.example"));
    let p = proxy(m.snapshot(), Some(ORDER_SA)).await;
    let c = client();
    let origin = |o: &'static str| [("origin", o)];
    let (status, _, h) = send(
        &c,
        p.addr,
        "GET",
        "order-service",
        "/",
        &origin("https://a.shop.example"),
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["access-control-allow-origin"], "https://a.shop.example");
    let compiled = cors::regex_compilations();
    assert!(compiled >= 1);
    for i in 0..50 {
        let o = if i % 2 == 0 {
            "https://b.shop.example"
        } else {
            "https://b.shop.example.evil"
        };
        let (status, _, h) = send(&c, p.addr, "GET", "order-service", "/", &[("origin", o)]).await;
        assert_eq!(status, 200);
        // Behaviour unchanged: anchored, allowed origins decorated, others not.
        assert_eq!(
            h.get("access-control-allow-origin").is_some(),
            i % 2 == 0,
            "{o}"
        );
    }
    let (status, _, h) = send(
        &c,
        p.addr,
        "OPTIONS",
        "order-service",
        "/",
        &[
            ("origin", "https://c.shop.example"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["access-control-allow-methods"], "GET");
    assert_eq!(
        cors::regex_compilations(),
        compiled,
        "CORS regexes were compiled while serving requests"
    );

    // A bad or oversized regex rejects the route config, naming the field.
    for bad in ["https://(", "(?:a{1000}){1000}"] {
        let mut m = Mesh::default();
        m.service("order-service", "240.240.0.10")
            .route(cors_route(bad));
        let e = meshwork_waypoint::config::validate(&m.snapshot()).unwrap_err();
        assert!(
            e.contains("http[0].corsPolicy.allowOrigins[0]: invalid regex"),
            "{e}"
        );
    }
}

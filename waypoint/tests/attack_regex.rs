//! Regex bombs at request time: route matches whose patterns make backtracking engines
//! exponential, evaluated against the largest header a client may send. The waypoint's
//! engine is linear-time, so each request is routed (correctly) in bounded time.

mod common;

use std::time::{Duration, Instant};

use common::*;
use meshwork_model::pb::config as pb;

fn header_regex_route(regex: &str) -> pb::RouteConfig {
    pb::RouteConfig {
        hostname: ORDER_HOST.into(),
        namespace: NS.into(),
        http: vec![
            pb::HttpRoute {
                matches: vec![pb::RouteMatch {
                    headers: [(
                        "x-user".to_string(),
                        pb::StringMatch {
                            r#match: Some(pb::string_match::Match::Regex(regex.into())),
                            present: false,
                        },
                    )]
                    .into(),
                    ..Default::default()
                }],
                route: vec![dest(ORDER_HOST, "v2", 100)],
                ..Default::default()
            },
            pb::HttpRoute {
                route: vec![dest(ORDER_HOST, "v1", 100)],
                ..Default::default()
            },
        ],
        subsets: vec![subset("v1", "v1", None), subset("v2", "v2", None)],
        ..Default::default()
    }
}

/// For each pattern, a 50 KB header that matches and one that does not (the worst case for
/// backtracking): both routed correctly, each within a generous bound.
#[tokio::test]
async fn attack_backtracking_regexes_match_in_bounded_time() {
    let (v1, v2) = (named("v1").await, named("v2").await);
    let n = 50_000;
    let cases = [
        ("(a+)+$", "a".repeat(n), format!("{}!", "a".repeat(n))),
        (
            "(a|aa)+b",
            format!("{}b", "a".repeat(n)),
            format!("{}!", "a".repeat(n)),
        ),
        ("(.*a){20}", "a".repeat(n), "b".repeat(n)),
        ("(x+x+)+y", format!("{}y", "x".repeat(n)), "x".repeat(n)),
    ];
    for (regex, hit, miss) in cases {
        let mut m = Mesh::default();
        m.service("order-service", "240.240.0.10")
            .workload(
                "order-v1",
                "order-service",
                "v1",
                "order-service",
                v1.addr.port(),
            )
            .workload(
                "order-v2",
                "order-service",
                "v2",
                "order-service",
                v2.addr.port(),
            )
            .route(header_regex_route(regex));
        let p = proxy(m.snapshot(), Some(ORDER_SA)).await;
        let c = client();
        for (value, want) in [(&hit, "v2"), (&miss, "v1")] {
            let start = Instant::now();
            let (status, body, _) = tokio::time::timeout(
                Duration::from_secs(20),
                send(
                    &c,
                    p.addr,
                    "GET",
                    "order-service",
                    "/",
                    &[("x-user", value)],
                ),
            )
            .await
            .unwrap_or_else(|_| panic!("{regex}: no answer within 20 s"));
            let took = start.elapsed();
            assert_eq!((status, body.as_str()), (200, want), "{regex}");
            assert!(took < Duration::from_secs(10), "{regex}: took {took:?}");
        }
    }
}

/// A route whose header regex is `pattern` answers 403 directly (a deny in route form);
/// every other request goes to the service.
fn deny_route(pattern: &str) -> pb::RouteConfig {
    let mut r = header_regex_route(pattern);
    r.http[0].route.clear();
    r.http[0].direct_response = Some(pb::DirectResponse {
        status: 403,
        body: b"denied by route".to_vec(),
    });
    r.http[1].route = vec![dest(ORDER_HOST, "", 100)];
    r.subsets.clear();
    r
}

/// Attack: a pattern that closes the anchoring group. Wrapped as `^(?:a)|(b)$` it matches
/// any value starting with `a` or ending with `b`, so a route written for it would catch
/// values its author never listed. A config carrying one (from an older control plane or a
/// static file) is refused with the field named, and the route never matches anything.
#[tokio::test]
async fn attack_group_breaking_regex_is_refused_not_unanchored() {
    let b = named("order").await;
    for pattern in ["a)|(b", "admin)|(.*"] {
        let mut m = Mesh::default();
        m.service("order-service", "240.240.0.10")
            .workload("order-0", "order-service", "v1", "order", b.addr.port())
            .route(deny_route(pattern));
        let e = meshwork_waypoint::config::validate(&m.snapshot()).unwrap_err();
        assert!(
            e.contains("http[0].match[0].headers.x-user.regex: invalid regex"),
            "{pattern}: {e}"
        );
        // Served anyway (no validator in front): the broken route config is skipped, so
        // values the unanchored form would catch are not answered by that route.
        let p = proxy(m.snapshot(), Some(ORDER_SA)).await;
        let c = client();
        for value in ["a-anything", "anything-b", "admin-x", "zzz"] {
            let (status, body, _) = send(
                &c,
                p.addr,
                "GET",
                "order-service",
                "/",
                &[("x-user", value)],
            )
            .await;
            assert_eq!((status, body.as_str()), (200, "order"), "{pattern} {value}");
        }
    }
}

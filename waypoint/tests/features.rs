//! Route features end to end: faults, direct responses, redirects, rewrites, header
//! operations, mirroring, CORS, consistent hashing and gRPC over HTTP/2.

mod common;

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_model::pb::config as pb;
use tokio::net::TcpStream;

/// A backend answering "<name> <version> <path> <x-added header>".
async fn echo(name: &'static str) -> Backend {
    backend(Arc::new(move |_, parts| {
        let added = parts
            .headers
            .get("x-added")
            .and_then(|v| v.to_str().ok())
            .unwrap_or("-")
            .to_string();
        let body = format!(
            "{name} {:?} {} {added}",
            parts.version,
            parts.uri.path_and_query().map(|p| p.as_str()).unwrap_or("")
        );
        (200, body, Duration::ZERO)
    }))
    .await
}

fn prefix(p: &str) -> pb::StringMatch {
    pb::StringMatch {
        r#match: Some(pb::string_match::Match::Prefix(p.into())),
        present: false,
    }
}

fn on(p: &str, mut r: pb::HttpRoute) -> pb::HttpRoute {
    r.matches = vec![pb::RouteMatch {
        uri: Some(prefix(p)),
        ..Default::default()
    }];
    if r.route.is_empty() {
        r.route = vec![dest(ORDER_HOST, "", 100)];
    }
    r.retries = Some(pb::Retry::default());
    r
}

async fn feature_proxy() -> (Proxy, Backend, Backend) {
    let main = echo("main").await;
    let shadow = echo("shadow").await;
    let route = pb::RouteConfig {
        hostname: ORDER_HOST.into(),
        namespace: NS.into(),
        http: vec![
            on(
                "/abort",
                pb::HttpRoute {
                    fault: Some(pb::Fault {
                        delay: Some(pb::fault::Delay {
                            fixed_delay_ms: 20,
                            percentage: 100.0,
                        }),
                        abort: Some(pb::fault::Abort {
                            http_status: 418,
                            grpc_status: 0,
                            percentage: 100.0,
                        }),
                    }),
                    ..Default::default()
                },
            ),
            on(
                "/direct",
                pb::HttpRoute {
                    direct_response: Some(pb::DirectResponse {
                        status: 202,
                        body: b"accepted".to_vec(),
                    }),
                    ..Default::default()
                },
            ),
            on(
                "/moved",
                pb::HttpRoute {
                    redirect: Some(pb::Redirect {
                        uri: "/new-home".into(),
                        authority: "shop.example".into(),
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            on(
                "/old/",
                pb::HttpRoute {
                    rewrite: Some(pb::Rewrite {
                        uri: "/v2/".into(),
                        ..Default::default()
                    }),
                    headers: Some(pb::Headers {
                        request: Some(pb::HeaderOps {
                            set: [("x-added".to_string(), "yes".to_string())].into(),
                            ..Default::default()
                        }),
                        response: Some(pb::HeaderOps {
                            add: [("x-route".to_string(), "old".to_string())].into(),
                            ..Default::default()
                        }),
                    }),
                    cors: Some(pb::CorsPolicy {
                        allow_origins: vec![pb::StringMatch {
                            r#match: Some(pb::string_match::Match::Exact(
                                "https://shop.example".into(),
                            )),
                            present: false,
                        }],
                        allow_methods: vec!["GET".into()],
                        ..Default::default()
                    }),
                    ..Default::default()
                },
            ),
            on(
                "/mirror",
                pb::HttpRoute {
                    mirror: Some(pb::Destination {
                        host: "shadow-service.production.svc.cluster.local".into(),
                        subset: String::new(),
                        port: 0,
                    }),
                    mirror_percentage: 100.0,
                    ..Default::default()
                },
            ),
            on("/", pb::HttpRoute::default()),
        ],
        ..Default::default()
    };
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload(
            "order-0",
            "order-service",
            "v1",
            "order-service",
            main.addr.port(),
        )
        .service("shadow-service", "240.240.0.11")
        .workload(
            "shadow-0",
            "shadow-service",
            "v1",
            "shadow",
            shadow.addr.port(),
        )
        .route(route);
    (proxy(m.snapshot(), Some(ORDER_SA)).await, main, shadow)
}

#[tokio::test]
async fn faults_direct_and_redirect() {
    let (p, main, _) = feature_proxy().await;
    let c = client();
    let (status, _, _) = send(&c, p.addr, "GET", "order-service", "/abort", &[]).await;
    assert_eq!(status, 418);
    let (status, body, _) = send(&c, p.addr, "GET", "order-service", "/direct", &[]).await;
    assert_eq!((status, body.as_str()), (202, "accepted"));
    let (status, _, h) = send(&c, p.addr, "GET", "order-service", "/moved?x=1", &[]).await;
    assert_eq!(status, 301);
    // Envoy keeps the request's query string when the new path has none.
    assert_eq!(h["location"], "http://shop.example/new-home?x=1");
    assert_eq!(main.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let log = wait_log(&p, 3).await;
    assert_eq!(log[0]["response_flags"], "DI,FI");
}

#[tokio::test]
async fn rewrite_headers_and_cors() {
    let (p, _, _) = feature_proxy().await;
    let c = client();
    let (status, body, h) = send(
        &c,
        p.addr,
        "GET",
        "order-service",
        "/old/items?id=3",
        &[("origin", "https://shop.example")],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(body, "main HTTP/1.1 /v2/items?id=3 yes");
    assert_eq!(h["x-route"], "old");
    assert_eq!(h["access-control-allow-origin"], "https://shop.example");
    let (status, _, h) = send(
        &c,
        p.addr,
        "OPTIONS",
        "order-service",
        "/old/items",
        &[
            ("origin", "https://shop.example"),
            ("access-control-request-method", "GET"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    assert_eq!(h["access-control-allow-methods"], "GET");
}

#[tokio::test]
async fn mirror_sends_a_copy() {
    let (p, main, shadow) = feature_proxy().await;
    let (status, body, _) = send(&client(), p.addr, "GET", "order-service", "/mirror", &[]).await;
    assert_eq!(status, 200);
    assert!(body.starts_with("main "), "{body}");
    for _ in 0..200 {
        if shadow.hits.load(std::sync::atomic::Ordering::SeqCst) == 1 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    assert_eq!(shadow.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    assert_eq!(main.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn grpc_goes_upstream_over_http2() {
    let (p, _, _) = feature_proxy().await;
    let s = TcpStream::connect(p.addr).await.unwrap();
    let (mut send_req, conn) =
        hyper::client::conn::http2::handshake(TokioExecutor::new(), TokioIo::new(s))
            .await
            .unwrap();
    tokio::spawn(conn);
    let req = http::Request::builder()
        .method("POST")
        .uri("http://order-service/pkg.Orders/Get")
        .header("content-type", "application/grpc")
        .header("te", "trailers")
        .body(Full::new(Bytes::from_static(b"\x00\x00\x00\x00\x00")))
        .unwrap();
    let resp = send_req.send_request(req).await.unwrap();
    assert_eq!(resp.status(), 200);
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    let body = String::from_utf8_lossy(&body);
    assert!(body.starts_with("main HTTP/2.0 /pkg.Orders/Get"), "{body}");
}

#[tokio::test]
async fn consistent_hash_is_sticky() {
    let backends = [named("a").await, named("b").await, named("c").await];
    let policy = pb::TrafficPolicy {
        load_balancer: Some(pb::LoadBalancer {
            simple: 0,
            consistent_hash: Some(pb::ConsistentHash {
                key: Some(pb::consistent_hash::Key::HttpHeaderName("x-user".into())),
                cookie_ttl_ms: 0,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10");
    for (i, b) in backends.iter().enumerate() {
        m.workload(
            &format!("order-{i}"),
            "order-service",
            "v1",
            "order-service",
            b.addr.port(),
        );
    }
    m.route(pb::RouteConfig {
        hostname: ORDER_HOST.into(),
        namespace: NS.into(),
        http: vec![pb::HttpRoute {
            route: vec![dest(ORDER_HOST, "", 100)],
            ..Default::default()
        }],
        traffic_policy: Some(policy),
        ..Default::default()
    });
    let p = proxy(m.snapshot(), Some(ORDER_SA)).await;
    let c = client();
    let mut seen = std::collections::HashSet::new();
    for u in 0..12 {
        let user = format!("user-{u}");
        let (_, first, _) = send(
            &c,
            p.addr,
            "GET",
            "order-service",
            "/",
            &[("x-user", &user)],
        )
        .await;
        for _ in 0..4 {
            let (_, again, _) = send(
                &c,
                p.addr,
                "GET",
                "order-service",
                "/",
                &[("x-user", &user)],
            )
            .await;
            assert_eq!(again, first, "{user}");
        }
        seen.insert(first);
    }
    assert!(seen.len() >= 2, "keys spread over hosts: {seen:?}");
}

#[tokio::test]
async fn cookie_affinity_generates_the_cookie() {
    let backends = [named("a").await, named("b").await, named("c").await];
    let policy = pb::TrafficPolicy {
        load_balancer: Some(pb::LoadBalancer {
            simple: 0,
            consistent_hash: Some(pb::ConsistentHash {
                key: Some(pb::consistent_hash::Key::HttpCookie("affinity".into())),
                cookie_ttl_ms: 60_000,
                ..Default::default()
            }),
            ..Default::default()
        }),
        ..Default::default()
    };
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10");
    for (i, b) in backends.iter().enumerate() {
        m.workload(
            &format!("order-{i}"),
            "order-service",
            "v1",
            "order-service",
            b.addr.port(),
        );
    }
    m.route(pb::RouteConfig {
        hostname: ORDER_HOST.into(),
        namespace: NS.into(),
        http: vec![pb::HttpRoute {
            route: vec![dest(ORDER_HOST, "", 100)],
            ..Default::default()
        }],
        traffic_policy: Some(policy),
        ..Default::default()
    });
    let p = proxy(m.snapshot(), Some(ORDER_SA)).await;
    let c = client();
    for _ in 0..5 {
        let (_, first, h) = send(&c, p.addr, "GET", "order-service", "/", &[]).await;
        let set = h["set-cookie"].to_str().unwrap().to_string();
        assert!(
            set.starts_with("affinity=") && set.contains("Max-Age=60"),
            "{set}"
        );
        let cookie = set.split(';').next().unwrap().to_string();
        for _ in 0..4 {
            let (_, again, h) = send(
                &c,
                p.addr,
                "GET",
                "order-service",
                "/",
                &[("cookie", &cookie)],
            )
            .await;
            assert_eq!(again, first);
            assert!(h.get("set-cookie").is_none());
        }
    }
}

//! Arbitrary input against route matching and header handling: random route configs (every
//! match kind, regexes that may not compile, rewrites, redirects, direct responses, header
//! operations with invalid names and values, faults, CORS) and random requests (methods,
//! paths, query strings, hosts, header names and non-UTF-8 values), both through
//! [`L7Service::handle`] and as raw bytes through the HTTP/1.1 server. Nothing may panic and
//! every request gets an answer. Seeded, so a failure reproduces; bounded iterations; the
//! upstream connector refuses every connection, so no traffic leaves the process.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use futures::future::BoxFuture;
use http_body_util::{BodyExt, Full};
use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config as pb;
use meshwork_waypoint::connector::{BoxedIo, Connector, Target};
use meshwork_waypoint::routing::{CompiledRouteConfig, MatchInput};
use meshwork_waypoint::server::{serve_connection, ServerLimits};
use meshwork_waypoint::{headers, rewrite, ConnContext, L7Service, Options, WaypointId};
use pb::string_match::Match;
use prometheus_client::registry::Registry;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Refuses every connection: requests that get past routing fail as connect failures.
struct Refuse;

impl Connector for Refuse {
    fn connect(&self, _: &Target) -> BoxFuture<'static, std::io::Result<BoxedIo>> {
        Box::pin(async { Err(std::io::Error::from(std::io::ErrorKind::ConnectionRefused)) })
    }
}

const PATH_CHARS: &[char] = &[
    '/', '/', '/', 'a', 'b', 'Z', '0', '9', '-', '.', '_', '~', '%', '?', '&', '=', ';', ':', '@',
    '!', '$', '\'', '(', ')', '*', '+', ',', '[', ']', '{', '}', '|', '\\', '^', '`', '"', '<',
    '>', ' ', '\t', '\n', 'é', '😀', '\u{0}',
];
const REGEX_CHARS: &[char] = &[
    '(', ')', '[', ']', '*', '+', '?', '.', '|', '^', '$', '\\', '{', '}', 'a', '/', '0', '1', '-',
    ',', 'd', 'w', 's', ':', '<', '>', 'P', '!', '=',
];
const NAME_CHARS: &[char] = &[
    'a', 'x', '-', '_', 'A', 'Z', '0', ':', ' ', '\n', '(', '@', 'é', '.', '~',
];

fn text(rng: &mut StdRng, alphabet: &[char], max: usize) -> String {
    let n = rng.random_range(0..=max);
    (0..n)
        .map(|_| alphabet[rng.random_range(0..alphabet.len())])
        .collect()
}

fn pick<'a>(rng: &mut StdRng, from: &[&'a str]) -> &'a str {
    from[rng.random_range(0..from.len())]
}

fn string_match(rng: &mut StdRng) -> pb::StringMatch {
    let m = match rng.random_range(0..4) {
        0 => Some(Match::Exact(text(rng, PATH_CHARS, 8))),
        1 => Some(Match::Prefix(text(rng, PATH_CHARS, 6))),
        2 => Some(Match::Regex(text(rng, REGEX_CHARS, 10))),
        _ => None,
    };
    pb::StringMatch {
        r#match: m,
        present: rng.random_bool(0.2),
    }
}

fn string_matches(rng: &mut StdRng) -> BTreeMap<String, pb::StringMatch> {
    (0..rng.random_range(0..3))
        .map(|_| (text(rng, NAME_CHARS, 6), string_match(rng)))
        .collect()
}

fn header_ops(rng: &mut StdRng) -> pb::HeaderOps {
    let kv = |rng: &mut StdRng| {
        (0..rng.random_range(0..3))
            .map(|_| (text(rng, NAME_CHARS, 6), text(rng, PATH_CHARS, 8)))
            .collect()
    };
    pb::HeaderOps {
        set: kv(rng),
        add: kv(rng),
        remove: (0..rng.random_range(0..3))
            .map(|_| text(rng, NAME_CHARS, 6))
            .collect(),
    }
}

fn route(rng: &mut StdRng) -> pb::HttpRoute {
    let maybe = |rng: &mut StdRng, p: f64| rng.random_bool(p);
    let matches = (0..rng.random_range(0..3))
        .map(|_| pb::RouteMatch {
            uri: maybe(rng, 0.7).then(|| string_match(rng)),
            scheme: maybe(rng, 0.1).then(|| string_match(rng)),
            method: maybe(rng, 0.3).then(|| string_match(rng)),
            authority: maybe(rng, 0.3).then(|| string_match(rng)),
            headers: string_matches(rng),
            without_headers: string_matches(rng),
            query_params: string_matches(rng),
            port: if maybe(rng, 0.2) {
                rng.random_range(0..100)
            } else {
                0
            },
            ignore_uri_case: maybe(rng, 0.3),
            source_namespace: if maybe(rng, 0.1) {
                text(rng, NAME_CHARS, 4)
            } else {
                String::new()
            },
            ..Default::default()
        })
        .collect();
    let host = pick(rng, &[ORDER_HOST, PAYMENT_HOST, "nowhere.example", ""]).to_string();
    pb::HttpRoute {
        name: text(rng, NAME_CHARS, 5),
        matches,
        route: (0..rng.random_range(0..3))
            .map(|_| {
                dest(
                    &host,
                    pick(rng, &["", "v1", "missing"]),
                    rng.random_range(0..3),
                )
            })
            .collect(),
        timeout_ms: rng.random_range(0..2) * 1000,
        has_timeout: maybe(rng, 0.3),
        retries: maybe(rng, 0.3).then(|| pb::Retry {
            attempts: rng.random_range(0..3),
            retry_on: vec![pick(rng, &["5xx", "connect-failure", "reset", "bogus", ""]).into()],
            ..Default::default()
        }),
        fault: maybe(rng, 0.2).then(|| pb::Fault {
            abort: Some(pb::fault::Abort {
                http_status: rng.random_range(0..1000),
                grpc_status: rng.random_range(0..20),
                percentage: rng.random_range(0.0..=100.0),
            }),
            ..Default::default()
        }),
        redirect: maybe(rng, 0.15).then(|| pb::Redirect {
            uri: text(rng, PATH_CHARS, 8),
            authority: text(rng, PATH_CHARS, 6),
            port: rng.random_range(0..70_000),
            scheme: pick(rng, &["", "http", "https", "ftp", "bad scheme"]).into(),
            redirect_code: rng.random_range(0..1000),
            prefix_rewrite: if maybe(rng, 0.5) {
                text(rng, PATH_CHARS, 8)
            } else {
                String::new()
            },
        }),
        rewrite: maybe(rng, 0.4).then(|| pb::Rewrite {
            uri: text(rng, PATH_CHARS, 8),
            authority: text(rng, PATH_CHARS, 6),
            uri_regex: if maybe(rng, 0.5) {
                text(rng, REGEX_CHARS, 8)
            } else {
                String::new()
            },
            uri_regex_rewrite: text(rng, &['\\', '1', '2', '$', '{', '}', '/', 'a'], 6),
        }),
        direct_response: maybe(rng, 0.15).then(|| pb::DirectResponse {
            status: rng.random_range(0..1000),
            body: text(rng, PATH_CHARS, 8).into_bytes(),
        }),
        headers: maybe(rng, 0.5).then(|| pb::Headers {
            request: Some(header_ops(rng)),
            response: Some(header_ops(rng)),
        }),
        cors: maybe(rng, 0.2).then(|| pb::CorsPolicy {
            allow_origins: vec![string_match(rng)],
            allow_methods: vec![text(rng, NAME_CHARS, 5)],
            allow_headers: vec![text(rng, NAME_CHARS, 5)],
            expose_headers: vec![text(rng, NAME_CHARS, 5)],
            max_age_s: rng.random_range(0..100),
            ..Default::default()
        }),
        ..Default::default()
    }
}

fn route_config(rng: &mut StdRng, host: &str) -> pb::RouteConfig {
    pb::RouteConfig {
        hostname: host.into(),
        namespace: NS.into(),
        http: (0..rng.random_range(0..4)).map(|_| route(rng)).collect(),
        ..Default::default()
    }
}

fn service(rng: &mut StdRng) -> L7Service {
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload("order-0", "order-service", "v1", "order", 9)
        .service("payment-service", "240.240.0.20")
        .route(route_config(rng, ORDER_HOST))
        .route(route_config(rng, PAYMENT_HOST))
        .route(route_config(rng, "gateway~waypoint"));
    L7Service::new(
        ConfigHandle::fixed(m.snapshot()),
        Arc::new(Refuse),
        Options {
            waypoint: WaypointId {
                namespace: NS.into(),
                name: "waypoint".into(),
            },
            ..Default::default()
        },
        &mut Registry::default(),
    )
}

/// A random request; `None` when the random parts do not form a valid `http::Request`
/// (the HTTP parser would have refused it before the proxy saw it).
fn request(rng: &mut StdRng) -> Option<http::Request<Full<Bytes>>> {
    let method = match rng.random_range(0..3) {
        0 => pick(
            rng,
            &["GET", "POST", "PUT", "DELETE", "PATCH", "HEAD", "OPTIONS"],
        )
        .to_string(),
        1 => text(rng, NAME_CHARS, 6),
        _ => "GET".to_string(),
    };
    let path = format!("/{}", text(rng, PATH_CHARS, 24));
    // Characters a request line cannot carry arrive percent-encoded.
    let uri = path.parse::<http::Uri>().ok().or_else(|| {
        let safe = |b: u8| b.is_ascii_alphanumeric() || b"-._~/?&=;:@!$'()*+,%".contains(&b);
        let encoded: String = path
            .bytes()
            .map(|b| {
                if safe(b) {
                    (b as char).to_string()
                } else {
                    format!("%{b:02X}")
                }
            })
            .collect();
        encoded.parse().ok()
    })?;
    let mut b = http::Request::builder()
        .method(http::Method::from_bytes(method.as_bytes()).ok()?)
        .uri(uri);
    let host = match rng.random_range(0..4) {
        0 => "order-service".to_string(),
        1 => "ORDER-SERVICE:80".to_string(),
        2 => "payment-service.production.svc.cluster.local:8080".to_string(),
        _ => text(rng, PATH_CHARS, 10),
    };
    if let Ok(v) = http::HeaderValue::from_str(&host) {
        b = b.header(http::header::HOST, v);
    }
    for _ in 0..rng.random_range(0..6) {
        let name = http::HeaderName::from_bytes(text(rng, NAME_CHARS, 6).as_bytes());
        let raw: Vec<u8> = (0..rng.random_range(0..12)).map(|_| rng.random()).collect();
        if let (Ok(n), Ok(v)) = (name, http::HeaderValue::from_bytes(&raw)) {
            b = b.header(n, v);
        }
    }
    if rng.random_bool(0.3) {
        b = b.header("origin", text(rng, PATH_CHARS, 8));
        b = b.header("access-control-request-method", "POST");
    }
    b.body(Full::new(Bytes::from(text(rng, PATH_CHARS, 16))))
        .ok()
}

#[tokio::test(start_paused = true)]
async fn random_routes_and_requests_never_panic() {
    let mut rng = StdRng::seed_from_u64(0x5eed_f00d);
    let mut answered = 0;
    for _ in 0..300 {
        let svc = service(&mut rng);
        for _ in 0..12 {
            let Some(req) = request(&mut rng) else {
                continue;
            };
            let ctx = ConnContext {
                source_identity: Some(ORDER_SA.into()),
                ..Default::default()
            };
            let resp = svc.handle(req, &ctx).await;
            assert!((100..1000).contains(&resp.status().as_u16()));
            let _ = resp.into_body().collect().await;
            answered += 1;
        }
    }
    assert!(answered > 2000, "only {answered} valid random requests");
}

#[test]
fn route_matching_rewrites_and_header_ops_never_panic() {
    let mut rng = StdRng::seed_from_u64(7);
    let mut compiled = 0;
    for _ in 0..400 {
        let rc = route_config(&mut rng, ORDER_HOST);
        let Ok(c) = CompiledRouteConfig::compile(&rc) else {
            continue; // an invalid regex is an error, not a panic
        };
        compiled += 1;
        for _ in 0..10 {
            let Some(mut req) = request(&mut rng) else {
                continue;
            };
            let authority = text(&mut rng, PATH_CHARS, 10);
            let labels: BTreeMap<String, String> = [("app".into(), "x".into())].into();
            let input = MatchInput {
                method: req.method(),
                uri: req.uri(),
                headers: req.headers(),
                authority: &authority,
                scheme: "http",
                port: rng.random_range(0..100),
                source_labels: Some(&labels),
                source_namespace: Some(NS),
            };
            let Some(r) = c.find(&input) else {
                continue;
            };
            let prefix = r.matched_prefix(&input);
            let route = r.route.clone();
            if let Some(rw) = &r.rewrite {
                let _ = rewrite::apply(rw, &mut req, prefix.as_ref());
            }
            if let Some(h) = &route.headers {
                headers::apply(h.request.as_ref(), req.headers_mut());
                headers::apply(h.response.as_ref(), req.headers_mut());
            }
            if let Some(rd) = &route.redirect {
                let resp = rewrite::redirect(rd, req.uri(), &authority, "http", prefix.as_ref());
                assert!((100..1000).contains(&resp.status().as_u16()));
            }
            if let Some(d) = &route.direct_response {
                let _ = rewrite::direct(d);
            }
        }
    }
    assert!(compiled > 50, "only {compiled} route configs compiled");
}

#[tokio::test(start_paused = true)]
async fn random_bytes_on_the_wire_get_an_answer_or_a_close() {
    let mut rng = StdRng::seed_from_u64(11);
    let svc = service(&mut rng);
    let limits = Arc::new(ServerLimits::default());
    for i in 0..200 {
        let (mut client, server) = tokio::io::duplex(64 * 1024);
        let (svc, limits) = (svc.clone(), limits.clone());
        let task = tokio::spawn(async move {
            serve_connection(server, svc, ConnContext::default(), &limits).await;
        });
        let mut bytes: Vec<u8> = if i % 2 == 0 {
            format!(
                "{} /{} HTTP/1.1\r\nhost: {}\r\n{}: {}\r\n\r\n",
                pick(&mut rng, &["GET", "POST", "G(T", ""]),
                text(&mut rng, PATH_CHARS, 20),
                text(&mut rng, PATH_CHARS, 8),
                text(&mut rng, NAME_CHARS, 5),
                text(&mut rng, PATH_CHARS, 8),
            )
            .into_bytes()
        } else {
            (0..rng.random_range(0..200))
                .map(|_| rng.random())
                .collect()
        };
        bytes.extend_from_slice(b"\r\n\r\n");
        let _ = client.write_all(&bytes).await;
        let _ = client.shutdown().await;
        let mut out = Vec::new();
        let read = tokio::time::timeout(Duration::from_secs(120), client.read_to_end(&mut out));
        assert!(
            read.await.is_ok(),
            "connection {i} neither answered nor closed"
        );
        drop(client);
        task.await.expect("the connection task does not panic");
    }
}

//! Attack: bypassing L7 policy with paths that mean the same to the backend but not to a
//! naive matcher (dot segments, escaped unreserved characters, backslashes, and per mesh
//! option merged or escaped slashes). Every vector goes through a real waypoint on loopback
//! to a real backend that echoes the path it received.
//!
//! The table is built from RFC 3986 §5.2.4/§5.4 (dot-segment removal) and from the kinds of
//! case Envoy's path-normalisation tests cover (`%2E` forms, `..\`, parents above the root,
//! reserved escapes kept, `%00` rejected, the query left alone).

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use meshwork_model::pb::config as pb;

/// DENY `/api/payments/refund` and `/api/payments/admin/*` on payment-service.
fn deny_refund_and_admin() -> pb::Authorization {
    pb::Authorization {
        name: "deny-refund".into(),
        namespace: NS.into(),
        scope: pb::PolicyScope::WorkloadSelector as i32,
        action: pb::Action::Deny as i32,
        selector: [("app".to_string(), "payment-service".to_string())].into(),
        has_l7: true,
        rules: vec![pb::Rule {
            to: vec![pb::Operation {
                paths: s(&["/api/payments/refund", "/api/payments/admin/*"]),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// ALLOW everything except `/admin/*` on payment-service.
fn allow_all_but_admin() -> pb::Authorization {
    pb::Authorization {
        name: "not-admin".into(),
        namespace: NS.into(),
        scope: pb::PolicyScope::WorkloadSelector as i32,
        action: pb::Action::Allow as i32,
        selector: [("app".to_string(), "payment-service".to_string())].into(),
        has_l7: true,
        rules: vec![pb::Rule {
            to: vec![pb::Operation {
                not_paths: s(&["/admin/*"]),
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// A backend answering 200 with the path and query it received.
async fn echo() -> Backend {
    backend(Arc::new(|_, p: &http::request::Parts| {
        let pq = p.uri.path_and_query().map(|x| x.as_str()).unwrap_or("");
        (200, pq.to_string(), Duration::ZERO)
    }))
    .await
}

/// payment-service behind a waypoint with `policy` and the mesh's path normalisation.
async fn waypoint(policy: pb::Authorization, mode: pb::PathNormalization) -> (Proxy, Backend) {
    let b = echo().await;
    let mut m = Mesh::default();
    m.service("payment-service", "240.240.0.20")
        .workload(
            "payment-0",
            "payment-service",
            "v1",
            "payment-service",
            b.addr.port(),
        )
        .authz(policy)
        .path_normalization(mode);
    let snap = payment_service_selects_its_pods(m.snapshot());
    (proxy(snap, Some(ORDER_SA)).await, b)
}

async fn get(p: &Proxy, path: &str) -> (u16, String) {
    let (status, body, _) = send(&client(), p.addr, "GET", "payment-service", path, &[]).await;
    (status, body)
}

/// Each spelling of a denied path, under the default (BASE) normalisation.
const BYPASS_VECTORS: &[&str] = &[
    "/api/payments/refund",
    // RFC 3986 §5.2.4: "." and ".." segments.
    "/api/payments/./refund",
    "/api/payments/x/../refund",
    "/api/x/../payments/refund",
    "/api/payments/x/y/../../refund",
    "/./api/payments/refund",
    "/../api/payments/refund",
    "/../../../api/payments/refund",
    "/api/payments/admin/x/..",
    // Percent-encoded dots make dot segments too.
    "/x/%2e%2e/api/payments/refund",
    "/x/%2E%2E/api/payments/refund",
    "/x/.%2e/api/payments/refund",
    "/x/%2e./api/payments/refund",
    "/api/payments/%2e/refund",
    // Percent-encoded unreserved characters.
    "/api/payments/%72efund",
    "/api/payments/%72%65%66%75%6e%64",
    "/api/payments/%72%65%66%75%6E%64",
    "/api/%70ayments/refund",
    "/%61pi/payments/refund",
    "/api/payments/%61dmin/x",
    "/api/payments/%41dmin/../admin/x",
    "/api/payments/admin/../admin/users",
    "/api/payments/admin/%2e/x",
    // Backslash as a separator (Envoy's extra normalisation).
    "/api/payments\\refund",
    "/api\\payments\\admin\\x",
    "/api/payments/x/..\\refund",
    // The query never hides the path (and is not normalised).
    "/api/payments/./refund?next=/../ok",
];

#[tokio::test]
async fn attack_dot_segments_and_escapes_do_not_bypass_deny() {
    let (p, b) = waypoint(deny_refund_and_admin(), pb::PathNormalization::Base).await;
    let mut bypassed = Vec::new();
    for v in BYPASS_VECTORS {
        let (status, body) = get(&p, v).await;
        if status != 403 {
            bypassed.push(format!("{v} -> {status} {body:?}"));
        }
    }
    assert!(bypassed.is_empty(), "bypassed the DENY: {bypassed:#?}");
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

#[tokio::test]
async fn attack_backend_sees_the_normalised_path() {
    let (p, _b) = waypoint(deny_refund_and_admin(), pb::PathNormalization::Base).await;
    for (sent, seen) in [
        ("/api/payments/./list", "/api/payments/list"),
        ("/api/payments/x/../history", "/api/payments/history"),
        ("/api/%70ayments/%6Cist", "/api/payments/list"),
        ("/api/payments\\list", "/api/payments/list"),
        ("/../api/payments/list", "/api/payments/list"),
        ("/api/payments/list/.", "/api/payments/list/"),
        // Reserved escapes, invalid escapes and double escapes are kept as written.
        ("/api/payments/a%2Fb%3F", "/api/payments/a%2Fb%3F"),
        ("/api/payments/%zz%4", "/api/payments/%zz%4"),
        ("/api/payments/%252e%252e/x", "/api/payments/%252e%252e/x"),
        // The query is forwarded untouched.
        (
            "/api/payments/./list?a=/../b&c=%2e%2e",
            "/api/payments/list?a=/../b&c=%2e%2e",
        ),
    ] {
        assert_eq!(get(&p, sent).await, (200, seen.to_string()), "{sent}");
    }
}

/// The access log shows the path that was authorized (a denied `/api/payments/refund`,
/// whatever its spelling), so a log search for the denied path finds every attempt; the
/// spelling received is beside it as `original_path` when it differs.
#[tokio::test]
async fn attack_access_log_records_the_normalised_path() {
    let (p, _b) = waypoint(deny_refund_and_admin(), pb::PathNormalization::Base).await;
    let cases = [
        ("/api/payments/./refund", 403, "/api/payments/refund"),
        ("/api/%70ayments/%72efund", 403, "/api/payments/refund"),
        (
            "/x/../api/payments/list?a=/../b",
            200,
            "/api/payments/list?a=/../b",
        ),
        ("/api/payments/list", 200, "/api/payments/list"),
    ];
    for (sent, status, _) in cases {
        assert_eq!(get(&p, sent).await.0, status, "{sent}");
    }
    let log = wait_log(&p, cases.len()).await;
    assert_eq!(log.len(), cases.len());
    for ((sent, status, logged), e) in cases.iter().zip(&log) {
        assert_eq!(e["response_code"], *status, "{sent}");
        assert_eq!(e["path"], *logged, "{sent}: {e}");
        if sent == logged {
            assert!(e.get("original_path").is_none(), "{sent}: {e}");
        } else {
            assert_eq!(e["original_path"], *sent, "{sent}: {e}");
        }
    }
}

#[tokio::test]
async fn attack_encoded_nul_is_rejected() {
    let (p, b) = waypoint(deny_refund_and_admin(), pb::PathNormalization::Base).await;
    for v in ["/api/payments/%00/../refund", "/api/payments/.%00./refund"] {
        let (status, _) = get(&p, v).await;
        assert_eq!(status, 400, "{v}");
    }
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let log = wait_log(&p, 2).await;
    assert_eq!(log[0]["response_code_details"], "path_normalization_failed");
}

#[tokio::test]
async fn attack_dot_segments_do_not_escape_not_paths() {
    let (p, _b) = waypoint(allow_all_but_admin(), pb::PathNormalization::Base).await;
    assert_eq!(get(&p, "/items/x").await, (200, "/items/x".to_string()));
    for v in [
        "/admin/users",
        "/items/../admin/users",
        "/items/%2e%2e/admin/users",
        "/%61dmin/users",
        "/items\\..\\admin\\users",
    ] {
        assert_eq!(get(&p, v).await.0, 403, "{v}");
    }
}

#[tokio::test]
async fn attack_merged_slashes_per_mode() {
    let vector = "//api//payments///refund";
    // BASE keeps empty segments, as Istio's default does: not the denied path.
    let (base, _) = waypoint(deny_refund_and_admin(), pb::PathNormalization::Base).await;
    assert_eq!(get(&base, vector).await, (200, vector.to_string()));
    for mode in [
        pb::PathNormalization::MergeSlashes,
        pb::PathNormalization::DecodeAndMergeSlashes,
    ] {
        let (p, b) = waypoint(deny_refund_and_admin(), mode).await;
        for v in [vector, "/api/payments//admin/x", "/api//payments/./refund"] {
            assert_eq!(get(&p, v).await.0, 403, "{v} {mode:?}");
        }
        assert_eq!(
            get(&p, "//api//payments//list").await,
            (200, "/api/payments/list".to_string()),
            "{mode:?}"
        );
        assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    }
}

#[tokio::test]
async fn attack_escaped_slashes_per_mode() {
    let vectors = [
        "/api%2Fpayments%2Frefund",
        "/api%2fpayments%2frefund",
        "/api/payments%5Crefund",
        "/api/payments%5cadmin%5Cx",
        "/api/x%2F..%2Fpayments/refund",
    ];
    // BASE and MERGE_SLASHES keep escaped slashes unchanged (Envoy KEEP_UNCHANGED): the
    // backend gets them as sent and must not decode them into a separator.
    for mode in [
        pb::PathNormalization::Base,
        pb::PathNormalization::MergeSlashes,
    ] {
        let (p, _) = waypoint(deny_refund_and_admin(), mode).await;
        assert_eq!(
            get(&p, vectors[0]).await,
            (200, vectors[0].to_string()),
            "{mode:?}"
        );
    }
    let (p, b) = waypoint(
        deny_refund_and_admin(),
        pb::PathNormalization::DecodeAndMergeSlashes,
    )
    .await;
    for v in vectors {
        assert_eq!(get(&p, v).await.0, 403, "{v}");
    }
    assert_eq!(
        get(&p, "/api%2Fpayments%5C%5Clist").await,
        (200, "/api/payments/list".to_string())
    );
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn path_normalization_none_forwards_paths_as_received() {
    // NONE is Istio's documented opt-out: the raw path is matched and forwarded.
    let (p, _) = waypoint(deny_refund_and_admin(), pb::PathNormalization::None).await;
    assert_eq!(get(&p, "/api/payments/refund").await.0, 403);
    assert_eq!(
        get(&p, "/api/payments/./refund").await,
        (200, "/api/payments/./refund".to_string())
    );
}

#[tokio::test]
async fn attack_dot_segments_do_not_dodge_routes() {
    // Routing sees the normalised path: `/api/v1/../v2/items` takes the v2 route.
    let v1 = named("v1").await;
    let v2 = echo().await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload("order-1", "order-service", "v1", "order", v1.addr.port())
        .workload("order-2", "order-service", "v2", "order", v2.addr.port())
        .route(pb::RouteConfig {
            hostname: ORDER_HOST.into(),
            namespace: NS.into(),
            http: vec![
                pb::HttpRoute {
                    matches: vec![pb::RouteMatch {
                        uri: Some(pb::StringMatch {
                            r#match: Some(pb::string_match::Match::Prefix("/api/v2/".into())),
                            present: false,
                        }),
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
        });
    let p = proxy(m.snapshot(), Some(ORDER_SA)).await;
    let (status, body, _) = send(
        &client(),
        p.addr,
        "GET",
        "order-service",
        "/api/v1/../v2/items",
        &[],
    )
    .await;
    assert_eq!((status, body.as_str()), (200, "/api/v2/items"));
}

/// One decoding pass can assemble a new escape from a stray `%` and decoded hex digits:
/// `%2%65` becomes `%2e`, `%%37%32` becomes `%72`, `%2%46` becomes `%2F`. Authorized and
/// forwarded as such, the backend's own single decode (nginx, most frameworks) then sees a
/// `..` segment, a plain letter, or a slash the waypoint never judged. The waypoint must not
/// forward a path whose normal form is not normal.
#[tokio::test]
async fn attack_escapes_assembled_by_decoding_do_not_bypass_deny() {
    let vectors = [
        // `..` after the backend decodes once: /api/payments/x/../refund.
        "/api/payments/x/%2%65%2%65/refund",
        "/api/payments/x/%%32%65%%32%65/refund",
        "/api/payments/x/%2%45%2%45/admin/x",
        // A letter after the backend decodes once: /api/payments/refund.
        "/api/payments/%%37%32efund",
        "/api/payments/%%36%31dmin/x",
    ];
    let (p, b) = waypoint(deny_refund_and_admin(), pb::PathNormalization::Base).await;
    let mut bypassed = Vec::new();
    for v in vectors {
        let (status, body) = get(&p, v).await;
        if status != 400 {
            bypassed.push(format!("{v} -> {status} {body:?}"));
        }
    }
    assert!(bypassed.is_empty(), "not refused: {bypassed:#?}");
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let log = wait_log(&p, vectors.len()).await;
    assert!(
        log.iter()
            .all(|l| l["response_code_details"] == "path_normalization_failed"),
        "{log:?}"
    );

    // DECODE_AND_MERGE_SLASHES promises the backend no escaped slash: `%2%46` must not
    // turn into one after the slashes were decoded.
    let (p, b) = waypoint(
        deny_refund_and_admin(),
        pb::PathNormalization::DecodeAndMergeSlashes,
    )
    .await;
    for v in [
        "/api%2%46payments%2%46refund",
        "/api/payments%2%66admin%2%66x",
        "/api/payments%%35%63refund",
    ] {
        let (status, body) = get(&p, v).await;
        assert_eq!(status, 400, "{v} -> {body:?}");
    }
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // A stray `%` that assembles nothing is still forwarded as written.
    assert_eq!(
        get(&p, "/api/payments/%zz/%4").await,
        (200, "/api/payments/%zz/%4".to_string())
    );
}

/// HTTP/2 (h2c prior knowledge): `:path` is normalised exactly as the HTTP/1.1 target is.
#[tokio::test]
async fn attack_h2_path_dot_segments_and_escapes_do_not_bypass_deny() {
    let (p, b) = waypoint(deny_refund_and_admin(), pb::PathNormalization::Base).await;
    let tcp = tokio::net::TcpStream::connect(p.addr).await.unwrap();
    let (client, conn) = h2::client::handshake(tcp).await.unwrap();
    tokio::spawn(conn);
    let mut bypassed = Vec::new();
    for v in BYPASS_VECTORS
        .iter()
        .copied()
        .chain(["/api/payments/x/%2%65%2%65/refund"])
    {
        let mut c = client.clone().ready().await.unwrap();
        let req = http::Request::builder()
            .method("GET")
            .uri(format!("http://payment-service{v}"))
            .body(())
            .unwrap();
        let (resp, _) = c.send_request(req, true).unwrap();
        let resp = tokio::time::timeout(Duration::from_secs(10), resp)
            .await
            .expect("response within 10 s")
            .unwrap();
        if !matches!(resp.status().as_u16(), 400 | 403) {
            bypassed.push(format!("{v} -> {}", resp.status()));
        }
    }
    assert!(
        bypassed.is_empty(),
        "bypassed the DENY over h2: {bypassed:#?}"
    );
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
}

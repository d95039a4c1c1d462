//! WasmPlugins run by a real waypoint: the example plugins of `examples/wasm-plugins`
//! (built for wasm32-wasip1 by cargo), loaded from `file://` urls, in front of real
//! backends on 127.0.0.1.

mod common;

use std::collections::BTreeMap;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config as pb;
use meshwork_model::snapshot::Snapshot;
use meshwork_waypoint::admin::{Admin, Scope};
use tokio::net::TcpListener;

const CHECK_HOST: &str = "check.production.svc.cluster.local";

/// A backend answering 200 with what it received: `<path>` then `name: value` lines for
/// the `x-*` headers but the waypoint's `x-request-id`, sorted; `/slow*` paths answer after 600 ms.
async fn echo() -> Backend {
    backend(Arc::new(|_, parts| {
        let mut lines: BTreeMap<String, String> = BTreeMap::new();
        for (k, v) in &parts.headers {
            if k.as_str().starts_with("x-") && k != "x-request-id" {
                lines.insert(k.to_string(), v.to_str().unwrap_or("?").to_string());
            }
        }
        let mut out = format!("{}\n", parts.uri.path());
        for (k, v) in lines {
            out.push_str(&format!("{k}: {v}\n"));
        }
        let delay = if parts.uri.path().starts_with("/slow") {
            Duration::from_millis(600)
        } else {
            Duration::ZERO
        };
        (200, out, delay)
    }))
    .await
}

fn url(plugin: &str) -> String {
    format!(
        "file://{}",
        meshwork_wasm::examples::plugin(plugin).display()
    )
}

fn gateway_ref() -> pb::TargetRef {
    pb::TargetRef {
        group: "gateway.networking.k8s.io".into(),
        kind: "Gateway".into(),
        name: "waypoint".into(),
        namespace: NS.into(),
    }
}

fn plugin(name: &str, module: &str, config: serde_json::Value) -> pb::WasmPlugin {
    pb::WasmPlugin {
        name: name.into(),
        namespace: NS.into(),
        scope: pb::PolicyScope::TargetRef as i32,
        target_refs: vec![gateway_ref()],
        url: url(module),
        plugin_config_json: if config.is_null() {
            String::new()
        } else {
            config.to_string()
        },
        ..Default::default()
    }
}

fn auth_header() -> pb::WasmPlugin {
    plugin(
        "auth",
        "auth_header",
        serde_json::json!({"header": "x-api-key", "values": ["secret"]}),
    )
}

/// order-service (one pod on `b`) and check (one pod on `check`, when given), with `plugins`
/// and `policies`.
fn mesh(
    b: &Backend,
    check: Option<&Backend>,
    plugins: Vec<pb::WasmPlugin>,
    policies: Vec<pb::Authorization>,
) -> Snapshot {
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10").workload(
        "order-0",
        "order-service",
        "v1",
        "order-service",
        b.addr.port(),
    );
    if let Some(c) = check {
        m.service("check", "240.240.0.11").workload(
            "check-0",
            "check",
            "v1",
            "check",
            c.addr.port(),
        );
    }
    for p in plugins {
        m.wasm_plugin(p);
    }
    for a in policies {
        m.authz(a);
    }
    m.snapshot()
}

async fn get(p: &Proxy, path: &str, headers: &[(&str, &str)]) -> (u16, String, http::HeaderMap) {
    send(&client(), p.addr, "GET", "order-service", path, headers).await
}

#[tokio::test]
async fn auth_header_denies_without_the_header_and_counts_on_metrics() {
    let b = echo().await;
    let p = proxy(mesh(&b, None, vec![auth_header()], vec![]), None).await;
    let (status, body, h) = get(&p, "/a", &[]).await;
    assert_eq!((status, body.as_str()), (401, "unauthorized\n"));
    assert_eq!(h["www-authenticate"], "ApiKey");
    assert_eq!(h["x-denied-by"], "auth-header");
    let (status, _, _) = get(&p, "/a", &[("x-api-key", "wrong")]).await;
    assert_eq!(status, 401);
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    let (status, body, _) = get(&p, "/a", &[("x-api-key", "secret")]).await;
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-api-key: secret"), "{body}");
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
    let log = wait_log(&p, 3).await;
    assert_eq!(
        log[0]["response_code_details"], "wasm_local_reply: production/auth",
        "{log:?}"
    );

    // The plugin's counter on the waypoint's /metrics.
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let admin = Admin {
        registry: p.registry.clone(),
        config: ConfigHandle::fixed(mesh(&b, None, vec![], vec![])),
        ready: Arc::default(),
        service: Some(p.service.clone()),
        cert: None,
    };
    tokio::spawn(admin.serve(l, Scope::Metrics));
    let (status, text, _) = send(&client(), addr, "GET", "localhost", "/metrics", &[]).await;
    assert_eq!(status, 200);
    assert!(
        text.contains(
            "# TYPE wasm_auth_header_denied_total counter\nwasm_auth_header_denied_total 2\n"
        ),
        "{text}"
    );
}

#[tokio::test]
async fn rewrite_changes_what_the_upstream_sees() {
    let b = echo().await;
    let mut rw = plugin(
        "rewrite",
        "rewrite",
        serde_json::json!({
            "set": {"x-added": "1"},
            "remove": ["x-drop"],
            "prefix": {"from": "/old/", "to": "/new/"},
            "response_header": ["x-rewritten", "yes"],
        }),
    );
    // Attached to the Service, not the Gateway.
    rw.target_refs = vec![service_ref("order-service")];
    let p = proxy(mesh(&b, None, vec![rw], vec![]), None).await;
    let (status, body, h) = get(&p, "/old/x?q=1", &[("x-drop", "1"), ("x-keep", "k")]).await;
    assert_eq!(status, 200);
    assert_eq!(body, "/new/x\nx-added: 1\nx-keep: k\n");
    assert_eq!(h["x-rewritten"], "yes");
    // Another service is not touched.
    let mut m = Mesh::default();
    let other = echo().await;
    m.service("other", "240.240.0.12").workload(
        "other-0",
        "other",
        "v1",
        "other",
        other.addr.port(),
    );
    let mut rw2 = plugin(
        "rewrite",
        "rewrite",
        serde_json::json!({"set": {"x-added": "1"}}),
    );
    rw2.target_refs = vec![service_ref("order-service")];
    m.wasm_plugin(rw2);
    let p2 = proxy(m.snapshot(), None).await;
    let (status, body, _) = send(&client(), p2.addr, "GET", "other", "/old/x", &[]).await;
    assert_eq!((status, body.as_str()), (200, "/old/x\n"));
}

#[tokio::test]
async fn callout_calls_a_mesh_service_before_letting_the_request_through() {
    let b = echo().await;
    let check = backend(Arc::new(|_, parts| {
        let from = parts
            .headers
            .get("x-callout-from")
            .map(|v| v.to_str().unwrap().to_string())
            .unwrap_or_default();
        match (parts.uri.path(), parts.headers.get("host")) {
            ("/allowed", Some(h)) if h == CHECK_HOST => {
                (200, format!("ok from {from}"), Duration::ZERO)
            }
            _ => (403, "no".into(), Duration::ZERO),
        }
    }))
    .await;
    let callout = plugin(
        "callout",
        "callout",
        serde_json::json!({
            "cluster": format!("outbound|80||{CHECK_HOST}"),
            "authority": CHECK_HOST,
            "timeout_ms": 2000,
        }),
    );
    let p = proxy(mesh(&b, Some(&check), vec![callout], vec![]), None).await;
    let (status, body, _) = get(&p, "/allowed", &[]).await;
    assert_eq!(status, 200, "{body}");
    assert_eq!(
        body,
        "/allowed\nx-callout-body: ok from meshwork-example\nx-callout-status: 200\n"
    );
    let (status, body, h) = get(&p, "/denied", &[]).await;
    assert_eq!((status, body.as_str()), (403, "denied by callout\n"));
    assert_eq!(h["x-denied-by"], "callout");
    assert_eq!(check.hits.load(std::sync::atomic::Ordering::SeqCst), 2);
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 1);
}

#[tokio::test]
async fn a_trap_fails_only_its_request_by_fail_strategy() {
    let b = echo().await;
    let close = plugin("trap", "trap", serde_json::Value::Null);
    let p = proxy(mesh(&b, None, vec![close.clone()], vec![]), None).await;
    let (status, body, _) = get(&p, "/a", &[("x-trap", "panic")]).await;
    assert_eq!((status, body.as_str()), (503, ""));
    assert_eq!(b.hits.load(std::sync::atomic::Ordering::SeqCst), 0);
    // The instance was replaced: the next requests run on a fresh one.
    for _ in 0..4 {
        let (status, body, _) = get(&p, "/a", &[]).await;
        assert_eq!(status, 200, "{body}");
        assert!(body.contains("x-trap-count: "), "{body}");
    }
    let (status, _, _) = get(&p, "/a", &[("x-trap", "loop")]).await;
    assert_eq!(
        status, 503,
        "a spinning plugin is stopped by its CPU budget"
    );
    let (status, _, _) = get(&p, "/a", &[]).await;
    assert_eq!(status, 200);

    let open = pb::WasmPlugin {
        fail_strategy: pb::WasmFailStrategy::FailOpen as i32,
        ..close
    };
    let b2 = echo().await;
    let p = proxy(mesh(&b2, None, vec![open], vec![]), None).await;
    let (status, body, _) = get(&p, "/a", &[("x-trap", "panic")]).await;
    assert_eq!(status, 200, "FAIL_OPEN skips the trapping plugin");
    assert!(!body.contains("x-trap-count"), "{body}");
    let (status, body, _) = get(&p, "/a", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("x-trap-count: "), "{body}");
}

#[tokio::test]
async fn a_plugin_that_does_not_load_follows_its_fail_strategy() {
    let b = echo().await;
    let missing = pb::WasmPlugin {
        url: "file:///nonexistent/meshwork/plugin.wasm".into(),
        ..auth_header()
    };
    let p = proxy(mesh(&b, None, vec![missing.clone()], vec![]), None).await;
    let (status, _, _) = get(&p, "/a", &[("x-api-key", "secret")]).await;
    assert_eq!(status, 503);
    let open = pb::WasmPlugin {
        fail_strategy: pb::WasmFailStrategy::FailOpen as i32,
        ..missing
    };
    let p = proxy(mesh(&b, None, vec![open], vec![]), None).await;
    let (status, _, _) = get(&p, "/a", &[]).await;
    assert_eq!(status, 200);
    // A plugin whose on_configure refuses its pluginConfig does not load either.
    let refused = pb::WasmPlugin {
        plugin_config_json: r#"{"values": []}"#.into(),
        ..auth_header()
    };
    let p = proxy(mesh(&b, None, vec![refused], vec![]), None).await;
    let (status, _, _) = get(&p, "/a", &[("x-api-key", "secret")]).await;
    assert_eq!(status, 503);
    // A sha256 that does not match refuses the module.
    let pinned = pb::WasmPlugin {
        sha256: "00".repeat(32),
        ..auth_header()
    };
    let p = proxy(mesh(&b, None, vec![pinned], vec![]), None).await;
    let (status, _, _) = get(&p, "/a", &[("x-api-key", "secret")]).await;
    assert_eq!(status, 503);
}

/// An ALLOW policy on order-service: only requests carrying `x-role: admin`.
fn admin_only() -> pb::Authorization {
    service_policy(
        "admin-only",
        pb::Action::Allow,
        "order-service",
        vec![pb::Rule {
            when: vec![pb::Condition {
                key: "request.headers[x-role]".into(),
                values: s(&["admin"]),
                ..Default::default()
            }],
            ..Default::default()
        }],
    )
}

#[tokio::test]
async fn phases_place_plugins_around_the_waypoints_authorization() {
    let b = echo().await;
    let set_role = |phase: pb::WasmPhase| pb::WasmPlugin {
        phase: phase as i32,
        ..plugin(
            "role",
            "rewrite",
            serde_json::json!({"set": {"x-role": "admin"}}),
        )
    };
    // AUTHN: the policy sees the header the plugin set.
    let p = proxy(
        mesh(
            &b,
            None,
            vec![set_role(pb::WasmPhase::Authn)],
            vec![admin_only()],
        ),
        None,
    )
    .await;
    let (status, body, _) = get(&p, "/a", &[]).await;
    assert_eq!(status, 200, "{body}");
    // STATS (after authorization): the policy sees the request as it came.
    let p = proxy(
        mesh(
            &b,
            None,
            vec![set_role(pb::WasmPhase::Stats)],
            vec![admin_only()],
        ),
        None,
    )
    .await;
    let (status, body, _) = get(&p, "/a", &[]).await;
    assert_eq!((status, body.as_str()), (403, "RBAC: access denied"));

    // auth-header before authorization answers 401; after it, the policy answers first.
    let authn = pb::WasmPlugin {
        phase: pb::WasmPhase::Authn as i32,
        ..auth_header()
    };
    let p = proxy(mesh(&b, None, vec![authn], vec![admin_only()]), None).await;
    assert_eq!(get(&p, "/a", &[]).await.0, 401);
    let p = proxy(
        mesh(&b, None, vec![auth_header()], vec![admin_only()]),
        None,
    )
    .await;
    assert_eq!(get(&p, "/a", &[]).await.0, 403);
    assert_eq!(
        get(&p, "/a", &[("x-role", "admin"), ("x-api-key", "secret")])
            .await
            .0,
        200
    );

    // Priority within a phase: the higher one runs first (and the later one sees its work).
    let first = pb::WasmPlugin {
        name: "first".into(),
        priority: 10,
        ..plugin(
            "x",
            "rewrite",
            serde_json::json!({"set": {"x-order": "first"}}),
        )
    };
    let second = pb::WasmPlugin {
        name: "second".into(),
        priority: 1,
        ..plugin(
            "x",
            "rewrite",
            serde_json::json!({"set": {"x-order": "second"}, "add": {"x-seen": "1"}}),
        )
    };
    let p = proxy(mesh(&b, None, vec![second, first], vec![]), None).await;
    let (_, body, _) = get(&p, "/a", &[]).await;
    assert!(body.contains("x-order: second\n"), "{body}");
}

#[tokio::test]
async fn a_reload_keeps_requests_in_flight_on_the_old_plugin() {
    let b = echo().await;
    let version = |v: &str| {
        plugin(
            "rewrite",
            "rewrite",
            serde_json::json!({"set": {"x-version": v}, "response_header": ["x-plugin", v]}),
        )
    };
    let (tx, handle) = ConfigHandle::manual(mesh(&b, None, vec![version("1")], vec![]));
    let p = proxy_on(handle, ProxySetup::default()).await;
    let (_, body, _) = get(&p, "/a", &[]).await;
    assert!(body.contains("x-version: 1"), "{body}");
    let addr = p.addr;
    let slow =
        tokio::spawn(
            async move { send(&client(), addr, "GET", "order-service", "/slow", &[]).await },
        );
    tokio::time::sleep(Duration::from_millis(200)).await;
    let snap = mesh(&b, None, vec![version("2")], vec![]);
    tx.send(Arc::new(snap)).unwrap();
    let (status, body, h) = get(&p, "/b", &[]).await;
    assert_eq!(status, 200);
    assert!(body.contains("x-version: 2"), "{body}");
    assert_eq!(h["x-plugin"], "2");
    let (status, body, h) = slow.await.unwrap();
    assert_eq!(status, 200, "{body}");
    assert!(body.contains("x-version: 1"), "{body}");
    assert_eq!(
        h["x-plugin"], "1",
        "the in-flight request's response ran on the old plugin"
    );
    // Removing the plugin: requests pass untouched.
    tx.send(Arc::new(mesh(&b, None, vec![], vec![]))).unwrap();
    let (_, body, h) = get(&p, "/c", &[]).await;
    assert_eq!(body, "/c\n");
    assert!(h.get("x-plugin").is_none());
}

#[tokio::test]
async fn buffered_bodies_reach_the_plugins() {
    // The trap plugin passes bodies through; the upstream gets the body the client sent.
    let b = backend(Arc::new(|_, _| (200, "x".repeat(10_000), Duration::ZERO))).await;
    let p = proxy(
        mesh(
            &b,
            None,
            vec![plugin("trap", "trap", serde_json::Value::Null)],
            vec![],
        ),
        None,
    )
    .await;
    let (status, body, h) = send(&client(), p.addr, "POST", "order-service", "/a", &[]).await;
    assert_eq!(status, 200);
    assert_eq!(body.len(), 10_000);
    assert_eq!(h["content-length"], "10000");
}

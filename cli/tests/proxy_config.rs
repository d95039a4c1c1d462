//! `meshwork proxy-config` against a real ztunnel and a real waypoint, both started here on
//! loopback with a static config (and, for ztunnel, certificates from disk).

#[allow(dead_code)] // `tool` is for the other tests sharing `common`.
mod common;

use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::Duration;

use common::{bin_dir, Guard};
use meshwork_identity::testing::TestCa;
use meshwork_model::keys::make_resource;
use meshwork_model::pb::config::{resource, ConfigUpdate, MeshSettings, Service, Workload};
use meshwork_model::Kind;
use prost::Message;

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// A mesh with one workload on node-a (with its certificate on disk) and one Service.
fn write_config(dir: &Path) {
    let ca = TestCa::new("cluster.local");
    let id = "spiffe://cluster.local/ns/prod/sa/server".parse().unwrap();
    ca.issue(&id, Duration::from_secs(3600))
        .save(&dir.join("certs/prod/server"))
        .unwrap();
    let w = Workload {
        uid: "prod/server-0".into(),
        name: "server-0".into(),
        namespace: "prod".into(),
        service_account: "server".into(),
        node: "node-a".into(),
        addresses: vec!["127.0.0.1".into()],
        captured: true,
        healthy: true,
        ..Default::default()
    };
    let svc = Service {
        name: "server".into(),
        namespace: "prod".into(),
        hostname: "server.prod.svc.cluster.local".into(),
        vips: vec!["127.0.10.1".into()],
        ..Default::default()
    };
    let update = ConfigUpdate {
        version: 1,
        resources: vec![
            make_resource(
                "mesh".into(),
                resource::Kind::Mesh(MeshSettings {
                    trust_domain: "cluster.local".into(),
                    root_namespace: "istio-system".into(),
                    ..Default::default()
                }),
            ),
            make_resource(
                Kind::Workload.key("prod", "server-0"),
                resource::Kind::Workload(w),
            ),
            make_resource(
                Kind::Service.key("prod", &svc.hostname),
                resource::Kind::Service(svc),
            ),
        ],
        ..Default::default()
    };
    std::fs::write(dir.join("config.pb"), update.encode_to_vec()).unwrap();
}

fn proxy_config(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshwork"))
        .arg("proxy-config")
        .args(args)
        .output()
        .unwrap()
}

/// Runs `proxy-config` until it answers with exit 0 and `until` holds on stdout (≤ 15 s).
fn poll(args: &[&str], until: impl Fn(&str) -> bool) -> String {
    let mut last = String::new();
    for _ in 0..75 {
        let out = proxy_config(args);
        let stdout = String::from_utf8_lossy(&out.stdout).into_owned();
        if out.status.success() && until(&stdout) {
            return stdout;
        }
        last = format!("{stdout}{}", String::from_utf8_lossy(&out.stderr));
        std::thread::sleep(Duration::from_millis(200));
    }
    panic!("proxy-config {args:?} never answered as expected; last answer:\n{last}");
}

#[test]
fn ztunnel_workloads_services_and_certificates() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let admin = free_addr();
    let ztunnel = Command::new(bin_dir().join("ztunnel"))
        .args(["--node", "node-a"])
        .arg("--static-config")
        .arg(dir.path().join("config.pb"))
        .arg("--cert-dir")
        .arg(dir.path().join("certs"))
        .args(["--outbound-addr", "off", "--inbound-plain-addr", "off"])
        .args(["--socks5-addr", "off", "--metrics-addr", "off"])
        .args(["--hbone-addr", &free_addr().to_string()])
        .args(["--readiness-addr", &free_addr().to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Guard::new(ztunnel);
    let url = format!("http://{admin}");
    let certs = poll(&["ztunnel", "--admin", &url, "certs"], |o| {
        o.contains("spiffe://cluster.local/ns/prod/sa/server")
    });
    assert!(certs.starts_with("IDENTITY"), "{certs}");
    // Issued for an hour: expires in 59m or 1h0m depending on the second.
    assert!(
        certs.contains("  59m") || certs.contains("  1h0m"),
        "{certs}"
    );

    let all = poll(&["ztunnel", "--admin", &url], |o| {
        o.contains("== workloads")
    });
    assert!(all.contains("prod/server-0"), "{all}");
    assert!(all.contains("server.prod.svc.cluster.local"), "{all}");
    assert!(all.contains("== routes\n(ztunnel is L4 only"), "{all}");

    let out = proxy_config(&["ztunnel", "--admin", &url, "workloads", "-o", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let w = &v["workloads"][0];
    assert_eq!(w["workload"], "prod/server-0");
    assert_eq!(w["identity"], "spiffe://cluster.local/ns/prod/sa/server");
    assert_eq!(w["local"], true);
}

/// A backend on loopback answering every HTTP/1.1 request with 503 (bounded: 100
/// connections); returns its address.
fn failing_backend() -> SocketAddr {
    use std::io::{BufRead, BufReader, Write};
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap();
    std::thread::spawn(move || {
        for s in l.incoming().take(100) {
            let Ok(mut s) = s else { return };
            std::thread::spawn(move || {
                let mut r = BufReader::new(s.try_clone().unwrap());
                for _ in 0..1000 {
                    // Read one request head (no bodies are sent here).
                    let mut line = String::new();
                    loop {
                        line.clear();
                        if r.read_line(&mut line).unwrap_or(0) == 0 {
                            return;
                        }
                        if line == "\r\n" {
                            break;
                        }
                    }
                    let resp = "HTTP/1.1 503 Service Unavailable\r\ncontent-length: 4\r\n\r\ndown";
                    if s.write_all(resp.as_bytes()).is_err() {
                        return;
                    }
                }
            });
        }
    });
    addr
}

/// One GET through the waypoint's plaintext listener; returns the status line.
fn get_through(waypoint: SocketAddr, host: &str) -> String {
    use std::io::{Read, Write};
    let mut s = std::net::TcpStream::connect(waypoint).unwrap();
    s.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    write!(
        s,
        "GET /pay HTTP/1.1\r\nhost: {host}\r\nconnection: close\r\n\r\n"
    )
    .unwrap();
    let mut out = String::new();
    let _ = s.read_to_string(&mut out);
    out.lines().next().unwrap_or("").to_string()
}

/// The mesh for the waypoint test: `pay` served by waypoint prod/waypoint, one endpoint
/// (the failing backend), a route with outlier detection, and the waypoint's certificate.
fn write_waypoint_config(dir: &Path, backend: SocketAddr) {
    use meshwork_model::pb::config::{
        string_match, ConnectionPool, Destination, GatewayAddress, HttpRoute, OutlierDetection,
        RouteConfig, RouteMatch, ServicePort, ServicePorts, StringMatch, TrafficPolicy,
        WeightedDestination,
    };
    let ca = TestCa::new("cluster.local");
    let id = "spiffe://cluster.local/ns/prod/sa/waypoint"
        .parse()
        .unwrap();
    ca.issue(&id, Duration::from_secs(7200))
        .save(&dir.join("waypoint-cert"))
        .unwrap();
    let host = "pay.prod.svc.cluster.local";
    let svc = Service {
        name: "pay".into(),
        namespace: "prod".into(),
        hostname: host.into(),
        aliases: vec!["pay".into(), "pay.prod".into(), "pay.prod.svc".into()],
        vips: vec!["127.0.10.2".into()],
        ports: vec![ServicePort {
            port: 80,
            target_port: u32::from(backend.port()),
            name: "http".into(),
            protocol: "HTTP".into(),
            ..Default::default()
        }],
        waypoint: Some(GatewayAddress {
            namespace: "prod".into(),
            name: "waypoint".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    let w = Workload {
        uid: "prod/pay-0".into(),
        name: "pay-0".into(),
        namespace: "prod".into(),
        service_account: "pay".into(),
        addresses: vec!["127.0.0.1".into()],
        captured: true,
        healthy: true,
        services: vec![ServicePorts {
            service: format!("prod/{host}"),
            ports: [(80, u32::from(backend.port()))].into(),
        }],
        ..Default::default()
    };
    let route = RouteConfig {
        hostname: host.into(),
        namespace: "prod".into(),
        http: vec![HttpRoute {
            name: "payments".into(),
            matches: vec![RouteMatch {
                uri: Some(StringMatch {
                    r#match: Some(string_match::Match::Prefix("/pay".into())),
                    present: false,
                }),
                ..Default::default()
            }],
            route: vec![WeightedDestination {
                destination: Some(Destination {
                    host: host.into(),
                    ..Default::default()
                }),
                weight: 100,
                headers: None,
            }],
            origin: "VirtualService/prod/pay".into(),
            ..Default::default()
        }],
        traffic_policy: Some(TrafficPolicy {
            connection_pool: Some(ConnectionPool {
                max_connections: 50,
                http1_max_pending_requests: 30,
                ..Default::default()
            }),
            outlier_detection: Some(OutlierDetection {
                consecutive_5xx_errors: 3,
                interval_ms: 30_000,
                base_ejection_time_ms: 60_000,
                max_ejection_percent: 100,
                ..Default::default()
            }),
            ..Default::default()
        }),
        origins: vec!["VirtualService/prod/pay".into()],
        ..Default::default()
    };
    let update = ConfigUpdate {
        version: 1,
        resources: vec![
            make_resource(
                "mesh".into(),
                resource::Kind::Mesh(MeshSettings {
                    trust_domain: "cluster.local".into(),
                    root_namespace: "istio-system".into(),
                    ..Default::default()
                }),
            ),
            make_resource(
                Kind::Workload.key("prod", "pay-0"),
                resource::Kind::Workload(w),
            ),
            make_resource(
                Kind::Service.key("prod", host),
                resource::Kind::Service(svc),
            ),
            make_resource(Kind::Route.key("prod", host), resource::Kind::Route(route)),
        ],
        ..Default::default()
    };
    std::fs::write(dir.join("config.pb"), update.encode_to_vec()).unwrap();
}

#[test]
fn waypoint_routes_endpoints_with_ejection_and_certificate() {
    let dir = tempfile::tempdir().unwrap();
    let backend = failing_backend();
    write_waypoint_config(dir.path(), backend);
    let admin = free_addr();
    let http = free_addr();
    let waypoint = Command::new(bin_dir().join("waypoint"))
        .args(["--gateway", "prod/waypoint", "--upstream", "plain"])
        .arg("--no-access-log")
        .arg("--static-config")
        .arg(dir.path().join("config.pb"))
        .arg("--cert-dir")
        .arg(dir.path().join("waypoint-cert"))
        .args(["--http-addr", &http.to_string()])
        .args(["--hbone-addr", &free_addr().to_string()])
        .args(["--readiness-addr", &free_addr().to_string()])
        .args(["--metrics-addr", &free_addr().to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Guard::new(waypoint);
    let url = format!("http://{admin}");

    let endpoints = poll(&["waypoint", "--admin", &url, "endpoints"], |o| {
        o.contains("HEALTHY")
    });
    assert!(endpoints.starts_with("CLUSTER"), "{endpoints}");
    assert!(
        endpoints.contains("outbound|80||pay.prod.svc.cluster.local"),
        "{endpoints}"
    );
    assert!(endpoints.contains(&backend.to_string()), "{endpoints}");

    // Three 503s in a row eject the only endpoint; the next request finds no healthy host.
    for _ in 0..3 {
        assert!(get_through(http, "pay.prod.svc.cluster.local").contains(" 503 "));
    }
    let ejected = poll(&["waypoint", "--admin", &url, "endpoints"], |o| {
        o.contains("EJECTED")
    });
    let row = ejected.lines().nth(1).unwrap_or("");
    assert!(
        row.contains("prod/pay-0") && row.contains("EJECTED"),
        "{ejected}"
    );
    // Ejected for baseEjectionTime (60 s) and returned on the first 30 s interval tick
    // after that: 60 to 90 s from now.
    assert!(
        (60..=90).any(|n| row.contains(&format!("  {n}s  "))),
        "{ejected}"
    );

    let routes = poll(&["waypoint", "--admin", &url, "routes"], |o| {
        o.contains("payments")
    });
    assert!(routes.starts_with("HOST"), "{routes}");
    assert!(
        routes.contains("uri:prefix=/pay") && routes.contains("VirtualService/prod/pay"),
        "{routes}"
    );

    let certs = poll(&["waypoint", "--admin", &url, "certs"], |o| {
        o.contains("spiffe://cluster.local/ns/prod/sa/waypoint")
    });
    assert!(
        certs.contains("  1h59m") || certs.contains("  2h0m"),
        "{certs}"
    );

    for format in ["json", "yaml"] {
        let out = proxy_config(&["waypoint", "--admin", &url, "-o", format]);
        assert!(out.status.success(), "{format}");
        let v: serde_json::Value = if format == "json" {
            serde_json::from_slice(&out.stdout).unwrap()
        } else {
            serde_yaml_ng::from_slice(&out.stdout).unwrap()
        };
        assert_eq!(v["workloads"][0]["name"], "prod/pay-0", "{format}");
        assert_eq!(v["routes"][0]["http"][0]["name"], "payments", "{format}");
        let e = &v["endpoints"][0]["endpoints"][0];
        assert_eq!(e["health"], "EJECTED", "{format}");
        assert_eq!(e["outlier"]["ejections"], 1, "{format}");
        assert_eq!(
            v["certs"][0]["identity"], "spiffe://cluster.local/ns/prod/sa/waypoint",
            "{format}"
        );
        assert!(v["certs"][0].get("chain_pem").is_none());
    }
}

#[test]
fn insecure_waypoint_has_no_certificate_to_show() {
    let dir = tempfile::tempdir().unwrap();
    write_config(dir.path());
    let admin = free_addr();
    let waypoint = Command::new(bin_dir().join("waypoint"))
        .args([
            "--gateway",
            "prod/waypoint",
            "--insecure",
            "--upstream",
            "plain",
        ])
        .arg("--no-access-log")
        .arg("--static-config")
        .arg(dir.path().join("config.pb"))
        .args(["--http-addr", &free_addr().to_string()])
        .args(["--hbone-addr", &free_addr().to_string()])
        .args(["--readiness-addr", &free_addr().to_string()])
        .args(["--metrics-addr", &free_addr().to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Guard::new(waypoint);
    let url = format!("http://{admin}");
    let services = poll(&["waypoint", "--admin", &url, "services"], |o| {
        o.contains("prod/server.prod.svc.cluster.local")
    });
    assert!(services.starts_with("NAME"), "{services}");
    let out = proxy_config(&["waypoint", "--admin", &url, "-o", "json"]);
    assert!(out.status.success());
    let v: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(v["workloads"][0]["name"], "prod/server-0");
    assert_eq!(v["certs"], serde_json::json!([]));
    assert_eq!(v["routes"], serde_json::json!([]));
    // The service has no waypoint: no cluster to show.
    assert_eq!(v["endpoints"], serde_json::json!([]));
}

#[test]
fn unreachable_admin_is_one_clear_line() {
    // A port nothing listens on: bound and released.
    let addr = free_addr();
    let out = proxy_config(&["ztunnel", "--admin", &format!("http://{addr}")]);
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(err.lines().count(), 1, "{err}");
    assert!(
        err.starts_with(&format!("error: cannot reach http://{addr}/config_dump")),
        "{err}"
    );
    assert!(out.stdout.is_empty());
}

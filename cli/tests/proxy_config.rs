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

#[test]
fn waypoint_lists_what_it_holds_and_says_what_it_does_not_expose() {
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
    assert_eq!(v["certs"]["available"], false);
    assert_eq!(v["endpoints"]["available"], false);
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

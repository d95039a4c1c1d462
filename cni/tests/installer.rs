//! The DaemonSet's installer: it puts the plugin back when the CNI rewrites its list; on
//! SIGTERM it asks the Kubernetes API (a real TLS server on loopback stands in for it)
//! whether its DaemonSet still exists, and only when it is gone (an uninstall) takes the
//! plugin out and tells the ztunnel to release the pods.

use std::io::{BufRead, BufReader, Write};
use std::net::TcpListener;
use std::path::Path;
use std::process::{Child, Command, Stdio};
use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwork_cni::owner::{ApiServer, Owner, OwnerError};
use rcgen::{BasicConstraints, CertificateParams, IsCa, Issuer, KeyPair};
use rustls::pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};
use serde_json::{json, Value};

const BIN: &str = env!("CARGO_BIN_EXE_meshwork-cni");

struct Pki {
    ca_pem: String,
    cert: CertificateDer<'static>,
    key: PrivateKeyDer<'static>,
}

fn pki() -> Pki {
    let ca_key = KeyPair::generate().unwrap();
    let mut ca = CertificateParams::new(Vec::<String>::new()).unwrap();
    ca.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    let ca_cert = ca.self_signed(&ca_key).unwrap();
    let issuer = Issuer::new(ca, ca_key);
    let key = KeyPair::generate().unwrap();
    let leaf = CertificateParams::new(vec!["127.0.0.1".to_string()])
        .unwrap()
        .signed_by(&key, &issuer)
        .unwrap();
    Pki {
        ca_pem: ca_cert.pem(),
        cert: leaf.der().clone(),
        key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
    }
}

/// Serves one request with `status`/`body`; returns the request line and headers seen.
fn serve_once(
    pki: &Pki,
    status: &'static str,
    body: &'static str,
) -> (String, std::thread::JoinHandle<String>) {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let cfg = rustls::ServerConfig::builder_with_provider(provider)
        .with_safe_default_protocol_versions()
        .unwrap()
        .with_no_client_auth()
        .with_single_cert(vec![pki.cert.clone()], pki.key.clone_key())
        .unwrap();
    let cfg = Arc::new(cfg);
    let l = TcpListener::bind("127.0.0.1:0").unwrap();
    let addr = l.local_addr().unwrap().to_string();
    let t = std::thread::spawn(move || {
        let (tcp, _) = l.accept().unwrap();
        let conn = rustls::ServerConnection::new(cfg).unwrap();
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        let mut head = String::new();
        {
            let mut r = BufReader::new(&mut tls);
            loop {
                let mut line = String::new();
                if r.read_line(&mut line).unwrap() == 0 || line == "\r\n" {
                    break;
                }
                head.push_str(&line);
            }
        }
        let reply = format!("HTTP/1.1 {status}\r\nContent-Type: application/json\r\n\r\n{body}");
        tls.write_all(reply.as_bytes()).unwrap();
        tls.conn.send_close_notify();
        let _ = tls.flush();
        head
    });
    (addr, t)
}

fn api(addr: String, dir: &std::path::Path, ca_pem: &str) -> ApiServer {
    std::fs::write(dir.join("ca.crt"), ca_pem).unwrap();
    std::fs::write(dir.join("token"), "sekret-token\n").unwrap();
    ApiServer {
        addr,
        server_name: "127.0.0.1".into(),
        ca_file: dir.join("ca.crt"),
        token_file: dir.join("token"),
    }
}

#[test]
fn the_daemonset_is_present_gone_or_being_deleted() {
    let pki = pki();
    let dir = tempfile::tempdir().unwrap();
    for (status, body, want) in [
        (
            "200 OK",
            r#"{"metadata":{"name":"meshwork-ztunnel"}}"#,
            Owner::Present,
        ),
        (
            "200 OK",
            r#"{"metadata":{"name":"meshwork-ztunnel","deletionTimestamp":"2026-12-07T17:00:00Z"}}"#,
            Owner::Gone,
        ),
        (
            "404 Not Found",
            r#"{"kind":"Status","code":404}"#,
            Owner::Gone,
        ),
    ] {
        let (addr, server) = serve_once(&pki, status, body);
        let got = api(addr, dir.path(), &pki.ca_pem)
            .daemonset("meshwork-system", "meshwork-ztunnel")
            .unwrap();
        assert_eq!(got, want, "{status} {body}");
        let head = server.join().unwrap();
        assert!(
            head.starts_with(
                "GET /apis/apps/v1/namespaces/meshwork-system/daemonsets/meshwork-ztunnel "
            ),
            "{head}"
        );
        assert!(
            head.contains("Authorization: Bearer sekret-token\r\n"),
            "{head}"
        );
    }
}

#[test]
fn a_server_with_a_certificate_from_another_ca_is_not_believed() {
    let (pki, other) = (pki(), pki());
    let dir = tempfile::tempdir().unwrap();
    let (addr, server) = serve_once(&pki, "404 Not Found", "{}");
    let e = api(addr, dir.path(), &other.ca_pem)
        .daemonset("meshwork-system", "meshwork-ztunnel")
        .unwrap_err();
    assert!(matches!(e, OwnerError::Request { .. }), "{e}");
    let _ = server.join();
}

fn plugin_types(file: &Path) -> Vec<String> {
    let v: Value = serde_json::from_slice(&std::fs::read(file).unwrap()).unwrap();
    v["plugins"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| p["type"].as_str().unwrap_or_default().to_string())
        .collect()
}

fn wait_until(what: &str, mut f: impl FnMut() -> bool) {
    let deadline = Instant::now() + Duration::from_secs(10);
    while !f() {
        assert!(Instant::now() < deadline, "timed out waiting for {what}");
        std::thread::sleep(Duration::from_millis(50));
    }
}

struct Installer(Child);

impl Drop for Installer {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

#[test]
fn the_watching_installer_restores_the_plugin_and_removes_it_on_sigterm() {
    let dir = tempfile::tempdir().unwrap();
    run_installer(dir.path(), &[], &[]);
}

/// Runs the watching installer in `dir` with `extra` flags and `env`, checks it keeps the
/// plugin in a list the CNI rewrites, sends SIGTERM and returns whether the plugin is
/// still installed afterwards.
fn run_installer(dir: &Path, extra: &[&str], env: &[(&str, &str)]) -> bool {
    let (bin, conf) = (dir.join("bin"), dir.join("net.d"));
    std::fs::create_dir_all(&conf).unwrap();
    let list = conf.join("05-cilium.conflist");
    let cilium = json!({"cniVersion":"0.3.1","name":"cilium","plugins":[{"type":"cilium-cni"}]});
    std::fs::write(&list, cilium.to_string()).unwrap();
    let mut inst = Installer(
        Command::new(BIN)
            .env_remove("CNI_COMMAND")
            .args([
                "install",
                "--watch",
                "--uninstall-on-exit",
                "--interval",
                "1",
            ])
            .args(extra)
            .envs(env.iter().copied())
            .arg("--cni-bin-dir")
            .arg(&bin)
            .arg("--cni-conf-dir")
            .arg(&conf)
            .stdout(Stdio::null())
            .spawn()
            .unwrap(),
    );
    wait_until("the plugin in the list", || {
        plugin_types(&list) == ["cilium-cni", "meshwork-cni"]
    });
    assert!(bin.join("meshwork-cni").exists());
    // The CNI's agent rewrites its list at start: the plugin comes back.
    std::fs::write(&list, cilium.to_string()).unwrap();
    wait_until("the plugin restored", || {
        plugin_types(&list) == ["cilium-cni", "meshwork-cni"]
    });
    // SAFETY: kill(2) on our own child's pid.
    assert_eq!(unsafe { libc::kill(inst.0.id() as i32, libc::SIGTERM) }, 0);
    let status = inst.0.wait().unwrap();
    assert!(status.success(), "{status:?}");
    let installed = plugin_types(&list) == ["cilium-cni", "meshwork-cni"];
    assert_eq!(installed, bin.join("meshwork-cni").exists());
    if extra.is_empty() {
        assert!(!installed, "without an owner, a signal uninstalls");
    }
    installed
}

#[test]
fn on_sigterm_the_installer_uninstalls_only_when_its_daemonset_is_gone() {
    let pki = pki();
    for (status, body, uninstall) in [
        (
            "200 OK",
            r#"{"metadata":{"name":"meshwork-ztunnel"}}"#,
            false,
        ),
        ("404 Not Found", r#"{"kind":"Status","code":404}"#, true),
        // The API cannot tell: nothing is removed (the pods stay captured).
        ("500 Internal Server Error", "{}", false),
    ] {
        let dir = tempfile::tempdir().unwrap();
        let (addr, server) = serve_once(&pki, status, body);
        let api = api(addr.clone(), dir.path(), &pki.ca_pem);
        let (host, port) = addr.rsplit_once(':').unwrap();
        let decision = dir.path().join("stop/ztunnel-abc");
        let flags = [
            "--owner-daemonset",
            "meshwork-system/meshwork-ztunnel",
            "--stop-decision-file",
            decision.to_str().unwrap(),
            "--api-ca-file",
            api.ca_file.to_str().unwrap(),
            "--api-token-file",
            api.token_file.to_str().unwrap(),
        ];
        let installed = run_installer(
            dir.path(),
            &flags,
            &[
                ("KUBERNETES_SERVICE_HOST", host),
                ("KUBERNETES_SERVICE_PORT", port),
            ],
        );
        assert_eq!(installed, !uninstall, "{status}");
        let want = if uninstall { "uninstall" } else { "restart" };
        assert_eq!(
            std::fs::read_to_string(&decision).unwrap(),
            want,
            "{status}"
        );
        let head = server.join().unwrap();
        assert!(
            head.contains("Authorization: Bearer sekret-token"),
            "{head}"
        );
    }
}

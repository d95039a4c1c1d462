//! The control plane binary as users run it, for the attack tests: a real process over a
//! temp config directory, its admin endpoint over loopback, real gRPC subscribers.

#![allow(dead_code)]

pub mod csr;
pub mod istio_ztunnel;

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Child, Command, Stdio};
use std::time::Duration;

use meshwork_model::client::{self, ConfigHandle, Subscription};
use meshwork_model::pb::config::ProxyKind;

/// A running `controlplane` process.
pub struct ControlPlane {
    child: Child,
    pub grpc: SocketAddr,
    pub admin: SocketAddr,
}

impl ControlPlane {
    /// Starts the binary; fails the test if it does not report ready within `limit`.
    pub fn start_within(config: &Path, ca: &Path, limit: Duration) -> ControlPlane {
        Self::spawn(config, ca, "127.0.0.1:0", limit)
    }

    pub fn start(config: &Path, ca: &Path) -> ControlPlane {
        Self::start_within(config, ca, Duration::from_secs(60))
    }

    /// Starts the binary with its gRPC listener on `127.0.0.1:port` (a restart on the same
    /// port is what subscribers must ride out).
    pub fn start_on_port(config: &Path, ca: &Path, port: u16) -> ControlPlane {
        Self::spawn(
            config,
            ca,
            &format!("127.0.0.1:{port}"),
            Duration::from_secs(60),
        )
    }

    fn spawn(config: &Path, ca: &Path, grpc_addr: &str, limit: Duration) -> ControlPlane {
        let mut child = Command::new(env!("CARGO_BIN_EXE_controlplane"))
            .args(["--config-dir", config.to_str().unwrap()])
            .args(["--ca-dir", ca.to_str().unwrap()])
            .args(["--default-namespace", "production"])
            .args(["--grpc-addr", grpc_addr])
            .args(["--admin-addr", "127.0.0.1:0"])
            .stdout(Stdio::piped())
            .stderr(Stdio::null())
            .spawn()
            .expect("start controlplane");
        let line = ready_line(&mut child, limit);
        let addr = |name: &str| ready_addr(&line, name).unwrap();
        ControlPlane {
            grpc: addr("grpc"),
            admin: addr("admin"),
            child,
        }
    }

    pub fn endpoint(&self) -> String {
        format!("http://{}", self.grpc)
    }

    /// GET on the admin endpoint; the body as JSON.
    pub fn admin_json(&self, path: &str) -> serde_json::Value {
        let mut s = TcpStream::connect(self.admin).unwrap();
        s.set_read_timeout(Some(Duration::from_secs(10))).unwrap();
        write!(
            s,
            "GET {path} HTTP/1.1\r\nHost: 127.0.0.1\r\nConnection: close\r\n\r\n"
        )
        .unwrap();
        let mut resp = String::new();
        s.read_to_string(&mut resp).unwrap();
        let (head, body) = resp.split_once("\r\n\r\n").unwrap();
        assert!(head.starts_with("HTTP/1.1 200"), "{head}");
        serde_json::from_str(body).unwrap_or_else(|e| panic!("{e}: {body}"))
    }

    /// `/debug/errors` as (errors, warnings).
    pub fn diagnostics(&self) -> (Vec<String>, Vec<String>) {
        let v = self.admin_json("/debug/errors");
        let list = |k: &str| -> Vec<String> {
            v[k].as_array()
                .unwrap()
                .iter()
                .map(|e| e.as_str().unwrap().to_string())
                .collect()
        };
        (list("errors"), list("warnings"))
    }

    /// Whether one `/debug/errors` error contains every one of `parts`.
    pub fn has_error(&self, parts: &[&str]) -> bool {
        let (errors, _) = self.diagnostics();
        errors.iter().any(|e| parts.iter().all(|p| e.contains(p)))
    }

    /// Asserts that one `/debug/errors` error contains every one of `parts`.
    pub fn assert_error(&self, parts: &[&str]) {
        let (errors, _) = self.diagnostics();
        assert!(
            errors.iter().any(|e| parts.iter().all(|p| e.contains(p))),
            "no error with all of {parts:?}: {errors:?}"
        );
    }

    /// Asserts that one `/debug/errors` warning contains every one of `parts`.
    pub fn assert_warning(&self, parts: &[&str]) {
        let (_, warnings) = self.diagnostics();
        assert!(
            warnings.iter().any(|w| parts.iter().all(|p| w.contains(p))),
            "no warning with all of {parts:?}: {warnings:?}"
        );
    }

    /// A ztunnel subscriber for `node`, with the node's genuine token.
    pub fn ztunnel(&self, ca: &Path, node: &str) -> ConfigHandle {
        ztunnel(&self.endpoint(), node, token(ca, node))
    }

    /// A ztunnel subscriber for `node` once its first snapshot arrived: one with the
    /// [`BASE`] pod `reviews-v1` in it (`what` names the wait in a timeout).
    pub async fn synced_ztunnel(&self, ca: &Path, node: &str, what: &str) -> ConfigHandle {
        let z = self.ztunnel(ca, node);
        wait_for(&z, what, |s| {
            s.workload("workload/production/reviews-v1").is_some()
        })
        .await;
        z
    }

    pub fn kill(mut self) {
        self.child.kill().unwrap();
        self.child.wait().unwrap();
    }
}

impl Drop for ControlPlane {
    fn drop(&mut self) {
        let _ = self.child.kill();
        let _ = self.child.wait();
    }
}

/// A ztunnel subscriber for `node` at `endpoint`, presenting `token`.
pub fn ztunnel(endpoint: &str, node: &str, token: String) -> ConfigHandle {
    client::spawn(
        endpoint.to_string(),
        Subscription {
            kind: ProxyKind::Ztunnel,
            node: node.into(),
            proxy_id: format!("test-ztunnel-{node}"),
            token: token.into(),
            ..Default::default()
        },
        None,
    )
}

/// A loopback port that was free a moment ago.
pub fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

/// A node token minted by the CA in `ca` (`controlplane token --node`).
pub fn token(ca: &Path, node: &str) -> String {
    let out = Command::new(env!("CARGO_BIN_EXE_controlplane"))
        .args(["--ca-dir", ca.to_str().unwrap(), "token", "--node", node])
        .output()
        .unwrap();
    assert!(out.status.success(), "{out:?}");
    String::from_utf8(out.stdout).unwrap().trim().to_string()
}

/// Waits (at most 15 s) until the subscriber's snapshot satisfies `f`.
pub async fn wait_for(h: &ConfigHandle, what: &str, f: impl Fn(&meshwork_model::Snapshot) -> bool) {
    let mut rx = h.watch();
    let res = tokio::time::timeout(Duration::from_secs(15), rx.wait_for(|s| f(s))).await;
    assert!(res.is_ok(), "timed out waiting for {what}");
}

/// Polls `f` every 100 ms for at most 15 s.
pub async fn eventually(what: &str, mut f: impl FnMut() -> bool) {
    for _ in 0..150 {
        if f() {
            return;
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
    panic!("timed out waiting for {what}");
}

/// Writes a file atomically (as editors and `kubectl`-like tools do).
pub fn write(dir: &Path, name: &str, text: &str) -> PathBuf {
    let p = dir.join(name);
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, text).unwrap();
    std::fs::rename(&tmp, &p).unwrap();
    p
}

/// A config directory holding [`BASE`] as `base.yaml` and `files` (name, text), and an
/// empty CA directory: (config, ca).
pub fn config_with_base(files: &[(&str, &str)]) -> (tempfile::TempDir, tempfile::TempDir) {
    let config = tempfile::tempdir().unwrap();
    let ca = tempfile::tempdir().unwrap();
    write(config.path(), "base.yaml", BASE);
    for (name, text) in files {
        write(config.path(), name, text);
    }
    (config, ca)
}

/// A Namespace document in ambient mode (`istio.io/dataplane-mode: ambient`) named
/// `$name`, for `concat!` into fixtures.
macro_rules! ambient_namespace {
    ($name:literal) => {
        concat!(
            "\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ",
            $name,
            "\n  labels:\n    istio.io/dataplane-mode: ambient\n"
        )
    };
}

/// A namespace in ambient mode with one Service and one Pod on `node-a`.
pub const BASE: &str = concat!(
    ambient_namespace!("production"),
    r#"---
apiVersion: v1
kind: Service
metadata:
  name: reviews
spec:
  clusterIP: 10.96.0.20
  selector:
    app: reviews
  ports:
    - port: 8080
      name: http
---
apiVersion: v1
kind: Pod
metadata:
  name: reviews-v1
  labels:
    app: reviews
    version: v1
spec:
  nodeName: node-a
  serviceAccountName: reviews
  containers:
    - name: app
      image: reviews:v1
status:
  phase: Running
  podIP: 10.244.1.9
"#
);

/// The `controlplane ready …` line a started `controlplane` prints on stdout; the child is
/// killed and the test fails when it does not come within `limit`.
pub fn ready_line(child: &mut Child, limit: Duration) -> String {
    let stdout = child.stdout.take().expect("stdout piped");
    let (tx, rx) = std::sync::mpsc::channel();
    std::thread::spawn(move || {
        let mut line = String::new();
        let _ = BufReader::new(stdout).read_line(&mut line);
        let _ = tx.send(line);
    });
    let line = match rx.recv_timeout(limit) {
        Ok(line) => line,
        Err(_) => {
            let _ = child.kill();
            let _ = child.wait();
            panic!("control plane not ready within {limit:?}");
        }
    };
    assert!(line.starts_with("controlplane ready"), "{line}");
    line
}

/// The address `name=` in a ready line (`None`: absent or `off`).
pub fn ready_addr(line: &str, name: &str) -> Option<SocketAddr> {
    line.split_whitespace()
        .find_map(|w| w.strip_prefix(&format!("{name}=")))?
        .parse()
        .ok()
}

//! `meshwork waypoint` end to end: directory mode against the control plane's own parser
//! and translator, Kubernetes mode against a recorded fake API server on loopback, and the
//! one-line errors of bad input.

use std::io::{BufRead, BufReader, Read, Write};
use std::net::{TcpListener, TcpStream};
use std::path::Path;
use std::process::{Command, Output};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant};

use meshwork_api::Store;
use meshwork_controlplane::source::dir::list_manifests;
use meshwork_controlplane::translate::Translator;
use meshwork_model::pb::config::resource::Kind as ResKind;
use serde_json::{json, Value};

fn meshwork(args: &[&str], env: &[(&str, &str)]) -> Output {
    let mut c = Command::new(env!("CARGO_BIN_EXE_meshwork"));
    c.arg("waypoint").args(args);
    for (k, v) in env {
        c.env(k, v);
    }
    c.output().unwrap()
}

fn stdout(o: &Output) -> String {
    String::from_utf8_lossy(&o.stdout).into_owned()
}

fn stderr(o: &Output) -> String {
    String::from_utf8_lossy(&o.stderr).into_owned()
}

/// One namespace in the mesh, its `cart` Service and pod, and a running waypoint pod (in
/// directory mode pods are manifests too; in Kubernetes the controller creates it).
const CLUSTER: &str = "\
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  clusterIP: 10.96.0.30
  selector: {app: cart}
  ports: [{name: http, port: 80, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: cart-0, namespace: shop, uid: u-cart, labels: {app: cart}}
spec:
  nodeName: node-a
  serviceAccountName: cart
  containers: [{name: app, image: app, ports: [{containerPort: 8080}]}]
status: {phase: Running, podIP: 10.1.0.5, podIPs: [{ip: 10.1.0.5}]}
---
apiVersion: v1
kind: Pod
metadata:
  name: waypoint-0
  namespace: shop
  uid: u-wp
  labels: {gateway.networking.k8s.io/gateway-name: waypoint}
spec:
  nodeName: node-a
  serviceAccountName: waypoint
  containers: [{name: waypoint, image: waypoint}]
status: {phase: Running, podIP: 10.1.0.9, podIPs: [{ip: 10.1.0.9}]}
";

/// Loads the directory like the control plane does; returns (errors, cart's waypoint address).
fn load(dir: &Path) -> (Vec<String>, Option<String>) {
    let mut store = Store::new();
    let mut changes = Vec::new();
    for f in list_manifests(dir).unwrap() {
        let text = std::fs::read_to_string(&f).unwrap();
        changes.extend(store.apply_file(&f, &text, "default"));
    }
    let errors = store.errors().iter().map(|e| e.to_string()).collect();
    let mut tr = Translator::new();
    tr.set_mesh_file(None);
    tr.apply_batch(&changes);
    let waypoint = match tr
        .resources()
        .get("service/shop/cart.shop.svc.cluster.local")
        .and_then(|r| r.kind.as_ref())
    {
        Some(ResKind::Service(s)) => s.waypoint.as_ref().map(|w| w.address.clone()),
        other => panic!("cart service missing: {other:?}"),
    };
    (errors, waypoint)
}

#[test]
fn dir_mode_apply_is_accepted_and_routes_the_namespace_through_the_waypoint() {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("cluster.yaml"), CLUSTER).unwrap();
    let dir = d.path().to_str().unwrap();
    assert_eq!(load(d.path()), (vec![], None), "no waypoint before");

    // Dry run: prints, writes nothing.
    let o = meshwork(
        &[
            "apply",
            "-n",
            "shop",
            "--enroll-namespace",
            "--dir",
            dir,
            "--dry-run",
        ],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("gatewayClassName: istio-waypoint"),
        "{}",
        stdout(&o)
    );
    assert_eq!(list_manifests(d.path()).unwrap().len(), 1);

    let o = meshwork(
        &["apply", "-n", "shop", "--enroll-namespace", "--dir", dir],
        &[],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("waypoint shop/waypoint applied"),
        "{}",
        stdout(&o)
    );
    let (errors, waypoint) = load(d.path());
    assert!(errors.is_empty(), "{errors:?}");
    assert_eq!(waypoint.as_deref(), Some("10.1.0.9"));

    let o = meshwork(&["list", "--dir", dir, "-o", "json"], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let listed: Value = serde_json::from_slice(&o.stdout).unwrap();
    assert_eq!(listed[0]["namespace"], "shop");
    assert_eq!(listed[0]["for"], "service");

    let o = meshwork(&["delete", "-n", "shop", "--dir", dir], &[]);
    assert!(o.status.success(), "{}", stderr(&o));
    let o = meshwork(&["list", "--dir", dir], &[]);
    assert_eq!(stdout(&o).trim(), "no waypoints");
}

fn assert_one_line_error(o: &Output, needle: &str) {
    assert!(!o.status.success());
    let e = stderr(o);
    assert_eq!(e.trim_end().lines().count(), 1, "one line: {e}");
    assert!(e.starts_with("error: ") && e.contains(needle), "{e}");
    assert!(!e.contains("backtrace"), "{e}");
}

#[test]
fn bad_input_is_one_clear_line() {
    let d = tempfile::tempdir().unwrap();
    let dir = d.path().to_str().unwrap();
    assert_one_line_error(
        &meshwork(
            &["apply", "-n", "shop", "--dir", "/nonexistent/meshwork"],
            &[],
        ),
        "--dir /nonexistent/meshwork: not a directory",
    );
    assert_one_line_error(
        &meshwork(&["apply", "--dir", dir], &[]),
        "--namespace (-n) is required",
    );
    assert_one_line_error(
        &meshwork(
            &["apply", "-n", "shop", "--name", "Bad_Name", "--dir", dir],
            &[],
        ),
        "name \"Bad_Name\" is not valid",
    );
    assert_one_line_error(
        &meshwork(&["delete", "-n", "shop", "--dir", dir], &[]),
        "no waypoint Gateway shop/waypoint",
    );
    // No kubeconfig at all.
    assert_one_line_error(
        &meshwork(
            &["apply", "-n", "shop"],
            &[("KUBECONFIG", "/nonexistent/kubeconfig"), ("HOME", dir)],
        ),
        "no Kubernetes configuration",
    );
    // An API server that is not there.
    let port = TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port();
    let kc = kubeconfig(d.path(), port);
    assert_one_line_error(
        &meshwork(&["apply", "-n", "shop"], &[("KUBECONFIG", kc.as_str())]),
        "cannot reach the Kubernetes API server",
    );
}

fn kubeconfig(dir: &Path, port: u16) -> String {
    let path = dir.join("kubeconfig");
    std::fs::write(
        &path,
        format!(
            "apiVersion: v1\nkind: Config\nclusters:\n- name: c\n  cluster: {{server: \"http://127.0.0.1:{port}\"}}\n\
             users:\n- name: u\n  user: {{token: test}}\ncontexts:\n- name: x\n  context: {{cluster: c, user: u, namespace: shop}}\n\
             current-context: x\n"
        ),
    )
    .unwrap();
    path.to_str().unwrap().to_string()
}

/// (method, path+query, content-type, body)
type Seen = Arc<Mutex<Vec<(String, String, String, Value)>>>;

/// A fake API server on loopback answering by (method, path); echoes PATCH bodies.
/// Serves connections until `deadline`.
fn fake_api(routes: Vec<(&'static str, &'static str, u16, Value)>) -> (u16, Seen) {
    let listener = TcpListener::bind("127.0.0.1:0").unwrap();
    listener.set_nonblocking(true).unwrap();
    let port = listener.local_addr().unwrap().port();
    let seen: Seen = Arc::default();
    let s = seen.clone();
    std::thread::spawn(move || {
        let deadline = Instant::now() + Duration::from_secs(30);
        while Instant::now() < deadline {
            match listener.accept() {
                Ok((conn, _)) => serve(conn, &routes, &s),
                Err(_) => std::thread::sleep(Duration::from_millis(5)),
            }
        }
    });
    (port, seen)
}

fn serve(conn: TcpStream, routes: &[(&str, &str, u16, Value)], seen: &Seen) {
    conn.set_nonblocking(false).unwrap();
    conn.set_read_timeout(Some(Duration::from_secs(5))).unwrap();
    let mut r = BufReader::new(conn.try_clone().unwrap());
    // Requests on this connection, bounded.
    for _ in 0..16 {
        let mut line = String::new();
        if r.read_line(&mut line).unwrap_or(0) == 0 {
            return;
        }
        let mut parts = line.split_whitespace();
        let (method, target) = (
            parts.next().unwrap_or("").to_string(),
            parts.next().unwrap_or("").to_string(),
        );
        let (mut len, mut ct) = (0usize, String::new());
        loop {
            let mut h = String::new();
            if r.read_line(&mut h).unwrap_or(0) == 0 || h == "\r\n" {
                break;
            }
            let (k, v) = h.split_once(':').unwrap_or(("", ""));
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.trim().parse().unwrap_or(0),
                "content-type" => ct = v.trim().to_string(),
                _ => {}
            }
        }
        let mut body = vec![0; len];
        r.read_exact(&mut body).unwrap();
        let body: Value = serde_json::from_slice(&body).unwrap_or(Value::Null);
        let path = target.split('?').next().unwrap_or("").to_string();
        seen.lock()
            .unwrap()
            .push((method.clone(), target.clone(), ct, body.clone()));
        let (status, answer) = routes
            .iter()
            .find(|(m, p, _, _)| *m == method && *p == path)
            .map(|(_, _, s, b)| (*s, if b.is_null() { body.clone() } else { b.clone() }))
            .unwrap_or((
                404,
                json!({"kind": "Status", "apiVersion": "v1", "status": "Failure",
                "reason": "NotFound", "code": 404, "message": "not found"}),
            ));
        let text = answer.to_string();
        let mut w = &conn;
        let _ = write!(
            w,
            "HTTP/1.1 {status} X\r\ncontent-type: application/json\r\ncontent-length: {}\r\n\r\n{text}",
            text.len()
        );
    }
}

#[test]
fn kube_mode_server_side_applies_the_gateway_and_the_namespace_label() {
    let ns = json!({"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": "shop"}});
    let (port, seen) = fake_api(vec![
        ("GET", "/api/v1/namespaces/shop", 200, ns),
        ("PATCH", "/api/v1/namespaces/shop", 200, Value::Null),
        (
            "PATCH",
            "/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/waypoint",
            200,
            Value::Null,
        ),
    ]);
    let d = tempfile::tempdir().unwrap();
    let kc = kubeconfig(d.path(), port);
    // -n defaults to the kubeconfig context's namespace, like istioctl.
    let o = meshwork(
        &["apply", "--enroll-namespace", "--for", "all"],
        &[("KUBECONFIG", kc.as_str())],
    );
    assert!(o.status.success(), "{}", stderr(&o));
    assert!(
        stdout(&o).contains("waypoint shop/waypoint applied"),
        "{}",
        stdout(&o)
    );
    assert!(
        stdout(&o).contains("namespace shop labelled istio.io/use-waypoint=waypoint"),
        "{}",
        stdout(&o)
    );
    let seen = seen.lock().unwrap().clone();
    assert_eq!(seen.len(), 3, "{seen:?}");
    let (m, target, ct, body) = &seen[1];
    assert_eq!(m, "PATCH");
    assert!(
        target.starts_with("/apis/gateway.networking.k8s.io/v1/namespaces/shop/gateways/waypoint?"),
        "{target}"
    );
    assert!(
        target.contains("fieldManager=meshwork") && target.contains("force=true"),
        "{target}"
    );
    assert_eq!(ct, "application/apply-patch+yaml");
    assert_eq!(body["spec"]["gatewayClassName"], "istio-waypoint");
    assert_eq!(body["metadata"]["labels"]["istio.io/waypoint-for"], "all");
    assert_eq!(
        seen[2].3["metadata"]["labels"]["istio.io/use-waypoint"],
        "waypoint"
    );
}

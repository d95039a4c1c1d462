//! `meshwork authz check` over the seed manifests and a small cluster.
//!
//! The table uses the same cases as the waypoint's data-path test
//! (waypoint/tests/authz.rs `payment_policy_at_l7`): order-service POST /api/payments/x is
//! allowed by payment-service-policy, GET is denied, POST with `x-user-role: guest` is
//! denied, and a peer outside `production` is denied — here by deny-all-default, which the
//! waypoint test does not load. Without a waypoint the L7 ALLOW fails closed at ztunnel.
//! `agrees_with_the_data_path_of_the_demo` runs the same cases through real ztunnels and a
//! real waypoint (`meshwork demo --keep`) and checks `authz check` over its control plane
//! decides each one as the data path did.

#[allow(dead_code)] // `tool` is for the other tests sharing `common`.
mod common;

use std::io::{BufRead, BufReader};
use std::net::{SocketAddr, TcpListener};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::sync::mpsc;
use std::time::Duration;

use common::{bin_dir, Guard};

const SEED: [(&str, &str); 5] = [
    (
        "01-order-service.yaml",
        include_str!("../../examples/seed/01-order-service.yaml"),
    ),
    (
        "02-order-traffic.yaml",
        include_str!("../../examples/seed/02-order-traffic.yaml"),
    ),
    (
        "03-payment-resilience.yaml",
        include_str!("../../examples/seed/03-payment-resilience.yaml"),
    ),
    (
        "04-tracing.yaml",
        include_str!("../../examples/seed/04-tracing.yaml"),
    ),
    (
        "05-zero-trust.yaml",
        include_str!("../../examples/seed/05-zero-trust.yaml"),
    ),
];

fn pod(name: &str, ns: &str, sa: &str, labels: &str, ip: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  uid: uid-{name}\n  labels:\n{labels}\
spec:\n  nodeName: node-a\n  serviceAccountName: {sa}\n  containers:\n    - name: app\n      image: app\n      ports:\n        - containerPort: 8080\n\
status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n    - ip: {ip}\n---\n"
    )
}

/// Namespaces (production served by a waypoint when `waypoint`), the waypoint, the pods and
/// the payment Service the seed manifests leave out.
fn cluster(waypoint: bool) -> String {
    let use_waypoint = if waypoint {
        "    istio.io/use-waypoint: waypoint\n"
    } else {
        ""
    };
    let mut y = format!(
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n  labels:\n    istio.io/dataplane-mode: ambient\n{use_waypoint}---\n\
apiVersion: v1\nkind: Namespace\nmetadata:\n  name: partners\n  labels:\n    istio.io/dataplane-mode: ambient\n---\n\
apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: waypoint\n  namespace: production\n  labels:\n    istio.io/waypoint-for: service\n\
spec:\n  gatewayClassName: istio-waypoint\n  listeners:\n    - name: mesh\n      port: 15008\n      protocol: HBONE\n---\n\
apiVersion: v1\nkind: Service\nmetadata:\n  name: payment-service\n  namespace: production\n  labels:\n    app: payment-service\n\
spec:\n  clusterIP: 10.96.0.20\n  selector:\n    app: payment-service\n  ports:\n    - name: http\n      port: 8080\n      targetPort: 8080\n---\n"
    );
    y += &pod(
        "order-service-v1",
        "production",
        "order-service",
        "    app: order-service\n    version: v1\n",
        "10.1.0.1",
    );
    y += &pod(
        "payment-service-1",
        "production",
        "payment-service",
        "    app: payment-service\n    version: v1\n",
        "10.1.0.2",
    );
    y += &pod(
        "partner-client",
        "partners",
        "partner",
        "    app: partner-client\n",
        "10.1.0.3",
    );
    // Not in the mesh: its namespace is not labelled for ambient.
    y += &pod(
        "legacy-client",
        "legacy",
        "legacy",
        "    app: legacy-client\n",
        "10.1.0.4",
    );
    y += &pod(
        "waypoint-0",
        "production",
        "waypoint",
        "    gateway.networking.k8s.io/gateway-name: waypoint\n",
        "10.1.0.9",
    );
    y
}

fn manifests(waypoint: bool) -> tempfile::TempDir {
    let d = tempfile::tempdir().unwrap();
    std::fs::write(d.path().join("00-cluster.yaml"), cluster(waypoint)).unwrap();
    for (name, text) in SEED {
        std::fs::write(d.path().join(name), text).unwrap();
    }
    d
}

fn meshwork(dir: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshwork"))
        .args(["authz", "check", "-n", "production", "--output", "json"])
        .args(args)
        .arg(dir)
        .output()
        .unwrap()
}

struct Case {
    name: &'static str,
    from: &'static str,
    identity: &'static str,
    method: &'static str,
    headers: &'static [&'static str],
    allowed: bool,
    enforced_by: &'static str,
    policy: Option<&'static str>,
    reason: &'static str,
}

const WAYPOINT: &str = "waypoint production/waypoint";
const ORDER: &str = "production/order-service-v1";

const CASES: [Case; 4] = [
    Case {
        name: "order-service POST is allowed by payment-service-policy",
        from: ORDER,
        identity: "spiffe://cluster.local/ns/production/sa/order-service",
        method: "POST",
        headers: &[],
        allowed: true,
        enforced_by: WAYPOINT,
        policy: Some("production/payment-service-policy"),
        reason: "ALLOW policy production/payment-service-policy rule 0 matched",
    },
    Case {
        name: "order-service GET matches no ALLOW rule",
        from: ORDER,
        identity: "spiffe://cluster.local/ns/production/sa/order-service",
        method: "GET",
        headers: &[],
        allowed: false,
        enforced_by: WAYPOINT,
        policy: None,
        reason: "no ALLOW policy matched",
    },
    Case {
        name: "order-service POST as a guest matches no ALLOW rule",
        from: ORDER,
        identity: "spiffe://cluster.local/ns/production/sa/order-service",
        method: "POST",
        headers: &["x-user-role=guest"],
        allowed: false,
        enforced_by: WAYPOINT,
        policy: None,
        reason: "no ALLOW policy matched",
    },
    Case {
        name: "a partners pod is denied by deny-all-default",
        from: "partners/partner-client",
        identity: "spiffe://cluster.local/ns/partners/sa/partner",
        method: "POST",
        headers: &[],
        allowed: false,
        enforced_by: WAYPOINT,
        policy: Some("production/deny-all-default"),
        reason: "DENY policy production/deny-all-default rule 0 matched",
    },
];

fn case_args(c: &Case) -> Vec<&str> {
    let mut args = vec![
        "--from",
        c.from,
        "--to",
        "payment-service",
        "--method",
        c.method,
        "--path",
        "/api/payments/x",
    ];
    for h in c.headers {
        args.extend(["--header", h]);
    }
    args
}

fn run_case(dir: &Path, c: &Case) -> serde_json::Value {
    let out = meshwork(dir, &case_args(c));
    let stderr = String::from_utf8_lossy(&out.stderr);
    assert_eq!(
        out.status.code(),
        Some(if c.allowed { 0 } else { 1 }),
        "{}: {stderr}",
        c.name
    );
    serde_json::from_slice(&out.stdout).unwrap_or_else(|e| panic!("{}: {e}: {stderr}", c.name))
}

#[test]
fn seed_zero_trust_through_the_waypoint() {
    let dir = manifests(true);
    for c in &CASES {
        let r = run_case(dir.path(), c);
        assert_eq!(r["allowed"], c.allowed, "{}: {r}", c.name);
        assert_eq!(r["sourceIdentity"], c.identity, "{}", c.name);
        let v = &r["verdicts"][0];
        assert_eq!(r["verdicts"].as_array().unwrap().len(), 1, "{}", c.name);
        assert_eq!(v["enforcedBy"], c.enforced_by, "{}", c.name);
        assert_eq!(v["policy"].as_str(), c.policy, "{}: {v}", c.name);
        assert!(
            v["reason"].as_str().unwrap().starts_with(c.reason),
            "{}: {v}",
            c.name
        );
    }
}

#[test]
fn without_a_waypoint_the_l7_allow_fails_closed_at_ztunnel() {
    let dir = manifests(false);
    let c = &CASES[0];
    let out = meshwork(
        dir.path(),
        &[
            "--from",
            c.from,
            "--to",
            "payment-service.production.svc.cluster.local",
            "--method",
            "POST",
            "--path",
            "/api/payments/x",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    let v = &r["verdicts"][0];
    assert_eq!(v["destination"], "production/payment-service-1");
    assert_eq!(v["enforcedBy"], "ztunnel on node node-a");
    assert_eq!(v["reason"], "no ALLOW policy matched");
}

#[test]
fn human_output_names_the_decision() {
    let dir = manifests(true);
    let out = Command::new(env!("CARGO_BIN_EXE_meshwork"))
        .args(["authz", "check", "-n", "production"])
        .args(["--from", ORDER, "--to", "payment-service"])
        .args(["--method", "POST", "--path", "/api/payments/1"])
        .arg(dir.path())
        .output()
        .unwrap();
    assert_eq!(out.status.code(), Some(0));
    let text = String::from_utf8(out.stdout).unwrap();
    assert!(
        text.starts_with("ALLOW production/order-service-v1"),
        "{text}"
    );
    assert!(text.contains("at waypoint production/waypoint"), "{text}");
    assert!(
        text.contains("decided by: production/payment-service-policy rule 0"),
        "{text}"
    );
}

#[test]
fn unknown_workload_is_one_clear_line() {
    let dir = manifests(true);
    let out = meshwork(
        dir.path(),
        &["--from", "production/nope", "--to", "payment-service"],
    );
    assert_eq!(out.status.code(), Some(2));
    let err = String::from_utf8(out.stderr).unwrap();
    assert_eq!(
        err.trim_end(),
        "error: --from production/nope: no such workload in the model"
    );
    assert!(out.stdout.is_empty());
}

fn free_addr() -> SocketAddr {
    TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
}

/// The same table, read from a running control plane's `/debug/model` instead of translated
/// offline: every decision must be identical.
#[test]
fn a_running_control_plane_gives_the_same_decisions() {
    let dir = manifests(true);
    let work = tempfile::tempdir().unwrap();
    let admin = free_addr();
    let cp = Command::new(bin_dir().join("controlplane"))
        .arg("--config-dir")
        .arg(dir.path())
        .args(["--default-namespace", "production"])
        .args(["--grpc-addr", &free_addr().to_string()])
        .args(["--admin-addr", &admin.to_string()])
        .arg("--ca-dir")
        .arg(work.path().join("ca"))
        .stdout(Stdio::null())
        .stderr(Stdio::null())
        .spawn()
        .unwrap();
    let _guard = Guard::new(cp);
    let url = format!("http://{admin}");
    let online = |c: &Case| {
        Command::new(env!("CARGO_BIN_EXE_meshwork"))
            .args(["authz", "check", "--output", "json", "--controlplane", &url])
            .args(case_args(c))
            .output()
            .unwrap()
    };
    // Wait (bounded) until the control plane serves the translated model.
    let mut ready = false;
    for _ in 0..75 {
        if online(&CASES[0]).status.code() == Some(0) {
            ready = true;
            break;
        }
        std::thread::sleep(Duration::from_millis(200));
    }
    assert!(ready, "the control plane at {url} never served the model");
    for c in &CASES {
        let out = online(c);
        assert_eq!(
            out.status.code(),
            Some(if c.allowed { 0 } else { 1 }),
            "{}: {}",
            c.name,
            String::from_utf8_lossy(&out.stderr)
        );
        let from_cp: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        assert_eq!(from_cp, run_case(dir.path(), c), "{}", c.name);
    }
}

/// Seed 05: plaintext to payment-service is refused (STRICT) before any policy.
#[test]
fn plaintext_to_payment_service_is_refused_by_strict_mtls() {
    let dir = manifests(true);
    let out = meshwork(
        dir.path(),
        &[
            "--from",
            "legacy/legacy-client",
            "--to",
            "payment-service.production.svc.cluster.local",
            "--method",
            "POST",
            "--path",
            "/api/payments/x",
        ],
    );
    assert_eq!(out.status.code(), Some(1));
    let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
    assert_eq!(r["sourceIdentity"], serde_json::Value::Null);
    let v = &r["verdicts"][0];
    assert_eq!(v["destination"], "production/payment-service-1");
    assert_eq!(
        v["reason"],
        "plaintext refused: STRICT mTLS (PeerAuthentication production/payment-service-mtls); \
         the source is not in the mesh"
    );
}

/// Reads a child's stream line by line on a thread.
fn lines(stream: impl std::io::Read + Send + 'static) -> mpsc::Receiver<String> {
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stream).lines() {
            let Ok(line) = line else { return };
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    rx
}

/// The demo's zero-trust cases went through real ztunnels and a real waypoint; `authz check`
/// over the same running control plane must reach the same decisions.
#[test]
fn agrees_with_the_data_path_of_the_demo() {
    let mut demo = Command::new(bin_dir().join("meshwork"))
        .args(["demo", "--mode", "loopback", "--json", "--keep"])
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    let stdout = lines(demo.stdout.take().unwrap());
    let stderr = lines(demo.stderr.take().unwrap());
    let _demo = Guard::new(demo);
    let report: serde_json::Value = serde_json::from_str(
        &stdout
            .recv_timeout(Duration::from_secs(180))
            .expect("the demo printed no report within 180 s"),
    )
    .unwrap();
    let mut admin = None;
    for _ in 0..200 {
        let Ok(line) = stderr.recv_timeout(Duration::from_secs(60)) else {
            break;
        };
        if let Some(rest) = line.split("control plane admin: ").nth(1) {
            admin = rest.split("/debug/model").next().map(str::to_string);
            break;
        }
    }
    let admin = admin.expect("the demo's --keep banner names the control plane admin");
    let cases = report["sections"]
        .as_array()
        .unwrap()
        .iter()
        .find(|s| s["pattern"] == 5)
        .unwrap()["data"]["cases"]
        .as_array()
        .unwrap()
        .clone();
    // The demo's requests (cli/src/cmd/demo/patterns/zero_trust.rs), in its order.
    let requests: [(&str, &str, &[&str]); 4] = [
        ("production/order-client", "POST", &[]),
        ("production/order-client", "GET", &[]),
        ("production/order-client", "POST", &["x-user-role=guest"]),
        ("partners/partner-client", "POST", &[]),
    ];
    assert_eq!(cases.len(), requests.len());
    for (case, (from, method, headers)) in cases.iter().zip(requests) {
        let mut cmd = Command::new(env!("CARGO_BIN_EXE_meshwork"));
        cmd.args(["authz", "check", "-o", "json", "--controlplane", &admin])
            .args(["--from", from, "--to", "payment-service"])
            .args(["--method", method, "--path", "/api/payments/charge"]);
        for h in headers {
            cmd.args(["--header", h]);
        }
        let out = cmd.output().unwrap();
        let observed = case["allowed"].as_bool().unwrap();
        assert_eq!(
            out.status.code(),
            Some(if observed { 0 } else { 1 }),
            "{}: the data path {} it; authz check said {}{}",
            case["case"],
            if observed { "allowed" } else { "denied" },
            String::from_utf8_lossy(&out.stdout),
            String::from_utf8_lossy(&out.stderr),
        );
        let r: serde_json::Value = serde_json::from_slice(&out.stdout).unwrap();
        // When the data path named a policy, it is the one authz check names.
        let seen = case["policy"].as_str().unwrap_or("");
        if let Some(p) = r["verdicts"][0]["policy"].as_str() {
            if !seen.is_empty() {
                assert!(
                    seen.contains(p),
                    "{}: data path {seen:?}, check {p}",
                    case["case"]
                );
            }
        }
    }
}

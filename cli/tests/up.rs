//! `meshwork up` on a directory the project has never seen (a `shop` namespace written
//! here), driven with `meshwork exec … curl` as a user would: routing by a VirtualService
//! split, an `ipBlocks` DENY, plaintext refused by STRICT, a trace at the OTLP receiver,
//! `meshwork top` on the metrics `up` forwards, the Prometheus `up` runs counting the
//! requests, and `meshwork port-forward` to a pod; then `meshwork down` leaves no
//! namespace, process (Prometheus included) or state behind.
//!
//! Netns mode needs root and a kernel that loads the eBPF redirection (CI runs as root);
//! elsewhere the test says why and does not run.

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader};
use std::path::Path;
use std::process::{Command, Output, Stdio};
use std::time::{Duration, Instant};

use common::{bin_dir, tool};
use serde_json::Value;

const NAMESPACES: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
    istio.io/use-waypoint: waypoint
---
apiVersion: v1
kind: Namespace
metadata:
  name: legacy
"#;

const APPS: &str = r#"
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: web}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec:
      nodeName: node-0
      serviceAccountName: web
      containers: [{name: web, image: shop/web, ports: [{containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart-v1, namespace: shop}
spec:
  replicas: 2
  selector: {matchLabels: {app: cart, version: v1}}
  template:
    metadata: {labels: {app: cart, version: v1}}
    spec:
      nodeName: node-0
      serviceAccountName: cart
      containers: [{name: cart, image: shop/cart:1, ports: [{containerPort: 8080}]}]
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: cart-v2, namespace: shop}
spec:
  replicas: 1
  selector: {matchLabels: {app: cart, version: v2}}
  template:
    metadata: {labels: {app: cart, version: v2}}
    spec:
      serviceAccountName: cart
      containers: [{name: cart, image: shop/cart:2, ports: [{containerPort: 8080}]}]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart}
  ports: [{name: http, port: 8080, targetPort: 8080}]
---
apiVersion: v1
kind: Pod
metadata: {name: intruder, namespace: shop, labels: {app: intruder}}
spec:
  nodeName: node-1
  serviceAccountName: intruder
  containers: [{name: sh, image: busybox}]
---
apiVersion: v1
kind: Pod
metadata: {name: legacy-client, namespace: legacy, labels: {app: legacy-client}}
spec:
  nodeName: node-1
  containers: [{name: sh, image: busybox}]
"#;

const MESH: &str = r#"
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata: {name: cart, namespace: shop}
spec:
  host: cart
  subsets:
    - {name: v1, labels: {version: v1}}
    - {name: v2, labels: {version: v2}}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: cart, namespace: shop}
spec:
  hosts: [cart]
  http:
    - match: [{headers: {x-canary: {exact: "true"}}}]
      route: [{destination: {host: cart, subset: v2}}]
    - route:
        - {destination: {host: cart, subset: v1}, weight: 80}
        - {destination: {host: cart, subset: v2}, weight: 20}
---
apiVersion: security.istio.io/v1
kind: PeerAuthentication
metadata: {name: strict, namespace: shop}
spec:
  mtls: {mode: STRICT}
---
# node-1's pods (netns mode: 10.244.1.0/24) may not call through the waypoint.
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata: {name: deny-node-1, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  action: DENY
  rules: [{from: [{source: {ipBlocks: ["10.244.1.0/24"]}}]}]
---
apiVersion: telemetry.istio.io/v1
kind: Telemetry
metadata: {name: tracing, namespace: shop}
spec:
  tracing: [{providers: [{name: otel}], randomSamplingPercentage: 100.0}]
---
apiVersion: v1
kind: ConfigMap
metadata: {name: istio, namespace: istio-system}
data:
  mesh: |-
    extensionProviders:
      - name: otel
        opentelemetry: {port: 4317, service: otel-collector.observability.svc.cluster.local}
"#;

fn meshwork(state: &Path, args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshwork"))
        .args(args)
        .env("MESHWORK_STATE_DIR", state)
        .env("MESHWORK_BIN_DIR", bin_dir())
        .output()
        .expect("run meshwork")
}

fn text(o: &Output) -> String {
    format!(
        "{}\nstdout: {}\nstderr: {}",
        o.status,
        String::from_utf8_lossy(&o.stdout),
        String::from_utf8_lossy(&o.stderr)
    )
}

/// `curl -s -i URL` as `pod`, with extra curl arguments: (exit code, response head+body).
fn curl(state: &Path, pod: &str, extra: &[&str], url: &str) -> (i32, String) {
    let mut args = vec!["exec", pod, "--", "curl", "-s", "-i", "--max-time", "10"];
    args.extend(extra);
    args.push(url);
    let o = meshwork(state, &args);
    (
        o.status.code().unwrap_or(-1),
        String::from_utf8_lossy(&o.stdout).into_owned(),
    )
}

fn status_code(resp: &str) -> u16 {
    resp.split_whitespace()
        .nth(1)
        .and_then(|c| c.parse().ok())
        .unwrap_or(0)
}

fn served_by(resp: &str) -> String {
    resp.lines()
        .find_map(|l| {
            let (k, v) = l.split_once(':')?;
            k.eq_ignore_ascii_case("x-served-by")
                .then(|| v.trim().to_string())
        })
        .unwrap_or_default()
}

/// Stops the mesh when the test ends however it ends.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = meshwork(self.0, &["down"]);
    }
}

/// Kills a child still held when the test fails.
struct Killed(Option<std::process::Child>);

impl Drop for Killed {
    fn drop(&mut self) {
        if let Some(c) = self.0.as_mut() {
            let _ = c.kill();
            let _ = c.wait();
        }
    }
}

#[test]
fn up_runs_an_unseen_directory_and_down_leaves_nothing() {
    if let Err(e) = meshwork_netlab::capability::probe_redirect() {
        eprintln!("meshwork up (netns mode) not run: {e}");
        return;
    }
    tool("curl");
    let manifests = tempfile::tempdir().unwrap();
    std::fs::write(manifests.path().join("00-namespaces.yaml"), NAMESPACES).unwrap();
    std::fs::write(manifests.path().join("10-apps.yaml"), APPS).unwrap();
    std::fs::create_dir(manifests.path().join("mesh")).unwrap();
    std::fs::write(manifests.path().join("mesh/20-mesh.yaml"), MESH).unwrap();
    let state = tempfile::tempdir().unwrap();
    let state = state.path();

    let started = Instant::now();
    let up = meshwork(
        state,
        &[
            "up",
            manifests.path().to_str().unwrap(),
            "--nodes",
            "2",
            "--mode",
            "netns",
        ],
    );
    let _down = Down(state);
    assert!(up.status.success(), "{}", text(&up));
    let summary = String::from_utf8_lossy(&up.stdout).into_owned();
    assert!(summary.contains("mode: netns"), "{summary}");
    // Time to the first answered request, as a user sees it.
    let url = "http://cart.shop:8080/api/cart";
    let first = loop {
        let (code, resp) = curl(state, "web-0", &[], url);
        if code == 0 && status_code(&resp) == 200 {
            break started.elapsed();
        }
        assert!(
            started.elapsed() < Duration::from_secs(120),
            "no answer: {resp}"
        );
        std::thread::sleep(Duration::from_millis(100));
    };
    eprintln!(
        "meshwork up → first answered request: {:.1} s",
        first.as_secs_f64()
    );

    let st = meshwork(state, &["status", "--json"]);
    assert!(st.status.success(), "{}", text(&st));
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    let pods: BTreeMap<String, Value> = st["pods"]
        .as_array()
        .unwrap()
        .iter()
        .map(|p| (p["name"].as_str().unwrap().to_string(), p.clone()))
        .collect();
    for want in [
        "web-0",
        "cart-v1-0",
        "cart-v1-1",
        "cart-v2-0",
        "intruder",
        "legacy-client",
        "waypoint-waypoint",
    ] {
        assert!(pods.contains_key(want), "{want} missing: {st:#}");
    }
    assert_eq!(pods["web-0"]["node"], "node-0");
    assert_eq!(pods["cart-v1-1"]["node"], "node-0");
    assert_eq!(pods["intruder"]["node"], "node-1");
    assert!(
        pods["intruder"]["ip"]
            .as_str()
            .unwrap()
            .starts_with("10.244.1."),
        "{st:#}"
    );
    let netns: Vec<String> = pods
        .values()
        .filter_map(|p| p["netns"].as_str().map(String::from))
        .collect();
    assert_eq!(netns.len(), pods.len(), "{st:#}");

    // Routing: the header always to v2, the rest split 80/20 between v1 and v2.
    for _ in 0..5 {
        let (code, resp) = curl(state, "web-0", &["-H", "x-canary: true"], url);
        assert_eq!((code, status_code(&resp)), (0, 200), "{resp}");
        assert_eq!(served_by(&resp), "cart-v2-0", "{resp}");
    }
    let mut by_pod: BTreeMap<String, u32> = BTreeMap::new();
    for _ in 0..20 {
        let (code, resp) = curl(state, "web-0", &[], url);
        assert_eq!((code, status_code(&resp)), (0, 200), "{resp}");
        *by_pod.entry(served_by(&resp)).or_default() += 1;
    }
    let v1 = by_pod.get("cart-v1-0").unwrap_or(&0) + by_pod.get("cart-v1-1").unwrap_or(&0);
    let v2 = by_pod.get("cart-v2-0").copied().unwrap_or(0);
    assert_eq!(v1 + v2, 20, "{by_pod:?}");
    assert!(v1 >= 10, "80/20 split gave {by_pod:?}");

    // `meshwork top` without --targets scrapes the metrics endpoints `up` forwards to the
    // host's loopback; traffic during its one interval gives the edge to cart a rate.
    let metrics = st["metrics"].as_array().cloned().unwrap_or_default();
    assert!(
        metrics.iter().any(|m| m["name"] == "ztunnel-node-0")
            && metrics
                .iter()
                .any(|m| m["name"] == "shop/waypoint-waypoint"),
        "{st:#}"
    );
    let mut top = Command::new(env!("CARGO_BIN_EXE_meshwork"))
        .args(["top", "--once", "--json", "--interval", "1.5"])
        .env("MESHWORK_STATE_DIR", state)
        .env_remove("MESHWORK_METRICS_TARGETS")
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    for _ in 0..100 {
        if top.try_wait().unwrap().is_some() {
            break;
        }
        let (code, resp) = curl(state, "web-0", &[], url);
        assert_eq!((code, status_code(&resp)), (0, 200), "{resp}");
    }
    let top = top.wait_with_output().unwrap();
    assert!(top.status.success(), "{}", text(&top));
    let g: Value = serde_json::from_slice(&top.stdout).unwrap();

    // The Prometheus `up` runs scrapes the same endpoints: the requests above show in it.
    let prom = st["prometheus"]["url"]
        .as_str()
        .unwrap_or_default()
        .to_string();
    assert!(prom.starts_with("http://127.0.0.1:"), "{st:#}");
    assert!(
        summary.contains(&format!("prometheus: {prom}"))
            && summary.contains("grafana-dashboard.json"),
        "{summary}"
    );
    let dashboard = st["dashboard"].as_str().unwrap_or_default();
    let d: Value = serde_json::from_slice(&std::fs::read(dashboard).unwrap()).unwrap();
    assert!(d["panels"].is_array(), "{dashboard}");
    let deadline = Instant::now() + Duration::from_secs(20);
    let total = loop {
        let o = Command::new("curl")
            .args(["-s", "--max-time", "5", "-G", "--data-urlencode"])
            .arg("query=sum(istio_requests_total)")
            .arg(format!("{prom}/api/v1/query"))
            .output()
            .unwrap();
        let v: Value = serde_json::from_slice(&o.stdout).unwrap_or(Value::Null);
        let total = v["data"]["result"][0]["value"][1]
            .as_str()
            .and_then(|x| x.parse::<f64>().ok())
            .unwrap_or(0.0);
        if total > 0.0 {
            break total;
        }
        assert!(
            Instant::now() < deadline,
            "sum(istio_requests_total) at {prom} not positive within 20 s: {v}"
        );
        std::thread::sleep(Duration::from_millis(500));
    };
    eprintln!("prometheus {prom}: sum(istio_requests_total) = {total}");
    let to_cart: Vec<&Value> = g["edges"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|e| {
            e["services"].as_array().is_some_and(|s| {
                s.iter()
                    .any(|s| s.as_str().is_some_and(|s| s.starts_with("cart.shop")))
            })
        })
        .collect();
    assert!(
        to_cart
            .iter()
            .any(|e| e["rate"].as_f64().unwrap_or(0.0) > 0.0),
        "no edge to cart.shop with a rate: {g:#}"
    );

    // port-forward: a loopback port of the host answered by a cart pod.
    let mut pf = Killed(Some(
        Command::new(env!("CARGO_BIN_EXE_meshwork"))
            .args(["port-forward", "cart-v2-0", "0:8080"])
            .env("MESHWORK_STATE_DIR", state)
            .stdout(Stdio::piped())
            .stderr(Stdio::inherit())
            .spawn()
            .unwrap(),
    ));
    let mut line = String::new();
    BufReader::new(pf.0.as_mut().unwrap().stdout.take().unwrap())
        .read_line(&mut line)
        .unwrap();
    let local = line
        .strip_prefix("Forwarding from ")
        .and_then(|r| r.split_whitespace().next())
        .unwrap_or_else(|| panic!("no listening line: {line:?}"))
        .to_string();
    assert!(local.starts_with("127.0.0.1:"), "{line}");
    let o = Command::new("curl")
        .args(["-s", "-i", "--max-time", "10"])
        .arg(format!("http://{local}/api/cart"))
        .output()
        .unwrap();
    let resp = String::from_utf8_lossy(&o.stdout).into_owned();
    let mut pf = pf.0.take().unwrap();
    // SAFETY: kill(2) of our own child, not yet reaped: SIGINT, as Ctrl-C.
    unsafe {
        libc::kill(pf.id() as i32, libc::SIGINT);
    }
    let stopped = pf.wait().unwrap();
    assert_eq!(status_code(&resp), 200, "{resp}");
    assert_eq!(served_by(&resp), "cart-v2-0", "{resp}");
    assert!(stopped.success(), "port-forward after Ctrl-C: {stopped}");

    // ipBlocks DENY: the same request from node-1's pod is refused by the waypoint.
    let (code, resp) = curl(state, "intruder", &[], url);
    assert_eq!((code, status_code(&resp)), (0, 403), "{resp}");
    assert!(served_by(&resp).is_empty(), "{resp}");

    // STRICT: plaintext from outside the mesh to a cart pod (on the other node) is refused.
    let cart_ip = pods["cart-v1-0"]["ip"].as_str().unwrap();
    let (code, resp) = curl(
        state,
        "legacy-client",
        &[],
        &format!("http://{cart_ip}:8080/api/cart"),
    );
    assert!(
        code != 0 && status_code(&resp) == 0,
        "plaintext answered: {code} {resp}"
    );
    let mut refused = String::new();
    for _ in 0..50 {
        let logs = meshwork(state, &["logs", "ztunnel"]);
        refused = String::from_utf8_lossy(&logs.stdout)
            .lines()
            .filter(|l| l.contains("STRICT"))
            .collect::<Vec<_>>()
            .join("\n");
        if !refused.is_empty() {
            break;
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    assert!(!refused.is_empty(), "no STRICT refusal in the ztunnel logs");

    // A trace reaches the OTLP receiver under the caller's trace id.
    let trace = "4bf92f3577b34da6a3ce929d0e0e4736";
    let tp = format!("traceparent: 00-{trace}-00f067aa0ba902b7-01");
    let (code, resp) = curl(state, "web-0", &["-H", &tp], url);
    assert_eq!((code, status_code(&resp)), (0, 200), "{resp}");
    let traces = state.join("traces.jsonl");
    let deadline = Instant::now() + Duration::from_secs(20);
    loop {
        let got = std::fs::read_to_string(&traces).unwrap_or_default();
        if got.lines().any(|l| l.contains(trace)) {
            break;
        }
        assert!(
            Instant::now() < deadline,
            "trace {trace} not received: {got}"
        );
        std::thread::sleep(Duration::from_millis(200));
    }

    // The test application logs one line per request, naming the pod.
    let logs = meshwork(state, &["logs", "cart-v2-0"]);
    let lines = String::from_utf8_lossy(&logs.stdout)
        .lines()
        .filter(|l| l.contains("\"path\":\"/api/cart\"") && l.contains("\"pod\":\"cart-v2-0\""))
        .count();
    assert!(lines >= 5, "{}", text(&logs));

    // Live edits. A saved VirtualService edit is taken without a restart: all to v2.
    let edited = MESH
        .replace("weight: 80}", "weight: 0}")
        .replace("weight: 20}", "weight: 100}");
    std::fs::write(manifests.path().join("mesh/20-mesh.yaml"), &edited).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut streak = 0;
    while streak < 10 {
        let (code, resp) = curl(state, "web-0", &[], url);
        assert_eq!((code, status_code(&resp)), (0, 200), "{resp}");
        streak = if served_by(&resp) == "cart-v2-0" {
            streak + 1
        } else {
            0
        };
        assert!(
            Instant::now() < deadline,
            "the weight edit did not take: {resp}"
        );
    }
    let status = |state: &Path| -> Value {
        let st = meshwork(state, &["status", "--json"]);
        assert!(st.status.success(), "{}", text(&st));
        serde_json::from_slice(&st.stdout).unwrap()
    };
    // The state records the edit once the control plane's verdict on it is in.
    let deadline = Instant::now() + Duration::from_secs(10);
    let edit = loop {
        let e = status(state)["last_edit"].clone();
        if !e.is_null() {
            break e;
        }
        assert!(Instant::now() < deadline, "no last_edit in the state");
        std::thread::sleep(Duration::from_millis(100));
    };
    assert_eq!(edit["applied"], true, "{edit:#}");
    assert!(
        edit["summary"]
            .as_str()
            .unwrap()
            .contains("mesh__20-mesh.yaml"),
        "{edit:#}"
    );
    assert_eq!(edit["errors"].as_array().unwrap().len(), 0, "{edit:#}");
    assert_eq!(
        status(state)["pid"],
        st["pid"],
        "a config edit restarted the mesh"
    );

    // A bad edit is reported, as `meshwork errors` reports it, and the last good
    // VirtualService keeps running.
    let broken = edited.replace("weight: 100}", "weight: -100}");
    assert_ne!(broken, edited);
    std::fs::write(manifests.path().join("mesh/20-mesh.yaml"), &broken).unwrap();
    let deadline = Instant::now() + Duration::from_secs(30);
    let edit = loop {
        let e = status(state)["last_edit"].clone();
        if !e["errors"].as_array().is_none_or(|a| a.is_empty()) {
            break e;
        }
        assert!(
            Instant::now() < deadline,
            "the bad edit was not reported: {e:#}"
        );
        std::thread::sleep(Duration::from_millis(200));
    };
    let errors = edit["errors"].to_string();
    assert!(
        errors.contains("cart") && errors.contains("weight"),
        "{edit:#}"
    );
    for _ in 0..5 {
        let (code, resp) = curl(state, "web-0", &[], url);
        assert_eq!((code, status_code(&resp)), (0, 200), "{resp}");
        assert_eq!(served_by(&resp), "cart-v2-0", "{resp}");
    }
    std::fs::write(manifests.path().join("mesh/20-mesh.yaml"), &edited).unwrap();

    // Scaling changes the pods: the mesh restarts with a second v2 pod that answers.
    let scaled = APPS.replace(
        "spec:\n  replicas: 1\n  selector: {matchLabels: {app: cart, version: v2}}",
        "spec:\n  replicas: 2\n  selector: {matchLabels: {app: cart, version: v2}}",
    );
    assert_ne!(scaled, APPS);
    std::fs::write(manifests.path().join("10-apps.yaml"), &scaled).unwrap();
    let deadline = Instant::now() + Duration::from_secs(120);
    let mut served = std::collections::BTreeSet::new();
    while served.len() < 2 {
        assert!(
            Instant::now() < deadline,
            "cart-v2-1 never answered: {served:?}"
        );
        let (code, resp) = curl(state, "web-0", &[], url);
        if code == 0 && status_code(&resp) == 200 {
            served.insert(served_by(&resp));
        } else {
            std::thread::sleep(Duration::from_millis(200));
        }
    }
    assert!(served.contains("cart-v2-1"), "{served:?}");
    let st = status(state);
    let netns: Vec<String> = netns
        .into_iter()
        .chain(
            st["pods"]
                .as_array()
                .unwrap()
                .iter()
                .filter_map(|p| p["netns"].as_str().map(String::from)),
        )
        .collect();

    // down: nothing left.
    let down = meshwork(state, &["down"]);
    assert!(down.status.success(), "{}", text(&down));
    let left: Vec<String> = meshwork_netlab::netns::list_netns()
        .into_iter()
        .filter(|n| netns.contains(n))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    for n in &netns {
        assert!(
            !Path::new("/etc/netns").join(n).exists(),
            "/etc/netns/{n} left"
        );
    }
    assert!(!state.join("state.json").exists());
    let pid = st["pid"].as_u64().unwrap();
    assert!(
        !Path::new(&format!("/proc/{pid}")).exists() || {
            let s = std::fs::read_to_string(format!("/proc/{pid}/stat")).unwrap_or_default();
            s.contains(") Z ")
        },
        "the background process {pid} is still running"
    );
    let prom_pid = st["prometheus"]["pid"].as_u64().unwrap();
    let prom_dir = st["prometheus"]["dir"].as_str().unwrap().to_string();
    let prometheus_left: Vec<String> = std::fs::read_dir("/proc")
        .unwrap()
        .flatten()
        .filter_map(|e| {
            let cmd = std::fs::read(e.path().join("cmdline")).ok()?;
            let cmd = String::from_utf8_lossy(&cmd).replace('\0', " ");
            let stat = std::fs::read_to_string(e.path().join("stat")).unwrap_or_default();
            (cmd.contains(&prom_dir) && !stat.contains(") Z ")).then_some(cmd)
        })
        .collect();
    assert!(
        prometheus_left.is_empty(),
        "prometheus (pid {prom_pid}) left: {prometheus_left:?}"
    );
    let st = meshwork(state, &["status"]);
    assert!(!st.status.success());
    assert!(
        String::from_utf8_lossy(&st.stderr).contains("no local mesh is running"),
        "{}",
        text(&st)
    );
}

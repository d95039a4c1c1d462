//! Flagger against Meshwork, unchanged: `meshwork up` (loopback mode) runs the cluster state
//! Flagger's Istio router leaves for the Canary `podinfo` (examples/flagger/mesh: canary and
//! primary Deployments, the apex/primary/canary Services, Flagger's DestinationRules and
//! VirtualService) with the Prometheus `up` starts, scraping the proxies every second.
//! The test plays Flagger's part:
//!
//! - it rewrites the VirtualService file as Flagger updates the resource: the A/B shape
//!   (`headers` match, cookie regex) and the session-affinity shape (`Cookie` matches,
//!   `Set-Cookie` added per destination) route as written;
//! - it evaluates Flagger's own query strings (examples/flagger/flagger-queries, verbatim,
//!   rendered as Flagger renders them) on traffic with a known success rate and latency:
//!   as on Istio ambient they find nothing (the waypoint reports `reporter="waypoint"`);
//!   the ambient MetricTemplates of examples/flagger/metric-templates.yaml give exactly
//!   90 % and the p99 the Istio buckets give; with the opt-in Telemetry of
//!   examples/flagger/telemetry-reporter-destination.yaml the verbatim queries give the same;
//! - under a bounded load over keep-alive connections it shifts the weights step by step
//!   (100/0 … 50/50, 0/100, 100/0): zero failed requests, and the weights seen on the wire
//!   (`x-served-by`) follow each step.

#[allow(dead_code)]
mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Read, Write};
use std::net::{SocketAddr, TcpStream};
use std::path::{Path, PathBuf};
use std::process::{Command, Output};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::Arc;
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use common::{bin_dir, tool};
use serde_json::Value;

const NS: &str = "test";
const HOST: &str = "podinfo.test.svc.cluster.local";
const PORT: u16 = 9898;

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

fn example(rel: &str) -> String {
    let p = repo_root().join("examples/flagger").join(rel);
    std::fs::read_to_string(&p).unwrap_or_else(|e| panic!("{}: {e}", p.display()))
}

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

/// Stops the mesh when the test ends however it ends.
struct Down<'a>(&'a Path);

impl Drop for Down<'_> {
    fn drop(&mut self) {
        let _ = meshwork(self.0, &["down"]);
    }
}

/// Replaces a manifest of the control plane's directory as a controller's update would
/// land: whole, in one rename.
fn write_manifest(dir: &Path, name: &str, yaml: &str) {
    let tmp = dir.join(format!(".{name}.tmp"));
    std::fs::write(&tmp, yaml).unwrap();
    std::fs::rename(&tmp, dir.join(name)).unwrap();
}

/// The VirtualService Flagger's Istio router writes at a step of a weighted analysis.
fn weighted_vs(primary: u32, canary: u32) -> String {
    [
        "apiVersion: networking.istio.io/v1beta1",
        "kind: VirtualService",
        "metadata:",
        "  name: podinfo",
        "  namespace: test",
        "spec:",
        "  gateways: [mesh]",
        "  hosts: [podinfo]",
        "  http:",
        "    - route:",
        "        - destination: {host: podinfo-primary}",
        &format!("          weight: {primary}"),
        "        - destination: {host: podinfo-canary}",
        &format!("          weight: {canary}"),
        "",
    ]
    .join("\n")
}

/// Flagger's query rendering: its template functions `namespace`, `target`, `interval`.
fn render(query: &str, namespace: &str, target: &str, interval: &str) -> String {
    let q = query
        .replace("{{ namespace }}", namespace)
        .replace("{{ target }}", target)
        .replace("{{ interval }}", interval);
    assert!(!q.contains("{{"), "unrendered template left: {q}");
    q
}

fn unix_now() -> f64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .unwrap()
        .as_secs_f64()
}

/// An instant query at `time`: the result vector.
fn prom_query(prom: &str, q: &str, time: f64) -> Vec<Value> {
    let o = Command::new(tool("curl"))
        .args(["-sS", "--max-time", "10", "-G", "--data-urlencode"])
        .arg(format!("query={q}"))
        .arg("--data-urlencode")
        .arg(format!("time={time:.3}"))
        .arg(format!("{prom}/api/v1/query"))
        .output()
        .unwrap();
    let v: Value = serde_json::from_slice(&o.stdout)
        .unwrap_or_else(|e| panic!("{q}: {e}: {}", String::from_utf8_lossy(&o.stdout)));
    assert_eq!(v["status"], "success", "{q}: {v}");
    v["data"]["result"].as_array().cloned().unwrap_or_default()
}

/// The value of a one-sample result (Flagger reads the first sample the same way).
fn single(result: &[Value], q: &str) -> f64 {
    assert_eq!(result.len(), 1, "{q}: {result:?}");
    result[0]["value"][1]
        .as_str()
        .and_then(|v| v.parse().ok())
        .unwrap_or_else(|| panic!("{q}: {result:?}"))
}

/// A client connection through the loader pod's SOCKS5 entry (the pod's node ztunnel),
/// HTTP/1.1 keep-alive.
struct Conn {
    r: BufReader<TcpStream>,
}

#[derive(Debug, Default, Clone)]
struct Answer {
    status: u16,
    served_by: String,
    set_cookie: Vec<String>,
}

impl Conn {
    fn open(socks: SocketAddr, user: &str) -> std::io::Result<Conn> {
        let mut s = TcpStream::connect_timeout(&socks, Duration::from_secs(5))?;
        s.set_read_timeout(Some(Duration::from_secs(10)))?;
        s.set_nodelay(true)?;
        let mut b = [0u8; 2];
        s.write_all(&[5, 1, 2])?;
        s.read_exact(&mut b)?;
        if b != [5, 2] {
            return Err(std::io::Error::other(format!("socks method {b:?}")));
        }
        let mut auth = vec![1, user.len() as u8];
        auth.extend(user.as_bytes());
        auth.extend([1, b'x']);
        s.write_all(&auth)?;
        s.read_exact(&mut b)?;
        if b != [1, 0] {
            return Err(std::io::Error::other(format!("socks auth {b:?}")));
        }
        let mut req = vec![5, 1, 0, 3, HOST.len() as u8];
        req.extend(HOST.as_bytes());
        req.extend(PORT.to_be_bytes());
        s.write_all(&req)?;
        let mut head = [0u8; 4];
        s.read_exact(&mut head)?;
        if head[1] != 0 {
            return Err(std::io::Error::other(format!("socks connect {head:?}")));
        }
        let rest = match head[3] {
            1 => 4 + 2,
            4 => 16 + 2,
            3 => {
                let mut l = [0u8; 1];
                s.read_exact(&mut l)?;
                usize::from(l[0]) + 2
            }
            t => return Err(std::io::Error::other(format!("socks address type {t}"))),
        };
        let mut skip = vec![0u8; rest];
        s.read_exact(&mut skip)?;
        Ok(Conn {
            r: BufReader::new(s),
        })
    }

    fn get(&mut self, headers: &[(&str, &str)]) -> std::io::Result<Answer> {
        let mut req = format!("GET /api/info HTTP/1.1\r\nHost: {HOST}:{PORT}\r\n");
        for (k, v) in headers {
            req.push_str(&format!("{k}: {v}\r\n"));
        }
        req.push_str("\r\n");
        self.r.get_mut().write_all(req.as_bytes())?;
        let mut line = String::new();
        self.r.read_line(&mut line)?;
        let status = line
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| std::io::Error::other(format!("status line {line:?}")))?;
        let mut a = Answer {
            status,
            ..Default::default()
        };
        let mut len = None;
        let mut close = false;
        loop {
            line.clear();
            if self.r.read_line(&mut line)? == 0 {
                return Err(std::io::Error::other("connection closed in the head"));
            }
            let l = line.trim_end();
            if l.is_empty() {
                break;
            }
            let Some((k, v)) = l.split_once(':') else {
                continue;
            };
            let v = v.trim();
            match k.to_ascii_lowercase().as_str() {
                "content-length" => len = v.parse::<usize>().ok(),
                "x-served-by" => a.served_by = v.to_string(),
                "set-cookie" => a.set_cookie.push(v.to_string()),
                "connection" => close = v.eq_ignore_ascii_case("close"),
                "transfer-encoding" => {
                    return Err(std::io::Error::other("chunked answer: not expected"))
                }
                _ => {}
            }
        }
        let mut body = vec![0u8; len.unwrap_or(0)];
        self.r.read_exact(&mut body)?;
        if close {
            return Err(std::io::Error::other("server closed the connection"));
        }
        Ok(a)
    }
}

/// The running mesh as the test uses it.
struct Mesh {
    manifests: PathBuf,
    prom: String,
    socks: SocketAddr,
    user: String,
    waypoint_metrics: String,
}

impl Mesh {
    fn conn(&self) -> Conn {
        Conn::open(self.socks, &self.user).expect("SOCKS5 connection")
    }

    /// `n` requests on one connection: how many each pod served (`!<code>` for other codes).
    fn tally(&self, n: usize, headers: &[(&str, &str)]) -> BTreeMap<String, usize> {
        let mut c = self.conn();
        let mut out = BTreeMap::new();
        for _ in 0..n {
            let a = c.get(headers).expect("request");
            let k = if a.status == 200 {
                a.served_by
            } else {
                format!("!{}", a.status)
            };
            *out.entry(k).or_default() += 1;
        }
        out
    }

    /// Writes the VirtualService file and waits until `probe` says the waypoint routes by it.
    fn route(&self, yaml: &str, probe: impl Fn(&Mesh) -> bool) -> Duration {
        let start = Instant::now();
        write_manifest(&self.manifests, "40-virtualservice.yaml", yaml);
        while !probe(self) {
            assert!(
                start.elapsed() < Duration::from_secs(20),
                "route not applied within 20 s:\n{yaml}"
            );
            std::thread::sleep(Duration::from_millis(20));
        }
        start.elapsed()
    }
}

fn only(t: &BTreeMap<String, usize>, prefix: &str) -> bool {
    !t.is_empty() && t.keys().all(|k| k.starts_with(prefix))
}

fn is_canary(pod: &str) -> bool {
    pod.starts_with("podinfo-") && !pod.starts_with("podinfo-primary-")
}

/// Traffic to the canary with a known outcome, then to the primary, all failing. Returns
/// (canary requests, canary failures) sent.
const CANARY_REQUESTS: usize = 200;
fn known_traffic(m: &Mesh) -> (usize, usize) {
    let mut c = m.conn();
    let mut failed = 0;
    for i in 0..CANARY_REQUESTS {
        let mut h = vec![("x-canary", "insider")];
        match i % 10 {
            // 10 % answered 500 by the application,
            0 => h.push(("x-testapp-fail", "500")),
            // 10 % answered after 300 ms: the (250, 500] bucket of Istio's histogram.
            5 => h.push(("x-testapp-delay-ms", "300")),
            _ => {}
        }
        let a = c.get(&h).expect("canary request");
        assert!(is_canary(&a.served_by), "{a:?}");
        if a.status != 200 {
            assert_eq!(a.status, 500, "{a:?}");
            failed += 1;
        }
    }
    for _ in 0..50 {
        let a = c
            .get(&[("x-testapp-fail", "500")])
            .expect("primary request");
        assert_eq!(a.status, 500);
        assert!(a.served_by.starts_with("podinfo-primary-"), "{a:?}");
    }
    (CANARY_REQUESTS, failed)
}

/// Forty requests of each kind, so that every series exists, with a count of its own,
/// before the measured window: `rate` extrapolates a series to the window's start unless
/// its count would reach zero on the way, which for a series born inside the window (or
/// one small against its increase) would weigh it differently from the others.
fn warm_up(m: &Mesh) {
    let mut c = m.conn();
    for h in [
        vec![("x-canary", "insider")],
        vec![("x-canary", "insider"), ("x-testapp-fail", "500")],
        vec![("x-canary", "insider"), ("x-testapp-delay-ms", "300")],
        vec![("x-testapp-fail", "500")],
    ] {
        for _ in 0..40 {
            c.get(&h).expect("warm-up request");
        }
    }
}

/// Sum of the canary's request counters reported as `reporter`, now.
fn canary_total(m: &Mesh, reporter: &str) -> f64 {
    let q = format!(
        "sum(istio_requests_total{{reporter=\"{reporter}\",destination_workload_namespace=\"{NS}\",destination_workload=\"podinfo\"}})"
    );
    let r = prom_query(&m.prom, &q, unix_now());
    if r.is_empty() {
        0.0
    } else {
        single(&r, &q)
    }
}

/// Evaluates `queries` ((success-rate, duration) templates) over a window holding exactly
/// `known_traffic`: (success rate of `podinfo`, p99 of `podinfo`, success rate of
/// `podinfo-primary`) as Flagger would read them, `None` when a query finds nothing.
fn measure(m: &Mesh, success: &str, duration: &str, reporter: &str) -> [Option<f64>; 3] {
    warm_up(m);
    // The warm-up is scraped (every second) before the window starts.
    std::thread::sleep(Duration::from_secs(4));
    let before = canary_total(m, reporter);
    assert!(
        before >= 120.0,
        "the warm-up is not in Prometheus: {before}"
    );
    let window_start = unix_now();
    let (sent, failed) = known_traffic(m);
    assert_eq!((sent, failed), (200, 20));
    // Every request of the window is in Prometheus before the window ends.
    let deadline = Instant::now() + Duration::from_secs(30);
    let mut seen = before;
    while Instant::now() < deadline && seen < before + 200.0 {
        std::thread::sleep(Duration::from_millis(300));
        seen = canary_total(m, reporter);
    }
    assert_eq!(seen - before, 200.0, "the window's requests in Prometheus");
    std::thread::sleep(Duration::from_secs(2));
    let at = unix_now();
    let interval = format!("{}s", (at - window_start + 1.0).ceil() as u64);
    let value = |tmpl: &str, target: &str| {
        let q = render(tmpl, NS, target, &interval);
        let r = prom_query(&m.prom, &q, at);
        eprintln!("  {} → {r:?}", q.split_whitespace().collect::<String>());
        (!r.is_empty()).then(|| single(&r, &q))
    };
    [
        value(success, "podinfo"),
        value(duration, "podinfo"),
        value(success, "podinfo-primary"),
    ]
}

/// What `histogram_quantile(0.99, …)` gives for `known_traffic` with Istio's default
/// buckets: 180 fast requests (≤ 250 ms) and 20 in (250, 500]: rank 198 lies 18/20 into
/// that bucket, 250 + 0.9 × 250.
const EXPECTED_P99_MS: f64 = 475.0;

fn assert_flagger_values(v: [Option<f64>; 3], what: &str, primary_checked: bool) {
    let [rate, p99, primary] = v;
    let rate = rate.unwrap_or_else(|| panic!("{what}: request-success-rate found nothing"));
    let p99 = p99.unwrap_or_else(|| panic!("{what}: request-duration found nothing"));
    assert!((rate - 90.0).abs() < 1e-9, "{what}: success rate {rate}");
    assert!(
        (p99 - EXPECTED_P99_MS).abs() < 1e-6,
        "{what}: p99 {p99} ms, expected {EXPECTED_P99_MS}"
    );
    // The primary's answers (all 500 in the window) are not the canary's.
    if primary_checked {
        assert_eq!(primary, Some(0.0), "{what}: primary success rate");
    }
}

/// A MetricTemplate's query from examples/flagger/metric-templates.yaml.
fn template_query(name: &str) -> String {
    let text = example("metric-templates.yaml");
    for doc in serde_yaml_ng::Deserializer::from_str(&text) {
        let v: serde_yaml_ng::Value = serde::Deserialize::deserialize(doc).unwrap();
        if v["metadata"]["name"].as_str() == Some(name) {
            return v["spec"]["query"].as_str().unwrap().to_string();
        }
    }
    panic!("no MetricTemplate {name}")
}

fn squash(s: &str) -> String {
    s.split_whitespace().collect()
}

#[test]
fn flagger_istio_provider_works_against_meshwork() {
    tool("curl");
    tool("prometheus");
    let manifests = tempfile::tempdir().unwrap();
    for e in std::fs::read_dir(repo_root().join("examples/flagger/mesh")).unwrap() {
        let e = e.unwrap();
        std::fs::copy(e.path(), manifests.path().join(e.file_name())).unwrap();
    }
    let state = tempfile::tempdir().unwrap();
    let state = state.path();
    let up = meshwork(
        state,
        &[
            "up",
            manifests.path().to_str().unwrap(),
            "--nodes",
            "2",
            "--mode",
            "loopback",
        ],
    );
    let _down = Down(state);
    assert!(up.status.success(), "{}", text(&up));
    let st = meshwork(state, &["status", "--json"]);
    assert!(st.status.success(), "{}", text(&st));
    let st: Value = serde_json::from_slice(&st.stdout).unwrap();
    let pod = st["pods"]
        .as_array()
        .unwrap()
        .iter()
        .find(|p| p["name"] == "loadtester")
        .unwrap_or_else(|| panic!("no loadtester pod: {st:#}"));
    let prom = st["prometheus"]["url"].as_str().unwrap_or_default();
    assert!(prom.starts_with("http://127.0.0.1:"), "{st:#}");
    let waypoint_metrics = st["metrics"]
        .as_array()
        .unwrap()
        .iter()
        .find(|m| m["name"] == "test/waypoint-waypoint")
        .and_then(|m| m["addr"].as_str())
        .map(|a| format!("http://{a}/metrics"))
        .unwrap_or_else(|| panic!("no waypoint metrics endpoint: {st:#}"));
    // `up` runs the control plane on its copy of the directory (it copies edits of the
    // user's directory there): written directly, as Flagger writes the API server.
    let live = state.join("run/manifests");
    assert!(
        live.join("40-virtualservice.yaml").is_file(),
        "no live copy of the manifests at {}",
        live.display()
    );
    let m = Mesh {
        manifests: live,
        prom: prom.to_string(),
        socks: pod["socks"]
            .as_str()
            .and_then(|s| s.parse().ok())
            .unwrap_or_else(|| panic!("loadtester has no SOCKS5 entry: {pod}")),
        user: format!("{NS}/loadtester"),
        waypoint_metrics,
    };

    // Flagger's initial VirtualService: everything to the primary, canary at weight 0.
    let deadline = Instant::now() + Duration::from_secs(60);
    loop {
        if let Ok(a) = Conn::open(m.socks, &m.user).and_then(|mut c| c.get(&[])) {
            if a.status == 200 {
                break;
            }
        }
        assert!(Instant::now() < deadline, "podinfo never answered");
        std::thread::sleep(Duration::from_millis(100));
    }
    let t = m.tally(40, &[]);
    assert!(only(&t, "podinfo-primary-"), "{t:?}");
    assert_eq!(t.len(), 2, "both primary replicas serve: {t:?}");

    // A/B: the header or the cookie to the canary, the rest to the primary.
    let took = m.route(&example("routes/ab-testing.yaml"), |m| {
        let t = m.tally(1, &[("x-canary", "insider")]);
        t.keys().all(|k| is_canary(k))
    });
    eprintln!("A/B VirtualService applied in {took:?}");
    let t = m.tally(20, &[("x-canary", "insider")]);
    assert_eq!(t.get("podinfo-0"), Some(&20), "{t:?}");
    // Flagger's documented cookie regex, fully anchored as in Istio (RE2 full match).
    for cookie in ["canary=always", "session=1;canary=always;theme=dark"] {
        let t = m.tally(10, &[("cookie", cookie)]);
        assert_eq!(t.get("podinfo-0"), Some(&10), "{cookie}: {t:?}");
    }
    let t = m.tally(20, &[("cookie", "session=1; canary=never")]);
    assert!(only(&t, "podinfo-primary-"), "{t:?}");
    let t = m.tally(20, &[("x-canary", "outsider")]);
    assert!(only(&t, "podinfo-primary-"), "{t:?}");

    // Session affinity: a first request is split by weight (80/20) and its answer sets the
    // cookie of the side that served it; the cookie keeps the client there.
    m.route(&example("routes/session-affinity.yaml"), |m| {
        let mut c = m.conn();
        (0..20).any(|_| {
            c.get(&[])
                .is_ok_and(|a| a.set_cookie.iter().any(|s| s.starts_with("flagger-")))
        })
    });
    let mut c = m.conn();
    let (mut to_canary, mut first) = (0, 0);
    for _ in 0..200 {
        let a = c.get(&[]).expect("request");
        assert_eq!(a.status, 200);
        first += 1;
        let want = if is_canary(&a.served_by) {
            to_canary += 1;
            "flagger-cookie=LpHWSqMtzE; Max-Age=21600"
        } else {
            "flagger-primary-cookie=kTzBqJNcuH; Max-Age=60"
        };
        assert_eq!(a.set_cookie, vec![want.to_string()], "{a:?}");
    }
    let share = to_canary as f64 / first as f64;
    eprintln!("session affinity: {to_canary}/{first} new sessions to the canary (weight 20)");
    assert!((0.1..=0.3).contains(&share), "{to_canary}/{first}");
    let t = m.tally(30, &[("Cookie", "flagger-cookie=LpHWSqMtzE; other=1")]);
    assert_eq!(t.get("podinfo-0"), Some(&30), "{t:?}");
    let t = m.tally(30, &[("Cookie", "flagger-primary-cookie=kTzBqJNcuH")]);
    assert!(only(&t, "podinfo-primary-"), "{t:?}");

    // Flagger's built-in queries, verbatim, on the waypoint's metrics.
    // (Away from the 80/20 split: ten of each must go their way.)
    m.route(&example("routes/ab-testing.yaml"), |m| {
        let t = m.tally(10, &[("x-canary", "insider")]);
        t.keys().all(|k| is_canary(k)) && only(&m.tally(10, &[]), "podinfo-primary-")
    });
    let success = example("flagger-queries/request-success-rate.promql");
    let duration = example("flagger-queries/request-duration.promql");
    assert!(
        success.contains("reporter=\"destination\"")
            && duration.contains("reporter=\"destination\"")
    );
    let ambient_success = template_query("ambient-request-success-rate");
    let ambient_duration = template_query("ambient-request-duration");
    // The ambient templates are Flagger's queries with the waypoint as reporter.
    assert_eq!(
        squash(&ambient_success),
        squash(&success.replace("reporter=\"destination\"", "reporter=\"waypoint\""))
    );
    assert_eq!(
        squash(&ambient_duration),
        squash(&duration.replace("reporter=\"destination\"", "reporter=\"waypoint\""))
    );
    eprintln!("Istio ambient reporting (reporter=\"waypoint\"), Flagger's queries verbatim:");
    let verbatim = measure(&m, &success, &duration, "waypoint");
    // As on Istio ambient: nothing reports as `destination`, Flagger's checks find no values.
    assert_eq!(verbatim, [None, None, None], "Flagger's verbatim queries");
    eprintln!("the ambient MetricTemplates (examples/flagger/metric-templates.yaml):");
    let ambient = measure(&m, &ambient_success, &ambient_duration, "waypoint");
    assert_flagger_values(ambient, "ambient MetricTemplates", true);
    eprintln!(
        "ambient MetricTemplates: success rate {:?} %, p99 {:?} ms",
        ambient[0], ambient[1]
    );

    // Opt-in: the Telemetry API makes the waypoint report as `destination`.
    let start = Instant::now();
    write_manifest(
        &m.manifests,
        "50-telemetry.yaml",
        &example("telemetry-reporter-destination.yaml"),
    );
    loop {
        m.tally(1, &[("x-canary", "insider")]);
        let o = Command::new(tool("curl"))
            .args(["-sS", "--max-time", "5", &m.waypoint_metrics])
            .output()
            .unwrap();
        let body = String::from_utf8_lossy(&o.stdout);
        if body.lines().any(|l| {
            l.starts_with("istio_requests_total{")
                && l.contains("reporter=\"destination\"")
                && l.contains("destination_workload=\"podinfo\"")
        }) {
            break;
        }
        assert!(
            start.elapsed() < Duration::from_secs(20),
            "Telemetry not applied: {body}"
        );
        std::thread::sleep(Duration::from_millis(100));
    }
    eprintln!("with telemetry-reporter-destination.yaml, Flagger's queries verbatim:");
    let opt_in = measure(&m, &success, &duration, "destination");
    // The canary's values are checked. The primary's success rate is empty here: with the
    // Telemetry, its series as `destination` were born with this phase's all-500 traffic,
    // so the numerator (response_code!~"5.*") has no series at all and PromQL's division
    // has none either; Flagger reports that as "no values found", on Istio too.
    assert_flagger_values(opt_in, "verbatim queries with the opt-in Telemetry", false);
    eprintln!(
        "opt-in Telemetry: success rate {:?} %, p99 {:?} ms",
        opt_in[0], opt_in[1]
    );

    // Weight shifts under load.
    m.route(&weighted_vs(100, 0), |m| {
        only(&m.tally(10, &[("x-canary", "insider")]), "podinfo-primary-")
    });
    shift_under_load(&m);
}

/// One response seen by the load: when, and who answered (or the failure).
struct Seen {
    at: Instant,
    outcome: Result<String, String>,
}

const WORKERS: usize = 4;
/// Upper bound of the load, whatever the timing.
const MAX_REQUESTS: usize = 200_000;
const HOLD: Duration = Duration::from_millis(2500);
/// What the test counts as the time a step takes to reach the wire: responses before it
/// are not attributed to the step's weights (failures are counted throughout).
const SETTLE: Duration = Duration::from_millis(500);

fn shift_under_load(m: &Mesh) {
    let stop = Arc::new(AtomicBool::new(false));
    let workers: Vec<_> = (0..WORKERS)
        .map(|w| {
            let stop = stop.clone();
            let (socks, user) = (m.socks, m.user.clone());
            std::thread::spawn(move || {
                let mut seen = Vec::new();
                let mut conn = Conn::open(socks, &user).ok();
                let mut i = 0usize;
                while !stop.load(Ordering::Relaxed) && i < MAX_REQUESTS / WORKERS {
                    i += 1;
                    // Every 25th request is in flight for 150 ms: some span a weight change.
                    let slow = [("x-testapp-delay-ms", "150")];
                    let h: &[(&str, &str)] = if (i + w).is_multiple_of(25) {
                        &slow
                    } else {
                        &[]
                    };
                    let r = match conn.as_mut() {
                        Some(c) => c.get(h).map_err(|e| e.to_string()),
                        None => Err("no connection".to_string()),
                    };
                    let outcome = match r {
                        Ok(a) if a.status == 200 => Ok(a.served_by),
                        Ok(a) => Err(format!("HTTP {} from {:?}", a.status, a.served_by)),
                        Err(e) => {
                            // A broken connection is a failure; the client reconnects.
                            conn = Conn::open(socks, &user).ok();
                            Err(e)
                        }
                    };
                    seen.push(Seen {
                        at: Instant::now(),
                        outcome,
                    });
                }
                seen
            })
        })
        .collect();
    let steps: [(u32, u32); 8] = [
        (100, 0),
        (90, 10),
        (80, 20),
        (70, 30),
        (60, 40),
        (50, 50),
        (0, 100),
        (100, 0),
    ];
    let mut marks = Vec::new();
    std::thread::sleep(Duration::from_millis(500));
    for (i, (p, c)) in steps.iter().enumerate() {
        if i > 0 {
            write_manifest(&m.manifests, "40-virtualservice.yaml", &weighted_vs(*p, *c));
        }
        marks.push(Instant::now());
        std::thread::sleep(HOLD);
    }
    marks.push(Instant::now());
    stop.store(true, Ordering::Relaxed);
    let seen: Vec<Seen> = workers
        .into_iter()
        .flat_map(|w| w.join().expect("load worker"))
        .collect();
    let span = marks[marks.len() - 1] - marks[0];
    let failures: Vec<&String> = seen
        .iter()
        .filter_map(|s| s.outcome.as_ref().err())
        .collect();
    eprintln!(
        "weight shifts under load: {} requests in {:.1} s ({:.0}/s) over {WORKERS} keep-alive connections, {} failed",
        seen.len(),
        span.as_secs_f64(),
        seen.len() as f64 / span.as_secs_f64(),
        failures.len()
    );
    let mut report = Vec::new();
    for (i, (p, c)) in steps.iter().enumerate() {
        let (from, to) = (marks[i] + SETTLE, marks[i + 1]);
        let step: Vec<&String> = seen
            .iter()
            .filter(|s| s.at >= from && s.at < to)
            .filter_map(|s| s.outcome.as_ref().ok())
            .collect();
        let canary = step.iter().filter(|p| is_canary(p)).count();
        let share = 100.0 * canary as f64 / step.len().max(1) as f64;
        eprintln!(
            "  step {i}: weights {p}/{c} → canary served {canary}/{} ({share:.1} %)",
            step.len()
        );
        report.push((*c, share, step.len()));
    }
    // The time from writing 0/100 to the last primary answer.
    let switch = marks[6];
    let last_primary = seen
        .iter()
        .filter(|s| s.at >= switch && s.at < marks[7])
        .filter(|s| s.outcome.as_ref().is_ok_and(|p| !is_canary(p)))
        .map(|s| s.at - switch)
        .max()
        .unwrap_or_default();
    eprintln!(
        "  100/0 → 0/100: last primary answer {:.0} ms after the file was written",
        last_primary.as_secs_f64() * 1000.0
    );
    assert!(
        failures.is_empty(),
        "{} failed: {:?}",
        failures.len(),
        &failures[..failures.len().min(10)]
    );
    for (weight, share, n) in report {
        assert!(
            n >= 50,
            "too few answers in a step to judge its weights: {n}"
        );
        let w = f64::from(weight);
        if weight == 0 || weight == 100 {
            assert_eq!(share, w, "weight {weight}");
        } else {
            assert!((share - w).abs() <= 10.0, "weight {weight}: {share:.1} %");
        }
    }
    assert!(last_primary < SETTLE, "the switch took {last_primary:?}");
}

//! Both proxies' metrics, checked with the real Prometheus tools (Debian `prometheus`
//! package: `promtool` and `prometheus`, installed by `scripts/setup`):
//!
//! - the loopback demo (`meshwork demo --mode loopback --keep`) runs the mesh; the test sends
//!   a known number of requests through a ztunnel's SOCKS5 entry and the waypoint;
//! - `promtool check metrics` lints each proxy's `/metrics`;
//! - a real `prometheus` scrapes the proxies every second and its query API must return
//!   exactly the counts the proxies expose, which grew by exactly the requests sent;
//! - every PromQL expression of the Grafana dashboard (charts/dashboards/meshwork.json)
//!   compiles (`promtool check rules`) and returns series on the live data;
//! - the Kubernetes scrape jobs (charts/prometheus/scrape-config.yaml) pass
//!   `promtool check config`.
//!
//! A missing tool fails the test (never a silent skip): run `scripts/setup`.

mod common;

use std::collections::BTreeMap;
use std::io::{BufRead, BufReader, Write};
use std::path::{Path, PathBuf};
use std::process::{Command, Stdio};
use std::sync::mpsc;
use std::time::{Duration, Instant};

use common::{bin_dir, tool, Guard};
use serde_json::{json, Value};

/// Requests the test sends through the mesh.
const REQUESTS: u64 = 20;
const SERVICE_HOST: &str = "order-service.production.svc.cluster.local";

/// Lint messages `promtool check metrics` prints for names the Istio API fixes: the Istio
/// standard metric `istio_request_duration_milliseconds` must keep its name (dashboards and
/// alerts everywhere query it), although Prometheus' naming lint prefers seconds.
const ISTIO_CONTRACT_LINTS: [&str; 1] =
    [r#"istio_request_duration_milliseconds use base unit "seconds" instead of "milliseconds""#];

fn repo_root() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR"))
        .parent()
        .expect("workspace root")
        .to_path_buf()
}

/// The running demo mesh and the addresses its `--keep` banner printed.
struct Mesh {
    _demo: Guard,
    socks: String,
    waypoint_metrics: String,
    ztunnel_metrics: BTreeMap<String, String>,
}

fn start_mesh() -> Mesh {
    let dir = bin_dir();
    let mut child = Command::new(dir.join("meshwork"))
        .args(["demo", "--mode", "loopback", "--keep"])
        .stdout(Stdio::null())
        .stderr(Stdio::piped())
        .spawn()
        .expect("starting meshwork demo");
    let stderr = child.stderr.take().unwrap();
    let demo = Guard::new(child);
    let (tx, rx) = mpsc::channel();
    std::thread::spawn(move || {
        for line in BufReader::new(stderr).lines().map_while(Result::ok) {
            if tx.send(line).is_err() {
                return;
            }
        }
    });
    // The demo drives its five patterns before the banner: allow for a loaded machine.
    let deadline = Instant::now() + Duration::from_secs(180);
    let mut seen = Vec::new();
    let (mut socks, mut waypoint) = (None, None);
    loop {
        let left = deadline.saturating_duration_since(Instant::now());
        let line = rx
            .recv_timeout(left)
            .unwrap_or_else(|_| panic!("no complete --keep banner: {seen:#?}"));
        if let (None, Some(rest)) = (&socks, line.split("curl --socks5-hostname ").nth(1)) {
            socks = rest.split_whitespace().next().map(str::to_string);
        }
        if let Some(rest) = line.split("waypoint admin: ").nth(1) {
            waypoint = Some(rest.trim().to_string());
        }
        if let Some(rest) = line.trim().strip_prefix("ztunnel metrics: ") {
            let ztunnel_metrics = rest
                .split(", ")
                .map(|entry| {
                    let (node, url) = entry.split_once(' ').expect("`<node> <url>`");
                    (node.to_string(), url.to_string())
                })
                .collect();
            return Mesh {
                _demo: demo,
                socks: socks.unwrap_or_else(|| panic!("no SOCKS5 address: {seen:#?}")),
                waypoint_metrics: waypoint
                    .unwrap_or_else(|| panic!("no waypoint metrics URL: {seen:#?}")),
                ztunnel_metrics,
            };
        }
        seen.push(line);
    }
}

/// GET with curl (bounded), the body as text.
fn get(url: &str, extra: &[&str]) -> String {
    let out = Command::new(tool("curl"))
        .args(["-sS", "--fail", "--max-time", "10"])
        .args(extra)
        .arg(url)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "GET {url}: {}",
        String::from_utf8_lossy(&out.stderr)
    );
    String::from_utf8(out.stdout).expect("UTF-8 body")
}

/// `promtool check metrics` on `text`: the problems it reports beyond the Istio contract's.
fn promtool_problems(text: &str) -> Vec<String> {
    let mut child = Command::new(tool("promtool"))
        .args(["check", "metrics"])
        .stdin(Stdio::piped())
        .stdout(Stdio::piped())
        .stderr(Stdio::piped())
        .spawn()
        .unwrap();
    child
        .stdin
        .take()
        .unwrap()
        .write_all(text.as_bytes())
        .unwrap();
    let out = child.wait_with_output().unwrap();
    let report = format!(
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    let problems: Vec<String> = report
        .lines()
        .map(str::trim)
        .filter(|l| !l.is_empty() && !ISTIO_CONTRACT_LINTS.contains(l))
        .map(str::to_string)
        .collect();
    if problems.is_empty() {
        // Exit code 3 means lint findings (all of them the Istio contract's, above); any
        // other failure says something.
        assert!(
            matches!(out.status.code(), Some(0 | 3)),
            "promtool: {:?} {report}",
            out.status
        );
    }
    problems
}

/// The Content-Type of a GET's response ("" when there is none).
fn content_type(url: &str) -> String {
    get(url, &["-o", "/dev/null", "-w", "%{content_type}"])
}

/// Sum of the samples of `metric` whose labels include every `matchers` pair, from the
/// text exposition.
fn exposed(text: &str, metric: &str, matchers: &[(&str, &str)]) -> f64 {
    text.lines()
        .filter(|l| {
            l.strip_prefix(metric)
                .is_some_and(|rest| rest.starts_with('{'))
        })
        .filter(|l| {
            matchers
                .iter()
                .all(|(k, v)| l.contains(&format!("{k}=\"{v}\"")))
        })
        .map(|l| {
            let value = l.rsplit(' ').next().unwrap();
            value.parse::<f64>().unwrap_or_else(|e| panic!("{l}: {e}"))
        })
        .sum()
}

/// Requests through the ztunnel's SOCKS5 entry as `production/order-client`; the status codes.
fn send_requests(socks: &str, n: u64) -> BTreeMap<String, u64> {
    let mut codes = BTreeMap::new();
    for _ in 0..n {
        let code = get(
            "http://order-service:8080/api/orders",
            &[
                "--socks5-hostname",
                socks,
                "--proxy-user",
                "production/order-client:x",
                "-o",
                "/dev/null",
                "-w",
                "%{http_code}",
                // The status is counted whatever it is: no --fail semantics wanted here.
                "--no-fail",
            ],
        );
        *codes.entry(code).or_insert(0) += 1;
    }
    codes
}

/// A real Prometheus on 127.0.0.1 scraping `jobs` (job name → targets) every second.
struct Prometheus {
    _process: Guard,
    base: String,
    _dir: tempfile::TempDir,
}

fn free_port() -> u16 {
    std::net::TcpListener::bind("127.0.0.1:0")
        .unwrap()
        .local_addr()
        .unwrap()
        .port()
}

fn start_prometheus(jobs: &[(&str, Vec<String>)]) -> Prometheus {
    let dir = tempfile::tempdir().unwrap();
    let scrape_configs: Vec<Value> = jobs
        .iter()
        .map(|(job, targets)| {
            json!({"job_name": job, "scrape_interval": "1s", "scrape_timeout": "1s",
                   "static_configs": [{"targets": targets}]})
        })
        .collect();
    // JSON is YAML: Prometheus reads it as its configuration file.
    let config = json!({"global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
                        "scrape_configs": scrape_configs});
    let config_file = dir.path().join("prometheus.yml");
    std::fs::write(&config_file, config.to_string()).unwrap();
    let check = Command::new(tool("promtool"))
        .args(["check", "config"])
        .arg(&config_file)
        .output()
        .unwrap();
    assert!(check.status.success(), "{check:?}");
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new(tool("prometheus"))
        .arg(format!("--config.file={}", config_file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.path().join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.path().join("prometheus.log")).unwrap())
        .spawn()
        .expect("starting prometheus");
    Prometheus {
        _process: Guard::new(child),
        base: format!("http://{listen}"),
        _dir: dir,
    }
}

impl Prometheus {
    fn api(&self, path: &str, params: &[(&str, &str)]) -> Value {
        let mut args = vec!["--get".to_string()];
        for (k, v) in params {
            args.push("--data-urlencode".into());
            args.push(format!("{k}={v}"));
        }
        let args: Vec<&str> = args.iter().map(String::as_str).collect();
        let body = get(&format!("{}{path}", self.base), &args);
        let v: Value = serde_json::from_str(&body).unwrap_or_else(|e| panic!("{e}: {body}"));
        assert_eq!(v["status"], "success", "{path} {params:?}: {v}");
        v["data"].clone()
    }

    fn query(&self, expr: &str) -> Vec<Value> {
        let data = self.api("/api/v1/query", &[("query", expr)]);
        data["result"].as_array().cloned().unwrap_or_default()
    }

    /// Sum of an instant vector's values.
    fn value(&self, expr: &str) -> f64 {
        self.query(expr)
            .iter()
            .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
            .sum()
    }
}

/// Polls `f` every 200 ms until it returns `Some`, for at most `limit`.
fn wait_for<T>(limit: Duration, what: &str, mut f: impl FnMut() -> Option<T>) -> T {
    let deadline = Instant::now() + limit;
    loop {
        if let Some(v) = f() {
            return v;
        }
        assert!(Instant::now() < deadline, "{what}: not within {limit:?}");
        std::thread::sleep(Duration::from_millis(200));
    }
}

fn host_port(url: &str) -> String {
    url.trim_start_matches("http://")
        .trim_end_matches("/metrics")
        .to_string()
}

#[test]
fn prometheus_scrapes_both_proxies_and_counts_the_requests() {
    for t in ["promtool", "prometheus", "curl"] {
        tool(t);
    }
    let mesh = start_mesh();
    let node_a = &mesh.ztunnel_metrics["node-a"];

    // 1. promtool lints every proxy's exposition.
    let waypoint_before = get(&mesh.waypoint_metrics, &[]);
    for name in [
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "istio_request_bytes_bucket",
        "istio_response_bytes_bucket",
    ] {
        assert!(
            waypoint_before.contains(&format!("\n{name}{{")),
            "waypoint: no {name}"
        );
    }
    let problems = promtool_problems(&waypoint_before);
    assert!(problems.is_empty(), "waypoint /metrics: {problems:#?}");
    let ct = content_type(&mesh.waypoint_metrics);
    assert!(
        ct.starts_with("text/plain; version=0.0.4"),
        "waypoint: {ct:?}"
    );
    for (node, url) in &mesh.ztunnel_metrics {
        let text = get(url, &[]);
        for name in [
            "istio_tcp_connections_opened_total",
            "istio_tcp_connections_closed_total",
            "istio_tcp_sent_bytes_total",
            "istio_tcp_received_bytes_total",
        ] {
            assert!(text.contains(&format!("\n{name}{{")), "{node}: no {name}");
        }
        let problems = promtool_problems(&text);
        assert!(
            problems.is_empty(),
            "ztunnel {node} /metrics: {problems:#?}"
        );
        let ct = content_type(url);
        assert!(
            ct.starts_with("text/plain; version=0.0.4"),
            "ztunnel {node}: {ct:?}"
        );
    }

    // 2. A known number of requests; the proxies count exactly them.
    let http = [
        ("reporter", "waypoint"),
        ("destination_service", SERVICE_HOST),
    ];
    let tcp = [
        ("reporter", "source"),
        ("source_workload", "order-client"),
        ("destination_service", SERVICE_HOST),
    ];
    let za_before = get(node_a, &[]);
    let requests_before = exposed(&waypoint_before, "istio_requests_total", &http);
    let opened_before = exposed(&za_before, "istio_tcp_connections_opened_total", &tcp);
    let codes = send_requests(&mesh.socks, REQUESTS);
    let waypoint_after = get(&mesh.waypoint_metrics, &[]);
    let za_after = get(node_a, &[]);
    let requests_after = exposed(&waypoint_after, "istio_requests_total", &http);
    let opened_after = exposed(&za_after, "istio_tcp_connections_opened_total", &tcp);
    let sent_after = exposed(&za_after, "istio_tcp_sent_bytes_total", &tcp);
    assert_eq!(
        requests_after - requests_before,
        REQUESTS as f64,
        "codes {codes:?}"
    );
    assert_eq!(opened_after - opened_before, REQUESTS as f64);
    let ok: u64 = codes
        .iter()
        .filter(|(c, _)| c.starts_with('2'))
        .map(|(_, n)| n)
        .sum();
    let ok_exposed = exposed(
        &waypoint_after,
        "istio_requests_total",
        &[http[0], http[1], ("response_code", "200")],
    ) - exposed(
        &waypoint_before,
        "istio_requests_total",
        &[http[0], http[1], ("response_code", "200")],
    );
    assert_eq!(ok_exposed, ok as f64, "codes {codes:?}");

    // 3. A real Prometheus scrapes both proxies and answers with the same counts.
    let ztunnels: Vec<String> = mesh
        .ztunnel_metrics
        .values()
        .map(|u| host_port(u))
        .collect();
    let prom = start_prometheus(&[
        ("meshwork-waypoint", vec![host_port(&mesh.waypoint_metrics)]),
        ("meshwork-ztunnel", ztunnels.clone()),
    ]);
    let expected_targets = 1 + ztunnels.len();
    wait_for(Duration::from_secs(30), "every target up", || {
        let ready = Command::new(tool("curl"))
            .args(["-sS", "--fail", "--max-time", "2"])
            .arg(format!("{}/-/ready", prom.base))
            .output()
            .ok()?;
        if !ready.status.success() {
            return None;
        }
        let targets = prom.api("/api/v1/targets", &[]);
        let active = targets["activeTargets"].as_array()?;
        (active.len() == expected_targets && active.iter().all(|t| t["health"] == "up"))
            .then_some(())
    });
    let requests_q = format!(
        r#"sum(istio_requests_total{{job="meshwork-waypoint", reporter="waypoint", destination_service="{SERVICE_HOST}"}})"#
    );
    let opened_q = format!(
        r#"sum(istio_tcp_connections_opened_total{{job="meshwork-ztunnel", instance="{}", reporter="source", source_workload="order-client", destination_service="{SERVICE_HOST}"}})"#,
        host_port(node_a)
    );
    let sent_q = opened_q.replace(
        "istio_tcp_connections_opened_total",
        "istio_tcp_sent_bytes_total",
    );
    wait_for(Duration::from_secs(30), "Prometheus' counts", || {
        let got = (
            prom.value(&requests_q),
            prom.value(&opened_q),
            prom.value(&sent_q),
        );
        (got == (requests_after, opened_after, sent_after)).then_some(())
    });
    assert!(requests_after >= REQUESTS as f64 && sent_after > 0.0);

    // 4. The dashboard's every expression evaluates on these data and returns series.
    for (title, expr) in dashboard_exprs() {
        let live = live_expr(&expr);
        let series = wait_for(Duration::from_secs(15), &format!("{title}: {live}"), || {
            let r = prom.query(&live);
            (!r.is_empty()).then_some(r)
        });
        assert!(!series.is_empty(), "{title}");
    }
}

/// The dashboard's panel expressions (rows' nested panels included), as (title, expr).
fn dashboard_exprs() -> Vec<(String, String)> {
    let path = repo_root().join("charts/dashboards/meshwork.json");
    let text = std::fs::read_to_string(&path).unwrap();
    let dashboard: Value =
        serde_json::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    fn walk(panels: &Value, out: &mut Vec<(String, String)>) {
        for p in panels.as_array().into_iter().flatten() {
            walk(&p["panels"], out);
            if p["type"] == "row" {
                continue;
            }
            let title = p["title"].as_str().unwrap_or("?").to_string();
            let targets = p["targets"].as_array().cloned().unwrap_or_default();
            assert!(!targets.is_empty(), "panel {title} has no query");
            for t in targets {
                let expr = t["expr"]
                    .as_str()
                    .unwrap_or_else(|| panic!("{title}: no expr"));
                out.push((title.clone(), expr.to_string()));
            }
        }
    }
    let mut out = Vec::new();
    walk(&dashboard["panels"], &mut out);
    out
}

/// A dashboard expression with Grafana's variables replaced by concrete values.
fn live_expr(expr: &str) -> String {
    expr.replace("$__rate_interval", "1m")
        .replace("${namespace}", ".*")
        .replace("$namespace", ".*")
}

#[test]
fn dashboard_covers_the_istio_metrics_and_every_expression_compiles() {
    let exprs = dashboard_exprs();
    let all: String = exprs.iter().map(|(_, e)| e.as_str()).collect();
    for needed in [
        "istio_requests_total",
        "istio_request_duration_milliseconds_bucket",
        "histogram_quantile(0.5,",
        "histogram_quantile(0.99,",
        "response_code!~\"5..\"",
        "istio_tcp_sent_bytes_total",
        "istio_tcp_received_bytes_total",
        "istio_tcp_connections_opened_total",
        "istio_tcp_connections_closed_total",
        "meshwork_log_lines_dropped_total",
    ] {
        assert!(all.contains(needed), "the dashboard never queries {needed}");
    }
    let rules: Vec<Value> = exprs
        .iter()
        .enumerate()
        .map(|(i, (_, e))| json!({"record": format!("meshwork:dashboard_panel_{i}"), "expr": live_expr(e)}))
        .collect();
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("dashboard-rules.yml");
    std::fs::write(
        &file,
        json!({"groups": [{"name": "dashboard", "rules": rules}]}).to_string(),
    )
    .unwrap();
    let out = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // Broken PromQL does fail the check (the check can fail).
    std::fs::write(
        &file,
        json!({"groups": [{"name": "bad", "rules": [{"record": "x", "expr": "sum(rate(x[1m])"}]}]})
            .to_string(),
    )
    .unwrap();
    let bad = Command::new(tool("promtool"))
        .args(["check", "rules"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(!bad.status.success());
}

#[test]
fn kubernetes_scrape_jobs_match_the_chart_and_pass_promtool() {
    let root = repo_root();
    let path = root.join("charts/prometheus/scrape-config.yaml");
    let text = std::fs::read_to_string(&path).unwrap();
    let mut config: Value =
        serde_yaml_ng::from_str(&text).unwrap_or_else(|e| panic!("{}: {e}", path.display()));
    let jobs = config["scrape_configs"]
        .as_array_mut()
        .expect("scrape_configs");
    let names: Vec<&str> = jobs.iter().filter_map(|j| j["job_name"].as_str()).collect();
    assert_eq!(names, ["meshwork-ztunnel", "meshwork-waypoint"]);
    // Debian's Prometheus is built without Kubernetes service discovery: the test checks
    // the discovery block here and lets promtool check everything else (relabelling
    // actions, regexes, labels) with a static target in its place.
    for job in jobs.iter_mut() {
        let sd = job
            .as_object_mut()
            .unwrap()
            .remove("kubernetes_sd_configs")
            .expect("kubernetes_sd_configs");
        assert_eq!(sd, json!([{"role": "pod"}]));
        job["static_configs"] = json!([{"targets": ["127.0.0.1:15020"]}]);
    }
    let dir = tempfile::tempdir().unwrap();
    let file = dir.path().join("prometheus.yml");
    std::fs::write(&file, config.to_string()).unwrap();
    let out = Command::new(tool("promtool"))
        .args(["check", "config"])
        .arg(&file)
        .output()
        .unwrap();
    assert!(
        out.status.success(),
        "{}{}",
        String::from_utf8_lossy(&out.stdout),
        String::from_utf8_lossy(&out.stderr)
    );
    // The labels and ports the jobs select on are the chart's.
    let daemonset =
        std::fs::read_to_string(root.join("charts/meshwork/templates/ztunnel-daemonset.yaml"))
            .unwrap();
    for s in [
        "app.kubernetes.io/name: meshwork-ztunnel",
        "name: metrics",
        "containerPort: 15020",
        "--metrics-addr=0.0.0.0:15020",
    ] {
        assert!(daemonset.contains(s), "the ztunnel DaemonSet has no `{s}`");
    }
    let waypoint =
        std::fs::read_to_string(root.join("charts/meshwork/files/waypoint-deployment.yaml"))
            .unwrap();
    for s in [
        "app.kubernetes.io/component: waypoint",
        "gateway.networking.k8s.io/gateway-name:",
        "name: metrics",
        "containerPort: 15020",
        "--metrics-addr=0.0.0.0:15020",
        "--admin-addr=127.0.0.1:15000",
    ] {
        assert!(waypoint.contains(s), "the waypoint Deployment has no `{s}`");
    }
    for s in [
        "regex: meshwork-ztunnel",
        "regex: waypoint",
        "replacement: $1:15020",
    ] {
        assert!(text.contains(s), "scrape-config.yaml has no `{s}`");
    }
}

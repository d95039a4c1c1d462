//! The Prometheus launcher against a real Debian `prometheus`: it scrapes fake proxies
//! serving the recorded metric texts on loopback, answers PromQL over them, agrees with this
//! crate's `histogram_quantile`, runs every expression of the shipped Grafana dashboard
//! (charts/dashboards/meshwork.json) with data, and stops cleanly on SIGTERM.
//!
//! Needs the `prometheus` binary (Debian package `prometheus`, in scripts/setup); the test
//! installs it when missing and skips, saying so, only when it cannot be installed.

mod common;

use std::path::Path;
use std::time::{Duration, Instant};

use common::{advance, ensure_installed, fixture_proxies, free_port, FIXTURES};
use meshwork_observe::graph::Target;
use meshwork_observe::parse::parse;
use meshwork_observe::prometheus::{Job, Options, Prometheus};
use meshwork_observe::quantile::histogram_quantile;
use serde_json::Value;

fn sum_of(result: &[Value]) -> f64 {
    result
        .iter()
        .map(|s| s["value"][1].as_str().unwrap().parse::<f64>().unwrap())
        .sum()
}

/// Polls `expr` until `ok` accepts its result, for at most `limit`.
async fn until(
    p: &Prometheus,
    expr: &str,
    limit: Duration,
    ok: impl Fn(&[Value]) -> bool,
) -> Vec<Value> {
    let deadline = Instant::now() + limit;
    loop {
        let r = p.query(expr).await.unwrap_or_else(|e| panic!("{e}"));
        if ok(&r) {
            return r;
        }
        assert!(
            Instant::now() < deadline,
            "{expr}: last result {r:?} not accepted within {limit:?}; prometheus log:\n{}",
            p.log_tail()
        );
        tokio::time::sleep(Duration::from_millis(250)).await;
    }
}

/// Sum of a family's values in the recorded texts of scrape `which`, filtered by labels.
fn recorded(
    which: usize,
    name: &str,
    filter: impl Fn(&meshwork_observe::parse::Sample) -> bool,
) -> f64 {
    FIXTURES
        .iter()
        .flat_map(|(_, a, b)| parse(if which == 0 { a } else { b }).unwrap())
        .filter(|s| s.name == name && filter(s))
        .map(|s| s.value)
        .sum()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_scrapes_the_proxies_and_answers_promql() {
    if !ensure_installed("prometheus", "prometheus") {
        eprintln!(
            "SKIPPED: the `prometheus` binary is not installed and `apt-get install -y prometheus` \
             failed; scripts/setup installs it"
        );
        return;
    }
    let proxies = fixture_proxies();
    let targets: Vec<Target> = proxies.iter().map(|p| Target::parse(&p.url())).collect();
    let jobs = Job::from_targets("meshwork", &targets).unwrap();
    assert_eq!(jobs.len(), 1);
    let opts = Options {
        binary: None,
        listen: format!("127.0.0.1:{}", free_port()).parse().unwrap(),
        allow_remote: false,
        scrape_interval: Duration::from_secs(1),
    };
    let mut prom = Prometheus::start(&jobs, &opts).unwrap();
    let check = std::process::Command::new("promtool")
        .args(["check", "config"])
        .arg(prom.config_path())
        .output();
    if let Ok(out) = check {
        assert!(out.status.success(), "promtool check config: {out:?}");
    }
    prom.wait_ready(Duration::from_secs(60)).await.unwrap();

    until(
        &prom,
        "up{job=\"meshwork\"}",
        Duration::from_secs(30),
        |r| r.len() == 3 && sum_of(r) == 3.0,
    )
    .await;
    let want0 = recorded(0, "istio_requests_total", |_| true);
    until(
        &prom,
        "sum(istio_requests_total)",
        Duration::from_secs(30),
        |r| sum_of(r) == want0,
    )
    .await;
    advance(&proxies);
    let want1 = recorded(1, "istio_requests_total", |_| true);
    assert_eq!(want1 - want0, 110.0);
    until(
        &prom,
        "sum(istio_requests_total)",
        Duration::from_secs(30),
        |r| sum_of(r) == want1,
    )
    .await;
    until(
        &prom,
        "sum(rate(istio_requests_total[1m]))",
        Duration::from_secs(30),
        |r| sum_of(r) > 0.0,
    )
    .await;
    // Each target is scraped on its own schedule: wait for the ztunnel's scrape 1 too.
    let denied = recorded(1, "istio_tcp_connections_opened_total", |s| {
        s.label("response_flags") == Some("DENY")
    });
    assert_eq!(denied, 24.0);
    until(
        &prom,
        "sum(istio_tcp_connections_opened_total{response_flags=\"DENY\"})",
        Duration::from_secs(30),
        |r| sum_of(r) == denied,
    )
    .await;

    // PromQL's histogram_quantile and ours agree on the recorded buckets.
    for (selector, wl) in [
        ("destination_workload=\"order-v2\"", Some("order-v2")),
        ("destination_workload=\"order-v1\"", Some("order-v1")),
        ("reporter=\"waypoint\"", None),
    ] {
        let mut buckets: std::collections::BTreeMap<String, f64> = Default::default();
        for (_, _, b) in FIXTURES {
            for s in parse(b).unwrap() {
                if s.name == "istio_request_duration_milliseconds_bucket"
                    && wl.is_none_or(|w| s.label("destination_workload") == Some(w))
                {
                    *buckets
                        .entry(s.label("le").unwrap().to_string())
                        .or_default() += s.value;
                }
            }
        }
        let ours: Vec<(f64, f64)> = buckets
            .iter()
            .map(|(le, c)| {
                let le = if le == "+Inf" {
                    f64::INFINITY
                } else {
                    le.parse().unwrap()
                };
                (le, *c)
            })
            .collect();
        for q in [0.5, 0.9, 0.99] {
            let expr = format!(
                "histogram_quantile({q}, sum by (le) (istio_request_duration_milliseconds_bucket{{{selector}}}))"
            );
            let theirs = sum_of(&prom.query(&expr).await.unwrap());
            let mine = histogram_quantile(q, &ours).unwrap();
            assert!(
                (theirs - mine).abs() < 1e-9 * mine.abs().max(1.0),
                "{expr}: prometheus {theirs}, ours {mine}"
            );
        }
    }

    // Every expression of the shipped Grafana dashboard is valid and has data here.
    let dashboard =
        Path::new(env!("CARGO_MANIFEST_DIR")).join("../charts/dashboards/meshwork.json");
    let d: Value = serde_json::from_str(&std::fs::read_to_string(&dashboard).unwrap()).unwrap();
    let mut exprs = Vec::new();
    for p in d["panels"].as_array().unwrap() {
        for t in p["targets"].as_array().into_iter().flatten() {
            if let Some(e) = t["expr"].as_str() {
                exprs.push((
                    p["title"].as_str().unwrap_or("").to_string(),
                    e.replace("$__rate_interval", "1m")
                        .replace("${namespace}", ".*")
                        .replace("$namespace", ".*"),
                ));
            }
        }
    }
    assert!(exprs.len() >= 10, "{exprs:?}");
    for (title, expr) in &exprs {
        let r = until(&prom, expr, Duration::from_secs(20), |r| !r.is_empty()).await;
        assert!(!r.is_empty(), "{title}: {expr}");
    }

    let status = prom.stop(Duration::from_secs(20)).unwrap();
    assert!(status.success(), "prometheus exit on SIGTERM: {status}");
}

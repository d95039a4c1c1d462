//! The canary controller judged by a real Prometheus evaluating Flagger's own built-in
//! queries: Prometheus scrapes a loopback exporter of `istio_requests_total` and
//! `istio_request_duration_milliseconds` (Istio's names and labels, counters the test
//! drives); a healthy revision is promoted step by step, a failing one rolled back.
//! Skipped (with a message) when the `prometheus` binary is not installed.

use std::net::TcpListener as StdListener;
use std::process::{Child, Command, Stdio};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use meshwork_api::{Change, Store};
use meshwork_controlplane::canary::act::Router;
use meshwork_controlplane::canary::machine::Routing;
use meshwork_controlplane::canary::prometheus::PrometheusJudge;
use meshwork_controlplane::canary::spec::{Inputs, Plan};
use meshwork_controlplane::canary::status::Phase;
use meshwork_controlplane::canary::webhook::HttpHooks;
use meshwork_controlplane::canary::{Board, Controller};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::sync::watch;

/// A port below the ephemeral range, free now (the process binding it later).
fn free_port() -> u16 {
    static NEXT: AtomicU64 = AtomicU64::new(0);
    let start = u64::from(std::process::id()).wrapping_mul(7919);
    for _ in 0..12_000 {
        let n = NEXT.fetch_add(1, Ordering::Relaxed);
        let port = (20_000 + start.wrapping_add(n) % 12_000) as u16;
        if StdListener::bind(("127.0.0.1", port)).is_ok() {
            return port;
        }
    }
    panic!("no free port");
}

struct Kill(Child);
impl Drop for Kill {
    fn drop(&mut self) {
        let _ = self.0.kill();
        let _ = self.0.wait();
    }
}

/// The exporter's counters: every 50 ms one request of the target, fast and 200 while
/// healthy, slow and 503 while not.
#[derive(Default)]
struct Traffic {
    ok: AtomicU64,
    failed: AtomicU64,
    unhealthy: AtomicBool,
}

fn exposition(t: &Traffic) -> String {
    let labels = "reporter=\"destination\",destination_workload=\"web\",destination_workload_namespace=\"shop\"";
    let ok = t.ok.load(Ordering::Relaxed);
    let failed = t.failed.load(Ordering::Relaxed);
    let total = ok + failed;
    let mut s = String::from("# TYPE istio_requests_total counter\n");
    s += &format!("istio_requests_total{{{labels},response_code=\"200\"}} {ok}\n");
    s += &format!("istio_requests_total{{{labels},response_code=\"503\"}} {failed}\n");
    s += "# TYPE istio_request_duration_milliseconds histogram\n";
    // Healthy requests take 3 ms, failing ones 800 ms.
    for (le, n) in [
        ("5", ok),
        ("100", ok),
        ("500", ok),
        ("1000", total),
        ("+Inf", total),
    ] {
        s += &format!("istio_request_duration_milliseconds_bucket{{{labels},le=\"{le}\"}} {n}\n");
    }
    s += &format!(
        "istio_request_duration_milliseconds_sum{{{labels}}} {}\n",
        ok * 3 + failed * 800
    );
    s += &format!("istio_request_duration_milliseconds_count{{{labels}}} {total}\n");
    s
}

async fn exporter(traffic: Arc<Traffic>) -> String {
    let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let t = traffic.clone();
    tokio::spawn(async move {
        loop {
            tokio::time::sleep(Duration::from_millis(50)).await;
            if t.unhealthy.load(Ordering::Relaxed) {
                t.failed.fetch_add(1, Ordering::Relaxed);
            } else {
                t.ok.fetch_add(1, Ordering::Relaxed);
            }
        }
    });
    tokio::spawn(async move {
        loop {
            let Ok((mut c, _)) = l.accept().await else {
                return;
            };
            let t = traffic.clone();
            tokio::spawn(async move {
                let mut buf = [0u8; 4096];
                let _ = c.read(&mut buf).await;
                let body = exposition(&t);
                let resp = format!(
                    "HTTP/1.1 200 OK\r\ncontent-type: text/plain; version=0.0.4\r\ncontent-length: {}\r\nconnection: close\r\n\r\n{body}",
                    body.len()
                );
                let _ = c.write_all(resp.as_bytes()).await;
            });
        }
    });
    addr.to_string()
}

fn start_prometheus(target: &str, dir: &std::path::Path) -> (Kill, String) {
    let config = serde_json::json!({
        "global": {"scrape_interval": "1s", "evaluation_interval": "1s"},
        "scrape_configs": [{"job_name": "waypoint", "scrape_interval": "1s",
            "scrape_timeout": "1s", "static_configs": [{"targets": [target]}]}],
    });
    let file = dir.join("prometheus.yml");
    std::fs::write(&file, config.to_string()).unwrap();
    let listen = format!("127.0.0.1:{}", free_port());
    let child = Command::new("prometheus")
        .arg(format!("--config.file={}", file.display()))
        .arg(format!(
            "--storage.tsdb.path={}",
            dir.join("data").display()
        ))
        .arg(format!("--web.listen-address={listen}"))
        .stdout(Stdio::null())
        .stderr(std::fs::File::create(dir.join("prometheus.log")).unwrap())
        .spawn()
        .expect("starting prometheus");
    (Kill(child), format!("http://{listen}"))
}

#[derive(Default)]
struct Recorder {
    seen: Mutex<Vec<(Phase, Routing)>>,
    board: Mutex<Option<Arc<Board>>>,
}

impl Router for Recorder {
    fn apply(&self, _plan: &Plan, routing: &Routing) -> Result<(), String> {
        let phase = self
            .board
            .lock()
            .unwrap()
            .as_ref()
            .and_then(|b| b.get("shop", "web"))
            .map(|v| v.status.phase)
            .unwrap_or_default();
        self.seen.lock().unwrap().push((phase, routing.clone()));
        Ok(())
    }
    fn remove(&self, _: &str, _: &str) {}
}

fn inputs(image: &str) -> Inputs {
    let yaml = format!(
        "apiVersion: apps/v1
kind: Deployment
metadata: {{name: web, namespace: shop}}
spec:
  selector: {{matchLabels: {{app: web, version: canary}}}}
  template:
    metadata: {{labels: {{app: web, version: canary}}}}
    spec: {{containers: [{{name: web, image: \"{image}\"}}]}}
---
apiVersion: flagger.app/v1beta1
kind: Canary
metadata: {{name: web, namespace: shop}}
spec:
  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}
  service: {{port: 80}}
  analysis:
    interval: 2s
    threshold: 2
    stepWeight: 25
    maxWeight: 50
    metrics:
    - name: request-success-rate
      thresholdRange: {{min: 99}}
      interval: 10s
    - name: request-duration
      thresholdRange: {{max: 500}}
      interval: 10s
"
    );
    let mut store = Store::new();
    let changes = store.apply_file("c.yaml".as_ref(), &yaml, "default");
    assert!(store.errors().is_empty(), "{:?}", store.errors());
    let objs: Vec<_> = changes
        .into_iter()
        .filter_map(|c| match c {
            Change::Upsert(o) => Some(o),
            Change::Delete(_) => None,
        })
        .collect();
    Inputs::collect(objs.iter())
}

async fn wait_phase(board: &Board, want: Phase, limit: Duration) {
    let deadline = tokio::time::Instant::now() + limit;
    loop {
        let v = board.get("shop", "web");
        if v.as_ref().map(|v| v.status.phase) == Some(want) {
            return;
        }
        assert!(
            tokio::time::Instant::now() < deadline,
            "not {want:?} within {limit:?}: {v:#?}"
        );
        tokio::time::sleep(Duration::from_millis(200)).await;
    }
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn prometheus_judges_flaggers_queries_promote_then_rollback() {
    if Command::new("prometheus")
        .arg("--version")
        .output()
        .is_err()
    {
        eprintln!("SKIP: no prometheus binary (Debian package `prometheus`)");
        return;
    }
    let dir = tempfile::tempdir().unwrap();
    let traffic = Arc::new(Traffic::default());
    let target = exporter(traffic.clone()).await;
    let (_prom, base) = start_prometheus(&target, dir.path());

    // Wait until Prometheus can answer Flagger's success-rate query with a value.
    let judge = PrometheusJudge::new(base.clone());
    let probe = meshwork_controlplane::canary::judge::Measurement {
        metric: "request-success-rate".into(),
        namespace: "shop".into(),
        target: "web".into(),
        interval: Duration::from_secs(10),
        builtin: None,
        query: meshwork_controlplane::canary::judge::SUCCESS_RATE_QUERY
            .replace("{{ namespace }}", "shop")
            .replace("{{ target }}", "web")
            .replace("{{ interval }}", "10s"),
        address: String::new(),
        provider: "prometheus".into(),
        canary_version: None,
    };
    let deadline = tokio::time::Instant::now() + Duration::from_secs(60);
    use meshwork_controlplane::canary::judge::Judge;
    while judge.measure(&probe).await.is_err() {
        assert!(
            tokio::time::Instant::now() < deadline,
            "Prometheus never answered"
        );
        tokio::time::sleep(Duration::from_millis(500)).await;
    }

    let board = Arc::new(Board::default());
    let router = Arc::new(Recorder::default());
    *router.board.lock().unwrap() = Some(board.clone());
    let (tx, rx) = watch::channel(inputs("web:1"));
    let controller = Controller {
        judge: Arc::new(PrometheusJudge::new(base)),
        hooks: Arc::new(HttpHooks::default()),
        router: router.clone(),
        board: board.clone(),
        retry: Duration::from_secs(1),
    };
    let task = tokio::spawn(controller.run(rx));
    wait_phase(&board, Phase::Initialized, Duration::from_secs(10)).await;

    // A healthy new revision: promoted through 25 and 50.
    tx.send(inputs("web:2")).unwrap();
    wait_phase(&board, Phase::Succeeded, Duration::from_secs(60)).await;
    let weights: Vec<u32> = router
        .seen
        .lock()
        .unwrap()
        .iter()
        .map(|(_, r)| r.canary_weight)
        .collect();
    // No `web-primary` Deployment: the primary already selects the target's pods, so the
    // promotion changes no routing until all traffic goes back to the primary.
    assert_eq!(weights, [0, 25, 50, 0], "{:?}", router.seen.lock().unwrap());
    let v = board.get("shop", "web").unwrap();
    let rate = v.last_checks[0].value.unwrap();
    let p99 = v.last_checks[1].value.unwrap();
    assert!(rate == 100.0, "success rate from Prometheus: {rate}");
    assert!(p99 > 0.0 && p99 <= 5.0, "p99 from Prometheus: {p99}");

    // A failing revision: 503s and 800 ms answers, rolled back after two failed checks.
    traffic.unhealthy.store(true, Ordering::Relaxed);
    tx.send(inputs("web:3")).unwrap();
    wait_phase(&board, Phase::Failed, Duration::from_secs(60)).await;
    let v = board.get("shop", "web").unwrap();
    assert_eq!(v.status.failed_checks, 2, "{v:#?}");
    assert_eq!(v.routing.as_ref().unwrap().canary_weight, 0);
    assert!(
        v.last_checks.iter().any(|c| !c.passed),
        "{:?}",
        v.last_checks
    );
    let failing_rate = v.last_checks[0].value.unwrap_or(100.0);
    assert!(failing_rate < 99.0, "{:?}", v.last_checks);
    let last = router.seen.lock().unwrap().last().unwrap().1.clone();
    assert_eq!((last.primary_weight, last.canary_weight), (100, 0));
    task.abort();
}

//! Control plane scale benchmark.
//!
//! ```sh
//! cargo run --release -p meshwork-controlplane --example scale_bench -- [PODS SERVICES POLICIES SUBSCRIBERS CHANGES]
//! ```
//!
//! Defaults: 10,000 pods, 1,000 services, 1,000 policies, 100 ztunnel subscribers, 50 pod
//! changes. Measures the full translation (time, and the process's peak RSS before any
//! subscriber connects), then — with the subscribers connected over real gRPC on
//! loopback — the time to translate one pod change and for the delta to reach all of them.

use std::sync::Arc;
use std::time::{Duration, Instant};

use meshwork_api::{Change, Object, Spec};
use meshwork_controlplane::distribute::{MeshConfigService, ModelHub, Registry, SubscriptionAuth};
use meshwork_controlplane::translate::{synthetic::synthetic_cluster, Translator};
use meshwork_model::client::{self, ConfigHandle, Subscription};
use meshwork_model::pb::config::{ProxyKind, Subscribe};

/// The benchmark's subscribers are trusted: it measures distribution, not tokens.
struct Trusted;
#[tonic::async_trait]
impl SubscriptionAuth for Trusted {
    async fn check(&self, _: &Subscribe) -> Result<(), tonic::Status> {
        Ok(())
    }
}

fn arg(i: usize, default: usize) -> usize {
    std::env::args()
        .nth(i)
        .and_then(|a| a.parse().ok())
        .unwrap_or(default)
}

fn status_kib(field: &str) -> u64 {
    let s = std::fs::read_to_string("/proc/self/status").unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

fn percentile(sorted: &[Duration], p: f64) -> Duration {
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn ms(d: Duration) -> f64 {
    d.as_secs_f64() * 1e3
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (pods, services, policies) = (arg(1, 10_000), arg(2, 1_000), arg(3, 1_000));
    let (subscribers, changes) = (arg(4, 100), arg(5, 50));

    let objects = synthetic_cluster(pods, services, policies);
    let batch: Vec<Change> = objects.iter().cloned().map(Change::Upsert).collect();
    let started = Instant::now();
    let mut translator = Translator::new();
    let mut model = translator.set_mesh_file(None);
    model.extend(translator.apply_batch(&batch));
    let full = started.elapsed();
    let resources = translator.resources().len();

    let hub = ModelHub::new();
    hub.apply(model.into_iter().map(|c| (c.key, c.resource)));
    let cp_peak_kib = status_kib("VmHWM:");
    let cp_rss_kib = status_kib("VmRSS:");
    println!(
        "full translation: {} objects -> {resources} model resources in {:.1} ms; control plane RSS {:.0} MB (peak {:.0} MB)",
        batch.len(),
        ms(full),
        cp_rss_kib as f64 / 1024.0,
        cp_peak_kib as f64 / 1024.0
    );

    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let svc = MeshConfigService::new(
        hub.clone(),
        Arc::new(Registry::default()),
        Arc::new(Trusted),
        meshwork_controlplane::translate::l4_view,
    );
    tokio::spawn(
        tonic::transport::Server::builder()
            .tcp_nodelay(true)
            .add_service(svc.into_server())
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );

    let endpoint = format!("http://{addr}");
    let sync_started = Instant::now();
    let handles: Vec<ConfigHandle> = (0..subscribers)
        .map(|i| {
            client::spawn(
                endpoint.clone(),
                Subscription {
                    kind: ProxyKind::Ztunnel,
                    node: format!("node-{i}"),
                    proxy_id: format!("bench-{i}"),
                    ..Default::default()
                },
                None,
            )
        })
        .collect();
    for h in &handles {
        h.wait_synced(Duration::from_secs(120))
            .await
            .expect("initial sync");
    }
    println!(
        "initial sync of {subscribers} ztunnels: {:.0} ms",
        ms(sync_started.elapsed())
    );

    let pod_objects: Vec<&Arc<Object>> = objects
        .iter()
        .filter(|o| matches!(o.spec, Spec::Pod(_)))
        .collect();
    let mut translate_times = Vec::new();
    let mut propagate_times = Vec::new();
    for i in 0..changes {
        let mut obj = (*pod_objects[(i * 7919) % pod_objects.len()])
            .as_ref()
            .clone();
        obj.labels.insert("bench-rev".into(), i.to_string());
        if let Spec::Pod(p) = &mut obj.spec {
            p.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert("bench-rev".into(), i.to_string());
        }
        let t0 = Instant::now();
        let delta = translator.apply(&Change::Upsert(Arc::new(obj)));
        let translated = t0.elapsed();
        assert!(!delta.is_empty(), "a label change must change the model");
        let generation = hub.apply(delta.into_iter().map(|c| (c.key, c.resource)));
        for h in &handles {
            let mut rx = h.watch();
            tokio::time::timeout(
                Duration::from_secs(10),
                rx.wait_for(|s| s.version >= generation),
            )
            .await
            .expect("delta delivered")
            .unwrap();
        }
        propagate_times.push(t0.elapsed());
        translate_times.push(translated);
    }
    translate_times.sort();
    propagate_times.sort();
    println!(
        "one pod change, translate: p50 {:.3} ms, p99 {:.3} ms, max {:.3} ms",
        ms(percentile(&translate_times, 0.5)),
        ms(percentile(&translate_times, 0.99)),
        ms(*translate_times.last().unwrap())
    );
    println!(
        "one pod change, translate + reach all {subscribers} ztunnels: p50 {:.2} ms, p99 {:.2} ms, max {:.2} ms",
        ms(percentile(&propagate_times, 0.5)),
        ms(percentile(&propagate_times, 0.99)),
        ms(*propagate_times.last().unwrap())
    );
    println!(
        "process RSS with {subscribers} in-process subscribers: {:.0} MB",
        status_kib("VmRSS:") as f64 / 1024.0
    );
}

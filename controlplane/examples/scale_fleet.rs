//! Control plane scale benchmark with the subscribers in separate processes.
//!
//! ```sh
//! cargo build --release -p meshwork-controlplane --example scale_fleet --example scale_subscriber
//! target/release/examples/scale_fleet PODS SERVICES POLICIES PROCESSES PER_PROCESS CHANGES
//! ```
//!
//! This process is the control plane (translator, hub, the real `MeshConfig` gRPC service
//! on loopback); it spawns one `scale_subscriber` process holding one real client snapshot
//! (node-0, what a ztunnel holds) and PROCESSES processes of PER_PROCESS subscribers that
//! decode and ACK every update (nodes 1…). It measures the full translation, the control
//! plane's RSS and CPU time, the initial sync of every subscriber (until the control plane
//! has every ACK), and for each of CHANGES pod edits the time from the translator call
//! until every subscriber's ACK reached the control plane (or, for a subscriber the change
//! does not concern, until its stream found nothing to send), plus each subscriber's own
//! apply latency (from its report, same machine clock). Prints a Markdown table.
//!
//! The edit is the pod's `version` label (`SCALE_FLEET_CHANGE=version`, the default): it
//! changes the canonical revision, which every ztunnel holds, so every subscriber receives
//! it. `SCALE_FLEET_CHANGE=label` edits a label nothing derives from: only the ztunnel of
//! the pod's node receives it (others hold the compact view).
//!
//! With `SCALE_FLEET_ZTUNNEL=<path to a ztunnel binary>`, a real ztunnel also follows the
//! control plane (node `ztunnel-0`: no local pods; listeners on loopback or off,
//! `--redirect off`; it gets no certificates, as no CA is served) and its RSS is reported.

use meshwork_runtime::sync::LockExt;
use std::collections::HashMap;
use std::io::BufRead;
use std::process::{Child, Command, Stdio};
use std::sync::{Arc, Mutex};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use meshwork_api::{Change, Object, Spec};
use meshwork_controlplane::distribute::{MeshConfigService, ModelHub, Registry, SubscriptionAuth};
use meshwork_controlplane::translate::{synthetic::synthetic_cluster, Translator};
use meshwork_model::pb::config::Subscribe;

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

fn status_kib(pid: &str, field: &str) -> u64 {
    let s = std::fs::read_to_string(format!("/proc/{pid}/status")).unwrap_or_default();
    s.lines()
        .find(|l| l.starts_with(field))
        .and_then(|l| l.split_whitespace().nth(1))
        .and_then(|v| v.parse().ok())
        .unwrap_or(0)
}

/// User + system CPU time of this process.
fn cpu_time() -> Duration {
    let s = std::fs::read_to_string("/proc/self/stat").unwrap_or_default();
    // Fields after the command name (which may hold spaces): state is field 3.
    let rest = s.rsplit_once(')').map(|(_, r)| r).unwrap_or("");
    let f: Vec<u64> = rest
        .split_whitespace()
        .map(|x| x.parse().unwrap_or(0))
        .collect();
    // utime and stime are fields 14 and 15 (1-based), i.e. 11 and 12 after the state.
    let ticks = f.get(11).copied().unwrap_or(0) + f.get(12).copied().unwrap_or(0);
    Duration::from_millis(ticks * 10)
}

fn percentile(sorted: &[f64], p: f64) -> f64 {
    if sorted.is_empty() {
        return f64::NAN;
    }
    let idx = ((sorted.len() as f64 - 1.0) * p).round() as usize;
    sorted[idx.min(sorted.len() - 1)]
}

fn mb(kib: u64) -> f64 {
    kib as f64 / 1024.0
}

fn unix_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

/// What the subscriber processes reported: (node index, version) -> unix nanos applied,
/// and resources held after the first update.
#[derive(Default)]
struct Reports {
    applied: HashMap<(usize, u64), u128>,
    held: HashMap<usize, i64>,
    retries: usize,
}

fn spawn_subscribers(
    exe: &std::path::Path,
    endpoint: &str,
    first: usize,
    count: usize,
    mode: &str,
    reports: &Arc<Mutex<Reports>>,
) -> Child {
    let mut child = Command::new(exe)
        .args([endpoint, &first.to_string(), &count.to_string(), mode])
        .stdout(Stdio::piped())
        .spawn()
        .expect("spawning scale_subscriber (build it: --example scale_subscriber)");
    let stdout = child.stdout.take().expect("piped stdout");
    let reports = reports.clone();
    std::thread::spawn(move || {
        for line in std::io::BufReader::new(stdout).lines() {
            let Ok(line) = line else { break };
            let f: Vec<&str> = line.split_whitespace().collect();
            let mut r = reports.lock_or_recover();
            match f.as_slice() {
                ["applied", i, v, t] => {
                    if let (Ok(i), Ok(v), Ok(t)) = (i.parse(), v.parse(), t.parse()) {
                        r.applied.insert((i, v), t);
                    }
                }
                ["retry", _] => r.retries += 1,
                ["held", i, n] => {
                    if let (Ok(i), Ok(n)) = (i.parse(), n.parse()) {
                        r.held.insert(i, n);
                    }
                }
                _ => {}
            }
        }
    });
    child
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let (pods, services, policies) = (arg(1, 100_000), arg(2, 10_000), arg(3, 1_000));
    let (processes, per_process, changes) = (arg(4, 10), arg(5, 100), arg(6, 50));
    let subscribers = processes * per_process;
    let mut rows: Vec<(String, String)> = Vec::new();

    let objects = synthetic_cluster(pods, services, policies);
    let batch: Vec<Change> = objects.iter().cloned().map(Change::Upsert).collect();
    let cpu0 = cpu_time();
    let started = Instant::now();
    let mut translator = Translator::new();
    let mut model = translator.set_mesh_file(None);
    model.extend(translator.apply_batch(&batch));
    let full = started.elapsed();
    let resources = translator.resources().len();
    let hub = ModelHub::new();
    hub.apply(model.into_iter().map(|c| (c.key, c.resource)));
    rows.push((
        format!(
            "full translation, {} objects → {resources} model resources (CPU)",
            batch.len()
        ),
        format!(
            "{:.2} s ({:.2} s)",
            full.as_secs_f64(),
            (cpu_time() - cpu0).as_secs_f64()
        ),
    ));
    rows.push((
        "control plane RSS after full load (peak)".into(),
        format!(
            "{:.0} MB ({:.0} MB)",
            mb(status_kib("self", "VmRSS:")),
            mb(status_kib("self", "VmHWM:"))
        ),
    ));

    // A thousand subscribers connect at once: a deep accept queue.
    let socket = tokio::net::TcpSocket::new_v4().unwrap();
    socket.bind("127.0.0.1:0".parse().unwrap()).unwrap();
    let listener = socket.listen(4096).unwrap();
    let addr = listener.local_addr().unwrap();
    let registry = Arc::new(Registry::default());
    let svc = MeshConfigService::new(
        hub.clone(),
        registry.clone(),
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
    let exe = std::env::current_exe()
        .unwrap()
        .with_file_name("scale_subscriber");
    let reports = Arc::new(Mutex::new(Reports::default()));

    let cpu_sync0 = cpu_time();
    let sync_started = Instant::now();
    let mut children = vec![spawn_subscribers(&exe, &endpoint, 0, 1, "hold", &reports)];
    for p in 0..processes {
        children.push(spawn_subscribers(
            &exe,
            &endpoint,
            1 + p * per_process,
            per_process,
            "ack",
            &reports,
        ));
    }
    let ztunnel = std::env::var_os("SCALE_FLEET_ZTUNNEL").map(|path| {
        let certs = std::env::temp_dir().join(format!("scale-fleet-certs-{}", std::process::id()));
        let _ = std::fs::create_dir_all(&certs);
        Command::new(path)
            .args(["--control-plane", &endpoint, "--node", "ztunnel-0"])
            .args(["--node-token", "unused", "--redirect", "off"])
            .args(["--cert-dir", &certs.to_string_lossy()])
            .args(["--outbound-addr", "off", "--inbound-plain-addr", "off"])
            .args(["--hbone-addr", "127.0.0.1:0", "--admin-addr", "off"])
            .args(["--metrics-addr", "off", "--readiness-addr", "off"])
            .stdout(Stdio::null())
            .stderr(Stdio::null())
            .spawn()
            .expect("spawning the ztunnel of SCALE_FLEET_ZTUNNEL")
    });
    let total = subscribers + 1 + usize::from(ztunnel.is_some());
    let generation = hub.generation();
    let synced = tokio::time::timeout(
        Duration::from_secs(1800),
        registry.wait_acked(generation, total),
    )
    .await;
    let sync = sync_started.elapsed();
    let sync_cpu = cpu_time() - cpu_sync0;
    if synced.is_err() {
        eprintln!(
            "initial sync incomplete after {sync:?}: {} of {total} ACKed",
            registry.acked_at_least(generation)
        );
    }
    let per_sub = {
        let r = reports.lock().unwrap();
        let mut v: Vec<i64> = r.held.values().copied().collect();
        v.sort();
        v.get(v.len() / 2).copied().unwrap_or(0)
    };
    rows.push((
        format!("initial sync of {total} subscribers (each receives ~{per_sub} resources), until every ACK is in"),
        format!("{:.1} s", sync.as_secs_f64()),
    ));
    rows.push((
        "subscriber streams that broke during the sync and were opened again".into(),
        reports.lock().unwrap().retries.to_string(),
    ));
    rows.push((
        "control plane CPU time during the initial sync".into(),
        format!("{:.1} s", sync_cpu.as_secs_f64()),
    ));
    rows.push((
        format!("control plane RSS with {total} subscribers synced (peak)"),
        format!(
            "{:.0} MB ({:.0} MB)",
            mb(status_kib("self", "VmRSS:")),
            mb(status_kib("self", "VmHWM:"))
        ),
    ));

    let pod_objects: Vec<&Arc<Object>> = objects
        .iter()
        .filter(|o| matches!(o.spec, Spec::Pod(_)))
        .collect();
    let change_label = match std::env::var("SCALE_FLEET_CHANGE").as_deref() {
        Ok("label") => "bench-rev",
        _ => "version",
    };
    let mut all_acked = Vec::new();
    let mut applied_lat = Vec::new();
    let cpu_changes0 = cpu_time();
    for i in 0..changes {
        let mut obj = (*pod_objects[(i * 7919) % pod_objects.len()])
            .as_ref()
            .clone();
        let value = format!("bench-{i}");
        obj.labels.insert(change_label.into(), value.clone());
        if let Spec::Pod(p) = &mut obj.spec {
            p.metadata
                .labels
                .get_or_insert_with(Default::default)
                .insert(change_label.into(), value);
        }
        let t0_unix = unix_nanos();
        let t0 = Instant::now();
        let delta = translator.apply(&Change::Upsert(Arc::new(obj)));
        assert!(!delta.is_empty(), "a label change must change the model");
        let generation = hub.apply(delta.into_iter().map(|c| (c.key, c.resource)));
        let done = tokio::time::timeout(
            Duration::from_secs(60),
            registry.wait_acked(generation, total),
        )
        .await;
        if done.is_err() {
            eprintln!("change {i}: not every subscriber ACKed within 60 s");
            continue;
        }
        all_acked.push(t0.elapsed().as_secs_f64() * 1e3);
        // Let the report lines arrive (they are written before each ACK is sent).
        tokio::time::sleep(Duration::from_millis(20)).await;
        let r = reports.lock().unwrap();
        for s in 0..total {
            if let Some(t) = r.applied.get(&(s, generation)) {
                applied_lat.push(t.saturating_sub(t0_unix) as f64 / 1e6);
            }
        }
    }
    let changes_cpu = cpu_time() - cpu_changes0;
    all_acked.sort_by(f64::total_cmp);
    applied_lat.sort_by(f64::total_cmp);
    rows.push((
        format!("one pod change (`{change_label}` label): translate → all {total} in sync at the control plane, p50 / p99 / max ({} changes)", all_acked.len()),
        format!(
            "{:.1} / {:.1} / {:.1} ms",
            percentile(&all_acked, 0.5),
            percentile(&all_acked, 0.99),
            all_acked.last().copied().unwrap_or(f64::NAN)
        ),
    ));
    rows.push((
        format!(
            "one pod change: translate → applied, per subscriber, p50 / p99 ({} samples)",
            applied_lat.len()
        ),
        format!(
            "{:.1} / {:.1} ms",
            percentile(&applied_lat, 0.5),
            percentile(&applied_lat, 0.99)
        ),
    ));
    rows.push((
        format!("control plane CPU time for the {changes} changes"),
        format!("{:.2} s", changes_cpu.as_secs_f64()),
    ));
    let holder = children[0].id().to_string();
    rows.push((
        "subscriber holding the real client snapshot (node-0): process RSS (peak)".into(),
        format!(
            "{:.0} MB ({:.0} MB)",
            mb(status_kib(&holder, "VmRSS:")),
            mb(status_kib(&holder, "VmHWM:"))
        ),
    ));
    let ack_rss: Vec<u64> = children[1..]
        .iter()
        .map(|c| status_kib(&c.id().to_string(), "VmRSS:"))
        .collect();
    rows.push((
        format!("decode-and-ACK process of {per_process} subscribers: RSS, mean of {processes}"),
        format!(
            "{:.0} MB",
            mb(ack_rss.iter().sum::<u64>() / ack_rss.len().max(1) as u64)
        ),
    ));
    rows.push((
        "control plane RSS at the end (peak)".into(),
        format!(
            "{:.0} MB ({:.0} MB)",
            mb(status_kib("self", "VmRSS:")),
            mb(status_kib("self", "VmHWM:"))
        ),
    ));
    if let Some(z) = &ztunnel {
        let pid = z.id().to_string();
        rows.push((
            "the real ztunnel binary following the control plane: RSS (peak)".into(),
            format!(
                "{:.0} MB ({:.0} MB)",
                mb(status_kib(&pid, "VmRSS:")),
                mb(status_kib(&pid, "VmHWM:"))
            ),
        ));
    }
    for mut c in children.into_iter().chain(ztunnel) {
        let _ = c.kill();
        let _ = c.wait();
    }

    println!(
        "\n{pods} pods, {services} services, {policies} policies; {total} subscribers in {} processes\n",
        processes + 1
    );
    println!("| measure | result |\n|---|---|");
    for (k, v) in rows {
        println!("| {k} | {v} |");
    }
}

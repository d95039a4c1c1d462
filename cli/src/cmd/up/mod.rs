//! `meshwork up DIR`: a directory of ordinary Kubernetes manifests running on this
//! machine — the control plane over them, one ztunnel per node, a waypoint for each
//! waypoint Gateway, each pod as the test application or its command — in the
//! background, until `meshwork down`. `status`, `exec` and `logs` find it through the
//! state directory ([`state`]).
//!
//! Netns mode (root and a kernel that loads the eBPF redirection) or loopback mode, as
//! `meshwork demo` decides; the pods come from the manifests
//! ([`meshwork_localmesh::derive`]).

pub mod exec;
pub mod logs;
pub mod port_forward;
pub mod state;
mod watch;

use std::collections::BTreeMap;
use std::io::BufRead;
use std::os::unix::process::CommandExt;
use std::path::{Path, PathBuf};
use std::process::{Command, ExitCode, Stdio};
use std::time::{Duration, Instant, SystemTime, UNIX_EPOCH};

use anyhow::Context;
use meshwork_localmesh::mesh::{Prepared, StartOptions};
use meshwork_localmesh::{derive, progress, LocalMesh, Mode, Run};
use tokio::signal::unix::{signal, SignalKind};

use meshwork_localmesh::connect::Dial;
use meshwork_localmesh::forward::{self, Forwarder};
use meshwork_observe::graph::Target;
use meshwork_observe::prometheus::{self as prom, Job, Prometheus};
use state::{MetricsState, PodState, PrometheusState, ServiceState, State};

/// How long `meshwork up` waits for the background process to report the mesh up.
const UP_TIMEOUT: Duration = Duration::from_secs(180);

/// How often the local Prometheus scrapes the proxies.
const SCRAPE_INTERVAL: Duration = Duration::from_secs(1);

/// The Grafana dashboard over the proxies' metrics, written to the state directory.
const DASHBOARD: &str = include_str!("../../../../charts/dashboards/meshwork.json");
const DASHBOARD_FILE: &str = "grafana-dashboard.json";

#[derive(clap::Args, Debug, Clone)]
pub struct Args {
    /// Directory of manifests (Namespaces, Deployments/StatefulSets/DaemonSets/Pods,
    /// Services, waypoint Gateways, Istio and Gateway API resources), read recursively.
    pub dir: PathBuf,
    /// Nodes to spread the pods over (one ztunnel each).
    #[arg(long, default_value_t = 2)]
    pub nodes: usize,
    #[arg(long, value_enum, default_value_t)]
    pub mode: Mode,
    /// Where the running mesh is recorded (default: /run/meshwork/up for root, else
    /// $XDG_RUNTIME_DIR/meshwork/up).
    #[arg(long, env = "MESHWORK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
    /// Run in this process instead of the background (Ctrl-C stops it).
    #[arg(long)]
    pub foreground: bool,
    /// Do not start the local Prometheus (by default `up` runs Debian's `prometheus`
    /// on a loopback port, scraping every proxy's metrics each second).
    #[arg(long)]
    pub no_prometheus: bool,
    /// When the user ran `meshwork up` (ms since the epoch; set for the background run).
    #[arg(long, hide = true)]
    pub started_at_ms: Option<u64>,
}

#[derive(clap::Args, Debug)]
pub struct StateArgs {
    #[arg(long, env = "MESHWORK_STATE_DIR")]
    pub state_dir: Option<PathBuf>,
}

#[derive(clap::Args, Debug)]
pub struct StatusArgs {
    /// Print the state as JSON.
    #[arg(long)]
    pub json: bool,
    #[command(flatten)]
    pub state: StateArgs,
}

fn now_ms() -> u64 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_millis() as u64)
        .unwrap_or(0)
}

/// `meshwork up`.
pub async fn run(args: Args) -> anyhow::Result<ExitCode> {
    meshwork_localmesh::set_progress_prefix("up");
    let dir = state::state_dir(args.state_dir.as_deref());
    if let Ok(s) = state::read(&dir) {
        if state::alive(s.pid) {
            anyhow::bail!(
                "a local mesh is already running (pid {}, from {}); stop it with `meshwork down`",
                s.pid,
                s.dir.display()
            );
        }
        if let Some(p) = &s.prometheus {
            stop_leftover_prometheus(p);
        }
        let _ = std::fs::remove_file(state::state_file(&dir));
    }
    // Fail fast, in the user's terminal, on what the manifests cannot run as.
    derive::derive(&args.dir, args.nodes, "default")?;
    std::fs::create_dir_all(&dir).with_context(|| format!("creating {}", dir.display()))?;
    if args.foreground {
        return foreground(args, dir).await;
    }
    background(args, &dir)
}

/// Starts the background process and follows its output until the mesh is up.
fn background(args: Args, dir: &Path) -> anyhow::Result<ExitCode> {
    let started = now_ms();
    let log_path = dir.join("up.log");
    let log = std::fs::File::create(&log_path)
        .with_context(|| format!("creating {}", log_path.display()))?;
    let exe = std::env::current_exe().context("locating the meshwork binary")?;
    let mut cmd = Command::new(exe);
    cmd.arg("up")
        .arg(std::path::absolute(&args.dir).unwrap_or(args.dir.clone()))
        .args(["--nodes", &args.nodes.to_string()])
        .args(["--mode", args.mode_name()])
        .arg("--state-dir")
        .arg(dir)
        .arg("--foreground")
        .args(["--started-at-ms", &started.to_string()])
        .args(args.no_prometheus.then_some("--no-prometheus"))
        .stdin(Stdio::null())
        .stdout(log.try_clone()?)
        .stderr(log);
    // SAFETY: setsid(2) only, async-signal-safe: the mesh leaves the terminal's session,
    // so closing the terminal or Ctrl-C there does not stop it.
    unsafe {
        cmd.pre_exec(|| {
            if libc::setsid() < 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    let mut child = cmd.spawn().context("starting the background mesh")?;
    let mut follow = std::io::BufReader::new(std::fs::File::open(&log_path)?);
    let deadline = Instant::now() + UP_TIMEOUT;
    let mut line = String::new();
    loop {
        // Relay the background process's progress lines.
        loop {
            line.clear();
            match follow.read_line(&mut line) {
                Ok(0) | Err(_) => break,
                Ok(_) if line.ends_with('\n') => eprint!("{line}"),
                Ok(n) => {
                    // A partial line: read it again when complete.
                    let _ = follow.seek_relative(-(n as i64));
                    break;
                }
            }
        }
        if let Ok(s) = state::read(dir) {
            if s.pid == child.id() {
                print!("{}", render(&s, dir));
                return Ok(ExitCode::SUCCESS);
            }
        }
        if let Some(status) = child.try_wait()? {
            anyhow::bail!(
                "the mesh did not come up ({status}); its output is in {}",
                log_path.display()
            );
        }
        if Instant::now() > deadline {
            // SAFETY: kill(2) on our own child.
            unsafe {
                libc::kill(child.id() as i32, libc::SIGTERM);
            }
            let _ = child.wait();
            anyhow::bail!(
                "the mesh was not up within {UP_TIMEOUT:?}; its output is in {}",
                log_path.display()
            );
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

impl Args {
    fn mode_name(&self) -> &'static str {
        match self.mode {
            Mode::Auto => "auto",
            Mode::Netns => "netns",
            Mode::Loopback => "loopback",
        }
    }
}

fn seed() -> u64 {
    let nanos = now_ms();
    nanos ^ (u64::from(std::process::id()) << 32)
}

/// Runs the mesh in this process until SIGTERM / SIGINT.
async fn foreground(args: Args, dir: PathBuf) -> anyhow::Result<ExitCode> {
    let mut started_ms = args.started_at_ms.unwrap_or_else(now_ms);
    let mut signals = Signals {
        interrupt: signal(SignalKind::interrupt())?,
        terminate: signal(SignalKind::terminate())?,
    };
    let mut derived = derive::derive(&args.dir, args.nodes, "default")?;
    let (chosen, reason) = meshwork_localmesh::mode::choose(args.mode).await?;
    progress(&format!(
        "mode: {} ({reason}); {} pod(s) on {} node(s) from {}",
        chosen.name(),
        derived.plan.pods.len(),
        args.nodes,
        args.dir.display()
    ));
    loop {
        match run_mesh(&args, &dir, chosen, &derived, started_ms, &mut signals).await? {
            Ended::Stopped => break,
            Ended::Restart(next, why) => {
                progress(&format!(
                    "restarting the mesh for an edit of the directory: {why}"
                ));
                derived = *next;
                started_ms = now_ms();
            }
        }
    }
    progress("stopped");
    Ok(ExitCode::SUCCESS)
}

/// SIGINT and SIGTERM, which stop the mesh.
struct Signals {
    interrupt: tokio::signal::unix::Signal,
    terminate: tokio::signal::unix::Signal,
}

impl Signals {
    async fn recv(&mut self) {
        tokio::select! {
            _ = self.interrupt.recv() => {}
            _ = self.terminate.recv() => {}
        }
    }
}

/// How one run of the mesh ended.
enum Ended {
    /// Stopped by a signal.
    Stopped,
    /// An edit of the directory changes the pods: run again with these, for this reason.
    Restart(Box<derive::Derived>, String),
}

/// Runs the mesh of `derived` until a signal or an edit that changes its pods, taking
/// every other edit of the directory live ([`watch`]).
async fn run_mesh(
    args: &Args,
    dir: &Path,
    chosen: meshwork_localmesh::Chosen,
    derived: &derive::Derived,
    started_ms: u64,
    signals: &mut Signals,
) -> anyhow::Result<Ended> {
    let run_dir = dir.join("run");
    let _ = std::fs::remove_dir_all(&run_dir);
    let opts = StartOptions {
        files: derived.files.clone(),
        run_dir: Some(run_dir),
        services: derived.services.clone(),
        ready_probe: None,
        controlplane_args: Vec::new(),
    };
    let start = async {
        // Netns mode builds the cluster on this runtime worker thread: the mesh's
        // processes die with the thread that spawned them, and workers live on.
        let prepared = Prepared::new(chosen, derived.plan.clone(), seed())?;
        prepared.start(opts).await
    };
    let mut mesh = tokio::select! {
        m = start => m?,
        _ = signals.recv() => anyhow::bail!("interrupted"),
    };
    let etc_netns = write_hosts_files(&mesh);
    let forwarders = metrics_forwarders(&mesh).await?;
    let mut st = describe(&mesh, &derived.services, &args.dir, started_ms, etc_netns);
    st.metrics = forwarders
        .iter()
        .map(|(name, f)| MetricsState {
            name: name.clone(),
            addr: f.addr().to_string(),
        })
        .collect();
    let prometheus = if args.no_prometheus {
        Err("--no-prometheus".to_string())
    } else {
        start_prometheus(&st.metrics, dir).await
    };
    let prometheus = match prometheus {
        Ok(p) => Some(p),
        Err(why) => {
            st.prometheus_skipped = Some(why);
            None
        }
    };
    st.prometheus = prometheus.as_ref().and_then(|p| {
        Some(PrometheusState {
            url: p.url(),
            pid: p.pid()?,
            dir: dir.join("prometheus"),
        })
    });
    let dashboard = dir.join(DASHBOARD_FILE);
    match std::fs::write(&dashboard, DASHBOARD) {
        Ok(()) => st.dashboard = Some(dashboard),
        Err(e) => progress(&format!(
            "could not write the Grafana dashboard to {}: {e}",
            dashboard.display()
        )),
    }
    st.up_ms = now_ms().saturating_sub(started_ms);
    progress(&format!(
        "mesh up in {:.1}s {}",
        st.up_ms as f64 / 1000.0,
        mesh.location()
    ));
    state::write(dir, &st)?;
    let traces = dir.join("traces.jsonl");
    let _ = std::fs::remove_file(&traces);
    let mut written = 0;
    let mut tick = tokio::time::interval(Duration::from_millis(250));
    let mut edits = watch::Watch::new(&args.dir, args.nodes, derived, &mesh);
    let ended = loop {
        tokio::select! {
            _ = tick.tick() => {
                written = append_spans(&mesh, &traces, written);
                match edits.poll(&mut mesh).await {
                    None => {}
                    Some(watch::Step::Taken(edit)) => {
                        st.last_edit = Some(edit);
                        state::write(dir, &st)?;
                    }
                    Some(watch::Step::Restart(next, why)) => break Ended::Restart(next, why),
                }
            }
            _ = signals.recv() => break Ended::Stopped,
        }
    };
    append_spans(&mesh, &traces, written);
    progress("stopping: removing the processes (and network namespaces, veths, BPF pins)");
    if let Some(p) = prometheus {
        if let Err(e) = p.stop(Duration::from_secs(10)) {
            progress(&format!("stopping prometheus: {e}"));
        }
    }
    drop(forwarders);
    drop(mesh);
    for d in &st.etc_netns {
        let _ = std::fs::remove_dir_all(d);
    }
    let _ = std::fs::remove_file(state::state_file(dir));
    Ok(ended)
}

/// A loopback port for the local Prometheus: 9090 if free, else one below the
/// ephemeral range.
fn prometheus_port() -> Option<u16> {
    let free = |port: u16| std::net::TcpListener::bind(("127.0.0.1", port)).is_ok();
    let offset = (std::process::id() % 1000) as u16;
    std::iter::once(9090)
        .chain((0..1000).map(|i| 19_000 + (offset + i) % 1000))
        .find(|&p| free(p))
}

/// Starts Prometheus scraping `metrics`, its storage in `<dir>/prometheus`; on any
/// failure (no `prometheus` binary, not ready) says why and goes on without it.
async fn start_prometheus(metrics: &[MetricsState], dir: &Path) -> Result<Prometheus, String> {
    let not_started = |why: String| {
        progress(&format!(
            "prometheus: not started: {why}; going on without it"
        ));
        why
    };
    let targets: Vec<Target> = metrics.iter().map(|m| Target::parse(&m.target())).collect();
    let jobs = Job::from_targets("meshwork", &targets).map_err(|e| not_started(e.to_string()))?;
    let port = prometheus_port().ok_or_else(|| not_started("no free loopback port".into()))?;
    let opts = prom::Options {
        binary: None,
        listen: std::net::SocketAddr::from(([127, 0, 0, 1], port)),
        allow_remote: false,
        scrape_interval: SCRAPE_INTERVAL,
    };
    let prom_dir = dir.join("prometheus");
    let _ = std::fs::remove_dir_all(&prom_dir);
    let mut p =
        Prometheus::start_in(&jobs, &opts, &prom_dir).map_err(|e| not_started(e.to_string()))?;
    if let Err(e) = p.wait_ready(Duration::from_secs(30)).await {
        let _ = p.stop(Duration::from_secs(5));
        return Err(not_started(e.to_string()));
    }
    progress(&format!(
        "prometheus on {} scraping {} endpoint(s) every {:?}",
        p.url(),
        metrics.len(),
        SCRAPE_INTERVAL
    ));
    Ok(p)
}

/// A loopback forwarder to every proxy's metrics endpoint (in netns mode they live in
/// the nodes' namespaces): `ztunnel-<node>` and `<namespace>/<waypoint pod>`.
async fn metrics_forwarders(mesh: &LocalMesh) -> anyhow::Result<Vec<(String, Forwarder)>> {
    let mut endpoints: Vec<(String, Dial)> = mesh
        .ztunnel_metrics
        .iter()
        .map(|(node, d)| (format!("ztunnel-{node}"), d.clone()))
        .collect();
    for (pod, d) in &mesh.waypoint_admin {
        let ns = mesh
            .plan
            .pod(pod)
            .map(|p| p.namespace.clone())
            .unwrap_or_else(|| "default".into());
        endpoints.push((format!("{ns}/{pod}"), d.clone()));
    }
    let mut out = Vec::new();
    for (name, dial) in endpoints {
        let f = Forwarder::start(0, dial, forward::MAX_CONNECTIONS)
            .await
            .with_context(|| format!("forwarding the metrics of {name}"))?;
        out.push((name, f));
    }
    Ok(out)
}

/// Appends the spans received since the `written` first ones to `traces.jsonl`.
fn append_spans(mesh: &LocalMesh, path: &Path, written: usize) -> usize {
    use std::io::Write;
    let spans = mesh.collector.spans();
    if spans.len() <= written {
        return written;
    }
    let Ok(mut f) = std::fs::OpenOptions::new()
        .create(true)
        .append(true)
        .open(path)
    else {
        return written;
    };
    for s in &spans[written..] {
        let line = serde_json::json!({
            "trace_id": s.trace_id,
            "span_id": s.span_id,
            "attributes": s.attributes,
        });
        let _ = writeln!(f, "{line}");
    }
    spans.len()
}

/// Netns mode: an `/etc/netns/<pod netns>/hosts` naming every Service by its VIP, which
/// `ip netns exec` (and so `meshwork exec`) puts in place of `/etc/hosts`.
fn write_hosts_files(mesh: &LocalMesh) -> Vec<PathBuf> {
    let vips = mesh.vips();
    if vips.is_empty() {
        return Vec::new();
    }
    let mut hosts = String::from("127.0.0.1 localhost\n::1 localhost\n");
    for ((ns, name), vip) in &vips {
        hosts.push_str(&format!(
            "{vip} {name}.{ns}.svc.cluster.local {name}.{ns}.svc {name}.{ns}\n"
        ));
    }
    let mut written = Vec::new();
    for p in &mesh.plan.pods {
        let Some(netns) = mesh.netns_of(&p.name) else {
            continue;
        };
        // Bare names resolve in the pod's own namespace.
        let mut own = hosts.clone();
        for ((ns, name), vip) in &vips {
            if *ns == p.namespace {
                own.push_str(&format!("{vip} {name}\n"));
            }
        }
        let d = Path::new("/etc/netns").join(&netns);
        if std::fs::create_dir_all(&d).is_ok() && std::fs::write(d.join("hosts"), own).is_ok() {
            written.push(d);
        }
    }
    written
}

/// The node a pod runs on, by the plan's names (`node-<i>`); netns mode runs the
/// waypoints on a node of their own, `node-<nodes>`.
fn node_of(mesh: &LocalMesh, p: &meshwork_localmesh::PodPlan) -> String {
    if p.is_waypoint() && mesh.netns_of(&p.name).is_some() {
        return format!("node-{}", mesh.plan.nodes.len());
    }
    mesh.plan.nodes.get(p.node).cloned().unwrap_or_default()
}

fn runs(run: &Run) -> &'static str {
    match run {
        Run::TestApp { .. } => "testapp",
        Run::Command(_) => "command",
        Run::Idle => "idle",
        Run::Waypoint { .. } => "waypoint",
    }
}

/// The state a running mesh records.
fn describe(
    mesh: &LocalMesh,
    services: &[(String, String)],
    dir: &Path,
    started_ms: u64,
    etc_netns: Vec<PathBuf>,
) -> State {
    let socks = mesh.socks();
    let pods = mesh
        .plan
        .pods
        .iter()
        .map(|p| PodState {
            name: p.name.clone(),
            namespace: p.namespace.clone(),
            ip: mesh
                .placement
                .ip(&p.name)
                .map(|i| i.to_string())
                .unwrap_or_default(),
            node: node_of(mesh, p),
            runs: runs(&p.run).into(),
            ports: p.ports.clone(),
            netns: mesh.netns_of(&p.name),
            socks: socks.get(&mesh.plan.nodes[p.node]).map(|a| a.to_string()),
        })
        .collect();
    let mut logs: BTreeMap<String, Vec<PathBuf>> = BTreeMap::new();
    let mut add = |name: String, key: &str| {
        let mut files = vec![mesh.log(key, "out"), mesh.log(key, "err")];
        files.dedup();
        logs.insert(name, files);
    };
    add("controlplane".into(), "controlplane");
    for n in &mesh.plan.nodes {
        add(format!("ztunnel-{n}"), &format!("ztunnel-{n}"));
    }
    for p in &mesh.plan.pods {
        add(p.name.clone(), &p.name);
        if p.is_waypoint() {
            add(format!("waypoint-{}", p.namespace), &p.name);
        }
    }
    State {
        pid: std::process::id(),
        mode: mesh.chosen().name().into(),
        dir: dir.to_path_buf(),
        up_ms: now_ms().saturating_sub(started_ms),
        location: mesh.location(),
        nodes: mesh.plan.nodes.clone(),
        pods,
        services: {
            // Netns mode: every Service of the model with its VIP; loopback mode: the
            // manifests' Services (reached by name through the SOCKS5 entry).
            let vips = mesh.vips();
            let mut all: Vec<ServiceState> = vips
                .iter()
                .map(|((namespace, name), vip)| ServiceState {
                    namespace: namespace.clone(),
                    name: name.clone(),
                    vip: vip.to_string(),
                })
                .collect();
            for (namespace, name) in services {
                if !vips.contains_key(&(namespace.clone(), name.clone())) {
                    all.push(ServiceState {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        vip: String::new(),
                    });
                }
            }
            all
        },
        control_plane_admin: mesh.control_plane_admin.to_string(),
        otlp_receiver: mesh.collector.addr.to_string(),
        logs,
        etc_netns,
        metrics: Vec::new(),
        prometheus: None,
        prometheus_skipped: None,
        dashboard: None,
        last_edit: None,
    }
}

/// The human summary of a running mesh.
fn render(s: &State, state_dir: &Path) -> String {
    let mut out = format!(
        "meshwork up — mode: {} — {} ({} node(s)), up in {:.1}s, pid {}\n",
        s.mode,
        s.location,
        s.nodes.len(),
        s.up_ms as f64 / 1000.0,
        s.pid
    );
    out.push_str("  pods:\n");
    for p in &s.pods {
        let ports = p
            .ports
            .iter()
            .map(|p| format!(":{p}"))
            .collect::<Vec<_>>()
            .join(",");
        out.push_str(&format!(
            "    {:<32} {:<15} {:<8} {} {}\n",
            format!("{}/{}", p.namespace, p.name),
            p.ip,
            p.node,
            p.runs,
            ports
        ));
    }
    if !s.services.is_empty() {
        out.push_str("  services:\n");
        for v in &s.services {
            let vip = if v.vip.is_empty() {
                "(by name)"
            } else {
                &v.vip
            };
            out.push_str(&format!("    {}/{} {vip}\n", v.namespace, v.name));
        }
    }
    if !s.metrics.is_empty() {
        out.push_str("  metrics (forwarded; `meshwork top` and `meshwork graph` scrape them):\n");
        for m in &s.metrics {
            out.push_str(&format!("    {:<32} http://{}/metrics\n", m.name, m.addr));
        }
    }
    let client = s
        .pods
        .iter()
        .find(|p| p.runs != "waypoint")
        .map(|p| p.name.as_str())
        .unwrap_or("POD");
    let service = s
        .services
        .first()
        .map(|v| format!("{}.{}", v.name, v.namespace))
        .unwrap_or_else(|| "SERVICE.NAMESPACE".into());
    out.push_str(&format!(
        "  try:    meshwork exec {client} -- curl -s http://{service}:PORT/\n\
         \x20 logs:   meshwork logs POD|ztunnel|waypoint   control plane admin: {}\n\
         \x20 traces: {} (OTLP receiver {})\n",
        s.control_plane_admin,
        state_dir.join("traces.jsonl").display(),
        s.otlp_receiver,
    ));
    match &s.prometheus {
        Some(p) => out.push_str(&format!(
            "  prometheus: {} (scraping the metrics above; e.g. {}/graph?g0.expr=sum(istio_requests_total))\n",
            p.url, p.url
        )),
        None => out.push_str(&format!(
            "  prometheus: not running ({})\n",
            s.prometheus_skipped.as_deref().unwrap_or("see up.log")
        )),
    }
    if let Some(d) = &s.dashboard {
        out.push_str(&format!(
            "  grafana: {} (charts/dashboards/meshwork.json) — Dashboards → New → Import, upload it, pick a Prometheus data source at {}\n",
            d.display(),
            s.prometheus.as_ref().map(|p| p.url.as_str()).unwrap_or("your Prometheus")
        ));
    }
    out.push_str(&format!(
        "  edits:  saving a file in {} applies it (pods added or removed: the mesh restarts)\n",
        s.dir.display()
    ));
    if let Some(e) = &s.last_edit {
        out.push_str(&format!(
            "  last edit: {} — {} error(s), {} warning(s)\n",
            e.summary,
            e.errors.len(),
            e.warnings.len()
        ));
        for line in &e.errors {
            out.push_str(&format!("    error   {line}\n"));
        }
    }
    out.push_str("  stop:   meshwork down\n");
    out
}

/// `meshwork status`.
pub fn status(args: StatusArgs) -> anyhow::Result<ExitCode> {
    let dir = state::state_dir(args.state.state_dir.as_deref());
    let s = state::read(&dir)?;
    if !state::alive(s.pid) {
        anyhow::bail!(
            "the local mesh recorded in {} is not running (pid {} is gone); `meshwork down` cleans up",
            dir.display(),
            s.pid
        );
    }
    if args.json {
        println!("{}", serde_json::to_string_pretty(&s)?);
    } else {
        print!("{}", render(&s, &dir));
    }
    Ok(ExitCode::SUCCESS)
}

/// The recorded Prometheus, if it outlived the `up` process (killed with SIGKILL):
/// SIGTERM, then SIGKILL after 10 s. Only a process still running `prometheus` with the
/// recorded storage directory is signalled (the pid may have been reused).
fn stop_leftover_prometheus(p: &PrometheusState) {
    let ours = || {
        std::fs::read(format!("/proc/{}/cmdline", p.pid)).is_ok_and(|c| {
            let c = String::from_utf8_lossy(&c);
            c.contains("prometheus") && c.contains(&*p.dir.to_string_lossy())
        }) && state::alive(p.pid)
    };
    if !ours() {
        return;
    }
    // SAFETY: kill(2) of the recorded Prometheus, checked above to be it.
    unsafe {
        libc::kill(p.pid as i32, libc::SIGTERM);
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while ours() {
        if Instant::now() > deadline {
            // SAFETY: as above.
            unsafe {
                libc::kill(p.pid as i32, libc::SIGKILL);
            }
            break;
        }
        std::thread::sleep(Duration::from_millis(50));
    }
}

/// `meshwork down`.
pub fn down(args: StateArgs) -> anyhow::Result<ExitCode> {
    let dir = state::state_dir(args.state_dir.as_deref());
    let s = match state::read(&dir) {
        Ok(s) => s,
        Err(state::StateError::NotRunning(_)) => {
            println!("no local mesh is running");
            return Ok(ExitCode::SUCCESS);
        }
        Err(e) => return Err(e.into()),
    };
    if state::alive(s.pid) {
        // SAFETY: kill(2) of the recorded background process.
        unsafe {
            libc::kill(s.pid as i32, libc::SIGTERM);
        }
        let deadline = Instant::now() + Duration::from_secs(60);
        while state::alive(s.pid) {
            if Instant::now() > deadline {
                anyhow::bail!(
                    "the local mesh (pid {}) did not stop within 60 s; see {}",
                    s.pid,
                    dir.join("up.log").display()
                );
            }
            std::thread::sleep(Duration::from_millis(50));
        }
    }
    // Whatever a dead background process could not remove.
    if let Some(p) = &s.prometheus {
        stop_leftover_prometheus(p);
    }
    for d in &s.etc_netns {
        let _ = std::fs::remove_dir_all(d);
    }
    let _ = std::fs::remove_file(state::state_file(&dir));
    println!(
        "stopped the local mesh (pid {}, {})",
        s.pid,
        s.dir.display()
    );
    Ok(ExitCode::SUCCESS)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn render_lists_pods_services_and_what_to_try() {
        let s = State {
            pid: 7,
            mode: "netns".into(),
            dir: "/m".into(),
            up_ms: 2500,
            location: "in network namespaces x-*".into(),
            nodes: vec!["node-0".into()],
            pods: vec![PodState {
                name: "web-0".into(),
                namespace: "shop".into(),
                ip: "10.244.0.10".into(),
                node: "node-0".into(),
                runs: "testapp".into(),
                ports: vec![8080],
                netns: Some("x-web-0".into()),
                socks: None,
            }],
            services: vec![ServiceState {
                namespace: "shop".into(),
                name: "cart".into(),
                vip: "10.96.0.3".into(),
            }],
            control_plane_admin: "10.250.0.254:15014".into(),
            otlp_receiver: "10.250.0.254:4000".into(),
            logs: BTreeMap::new(),
            etc_netns: vec![],
            metrics: vec![MetricsState {
                name: "ztunnel-node-0".into(),
                addr: "127.0.0.1:41000".into(),
            }],
            prometheus: Some(PrometheusState {
                url: "http://127.0.0.1:9090".into(),
                pid: 8,
                dir: "/run/meshwork/up/prometheus".into(),
            }),
            prometheus_skipped: None,
            dashboard: Some("/run/meshwork/up/grafana-dashboard.json".into()),
            last_edit: None,
        };
        let r = render(&s, Path::new("/run/meshwork/up"));
        assert!(r.contains("up in 2.5s"), "{r}");
        assert!(
            r.contains("shop/web-0") && r.contains("10.244.0.10") && r.contains(":8080"),
            "{r}"
        );
        assert!(r.contains("shop/cart 10.96.0.3"), "{r}");
        assert!(
            r.contains("meshwork exec web-0 -- curl -s http://cart.shop:PORT/"),
            "{r}"
        );
        assert!(r.contains("/run/meshwork/up/traces.jsonl"), "{r}");
        assert!(
            r.contains("ztunnel-node-0") && r.contains("http://127.0.0.1:41000/metrics"),
            "{r}"
        );
        assert!(r.contains("prometheus: http://127.0.0.1:9090 "), "{r}");
        assert!(
            r.contains("grafana: /run/meshwork/up/grafana-dashboard.json")
                && r.contains("Import")
                && r.contains("charts/dashboards/meshwork.json"),
            "{r}"
        );
        let without = render(
            &State {
                prometheus: None,
                prometheus_skipped: Some("--no-prometheus".into()),
                ..s
            },
            Path::new("/run/meshwork/up"),
        );
        assert!(
            without.contains("prometheus: not running (--no-prometheus)"),
            "{without}"
        );
    }

    #[test]
    fn the_embedded_dashboard_is_json() {
        let v: serde_json::Value = serde_json::from_str(DASHBOARD).unwrap();
        assert!(v["panels"].is_array(), "{v}");
    }
}

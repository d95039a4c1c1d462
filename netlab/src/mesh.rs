//! [`MeshTarget`] on the namespace mini-cluster with the real binaries: the control plane
//! in the fabric namespace (10.250.0.254), one ztunnel per node namespace (started with
//! setns so it sees the host bpffs) that loads and drives the node's BPF redirection
//! itself (`--redirect ebpf`), and `meshwork-testapp` in every pod. Enrollment changes go
//! through the control plane's YAML, as `kubectl label` would.
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cluster::BPF_PIN_ROOT;
use crate::netns;
use crate::pcap::{self, Capture};
use crate::scenarios::fixture;
use crate::target::{HttpSummary, MeshTarget, ScenarioError};
use crate::{Cluster, HarnessError, Network};

mod inpod;
pub use inpod::{PodSpec, Sandbox};

/// Address of the control plane in the fabric namespace.
pub const CONTROL_PLANE_IP: Ipv4Addr = Ipv4Addr::new(10, 250, 0, 254);
/// The control plane's TLS gRPC port (config and CA), as istiod's: proxies in the node
/// namespaces reach it over TLS, verifying it against the mesh root.
pub const CONTROL_PLANE_GRPC_PORT: u16 = 15012;
pub const CONTROL_PLANE_ADMIN_PORT: u16 = 15014;
/// ztunnel metrics listener in each node namespace (its default, `0.0.0.0:15020`).
pub const ZTUNNEL_METRICS_PORT: u16 = 15020;
/// Waypoint admin (loopback of its pod namespace, as in the chart), metrics and readiness
/// listeners (pod IP).
pub const WAYPOINT_ADMIN_PORT: u16 = 15000;
pub const WAYPOINT_METRICS_PORT: u16 = 15020;
pub const WAYPOINT_READINESS_PORT: u16 = 15021;
/// ztunnel admin listener in each node namespace (its default).
const ZTUNNEL_ADMIN: &str = "127.0.0.1:15000";
/// How long an enrollment change may take from the YAML edit to the ztunnel's map (the
/// requirement is one second, typically ~100 ms here; slack for a loaded 2-core CI host).
const ENROLL_TIMEOUT: Duration = Duration::from_secs(2);

/// Paths of the binaries a full mesh needs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub controlplane: PathBuf,
    pub ztunnel: PathBuf,
    pub testapp: PathBuf,
    pub waypoint: PathBuf,
}

/// How the ztunnels capture their pods' traffic.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum CaptureMode {
    /// `--redirect ebpf`: TC programs on the node's devices, pods enrolled by address.
    #[default]
    Node,
    /// `--redirect inpod` (docs/inpod.md): programs and listeners inside each pod's
    /// namespace. Pods come through the CNI plugin (`meshwork-cni`, on the node's
    /// `cni.sock`) or, when older than the ztunnel, from a scan of the cluster's netns
    /// directory.
    InPod,
}

impl CaptureMode {
    pub fn name(self) -> &'static str {
        match self {
            CaptureMode::Node => "node",
            CaptureMode::InPod => "inpod",
        }
    }
}

/// What [`NetnsMesh::boot`] runs besides the cluster.
#[derive(Clone, Debug, Default)]
pub struct MeshConfig {
    /// How the ztunnels capture (default [`CaptureMode::Node`]).
    pub capture: CaptureMode,
    /// `(file name, YAML)` of the control plane's directory source.
    pub files: Vec<(String, String)>,
    /// Extra flags of the control plane (e.g. `--default-namespace`).
    pub controlplane_args: Vec<String>,
    /// Extra flags of every ztunnel (e.g. `--log-format json`).
    pub ztunnel_args: Vec<String>,
}

/// A waypoint to run in its own (uncaptured) pod.
#[derive(Clone, Debug)]
pub struct WaypointSpec {
    pub pod: String,
    /// Namespace and name of the Gateway it implements.
    pub namespace: String,
    pub gateway: String,
    pub service_account: String,
    /// Extra flags (e.g. `--otlp-endpoint`).
    pub extra_args: Vec<String>,
}

/// The directory of the built binaries: `$MESHWORK_BIN_DIR`, else the cargo target
/// profile directory of the running executable (`target/<profile>/deps/<test>` or
/// `target/<profile>/<bin>`).
pub fn bin_dir() -> Result<PathBuf, HarnessError> {
    match std::env::var_os("MESHWORK_BIN_DIR") {
        Some(d) => Ok(PathBuf::from(d)),
        None => {
            let exe = std::env::current_exe().map_err(|source| HarnessError::Io {
                path: "current_exe".into(),
                source,
            })?;
            let parent = exe.parent().map(Path::to_path_buf).unwrap_or_default();
            Ok(if parent.file_name().is_some_and(|n| n == "deps") {
                parent.parent().map(Path::to_path_buf).unwrap_or_default()
            } else {
                parent
            })
        }
    }
}

/// A built binary of [`bin_dir`] (e.g. `meshwork-cni`).
pub fn locate_binary(name: &str) -> Result<PathBuf, HarnessError> {
    let p = bin_dir()?.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(HarnessError::Unknown {
            kind: "binary (build it, or set MESHWORK_BIN_DIR)",
            name: p.display().to_string(),
        })
    }
}

impl Binaries {
    /// From `$MESHWORK_BIN_DIR`, else the cargo target profile directory of the running
    /// executable (`target/<profile>/deps/<test>` or `target/<profile>/<bin>`).
    pub fn locate() -> Result<Self, HarnessError> {
        let find = locate_binary;
        Ok(Self {
            controlplane: find("controlplane")?,
            ztunnel: find("ztunnel")?,
            testapp: find("meshwork-testapp")?,
            waypoint: find("waypoint")?,
        })
    }
}

pub struct NetnsMesh {
    pub cluster: Cluster,
    bins: Binaries,
    config_dir: PathBuf,
    ztunnel_args: Vec<String>,
    ztunnels: Mutex<BTreeMap<String, ZtunnelProc>>,
    tokens: BTreeMap<String, String>,
    /// Pods labelled `istio.io/dataplane-mode: none` in the control plane's YAML.
    opted_out: Mutex<BTreeSet<String>>,
    restarts: Mutex<u32>,
    capture: CaptureMode,
    /// [`CaptureMode::InPod`]: the cluster's pod network namespaces, as a container
    /// runtime keeps them (`/var/run/netns/cni-…`): symlinks to this cluster's pods only,
    /// so a ztunnel never scans another test's namespaces.
    netns_dir: PathBuf,
    /// The mesh roots the proxies verify the control plane's certificate against.
    control_plane_root: PathBuf,
}

/// A running ztunnel of a node.
#[derive(Clone, Copy, Debug)]
struct ZtunnelProc {
    pid: u32,
    /// Its own readiness listener (one loopback address per generation: during a handover
    /// the shared admin port may answer from either process).
    readiness: SocketAddr,
}

fn wait_for(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
) -> Result<(), HarnessError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(HarnessError::Timeout {
        what: what.to_string(),
        millis: timeout.as_millis() as u64,
    })
}

impl NetnsMesh {
    /// Builds the fixture cluster and starts everything; ready when `client` reaches
    /// `orders-remote`.
    pub fn start(bins: Binaries) -> Result<Self, ScenarioError> {
        Self::start_on(bins, Network::Bridge)
    }

    /// As [`NetnsMesh::start`] on a cluster of the given network flavour (with
    /// [`Network::KindPtp`] or [`Network::CiliumLike`] the fixture's services also get
    /// kube-proxy chains).
    pub fn start_on(bins: Binaries, network: Network) -> Result<Self, ScenarioError> {
        Self::start_with(bins, network, CaptureMode::Node)
    }

    /// As [`NetnsMesh::start_on`] with the given capture. With [`CaptureMode::InPod`] the
    /// fixture's pods are older than the mesh: the ztunnels find them by their netns scan;
    /// ready once each node's ztunnel has captured its ambient pods.
    pub fn start_with(
        bins: Binaries,
        network: Network,
        capture: CaptureMode,
    ) -> Result<Self, ScenarioError> {
        let mut b = Cluster::builder().nodes(2).network(network);
        for (name, _, node, ..) in fixture::PODS {
            b = b.pod(name, *node);
        }
        if matches!(network, Network::KindPtp | Network::CiliumLike) {
            for (svc, _, vip, backends) in fixture::SERVICES {
                b = b.service(
                    svc,
                    *vip,
                    fixture::SERVICE_PORT,
                    fixture::APP_PORT,
                    backends,
                );
            }
        }
        let cluster = b.build()?;
        let yaml = crate::manifests::fixture_manifests(&cluster)?;
        let config = MeshConfig {
            files: vec![("cluster.yaml".into(), yaml)],
            capture,
            ..MeshConfig::default()
        };
        let mesh = Self::boot(bins, cluster, config)?;
        if capture == CaptureMode::InPod {
            mesh.wait_fixture_captured()?;
        }
        for (name, _, _, app, version, _) in fixture::PODS {
            mesh.start_app(name, app, version)?;
        }
        let url = mesh.service_url("orders-remote", "/health")?;
        let deadline = Instant::now() + Duration::from_secs(60);
        loop {
            let s = mesh.http_get("client", &url, &[], 1)?;
            if s.count(200) == 1 {
                break;
            }
            if Instant::now() > deadline {
                return Err(ScenarioError::Target(format!(
                    "mesh not ready after 60 s (last {s:?}); ztunnel n0 log:\n{}",
                    mesh.cluster.log_of("ztunnel-n0-0")
                )));
            }
            std::thread::sleep(Duration::from_millis(300));
        }
        Ok(mesh)
    }

    /// Starts the mesh on `cluster`: the control plane (in the fabric namespace, at
    /// [`CONTROL_PLANE_IP`], over `config.files` written to its YAML directory) and one
    /// ztunnel per node with the eBPF redirection; returns once every ztunnel is ready.
    /// The fabric gets routes to the pod CIDRs, so uncaptured pods (waypoints) reach the
    /// control plane and anything else listening in the fabric namespace. Every process
    /// gets SIGKILL when the thread that spawned it exits (`PR_SET_PDEATHSIG` is per
    /// thread): call this and the `start_*` methods from a thread that outlives the mesh.
    pub fn boot(
        bins: Binaries,
        cluster: Cluster,
        config: MeshConfig,
    ) -> Result<Self, ScenarioError> {
        let fabric = cluster.fabric_netns().to_string();
        netns::ip_in(
            &fabric,
            &[
                "addr",
                "add",
                &format!("{CONTROL_PLANE_IP}/24"),
                "dev",
                "br0",
            ],
        )?;
        for n in cluster.nodes() {
            let via = n.ip.to_string();
            netns::ip_in(&fabric, &["route", "add", &n.pod_cidr(), "via", &via])?;
        }
        let config_dir = cluster.log_dir().join("config");
        std::fs::create_dir_all(&config_dir).map_err(|source| HarnessError::Io {
            path: config_dir.clone(),
            source,
        })?;
        for (name, text) in &config.files {
            let file = config_dir.join(name);
            std::fs::write(&file, text)
                .map_err(|source| HarnessError::Io { path: file, source })?;
        }
        let ca_dir = cluster.log_dir().join("ca");
        let netns_dir = cluster.log_dir().join("netns");
        if config.capture == CaptureMode::InPod {
            inpod::make_netns_dir(&cluster, &netns_dir)?;
        }

        let mut cp = Command::new(&bins.controlplane);
        cp.arg("--config-dir")
            .arg(&config_dir)
            .arg("--ca-dir")
            .arg(&ca_dir)
            .args(["--grpc-addr", "127.0.0.1:15010"])
            .arg("--grpc-tls-addr")
            .arg(format!("{CONTROL_PLANE_IP}:{CONTROL_PLANE_GRPC_PORT}"))
            .arg("--serving-san")
            .arg(CONTROL_PLANE_IP.to_string())
            .arg("--admin-addr")
            .arg(format!("{CONTROL_PLANE_IP}:{CONTROL_PLANE_ADMIN_PORT}"))
            .args(&config.controlplane_args);
        cluster.spawn_in("fabric", "controlplane", cp)?;
        wait_for("control plane ready", Duration::from_secs(60), || {
            cluster
                .log_of("controlplane")
                .contains("controlplane ready")
        })?;

        let mut tokens = BTreeMap::new();
        for n in cluster.nodes() {
            let out = netns::run(
                Command::new(&bins.controlplane)
                    .arg("--ca-dir")
                    .arg(&ca_dir)
                    .arg("token")
                    .arg("--node")
                    .arg(&n.netns),
            )?;
            tokens.insert(
                n.name.clone(),
                String::from_utf8_lossy(&out.stdout).trim().to_string(),
            );
        }
        // A plug-in CA directory's roots, else the generated root.
        let control_plane_root = ["root-cert.pem", "ca-root.pem"]
            .iter()
            .map(|f| ca_dir.join(f))
            .find(|p| p.exists())
            .ok_or_else(|| HarnessError::Io {
                path: ca_dir.join("ca-root.pem"),
                source: std::io::Error::new(std::io::ErrorKind::NotFound, "no mesh root"),
            })?;
        let mesh = Self {
            cluster,
            bins,
            config_dir,
            ztunnel_args: config.ztunnel_args,
            ztunnels: Mutex::new(BTreeMap::new()),
            tokens,
            opted_out: Mutex::new(BTreeSet::new()),
            restarts: Mutex::new(0),
            capture: config.capture,
            netns_dir,
            control_plane_root,
        };
        for n in mesh.cluster.nodes().to_vec() {
            mesh.start_ztunnel(&n.name)?;
        }
        for n in mesh.cluster.nodes().to_vec() {
            mesh.wait_ztunnel_ready(&n.name)?;
        }
        Ok(mesh)
    }

    /// Starts `meshwork-testapp serve` on port [`fixture::APP_PORT`] in `pod` (log label
    /// `app-<pod>`); returns its pid.
    pub fn start_app(&self, pod: &str, app: &str, version: &str) -> Result<u32, ScenarioError> {
        let mut cmd = Command::new(&self.bins.testapp);
        cmd.args(["serve", "--port", &fixture::APP_PORT.to_string()])
            .args(["--app", app, "--version", version, "--pod", pod]);
        Ok(self.cluster.spawn_in(pod, &format!("app-{pod}"), cmd)?)
    }

    /// Starts the `waypoint` binary in its own pod namespace (log label `waypoint-<pod>`):
    /// it follows the control plane and gets its certificate from the control plane CA with
    /// the token of the pod's node, serves HBONE on `0.0.0.0:15008`, admin on loopback
    /// [`WAYPOINT_ADMIN_PORT`], metrics on [`WAYPOINT_METRICS_PORT`], readiness on
    /// [`WAYPOINT_READINESS_PORT`]. The pod must be
    /// labelled `gateway.networking.k8s.io/gateway-name` in the YAML (never captured).
    /// Returns its pid; [`NetnsMesh::wait_waypoint_ready`] waits for it.
    pub fn start_waypoint(&self, w: &WaypointSpec) -> Result<u32, ScenarioError> {
        let pod = self.cluster.pod(&w.pod)?.clone();
        let token = self.tokens.get(&pod.node).ok_or_else(|| {
            ScenarioError::Target(format!(
                "waypoint pod {}: no token for node {}",
                w.pod, pod.node
            ))
        })?;
        let mut cmd = Command::new(&self.bins.waypoint);
        cmd.args([
            "--control-plane",
            &format!("https://{CONTROL_PLANE_IP}:{CONTROL_PLANE_GRPC_PORT}"),
        ])
        .arg("--control-plane-root")
        .arg(&self.control_plane_root)
        .args(["--namespace", &w.namespace, "--name", &w.gateway])
        .args(["--service-account", &w.service_account])
        .args(["--token", token])
        .args(["--hbone-addr", &format!("0.0.0.0:{}", fixture::HBONE_PORT)])
        .args(["--admin-addr", &format!("127.0.0.1:{WAYPOINT_ADMIN_PORT}")])
        .args([
            "--metrics-addr",
            &format!("0.0.0.0:{WAYPOINT_METRICS_PORT}"),
        ])
        .args([
            "--readiness-addr",
            &format!("0.0.0.0:{WAYPOINT_READINESS_PORT}"),
        ])
        .args(&w.extra_args);
        Ok(self
            .cluster
            .spawn_in(&w.pod, &format!("waypoint-{}", w.pod), cmd)?)
    }

    /// Waits (bounded) until the waypoint in `pod` answers its readiness probe.
    pub fn wait_waypoint_ready(&self, pod: &str, timeout: Duration) -> Result<(), ScenarioError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, WAYPOINT_READINESS_PORT));
        let mut last = String::new();
        wait_for(
            &format!("waypoint in {pod} ready"),
            timeout,
            || match self.http_in(pod, addr, "/healthz/ready") {
                Ok((200, _)) => true,
                Ok((status, body)) => {
                    last = format!("{status} {body}");
                    false
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            },
        )
        .map_err(|e| {
            ScenarioError::Target(format!(
                "{e} (last: {last}); log: {}",
                self.cluster.log_of(&format!("waypoint-{pod}"))
            ))
        })
    }

    /// The token proving node `node` (`n<i>`) to the control plane and its CA.
    pub fn node_token(&self, node: &str) -> Option<&str> {
        self.tokens.get(node).map(String::as_str)
    }

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// Pid of the current ztunnel of a node.
    pub fn ztunnel_pid(&self, node: &str) -> Option<u32> {
        self.ztunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|z| z.pid)
    }

    fn start_ztunnel(&self, node: &str) -> Result<u32, ScenarioError> {
        let n = self.cluster.node(node)?.clone();
        let gen = *self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        let readiness = SocketAddr::from((Ipv4Addr::new(127, 0, 1, (gen % 250 + 1) as u8), 15021));
        let mut cmd = Command::new(&self.bins.ztunnel);
        cmd.args(["--node", &n.netns])
            .args([
                "--control-plane",
                &format!("https://{CONTROL_PLANE_IP}:{CONTROL_PLANE_GRPC_PORT}"),
            ])
            .arg("--control-plane-root")
            .arg(&self.control_plane_root)
            .args(["--node-token", &self.tokens[node]])
            .args(["--drain-timeout", "2s", "--transparent-inbound"])
            .args(["--redirect-pin-root", BPF_PIN_ROOT]);
        match self.capture {
            CaptureMode::Node => {
                cmd.args(["--redirect", "ebpf", "--redirect-uplink", &n.uplink]);
            }
            CaptureMode::InPod => {
                let dir = self.inpod_node_dir(node);
                cmd.args(["--redirect", "inpod", "--node-ip", &n.ip.to_string()])
                    .arg("--cni-socket")
                    .arg(self.cni_socket(node))
                    .arg("--inpod-state-dir")
                    .arg(dir.join("pods"))
                    .arg("--inpod-netns-dir")
                    .arg(&self.netns_dir)
                    .arg("--inpod-stop-decision-file")
                    .arg(self.stop_decision_file(node));
            }
        }
        cmd.arg("--readiness-addr")
            .arg(readiness.to_string())
            .args(&self.ztunnel_args);
        let pid = self
            .cluster
            .spawn_in(node, &format!("ztunnel-{node}-{gen}"), cmd)?;
        self.ztunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), ZtunnelProc { pid, readiness });
        Ok(pid)
    }

    /// `GET <path>` on the admin endpoint of `node`'s ztunnel (from its namespace).
    pub fn ztunnel_admin(&self, node: &str, path: &str) -> Result<(u16, String), ScenarioError> {
        let addr = ZTUNNEL_ADMIN.parse().expect("valid address");
        self.http_in(node, addr, path)
    }

    /// `GET <path>` on `addr` from the namespace of `node` (a node, pod or "fabric"):
    /// (status, body).
    pub fn http_in(
        &self,
        node: &str,
        addr: SocketAddr,
        path: &str,
    ) -> Result<(u16, String), ScenarioError> {
        let request = format!("GET {path} HTTP/1.0\r\nHost: ztunnel\r\nConnection: close\r\n\r\n");
        let reply = self
            .cluster
            .in_netns(node, move || -> std::io::Result<String> {
                let mut s = std::net::TcpStream::connect_timeout(&addr, Duration::from_secs(1))?;
                s.set_read_timeout(Some(Duration::from_secs(3)))?;
                s.write_all(request.as_bytes())?;
                let mut out = String::new();
                s.read_to_string(&mut out)?;
                Ok(out)
            })?
            .map_err(|e| ScenarioError::Target(format!("{addr} in {node}: {e}")))?;
        let status = reply
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| {
                ScenarioError::Target(format!("{addr} in {node}: bad reply {reply:?}"))
            })?;
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// The addresses of the pods `node`'s ztunnel has enrolled: its `/redirect` (node
    /// capture) or the captured pods of its `/inpod` (in-pod capture).
    pub fn enrolled_on(&self, node: &str) -> Result<BTreeSet<String>, ScenarioError> {
        if self.capture == CaptureMode::InPod {
            let v = self.inpod_status(node)?;
            let pods = v["pods"].as_array().ok_or_else(|| {
                ScenarioError::Target(format!("ztunnel /inpod on {node}: no pods list: {v}"))
            })?;
            return Ok(pods
                .iter()
                .filter(|p| p["captured"].as_bool() == Some(true))
                .filter_map(|p| p["ips"].as_array())
                .flatten()
                .filter_map(|ip| ip.as_str().map(str::to_string))
                .collect());
        }
        let v = self.admin_json(node, "/redirect")?;
        let list = v["enrolled"].as_array().ok_or_else(|| {
            ScenarioError::Target(format!(
                "ztunnel /redirect on {node}: no enrolled list: {v}"
            ))
        })?;
        Ok(list
            .iter()
            .filter_map(|x| x.as_str().map(str::to_string))
            .collect())
    }

    /// One counter of `node`'s capture programs, e.g. `inbound_plain_syn`: `/redirect` →
    /// `stats` (node capture) or `/inpod` → `stats` (in-pod capture: the counters of all
    /// the node's pods).
    pub fn redirect_stat(&self, node: &str, name: &str) -> Result<u64, ScenarioError> {
        let path = match self.capture {
            CaptureMode::Node => "/redirect",
            CaptureMode::InPod => "/inpod",
        };
        let v = self.admin_json(node, path)?;
        v["stats"][name].as_u64().ok_or_else(|| {
            ScenarioError::Target(format!("ztunnel {path} on {node}: no stats.{name}: {v}"))
        })
    }

    /// `GET <path>` on `node`'s ztunnel admin endpoint, as JSON.
    pub fn admin_json(&self, node: &str, path: &str) -> Result<serde_json::Value, ScenarioError> {
        let (status, body) = self.ztunnel_admin(node, path)?;
        serde_json::from_str(&body).map_err(|e| {
            ScenarioError::Target(format!("ztunnel {path} on {node} ({status}): {e}: {body}"))
        })
    }

    /// Waits until `node`'s current ztunnel is ready (config, certificates, first redirect
    /// sync).
    fn wait_ztunnel_ready(&self, node: &str) -> Result<(), ScenarioError> {
        let readiness = self
            .ztunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|z| z.readiness)
            .ok_or_else(|| ScenarioError::Target(format!("no ztunnel on {node}")))?;
        let mut last = String::new();
        let r = wait_for(
            &format!("ztunnel on {node} ready"),
            Duration::from_secs(60),
            || match self.http_in(node, readiness, "/healthz/ready") {
                Ok((200, _)) => true,
                Ok((_, body)) => {
                    last = body;
                    false
                }
                Err(e) => {
                    last = e.to_string();
                    false
                }
            },
        );
        r.map_err(|e| ScenarioError::Target(format!("{e} (last: {last})")))
    }

    /// Rewrites the control plane's YAML with the current opt-outs (write + rename, as an
    /// editor would).
    fn write_config(&self, opted_out: &BTreeSet<String>) -> Result<(), ScenarioError> {
        let yaml = crate::manifests::fixture_manifests_with(&self.cluster, opted_out)?;
        let tmp = self.config_dir.join(".cluster.yaml.tmp");
        let file = self.config_dir.join("cluster.yaml");
        std::fs::write(&tmp, yaml).map_err(|source| HarnessError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &file).map_err(|source| HarnessError::Io { path: file, source })?;
        Ok(())
    }
}

impl NetnsMesh {
    /// Stops every ztunnel (SIGTERM, drained) and removes each node's redirection with
    /// `ztunnel redirect-teardown` in its namespace (pins and routing). Idempotent.
    pub fn stop_and_teardown(&self) -> Result<(), ScenarioError> {
        let running = std::mem::take(&mut *self.ztunnels.lock().unwrap_or_else(|p| p.into_inner()));
        for z in running.values() {
            self.cluster.signal(z.pid, libc::SIGTERM)?;
        }
        for z in running.values() {
            self.cluster.wait_exit(z.pid, Duration::from_secs(10))?;
        }
        let mut failures = Vec::new();
        for n in self.cluster.nodes() {
            let mut cmd = Command::new(&self.bins.ztunnel);
            cmd.args(["redirect-teardown", "--node", &n.netns])
                .args(["--redirect-pin-root", BPF_PIN_ROOT]);
            netns::enter_before_exec(&mut cmd, &n.netns)?;
            match cmd.output() {
                Ok(out) if out.status.success() => {}
                Ok(out) => failures.push(format!(
                    "{}: {}",
                    n.name,
                    String::from_utf8_lossy(&out.stderr).trim()
                )),
                Err(e) => failures.push(format!("{}: {e}", n.name)),
            }
        }
        if failures.is_empty() {
            Ok(())
        } else {
            Err(ScenarioError::Target(format!(
                "ztunnel redirect-teardown failed: {}",
                failures.join("; ")
            )))
        }
    }
}

impl Drop for NetnsMesh {
    /// Stops the ztunnels and tears the redirection down (the cluster's own cleanup
    /// removes whatever is left).
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_teardown() {
            tracing::warn!(error = %e, "mesh teardown");
        }
    }
}

impl MeshTarget for NetnsMesh {
    fn http_get(
        &self,
        from: &str,
        url: &str,
        headers: &[(&str, &str)],
        count: u64,
    ) -> Result<HttpSummary, ScenarioError> {
        self.http_get_netns(self.cluster.netns_of(from)?, url, headers, count)
    }

    fn service_url(&self, service: &str, path: &str) -> Result<String, ScenarioError> {
        let (_, _, vip, _) = fixture::SERVICES
            .iter()
            .find(|s| s.0 == service)
            .ok_or_else(|| ScenarioError::Target(format!("unknown service {service}")))?;
        Ok(format!("http://{vip}:{}{path}", fixture::SERVICE_PORT))
    }

    fn pod_ip(&self, pod: &str) -> Result<std::net::IpAddr, ScenarioError> {
        Ok(self.cluster.pod(pod)?.ip.into())
    }

    fn pod_url(&self, pod: &str, port: u16, path: &str) -> Result<String, ScenarioError> {
        Ok(format!("http://{}:{port}{path}", self.cluster.pod(pod)?.ip))
    }

    /// Labels the pod `istio.io/dataplane-mode: none` (or removes the label) in the
    /// control plane's YAML, then waits until its node's ztunnel has (un)enrolled it.
    fn set_enrolled(&self, pod: &str, enrolled: bool) -> Result<(), ScenarioError> {
        let p = self.cluster.pod(pod)?.clone();
        {
            let mut out = self.opted_out.lock().unwrap_or_else(|e| e.into_inner());
            if enrolled {
                out.remove(pod);
            } else {
                out.insert(pod.to_string());
            }
            self.write_config(&out)?;
        }
        let ip = p.ip.to_string();
        let mut last = Ok(BTreeSet::new());
        let deadline = Instant::now() + ENROLL_TIMEOUT;
        while Instant::now() < deadline {
            last = self.enrolled_on(&p.node);
            if let Ok(set) = &last {
                if set.contains(&ip) == enrolled {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ScenarioError::Target(format!(
            "ztunnel on {} did not {} {pod} ({ip}) within {ENROLL_TIMEOUT:?}; enrolled: {last:?}",
            p.node,
            if enrolled { "enroll" } else { "unenroll" },
        )))
    }

    fn capture_node_link(
        &self,
        node: &str,
        during: &mut dyn FnMut() -> Result<(), ScenarioError>,
    ) -> Result<Capture, ScenarioError> {
        let n = self.cluster.node(node)?;
        let file = self.cluster.log_dir().join(format!(
            "capture-{node}-{}.pcap",
            Instant::now().elapsed().as_nanos() ^ u128::from(std::process::id())
        ));
        let label = format!("tcpdump-{node}");
        let mut cmd = Command::new("tcpdump");
        cmd.args([
            "-i",
            &format!("n{}", n.index),
            "-n",
            "-U",
            "--immediate-mode",
            "-s",
            "0",
            "-w",
        ])
        .arg(&file)
        // TCP, and TCP inside VXLAN (cilium-like: pod traffic crosses nodes in the tunnel;
        // pcap::parse reads the inner segments).
        .args([
            "tcp",
            "or",
            "udp",
            "port",
            &crate::cilium_like::VXLAN_PORT.to_string(),
        ]);
        let pid = self.cluster.spawn_in("fabric", &label, cmd)?;
        wait_for("tcpdump to listen", Duration::from_secs(5), || {
            self.cluster.log_of(&label).contains("listening on")
        })?;
        let result = during();
        std::thread::sleep(Duration::from_millis(300));
        self.cluster.signal(pid, libc::SIGTERM)?;
        let _ = self.cluster.wait_exit(pid, Duration::from_secs(5));
        result?;
        let data = std::fs::read(&file).map_err(|source| HarnessError::Io {
            path: file.clone(),
            source,
        })?;
        pcap::parse(&data).map_err(|e| ScenarioError::Target(e.to_string()))
    }

    fn ztunnel_metrics(&self, node: &str) -> Result<String, ScenarioError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ZTUNNEL_METRICS_PORT));
        match self.http_in(node, addr, "/metrics")? {
            (200, body) => Ok(body),
            (status, body) => Err(ScenarioError::Target(format!(
                "ztunnel metrics on {node}: {status} {body}"
            ))),
        }
    }

    /// Handover, as a rolling update with surge would do it: the new ztunnel starts while
    /// the old one still serves (listeners shared with SO_REUSEPORT, pins adopted), and the
    /// old one is told to drain once the new one is ready.
    fn restart_ztunnel(&self, node: &str) -> Result<(), ScenarioError> {
        let old = self
            .ztunnel_pid(node)
            .ok_or_else(|| ScenarioError::Target(format!("no ztunnel on {node}")))?;
        *self.restarts.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.start_ztunnel(node)?;
        self.wait_ztunnel_ready(node)?;
        self.cluster.signal(old, libc::SIGTERM)?;
        self.cluster.wait_exit(old, Duration::from_secs(10))?;
        Ok(())
    }
}

//! The mesh on the namespace mini-cluster with the real binaries: the control plane in
//! the fabric namespace (10.250.0.254), one ztunnel per node namespace (started with setns
//! so it sees the host bpffs) that loads and drives the node's BPF redirection itself
//! (`--redirect ebpf`, or `inpod`), waypoints in their own pods; what runs in the other
//! pods is the caller's ([`Cluster::spawn_in`]).
use std::collections::{BTreeMap, BTreeSet};
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::cluster::BPF_PIN_ROOT;
use crate::netns;
use crate::{Cluster, LabError};

mod inpod;
pub use inpod::link_netns;

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
/// HBONE listener of a waypoint (and of ztunnel's inbound), as Istio's.
pub const HBONE_PORT: u16 = 15008;
/// ztunnel admin listener in each node namespace (its default).
const ZTUNNEL_ADMIN: &str = "127.0.0.1:15000";

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

/// What [`Mesh::boot`] runs besides the cluster.
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
pub fn bin_dir() -> Result<PathBuf, LabError> {
    match std::env::var_os("MESHWORK_BIN_DIR") {
        Some(d) => Ok(PathBuf::from(d)),
        None => {
            let exe = std::env::current_exe().map_err(|source| LabError::Io {
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
pub fn locate_binary(name: &str) -> Result<PathBuf, LabError> {
    let p = bin_dir()?.join(name);
    if p.is_file() {
        Ok(p)
    } else {
        Err(LabError::Unknown {
            kind: "binary (build it, or set MESHWORK_BIN_DIR)",
            name: p.display().to_string(),
        })
    }
}

impl Binaries {
    /// From `$MESHWORK_BIN_DIR`, else the cargo target profile directory of the running
    /// executable (`target/<profile>/deps/<test>` or `target/<profile>/<bin>`).
    pub fn locate() -> Result<Self, LabError> {
        let find = locate_binary;
        Ok(Self {
            controlplane: find("controlplane")?,
            ztunnel: find("ztunnel")?,
            testapp: find("meshwork-testapp")?,
            waypoint: find("waypoint")?,
        })
    }
}

/// The mesh processes on a [`Cluster`]. Dropping it stops the ztunnels and removes their
/// redirection; the cluster's own drop kills the rest and removes the namespaces.
pub struct Mesh {
    pub cluster: Cluster,
    bins: Binaries,
    config_dir: PathBuf,
    ztunnel_args: Vec<String>,
    ztunnels: Mutex<BTreeMap<String, ZtunnelProc>>,
    tokens: BTreeMap<String, String>,
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

/// Polls `ok` every 100 ms until it holds or `timeout` passes (blocking).
pub fn wait_for(
    what: &str,
    timeout: Duration,
    mut ok: impl FnMut() -> bool,
) -> Result<(), LabError> {
    let deadline = Instant::now() + timeout;
    while Instant::now() < deadline {
        if ok() {
            return Ok(());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    Err(LabError::Timeout {
        what: what.to_string(),
        millis: timeout.as_millis() as u64,
    })
}

impl Mesh {
    /// Starts the mesh on `cluster`: the control plane (in the fabric namespace, at
    /// [`CONTROL_PLANE_IP`], over `config.files` written to its YAML directory) and one
    /// ztunnel per node with the eBPF redirection; returns once every ztunnel is ready.
    /// The fabric gets routes to the pod CIDRs, so uncaptured pods (waypoints) reach the
    /// control plane and anything else listening in the fabric namespace. Every process
    /// gets SIGKILL when the thread that spawned it exits (`PR_SET_PDEATHSIG` is per
    /// thread): call this and the `start_*` methods from a thread that outlives the mesh.
    pub fn boot(bins: Binaries, cluster: Cluster, config: MeshConfig) -> Result<Self, LabError> {
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
        std::fs::create_dir_all(&config_dir).map_err(|source| LabError::Io {
            path: config_dir.clone(),
            source,
        })?;
        for (name, text) in &config.files {
            let file = config_dir.join(name);
            std::fs::write(&file, text).map_err(|source| LabError::Io { path: file, source })?;
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
            .ok_or_else(|| LabError::Io {
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

    /// Starts the `waypoint` binary in its own pod namespace (log label `waypoint-<pod>`):
    /// it follows the control plane and gets its certificate from the control plane CA with
    /// the token of the pod's node, serves HBONE on `0.0.0.0:15008`, admin on loopback
    /// [`WAYPOINT_ADMIN_PORT`], metrics on [`WAYPOINT_METRICS_PORT`], readiness on
    /// [`WAYPOINT_READINESS_PORT`]. The pod must be
    /// labelled `gateway.networking.k8s.io/gateway-name` in the YAML (never captured).
    /// Returns its pid; [`Mesh::wait_waypoint_ready`] waits for it.
    pub fn start_waypoint(&self, w: &WaypointSpec) -> Result<u32, LabError> {
        let pod = self.cluster.pod(&w.pod)?.clone();
        let token = self.tokens.get(&pod.node).ok_or_else(|| {
            LabError::Mesh(format!(
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
        .args(["--hbone-addr", &format!("0.0.0.0:{}", HBONE_PORT)])
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
        self.cluster
            .spawn_in(&w.pod, &format!("waypoint-{}", w.pod), cmd)
    }

    /// Waits (bounded) until the waypoint in `pod` answers its readiness probe.
    pub fn wait_waypoint_ready(&self, pod: &str, timeout: Duration) -> Result<(), LabError> {
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
            LabError::Mesh(format!(
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

    fn start_ztunnel(&self, node: &str) -> Result<u32, LabError> {
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
    pub fn ztunnel_admin(&self, node: &str, path: &str) -> Result<(u16, String), LabError> {
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
    ) -> Result<(u16, String), LabError> {
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
            .map_err(|e| LabError::Mesh(format!("{addr} in {node}: {e}")))?;
        let status = reply
            .split_whitespace()
            .nth(1)
            .and_then(|c| c.parse().ok())
            .ok_or_else(|| LabError::Mesh(format!("{addr} in {node}: bad reply {reply:?}")))?;
        let body = reply
            .split_once("\r\n\r\n")
            .map(|(_, b)| b.to_string())
            .unwrap_or_default();
        Ok((status, body))
    }

    /// The addresses of the pods `node`'s ztunnel has enrolled: its `/redirect` (node
    /// capture) or the captured pods of its `/inpod` (in-pod capture).
    pub fn enrolled_on(&self, node: &str) -> Result<BTreeSet<String>, LabError> {
        if self.capture == CaptureMode::InPod {
            let v = self.inpod_status(node)?;
            let pods = v["pods"].as_array().ok_or_else(|| {
                LabError::Mesh(format!("ztunnel /inpod on {node}: no pods list: {v}"))
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
            LabError::Mesh(format!(
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
    pub fn redirect_stat(&self, node: &str, name: &str) -> Result<u64, LabError> {
        let path = match self.capture {
            CaptureMode::Node => "/redirect",
            CaptureMode::InPod => "/inpod",
        };
        let v = self.admin_json(node, path)?;
        v["stats"][name].as_u64().ok_or_else(|| {
            LabError::Mesh(format!("ztunnel {path} on {node}: no stats.{name}: {v}"))
        })
    }

    /// `GET <path>` on `node`'s ztunnel admin endpoint, as JSON.
    pub fn admin_json(&self, node: &str, path: &str) -> Result<serde_json::Value, LabError> {
        let (status, body) = self.ztunnel_admin(node, path)?;
        serde_json::from_str(&body).map_err(|e| {
            LabError::Mesh(format!("ztunnel {path} on {node} ({status}): {e}: {body}"))
        })
    }

    /// Waits until `node`'s current ztunnel is ready (config, certificates, first redirect
    /// sync).
    fn wait_ztunnel_ready(&self, node: &str) -> Result<(), LabError> {
        let readiness = self
            .ztunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .map(|z| z.readiness)
            .ok_or_else(|| LabError::Mesh(format!("no ztunnel on {node}")))?;
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
        r.map_err(|e| LabError::Mesh(format!("{e} (last: {last})")))
    }

    /// The binaries the mesh runs.
    pub fn binaries(&self) -> &Binaries {
        &self.bins
    }

    /// `node`'s ztunnel metrics (`/metrics` on [`ZTUNNEL_METRICS_PORT`] in its namespace).
    pub fn ztunnel_metrics(&self, node: &str) -> Result<String, LabError> {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, ZTUNNEL_METRICS_PORT));
        match self.http_in(node, addr, "/metrics")? {
            (200, body) => Ok(body),
            (status, body) => Err(LabError::Mesh(format!(
                "ztunnel metrics on {node}: {status} {body}"
            ))),
        }
    }

    /// Handover, as a rolling update with surge would do it: the new ztunnel starts while
    /// the old one still serves (listeners shared with SO_REUSEPORT, pins adopted), and the
    /// old one is told to drain once the new one is ready.
    pub fn restart_ztunnel(&self, node: &str) -> Result<(), LabError> {
        let old = self
            .ztunnel_pid(node)
            .ok_or_else(|| LabError::Mesh(format!("no ztunnel on {node}")))?;
        *self.restarts.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.start_ztunnel(node)?;
        self.wait_ztunnel_ready(node)?;
        self.cluster.signal(old, libc::SIGTERM)?;
        self.cluster.wait_exit(old, Duration::from_secs(10))?;
        Ok(())
    }

    /// Stops every ztunnel (SIGTERM, drained) and removes each node's redirection with
    /// `ztunnel redirect-teardown` in its namespace (pins and routing). Idempotent.
    pub fn stop_and_teardown(&self) -> Result<(), LabError> {
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
            Err(LabError::Mesh(format!(
                "ztunnel redirect-teardown failed: {}",
                failures.join("; ")
            )))
        }
    }
}

impl Drop for Mesh {
    /// Stops the ztunnels and tears the redirection down (the cluster's own cleanup
    /// removes whatever is left).
    fn drop(&mut self) {
        if let Err(e) = self.stop_and_teardown() {
            tracing::warn!(error = %e, "mesh teardown");
        }
    }
}

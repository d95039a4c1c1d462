//! [`MeshTarget`] on the namespace mini-cluster with the real binaries: the control plane
//! in the fabric namespace (10.250.0.254), one ztunnel per node namespace (started with
//! setns so it sees the host bpffs), BPF redirection loaded per node by the harness, and
//! `meshwork-testapp` in every pod.
use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meshwork_redirect::{ensure_bpffs, install_local_routing, Redirect, RedirectOptions};

use crate::cluster::BPF_PIN_ROOT;
use crate::netns;
use crate::pcap::{self, Capture};
use crate::scenarios::fixture;
use crate::target::{HttpSummary, MeshTarget, ScenarioError};
use crate::{Cluster, HarnessError};

const CONTROL_PLANE_IP: &str = "10.250.0.254";

/// Paths of the binaries a full mesh needs.
#[derive(Clone, Debug)]
pub struct Binaries {
    pub controlplane: PathBuf,
    pub ztunnel: PathBuf,
    pub testapp: PathBuf,
}

impl Binaries {
    /// From `$MESHWORK_BIN_DIR`, else the cargo target profile directory of the running
    /// executable (`target/<profile>/deps/<test>` or `target/<profile>/<bin>`).
    pub fn locate() -> Result<Self, HarnessError> {
        let dir = match std::env::var_os("MESHWORK_BIN_DIR") {
            Some(d) => PathBuf::from(d),
            None => {
                let exe = std::env::current_exe().map_err(|source| HarnessError::Io {
                    path: "current_exe".into(),
                    source,
                })?;
                let parent = exe.parent().map(Path::to_path_buf).unwrap_or_default();
                if parent.file_name().is_some_and(|n| n == "deps") {
                    parent.parent().map(Path::to_path_buf).unwrap_or_default()
                } else {
                    parent
                }
            }
        };
        let find = |name: &str| -> Result<PathBuf, HarnessError> {
            let p = dir.join(name);
            if p.is_file() {
                Ok(p)
            } else {
                Err(HarnessError::Unknown {
                    kind: "binary (build it, or set MESHWORK_BIN_DIR)",
                    name: p.display().to_string(),
                })
            }
        };
        Ok(Self {
            controlplane: find("controlplane")?,
            ztunnel: find("ztunnel")?,
            testapp: find("meshwork-testapp")?,
        })
    }
}

pub struct NetnsMesh {
    pub cluster: Cluster,
    bins: Binaries,
    config_dir: PathBuf,
    ztunnels: Mutex<BTreeMap<String, u32>>,
    tokens: BTreeMap<String, String>,
    redirects: Mutex<BTreeMap<String, Redirect>>,
    restarts: Mutex<u32>,
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
        ensure_bpffs(Path::new("/sys/fs/bpf")).map_err(|e| ScenarioError::Target(e.to_string()))?;
        let mut b = Cluster::builder().nodes(2);
        for (name, _, node, ..) in fixture::PODS {
            b = b.pod(name, *node);
        }
        let cluster = b.build()?;
        netns::ip_in(
            cluster.fabric_netns(),
            &[
                "addr",
                "add",
                &format!("{CONTROL_PLANE_IP}/24"),
                "dev",
                "br0",
            ],
        )?;
        let config_dir = cluster.log_dir().join("config");
        std::fs::create_dir_all(&config_dir).map_err(|source| HarnessError::Io {
            path: config_dir.clone(),
            source,
        })?;
        let yaml = crate::manifests::fixture_manifests(&cluster)?;
        let file = config_dir.join("cluster.yaml");
        std::fs::write(&file, yaml).map_err(|source| HarnessError::Io { path: file, source })?;
        let ca_dir = cluster.log_dir().join("ca");

        let mut cp = Command::new(&bins.controlplane);
        cp.arg("--config-dir")
            .arg(&config_dir)
            .arg("--ca-dir")
            .arg(&ca_dir)
            .arg("--grpc-addr")
            .arg(format!("{CONTROL_PLANE_IP}:15010"))
            .arg("--admin-addr")
            .arg(format!("{CONTROL_PLANE_IP}:15014"));
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
        let mesh = Self {
            cluster,
            bins,
            config_dir,
            ztunnels: Mutex::new(BTreeMap::new()),
            tokens,
            redirects: Mutex::new(BTreeMap::new()),
            restarts: Mutex::new(0),
        };
        for n in mesh.cluster.nodes().to_vec() {
            mesh.start_ztunnel(&n.name)?;
            mesh.load_redirect(&n.name)?;
        }
        for (name, _, _, app, version, _) in fixture::PODS {
            let mut cmd = Command::new(&mesh.bins.testapp);
            cmd.args(["serve", "--port", &fixture::APP_PORT.to_string()])
                .args(["--app", app, "--version", version, "--pod", name]);
            mesh.cluster.spawn_in(name, &format!("app-{name}"), cmd)?;
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

    pub fn config_dir(&self) -> &Path {
        &self.config_dir
    }

    /// Pid of the current ztunnel of a node.
    pub fn ztunnel_pid(&self, node: &str) -> Option<u32> {
        self.ztunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .copied()
    }

    fn start_ztunnel(&self, node: &str) -> Result<u32, ScenarioError> {
        let n = self.cluster.node(node)?.clone();
        let gen = *self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        let mut cmd = Command::new(&self.bins.ztunnel);
        cmd.args(["--node", &n.netns])
            .args([
                "--control-plane",
                &format!("http://{CONTROL_PLANE_IP}:15010"),
            ])
            .args(["--node-token", &self.tokens[node]])
            .args(["--drain-timeout", "2s", "--transparent-inbound"]);
        let pid = self
            .cluster
            .spawn_in(node, &format!("ztunnel-{node}-{gen}"), cmd)?;
        self.ztunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), pid);
        Ok(pid)
    }

    fn load_redirect(&self, node: &str) -> Result<(), ScenarioError> {
        let n = self.cluster.node(node)?.clone();
        let mut opts = RedirectOptions::new(n.netns.clone());
        opts.pin_root = BPF_PIN_ROOT.into();
        let mut ifaces = vec![n.uplink.clone()];
        ifaces.extend(
            self.cluster
                .pods_on(node)
                .iter()
                .map(|p| p.host_veth.clone()),
        );
        let r = self
            .cluster
            .in_netns(
                node,
                move || -> Result<Redirect, meshwork_redirect::RedirectError> {
                    install_local_routing(&opts)?;
                    let mut r = Redirect::load(opts)?;
                    for i in &ifaces {
                        r.attach(i)?;
                    }
                    r.exclude_local_addresses()?;
                    Ok(r)
                },
            )?
            .map_err(|e| ScenarioError::Target(e.to_string()))?;
        self.redirects
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(node.to_string(), r);
        for (name, ns, ..) in fixture::PODS {
            let ambient = fixture::NAMESPACES.iter().any(|(n, a)| n == ns && *a);
            if ambient && self.cluster.pod(name)?.node == node {
                self.set_enrolled(name, true)?;
            }
        }
        Ok(())
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
        let mut cmd = Command::new(&self.bins.testapp);
        cmd.args([
            "get",
            url,
            "--count",
            &count.to_string(),
            "--timeout-ms",
            "3000",
        ]);
        for (k, v) in headers {
            cmd.args(["--header", &format!("{k}: {v}")]);
        }
        netns::enter_before_exec(&mut cmd, self.cluster.netns_of(from)?)?;
        let out = cmd
            .output()
            .map_err(|e| ScenarioError::Target(format!("testapp get in {from}: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).map_err(|e| {
            ScenarioError::Target(format!(
                "testapp get in {from}: bad summary {text:?} ({e}); stderr {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })
    }

    fn service_url(&self, service: &str, path: &str) -> Result<String, ScenarioError> {
        let (_, _, vip, _) = fixture::SERVICES
            .iter()
            .find(|s| s.0 == service)
            .ok_or_else(|| ScenarioError::Target(format!("unknown service {service}")))?;
        Ok(format!("http://{vip}:{}{path}", fixture::SERVICE_PORT))
    }

    fn pod_url(&self, pod: &str, port: u16, path: &str) -> Result<String, ScenarioError> {
        Ok(format!("http://{}:{port}{path}", self.cluster.pod(pod)?.ip))
    }

    fn set_enrolled(&self, pod: &str, enrolled: bool) -> Result<(), ScenarioError> {
        let p = self.cluster.pod(pod)?;
        let mut redirects = self.redirects.lock().unwrap_or_else(|e| e.into_inner());
        let r = redirects
            .get_mut(&p.node)
            .ok_or_else(|| ScenarioError::Target(format!("no redirect on {}", p.node)))?;
        let res = if enrolled {
            r.enroll(p.ip)
        } else {
            r.unenroll(p.ip)
        };
        res.map_err(|e| ScenarioError::Target(e.to_string()))
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
        .arg("tcp");
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

    fn restart_ztunnel(&self, node: &str) -> Result<(), ScenarioError> {
        let old = self
            .ztunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .get(node)
            .copied()
            .ok_or_else(|| ScenarioError::Target(format!("no ztunnel on {node}")))?;
        self.cluster.signal(old, libc::SIGTERM)?;
        self.cluster.wait_exit(old, Duration::from_secs(10))?;
        *self.restarts.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        self.start_ztunnel(node)?;
        Ok(())
    }
}

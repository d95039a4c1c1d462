//! [`MeshTarget`] on netlab's namespace mini-cluster with the real binaries
//! ([`Mesh`]: the control plane in the fabric namespace, one ztunnel per node namespace
//! with the eBPF redirection), the scenario fixture's pods running `meshwork-testapp`.
//! Enrollment changes go through the control plane's YAML, as `kubectl label` would.
use std::collections::BTreeSet;
use std::ops::Deref;
use std::process::Command;
use std::sync::Mutex;
use std::time::{Duration, Instant};

use meshwork_netlab::{wait_for, Binaries, CaptureMode, Cluster, Mesh, MeshConfig};

use crate::network::{ClusterBuilderExt, Network};
use crate::pcap::{self, Capture};
use crate::scenarios::fixture;
use crate::target::{HttpSummary, MeshTarget, ScenarioError};
use crate::HarnessError;

mod sandbox;
pub use sandbox::{PodSpec, Sandbox};

/// How long an enrollment change may take from the YAML edit to the ztunnel's map (the
/// requirement is one second, typically ~100 ms here; slack for a loaded 2-core CI host).
const ENROLL_TIMEOUT: Duration = Duration::from_secs(2);

/// The fixture's mesh: netlab's [`Mesh`] (its methods and `cluster` through `Deref`) and
/// the enrollment state the scenarios change.
pub struct NetnsMesh {
    mesh: Mesh,
    /// Pods labelled `istio.io/dataplane-mode: none` in the control plane's YAML.
    opted_out: Mutex<BTreeSet<String>>,
}

impl Deref for NetnsMesh {
    type Target = Mesh;

    fn deref(&self) -> &Mesh {
        &self.mesh
    }
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
        let mesh = Self {
            mesh: Mesh::boot(bins, cluster, config)?,
            opted_out: Mutex::new(BTreeSet::new()),
        };
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

    /// Starts `meshwork-testapp serve` on port [`fixture::APP_PORT`] in `pod` (log label
    /// `app-<pod>`); returns its pid.
    pub fn start_app(&self, pod: &str, app: &str, version: &str) -> Result<u32, ScenarioError> {
        let mut cmd = Command::new(&self.binaries().testapp);
        cmd.args(["serve", "--port", &fixture::APP_PORT.to_string()])
            .args(["--app", app, "--version", version, "--pod", pod]);
        Ok(self.cluster.spawn_in(pod, &format!("app-{pod}"), cmd)?)
    }

    /// Rewrites the control plane's YAML with the current opt-outs (write + rename, as an
    /// editor would).
    fn write_config(&self, opted_out: &BTreeSet<String>) -> Result<(), ScenarioError> {
        let yaml = crate::manifests::fixture_manifests_with(&self.cluster, opted_out)?;
        let tmp = self.config_dir().join(".cluster.yaml.tmp");
        let file = self.config_dir().join("cluster.yaml");
        std::fs::write(&tmp, yaml).map_err(|source| HarnessError::Io {
            path: tmp.clone(),
            source,
        })?;
        std::fs::rename(&tmp, &file).map_err(|source| HarnessError::Io { path: file, source })?;
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
        Ok(self.mesh.ztunnel_metrics(node)?)
    }

    /// Handover, as a rolling update with surge would do it ([`Mesh::restart_ztunnel`]).
    fn restart_ztunnel(&self, node: &str) -> Result<(), ScenarioError> {
        Ok(self.mesh.restart_ztunnel(node)?)
    }
}

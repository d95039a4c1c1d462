//! [`CaptureMode::InPod`] parts of [`Mesh`]: the cluster's netns directory (what a
//! container runtime keeps), each node's agent socket and pod records, the ztunnel's
//! `/inpod`, stopping and starting a node's ztunnel.
use std::path::{Path, PathBuf};
use std::time::Duration;

use serde_json::Value;

use super::{CaptureMode, Mesh};
use crate::netns::netns_path;
use crate::{Cluster, LabError};

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> LabError + '_ {
    move |source| LabError::Io {
        path: path.to_path_buf(),
        source,
    }
}

/// The cluster's netns directory: one symlink per pod to its `/var/run/netns` file.
pub(super) fn make_netns_dir(cluster: &Cluster, dir: &Path) -> Result<(), LabError> {
    std::fs::create_dir_all(dir).map_err(io_err(dir))?;
    for p in cluster.pods() {
        link_netns(dir, &p.netns)?;
    }
    Ok(())
}

/// Links namespace `netns` into the netns directory `dir` (as a container runtime does
/// for a new sandbox).
pub fn link_netns(dir: &Path, netns: &str) -> Result<(), LabError> {
    let link = dir.join(netns);
    std::os::unix::fs::symlink(netns_path(netns), &link).map_err(io_err(&link))
}

impl Mesh {
    pub fn capture(&self) -> CaptureMode {
        self.capture
    }

    /// The cluster's netns directory ([`CaptureMode::InPod`]).
    pub fn netns_dir(&self) -> &Path {
        &self.netns_dir
    }

    /// Where `node`'s ztunnel keeps its in-pod state (`cni.sock`, `pods/`).
    pub fn inpod_node_dir(&self, node: &str) -> PathBuf {
        self.cluster.log_dir().join(format!("inpod-{node}"))
    }

    /// `node`'s agent socket (`--cni-socket`).
    pub fn cni_socket(&self, node: &str) -> PathBuf {
        self.inpod_node_dir(node).join("cni.sock")
    }

    /// Where `node`'s node agent would say, when the ztunnel stops, whether the mesh is
    /// being uninstalled (`uninstall`) or not (`restart`).
    pub fn stop_decision_file(&self, node: &str) -> PathBuf {
        self.inpod_node_dir(node).join("stop-decision")
    }

    /// `node`'s ztunnel `/inpod`: `{"pods": [{key, pod, netns, ips, captured}], "stats"}`.
    pub fn inpod_status(&self, node: &str) -> Result<Value, LabError> {
        self.admin_json(node, "/inpod")
    }

    /// The `/inpod` entry of pod `namespace/name` on `node`, if the ztunnel knows it.
    pub fn inpod_pod(&self, node: &str, pod_ref: &str) -> Result<Option<Value>, LabError> {
        let v = self.inpod_status(node)?;
        Ok(v["pods"]
            .as_array()
            .and_then(|l| l.iter().find(|p| p["pod"].as_str() == Some(pod_ref)))
            .cloned())
    }

    /// Log label of `node`'s current ztunnel.
    pub fn ztunnel_label(&self, node: &str) -> String {
        let gen = *self.restarts.lock().unwrap_or_else(|p| p.into_inner());
        format!("ztunnel-{node}-{gen}")
    }

    /// Stops `node`'s ztunnel with `signal` (SIGTERM: drained within its 2 s deadline;
    /// SIGKILL: a crash) and waits for it to exit. The node then has no ztunnel.
    pub fn stop_ztunnel(&self, node: &str, signal: i32) -> Result<(), LabError> {
        let z = self
            .ztunnels
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(node)
            .ok_or_else(|| LabError::Mesh(format!("no ztunnel on {node}")))?;
        self.cluster.signal(z.pid, signal)?;
        self.cluster.wait_exit(z.pid, Duration::from_secs(10))?;
        Ok(())
    }

    /// Starts a new ztunnel on `node` (after [`Mesh::stop_ztunnel`]) and waits until
    /// it is ready. Returns its pid.
    pub fn start_new_ztunnel(&self, node: &str) -> Result<u32, LabError> {
        *self.restarts.lock().unwrap_or_else(|p| p.into_inner()) += 1;
        let pid = self.start_ztunnel(node)?;
        self.wait_ztunnel_ready(node)?;
        Ok(pid)
    }
}

//! A mini-cluster of network namespaces: a fabric bridge, N nodes, pods behind veths.
//! Everything is named after a per-run id and removed on drop, panics included.
use std::any::Any;
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::PathBuf;
use std::process::{Child, Command, Output, Stdio};
use std::sync::Mutex;
use std::time::{Duration, Instant};

use crate::netns::{self, ip_in};
use crate::topology::{self, Node, Pod, Service, MAX_NODES, MAX_PODS_PER_NODE};
use crate::{names, LabError};

/// Root of BPF pins of Meshwork nodes; a cluster node's pins are `<root>/<node netns>`.
pub const BPF_PIN_ROOT: &str = "/sys/fs/bpf/meshwork";

/// How pods are wired into their nodes when not by the cluster's own bridge plan (a veth
/// per pod with the node's gateway on it, fixed addresses): e.g. a CNI runtime or an
/// emulated datapath (the e2e harness's kind-ptp and cilium-like networks).
pub trait PodWiring: Any + Send + Sync {
    /// Its name in logs and errors (e.g. `kind-ptp`).
    fn name(&self) -> &'static str;

    /// Whether every node routes the other nodes' pod CIDRs via their fabric address (as
    /// the bridge plan does); `false` when the wiring carries them itself (a tunnel).
    fn routes_between_nodes(&self) -> bool {
        true
    }

    /// Wires the planned pods once the fabric and the nodes exist: makes each pod's
    /// namespace ([`Cluster::add_pod_netns`]) and its link, and sets each pod's `ip` and
    /// `host_veth` to what the wiring gave it. What it made before an error is still
    /// removed by [`PodWiring::teardown`].
    fn wire(&mut self, cluster: &Cluster, pods: &mut [Pod]) -> Result<(), LabError>;

    /// Removes what the wiring made outside the cluster's namespaces (called on drop,
    /// before the namespaces are deleted).
    fn teardown(&self);
}

#[derive(Default)]
pub struct ClusterBuilder {
    nodes: usize,
    pods_per_node: usize,
    named_pods: Vec<(String, usize)>,
    services: Vec<(String, Ipv4Addr, u16, u16, Vec<String>)>,
    wiring: Option<Box<dyn PodWiring>>,
}

impl ClusterBuilder {
    /// Wires pods with `wiring` instead of the bridge plan.
    pub fn wiring(mut self, wiring: Box<dyn PodWiring>) -> Self {
        self.wiring = Some(wiring);
        self
    }

    pub fn nodes(mut self, n: usize) -> Self {
        self.nodes = n;
        self
    }

    /// Adds `m` pods named `n<i>-p<j>` to every node.
    pub fn pods_per_node(mut self, m: usize) -> Self {
        self.pods_per_node = m;
        self
    }

    /// Adds a named pod on node index `node`.
    pub fn pod(mut self, name: &str, node: usize) -> Self {
        self.named_pods.push((name.to_string(), node));
        self
    }

    /// Declares a service VIP `vip:port` → `backends:target_port`.
    pub fn service(
        mut self,
        name: &str,
        vip: Ipv4Addr,
        port: u16,
        target_port: u16,
        backends: &[&str],
    ) -> Self {
        self.services.push((
            name.to_string(),
            vip,
            port,
            target_port,
            backends.iter().map(|s| s.to_string()).collect(),
        ));
        self
    }

    fn plan(&self, run_id: &str) -> Result<Plan, LabError> {
        if self.nodes == 0 || self.nodes > MAX_NODES {
            return Err(LabError::Spec {
                field: "nodes",
                reason: format!("{} not in 1..={MAX_NODES}", self.nodes),
            });
        }
        let nodes: Vec<Node> = (0..self.nodes).map(|i| topology::node(run_id, i)).collect();
        let mut slots = vec![0usize; self.nodes];
        let mut pods: Vec<Pod> = Vec::new();
        let mut add = |name: String, node: usize| -> Result<(), LabError> {
            topology::check_name("pod", &name)?;
            let Some(n) = nodes.get(node) else {
                return Err(LabError::Spec {
                    field: "pod.node",
                    reason: format!("pod {name}: node index {node} >= {}", nodes.len()),
                });
            };
            if pods.iter().any(|p| p.name == name) {
                return Err(LabError::Spec {
                    field: "pod",
                    reason: format!("duplicate pod name {name}"),
                });
            }
            if slots[node] >= MAX_PODS_PER_NODE {
                return Err(LabError::Spec {
                    field: "pods_per_node",
                    reason: format!("node n{node} has more than {MAX_PODS_PER_NODE} pods"),
                });
            }
            pods.push(topology::pod(run_id, &name, n, slots[node]));
            slots[node] += 1;
            Ok(())
        };
        for i in 0..self.nodes {
            for j in 0..self.pods_per_node {
                add(format!("n{i}-p{j}"), i)?;
            }
        }
        for (name, node) in &self.named_pods {
            add(name.clone(), *node)?;
        }
        let mut services = Vec::new();
        for (name, vip, port, target_port, backends) in &self.services {
            topology::check_name("service", name)?;
            for b in backends {
                if !pods.iter().any(|p| &p.name == b) {
                    return Err(LabError::Spec {
                        field: "service.backends",
                        reason: format!("service {name}: unknown pod {b}"),
                    });
                }
            }
            services.push(Service {
                name: name.clone(),
                vip: *vip,
                port: *port,
                target_port: *target_port,
                backends: backends.clone(),
            });
        }
        Ok((nodes, pods, services))
    }

    /// Creates the namespaces and links. On error everything created so far is removed.
    pub fn build(self) -> Result<Cluster, LabError> {
        cleanup_stale();
        let run_id = names::new_run_id();
        let (nodes, pods, services) = self.plan(&run_id)?;
        let log_dir = std::env::temp_dir().join("meshwork-e2e").join(&run_id);
        std::fs::create_dir_all(&log_dir).map_err(|source| LabError::Io {
            path: log_dir.clone(),
            source,
        })?;
        let mut cluster = Cluster {
            fabric: format!("{run_id}-fab"),
            wiring: None,
            run_id,
            nodes,
            pods,
            services,
            log_dir,
            created: Mutex::new(Vec::new()),
            children: Mutex::new(BTreeMap::new()),
        };
        cluster.create(self.wiring)?;
        Ok(cluster)
    }
}

/// Nodes, pods and services of a spec.
type Plan = (Vec<Node>, Vec<Pod>, Vec<Service>);

struct Process {
    child: Child,
    label: String,
}

/// A running mini-cluster. Dropping it kills its processes and removes its BPF pins and
/// namespaces.
pub struct Cluster {
    run_id: String,
    /// How pods are wired, when not by the bridge plan.
    wiring: Option<Box<dyn PodWiring>>,
    fabric: String,
    nodes: Vec<Node>,
    pods: Vec<Pod>,
    services: Vec<Service>,
    log_dir: PathBuf,
    created: Mutex<Vec<String>>,
    children: Mutex<BTreeMap<u32, Process>>,
}

impl Cluster {
    pub fn builder() -> ClusterBuilder {
        ClusterBuilder::default()
    }

    pub fn run_id(&self) -> &str {
        &self.run_id
    }

    /// The name of the pod network: `bridge`, or the [`PodWiring`]'s.
    pub fn network_name(&self) -> &'static str {
        self.wiring.as_ref().map_or("bridge", |w| w.name())
    }

    /// The pod wiring the cluster was built with, if it is a `W`.
    pub fn wiring<W: PodWiring>(&self) -> Option<&W> {
        let w: &dyn Any = self.wiring.as_deref()?;
        w.downcast_ref::<W>()
    }

    pub fn fabric_netns(&self) -> &str {
        &self.fabric
    }

    pub fn nodes(&self) -> &[Node] {
        &self.nodes
    }

    pub fn pods(&self) -> &[Pod] {
        &self.pods
    }

    pub fn services(&self) -> &[Service] {
        &self.services
    }

    /// Directory of the log files of spawned processes.
    pub fn log_dir(&self) -> &std::path::Path {
        &self.log_dir
    }

    pub fn node(&self, name: &str) -> Result<&Node, LabError> {
        self.nodes
            .iter()
            .find(|n| n.name == name)
            .ok_or_else(|| LabError::Unknown {
                kind: "node",
                name: name.to_string(),
            })
    }

    pub fn pod(&self, name: &str) -> Result<&Pod, LabError> {
        self.pods
            .iter()
            .find(|p| p.name == name)
            .ok_or_else(|| LabError::Unknown {
                kind: "pod",
                name: name.to_string(),
            })
    }

    pub fn service(&self, name: &str) -> Result<&Service, LabError> {
        self.services
            .iter()
            .find(|s| s.name == name)
            .ok_or_else(|| LabError::Unknown {
                kind: "service",
                name: name.to_string(),
            })
    }

    /// Pods scheduled on a node.
    pub fn pods_on(&self, node: &str) -> Vec<&Pod> {
        self.pods.iter().filter(|p| p.node == node).collect()
    }

    /// Network namespace of a node or pod name, or "fabric".
    pub fn netns_of(&self, target: &str) -> Result<&str, LabError> {
        if target == "fabric" {
            return Ok(&self.fabric);
        }
        if let Some(n) = self.nodes.iter().find(|n| n.name == target) {
            return Ok(&n.netns);
        }
        if let Some(p) = self.pods.iter().find(|p| p.name == target) {
            return Ok(&p.netns);
        }
        Err(LabError::Unknown {
            kind: "node or pod",
            name: target.to_string(),
        })
    }

    /// BPF pin directory of a node's redirection (`<BPF_PIN_ROOT>/<node netns>`).
    pub fn bpf_node_name(&self, node: &str) -> Result<String, LabError> {
        Ok(self.node(node)?.netns.clone())
    }

    /// Runs a command to completion inside a node or pod.
    pub fn exec_in(&self, target: &str, cmd: &mut Command) -> Result<Output, LabError> {
        netns::exec_in(self.netns_of(target)?, cmd)
    }

    /// Runs a closure on a thread inside a node or pod namespace.
    pub fn in_netns<T, F>(&self, target: &str, f: F) -> Result<T, LabError>
    where
        F: FnOnce() -> T + Send + 'static,
        T: Send + 'static,
    {
        netns::in_netns(self.netns_of(target)?, f)
    }

    /// Starts a process inside a node or pod; stdout and stderr go to
    /// `<log_dir>/<label>.log`. It is killed when the cluster drops. Returns its pid.
    pub fn spawn_in(&self, target: &str, label: &str, cmd: Command) -> Result<u32, LabError> {
        let netns = self.netns_of(target)?.to_string();
        self.spawn_in_netns(&netns, label, cmd)
    }

    /// As [`Cluster::spawn_in`], in the named network namespace `netns` (e.g. a sandbox
    /// made by [`Cluster::add_sandbox_netns`]).
    pub fn spawn_in_netns(
        &self,
        netns: &str,
        label: &str,
        mut cmd: Command,
    ) -> Result<u32, LabError> {
        let target = netns;
        let log = self.log_dir.join(format!("{label}.log"));
        let file = std::fs::File::create(&log).map_err(|source| LabError::Io {
            path: log.clone(),
            source,
        })?;
        let err = file.try_clone().map_err(|source| LabError::Io {
            path: log.clone(),
            source,
        })?;
        cmd.stdin(Stdio::null()).stdout(file).stderr(err);
        netns::enter_before_exec(&mut cmd, netns)?;
        let child = cmd.spawn().map_err(|source| LabError::Spawn {
            command: format!("{:?}", cmd.get_program()),
            target: target.to_string(),
            source,
        })?;
        let pid = child.id();
        tracing::debug!(pid, label, target, "spawned");
        self.children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                pid,
                Process {
                    child,
                    label: label.to_string(),
                },
            );
        Ok(pid)
    }

    /// Sends `signal` to a spawned process.
    pub fn signal(&self, pid: u32, signal: i32) -> Result<(), LabError> {
        let children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        if !children.contains_key(&pid) {
            return Err(LabError::Unknown {
                kind: "process",
                name: pid.to_string(),
            });
        }
        // SAFETY: plain kill(2) of a child we own and have not reaped.
        if unsafe { libc::kill(pid as i32, signal) } != 0 {
            return Err(LabError::Command {
                command: format!("kill -{signal} {pid}"),
                reason: std::io::Error::last_os_error().to_string(),
            });
        }
        Ok(())
    }

    /// Kills a spawned process and waits for it.
    pub fn kill(&self, pid: u32) -> Result<(), LabError> {
        let proc = self
            .children
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(&pid);
        match proc {
            Some(mut p) => {
                let _ = p.child.kill();
                let _ = p.child.wait();
                tracing::debug!(pid, label = %p.label, "killed");
                Ok(())
            }
            None => Err(LabError::Unknown {
                kind: "process",
                name: pid.to_string(),
            }),
        }
    }

    /// Waits (bounded) for a spawned process to exit; returns its exit code.
    pub fn wait_exit(&self, pid: u32, timeout: Duration) -> Result<Option<i32>, LabError> {
        let deadline = Instant::now() + timeout;
        while Instant::now() < deadline {
            let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
            let Some(p) = children.get_mut(&pid) else {
                return Err(LabError::Unknown {
                    kind: "process",
                    name: pid.to_string(),
                });
            };
            if let Ok(Some(status)) = p.child.try_wait() {
                children.remove(&pid);
                return Ok(status.code());
            }
            drop(children);
            std::thread::sleep(Duration::from_millis(20));
        }
        Err(LabError::Timeout {
            what: format!("process {pid} to exit"),
            millis: timeout.as_millis() as u64,
        })
    }

    /// The first spawned process (not yet waited for) that has exited: its label and exit
    /// status. The process stays known, so later calls report it again.
    pub fn first_exited(&self) -> Option<(String, std::process::ExitStatus)> {
        let mut children = self.children.lock().unwrap_or_else(|p| p.into_inner());
        children
            .values_mut()
            .find_map(|p| match p.child.try_wait() {
                Ok(Some(status)) => Some((p.label.clone(), status)),
                _ => None,
            })
    }

    /// Path of a spawned process's log.
    pub fn log_path(&self, label: &str) -> PathBuf {
        self.log_dir.join(format!("{label}.log"))
    }

    /// Contents of a spawned process's log.
    pub fn log_of(&self, label: &str) -> String {
        std::fs::read_to_string(self.log_dir.join(format!("{label}.log"))).unwrap_or_default()
    }

    fn add_netns(&self, name: &str) -> Result<(), LabError> {
        self.add_bare_netns(name)?;
        ip_in(name, &["link", "set", "lo", "up"])?;
        Ok(())
    }

    /// The namespace of a pod sandbox made after the build, `<run>-<name>`, as a container
    /// runtime creates it (`lo` still down); removed with the cluster. Returns its name.
    pub fn add_sandbox_netns(&self, name: &str) -> Result<String, LabError> {
        topology::check_name("pod", name)?;
        let ns = format!("{}-{name}", self.run_id);
        self.add_bare_netns(&ns)?;
        Ok(ns)
    }

    /// A pod's namespace as a container runtime creates a sandbox's (`lo` still down),
    /// removed with the cluster: for a [`PodWiring`].
    pub fn add_pod_netns(&self, pod: &Pod) -> Result<(), LabError> {
        self.add_bare_netns(&pod.netns)
    }

    /// A namespace as a container runtime creates a sandbox's: `lo` still down.
    fn add_bare_netns(&self, name: &str) -> Result<(), LabError> {
        netns::ip(&["netns", "add", name])?;
        self.created
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(name.to_string());
        Ok(())
    }

    fn create(&mut self, wiring: Option<Box<dyn PodWiring>>) -> Result<(), LabError> {
        let fab = self.fabric.as_str();
        self.add_netns(fab)?;
        ip_in(fab, &["link", "add", "br0", "type", "bridge"])?;
        ip_in(fab, &["link", "set", "br0", "up"])?;
        for n in &self.nodes {
            self.add_netns(&n.netns)?;
            let port = format!("n{}", n.index);
            ip_in(
                fab,
                &[
                    "link", "add", &port, "type", "veth", "peer", "name", &n.uplink, "netns",
                    &n.netns,
                ],
            )?;
            ip_in(fab, &["link", "set", &port, "master", "br0", "up"])?;
            let addr = format!("{}/24", n.ip);
            ip_in(&n.netns, &["addr", "add", &addr, "dev", &n.uplink])?;
            ip_in(&n.netns, &["link", "set", &n.uplink, "up"])?;
            netns::sysctl_in(&n.netns, "net.ipv4.ip_forward", "1")?;
            if wiring.as_ref().is_some_and(|w| !w.routes_between_nodes()) {
                // Remote pod CIDRs are the wiring's (e.g. a tunnel).
                continue;
            }
            for other in self.nodes.iter().filter(|o| o.index != n.index) {
                let via = other.ip.to_string();
                ip_in(
                    &n.netns,
                    &[
                        "route",
                        "add",
                        &other.pod_cidr(),
                        "via",
                        &via,
                        "dev",
                        &n.uplink,
                    ],
                )?;
            }
        }
        match wiring {
            None => self.create_bridge_pods()?,
            Some(mut w) => {
                let mut pods = std::mem::take(&mut self.pods);
                let r = w.wire(self, &mut pods);
                self.pods = pods;
                // Kept even on error: its teardown removes what it made.
                self.wiring = Some(w);
                r?;
            }
        }
        tracing::info!(run = %self.run_id, network = self.network_name(), nodes = self.nodes.len(), pods = self.pods.len(), "cluster up");
        Ok(())
    }

    fn create_bridge_pods(&self) -> Result<(), LabError> {
        for p in &self.pods {
            let node = &self.nodes[p.node_index];
            self.add_netns(&p.netns)?;
            ip_in(
                &node.netns,
                &[
                    "link",
                    "add",
                    &p.host_veth,
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "eth0",
                    "netns",
                    &p.netns,
                ],
            )?;
            let gw = node.gateway.to_string();
            ip_in(
                &node.netns,
                &["addr", "add", &format!("{gw}/32"), "dev", &p.host_veth],
            )?;
            ip_in(&node.netns, &["link", "set", &p.host_veth, "up"])?;
            ip_in(
                &node.netns,
                &["route", "add", &format!("{}/32", p.ip), "dev", &p.host_veth],
            )?;
            ip_in(
                &p.netns,
                &["addr", "add", &format!("{}/32", p.ip), "dev", "eth0"],
            )?;
            ip_in(&p.netns, &["link", "set", "eth0", "up"])?;
            ip_in(
                &p.netns,
                &["route", "add", &gw, "dev", "eth0", "scope", "link"],
            )?;
            ip_in(
                &p.netns,
                &["route", "add", "default", "via", &gw, "dev", "eth0"],
            )?;
        }
        Ok(())
    }

    fn teardown(&mut self) {
        let children =
            std::mem::take(&mut *self.children.lock().unwrap_or_else(|p| p.into_inner()));
        for (_, mut p) in children {
            let _ = p.child.kill();
            let _ = p.child.wait();
        }
        for n in &self.nodes {
            remove_pins(&n.netns);
        }
        if let Some(w) = &self.wiring {
            w.teardown();
        }
        let created = std::mem::take(&mut *self.created.lock().unwrap_or_else(|p| p.into_inner()));
        for ns in created.iter().rev() {
            netns::delete_netns(ns);
        }
        if std::env::var_os("MESHWORK_E2E_KEEP_LOGS").is_none() {
            let _ = std::fs::remove_dir_all(&self.log_dir);
        }
    }
}

impl Drop for Cluster {
    fn drop(&mut self) {
        self.teardown();
    }
}

fn remove_pins(node: &str) {
    let dir = PathBuf::from(BPF_PIN_ROOT).join(node);
    if dir.exists() {
        if let Err(e) = std::fs::remove_dir_all(&dir) {
            tracing::warn!(dir = %dir.display(), error = %e, "removing BPF pins");
        }
    }
}

/// Removes namespaces and pins left by runs whose process is gone.
pub fn cleanup_stale() {
    for ns in netns::list_netns() {
        if names::is_stale(&ns) {
            tracing::info!(netns = %ns, "removing stale namespace");
            netns::delete_netns(&ns);
        }
    }
    if let Ok(dir) = std::fs::read_dir(std::env::temp_dir().join("meshwork-e2e")) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if name.ends_with("-cni") && names::is_stale(&name) {
                let _ = std::fs::remove_dir_all(e.path());
            }
        }
    }
    if let Ok(dir) = std::fs::read_dir(BPF_PIN_ROOT) {
        for e in dir.flatten() {
            let name = e.file_name().to_string_lossy().into_owned();
            if names::is_stale(&name) {
                remove_pins(&name);
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plan_rejects_bad_specs_naming_the_field() {
        let e = Cluster::builder().plan("mw1r0").unwrap_err().to_string();
        assert!(e.contains("nodes"), "{e}");
        let e = Cluster::builder()
            .nodes(1)
            .pod("a", 3)
            .plan("mw1r0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("pod.node"), "{e}");
        let e = Cluster::builder()
            .nodes(1)
            .pod("a", 0)
            .pod("a", 0)
            .plan("mw1r0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("duplicate"), "{e}");
        let e = Cluster::builder()
            .nodes(1)
            .service("svc", Ipv4Addr::new(10, 96, 0, 1), 80, 8080, &["nope"])
            .plan("mw1r0")
            .unwrap_err()
            .to_string();
        assert!(e.contains("service.backends"), "{e}");
    }

    #[test]
    fn plan_places_pods_in_slots() {
        let (nodes, pods, _) = Cluster::builder()
            .nodes(2)
            .pods_per_node(2)
            .pod("client", 1)
            .plan("mw1r0")
            .unwrap();
        assert_eq!(nodes.len(), 2);
        assert_eq!(pods.len(), 5);
        let client = pods.iter().find(|p| p.name == "client").unwrap();
        assert_eq!(client.ip, Ipv4Addr::new(10, 244, 1, 12));
        assert_eq!(client.host_veth, "vp2");
    }
}

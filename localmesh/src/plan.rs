//! What a local mesh runs: its nodes and pods. The pods' Kubernetes objects (with the
//! address and node each one got, as a kubelet reports them) are written for the control
//! plane by [`pods_yaml`]; everything else comes from the caller's manifests.

use std::collections::BTreeMap;
use std::fmt::Write;

use std::net::IpAddr;
use std::path::PathBuf;

use crate::collector::Collector;
use crate::connect::Dial;

/// What runs in a pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Run {
    /// `meshwork-testapp serve` on each of the pod's ports.
    TestApp { app: String, version: String },
    /// A command (`sh -c`-free argv), in the pod's namespace (netns) or with the pod's
    /// address and ports in its environment (loopback: `POD_IP`, `PORT`).
    Command(Vec<String>),
    /// Nothing: a traffic source only (`meshwork exec` runs commands as it).
    Idle,
    /// The `waypoint` binary for the Gateway `name` of the pod's namespace.
    Waypoint { gateway: String },
}

/// One pod.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PodPlan {
    pub name: String,
    pub namespace: String,
    /// Index into [`Plan::nodes`]; waypoints run on a node of their own in netns mode.
    pub node: usize,
    pub service_account: String,
    pub labels: BTreeMap<String, String>,
    pub annotations: BTreeMap<String, String>,
    /// The Deployment, StatefulSet or DaemonSet the pod is a replica of (its Pod object
    /// gets `generateName: <workload>-`, from which the control plane names the workload
    /// as Istio does); empty for a bare Pod.
    pub workload: String,
    /// Container ports (the test application listens on each).
    pub ports: Vec<u16>,
    pub run: Run,
    /// Loopback mode: the last octet of its `127.a.b.x` address (assigned when `None`).
    pub host: Option<u8>,
}

impl PodPlan {
    pub fn is_waypoint(&self) -> bool {
        matches!(self.run, Run::Waypoint { .. })
    }
}

/// A whole local mesh.
#[derive(Debug, Clone, Default)]
pub struct Plan {
    /// Node names in loopback mode (ztunnel `--node`, pods' `nodeName`); in netns mode the
    /// nodes are the mini-cluster's node namespaces, one per entry.
    pub nodes: Vec<String>,
    pub pods: Vec<PodPlan>,
    /// The control plane's `--default-namespace`.
    pub default_namespace: String,
}

impl Plan {
    pub fn pod(&self, name: &str) -> Option<&PodPlan> {
        self.pods.iter().find(|p| p.name == name)
    }

    /// Checks what the modes rely on: unique pod names, known nodes, loopback hosts.
    pub fn check(&self) -> Result<(), crate::Error> {
        let bad = |m: String| Err(crate::Error::Plan(m));
        if self.nodes.is_empty() || self.nodes.len() > 9 {
            return bad(format!("{} nodes: use 1 to 9", self.nodes.len()));
        }
        let mut seen: BTreeMap<&str, &str> = BTreeMap::new();
        for p in &self.pods {
            if let Some(ns) = seen.insert(&p.name, &p.namespace) {
                return bad(format!(
                    "pod name {} is used in namespaces {ns} and {}: pod names must be unique across namespaces here",
                    p.name, p.namespace
                ));
            }
            if p.node >= self.nodes.len() {
                return bad(format!(
                    "pod {}: node index {} >= {}",
                    p.name,
                    p.node,
                    self.nodes.len()
                ));
            }
            let ok = !p.name.is_empty()
                && p.name.len() <= 40
                && p.name
                    .bytes()
                    .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-');
            if !ok {
                return bad(format!("pod name {:?}: use 1-40 of [a-z0-9-]", p.name));
            }
        }
        Ok(())
    }
}

fn quote(s: &str) -> String {
    serde_json::to_string(s).unwrap_or_else(|_| "\"\"".into())
}

/// The pods as Kubernetes `Pod` objects with their address, node, labels, service account
/// and ports, `Running` and `Ready`.
pub fn pods_yaml(plan: &Plan, at: &Placement) -> String {
    let mut y = String::new();
    for p in &plan.pods {
        let Some((ip, node)) = at.pods.get(&p.name) else {
            continue;
        };
        let mut labels = String::new();
        for (k, v) in &p.labels {
            let _ = writeln!(labels, "    {}: {}", quote(k), quote(v));
        }
        let labels = if labels.is_empty() {
            " {}\n".to_string()
        } else {
            format!("\n{labels}")
        };
        let mut ports = String::new();
        for port in &p.ports {
            let _ = writeln!(ports, "        - containerPort: {port}");
        }
        let ports = if ports.is_empty() {
            " []\n".to_string()
        } else {
            format!("\n{ports}")
        };
        let generate = if p.workload.is_empty() {
            String::new()
        } else {
            format!("  generateName: {}\n", quote(&format!("{}-", p.workload)))
        };
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n{generate}  namespace: {ns}\n  uid: localmesh-{ns}-{name}\n  labels:{labels}\
spec:\n  nodeName: {node}\n  serviceAccountName: {sa}\n  containers:\n    - name: app\n      image: meshwork-testapp\n      ports:{ports}\
status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n    - ip: {ip}\n  conditions:\n    - type: Ready\n      status: \"True\"\n---\n",
            name = p.name,
            ns = p.namespace,
            sa = p.service_account,
        );
    }
    y
}

/// Where each pod ended up: pod name → (address, node as the mesh names it).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Placement {
    pub pods: BTreeMap<String, (IpAddr, String)>,
}

impl Placement {
    pub fn ip(&self, pod: &str) -> Option<IpAddr> {
        self.pods.get(pod).map(|(ip, _)| *ip)
    }

    pub fn node(&self, pod: &str) -> Option<&str> {
        self.pods.get(pod).map(|(_, n)| n.as_str())
    }

    /// The pod at `ip`.
    pub fn pod_at(&self, ip: &str) -> Option<&str> {
        self.pods
            .iter()
            .find(|(_, (a, _))| a.to_string() == ip)
            .map(|(n, _)| n.as_str())
    }
}

/// How [`Prepared::start`] runs the mesh.
#[derive(Debug, Clone, Default)]
pub struct StartOptions {
    /// `(file name, YAML)` the control plane reads besides the pods' objects.
    pub files: Vec<(String, String)>,
    /// Loopback mode: the run directory (manifests, logs, CA); a temporary one when None.
    pub run_dir: Option<PathBuf>,
    /// Netns mode: services `(namespace, name)` that must have a VIP in the model first.
    pub services: Vec<(String, String)>,
    /// Up once pod `.0` gets an HTTP answer from `.1:.2` `/health` through the mesh.
    pub ready_probe: Option<(String, String, u16)>,
    /// Extra arguments of the control plane (e.g. `--canary-waypoint-metrics URL`).
    pub controlplane_args: Vec<String>,
}

/// The environment of a pod's command: who it is and where it listens.
pub fn pod_env(p: &PodPlan, ip: IpAddr) -> Vec<(String, String)> {
    let mut env = vec![
        ("POD_NAME".to_string(), p.name.clone()),
        ("POD_NAMESPACE".to_string(), p.namespace.clone()),
        ("POD_IP".to_string(), ip.to_string()),
        ("HOSTNAME".to_string(), p.name.clone()),
    ];
    if let Some(port) = p.ports.first() {
        env.push(("PORT".to_string(), port.to_string()));
    }
    env
}

/// How to reach a started mesh's control plane, proxies and trace receiver.
pub struct Endpoints {
    pub control_plane_admin: Dial,
    /// Plan node → its ztunnel's metrics endpoint.
    pub ztunnel_metrics: BTreeMap<String, Dial>,
    /// Waypoint pod → its admin endpoint (serving `/metrics` too).
    pub waypoint_admin: BTreeMap<String, Dial>,
    /// The OTLP/gRPC receiver every waypoint exports its spans to.
    pub collector: Collector,
}

#[cfg(test)]
mod tests {
    use super::*;

    pub fn pod(name: &str, node: usize) -> PodPlan {
        PodPlan {
            name: name.into(),
            namespace: "shop".into(),
            node,
            service_account: "default".into(),
            labels: [("app".to_string(), "web".to_string())].into(),
            annotations: BTreeMap::new(),
            workload: String::new(),
            ports: vec![8080, 9090],
            run: Run::TestApp {
                app: "web".into(),
                version: "v1".into(),
            },
            host: None,
        }
    }

    #[test]
    fn check_rejects_duplicates_and_unknown_nodes() {
        let mut plan = Plan {
            nodes: vec!["node-0".into()],
            pods: vec![pod("web-0", 0)],
            default_namespace: "default".into(),
        };
        plan.check().unwrap();
        let mut other = pod("web-0", 0);
        other.namespace = "other".into();
        plan.pods.push(other);
        let e = plan.check().unwrap_err().to_string();
        assert!(
            e.contains("web-0") && e.contains("shop") && e.contains("other"),
            "{e}"
        );
        plan.pods.pop();
        plan.pods.push(pod("web-1", 3));
        assert!(plan
            .check()
            .unwrap_err()
            .to_string()
            .contains("node index 3"));
    }

    #[test]
    fn a_replica_names_its_workload_by_generate_name() {
        let mut web = pod("web-0", 0);
        web.workload = "web".into();
        let plan = Plan {
            nodes: vec!["node-0".into()],
            pods: vec![web, pod("debug", 0)],
            default_namespace: "default".into(),
        };
        let mut at = Placement::default();
        for (name, ip) in [("web-0", "127.9.9.10"), ("debug", "127.9.9.11")] {
            at.pods
                .insert(name.into(), (ip.parse().unwrap(), "node-0".into()));
        }
        let y = pods_yaml(&plan, &at);
        let docs: Vec<serde_yaml_ng::Value> = y
            .split("---\n")
            .filter(|d| !d.trim().is_empty())
            .map(|d| serde_yaml_ng::from_str(d).unwrap())
            .collect();
        assert_eq!(docs[0]["metadata"]["generateName"].as_str(), Some("web-"));
        assert!(docs[1]["metadata"].get("generateName").is_none(), "{y}");
    }

    #[test]
    fn pods_become_running_pod_objects_that_parse() {
        let plan = Plan {
            nodes: vec!["node-0".into()],
            pods: vec![pod("web-0", 0)],
            default_namespace: "default".into(),
        };
        let mut at = Placement::default();
        at.pods.insert(
            "web-0".into(),
            ("127.9.9.10".parse().unwrap(), "node-0".into()),
        );
        let y = pods_yaml(&plan, &at);
        assert!(y.contains("podIP: 127.9.9.10\n"), "{y}");
        assert!(y.contains("nodeName: node-0\n"), "{y}");
        assert!(y.contains("\"app\": \"web\""), "{y}");
        assert!(y.contains("containerPort: 9090"), "{y}");
        let doc: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(y.trim_end_matches("---\n")).unwrap();
        assert_eq!(doc["metadata"]["labels"]["app"].as_str(), Some("web"));
        assert_eq!(
            doc["status"]["conditions"][0]["status"].as_str(),
            Some("True")
        );
    }
}

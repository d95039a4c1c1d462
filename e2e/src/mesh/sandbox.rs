//! Pods of the fixture's mesh made while it runs ([`Sandbox`]: a namespace set up by the
//! full CNI chain, `meshwork-cni` last, with its pod object in the control plane's YAML),
//! the in-pod capture's wait for the fixture's pods, and `meshwork-testapp get` from a
//! namespace.
use std::collections::BTreeSet;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::process::Command;
use std::time::{Duration, Instant};

use meshwork_netlab::netns::{self, netns_path};
use meshwork_netlab::{link_netns, locate_binary, wait_for};
use serde_json::{json, Value};

use super::NetnsMesh;
use crate::cni::{Attachment, CniError, CniNetwork, DEFAULT_CNI_PATH};
use crate::kind_ptp;
use crate::network::ClusterExt;
use crate::scenarios::fixture;
use crate::target::{HttpSummary, ScenarioError};
use crate::HarnessError;

/// How long the fixture's pods may take to be found by the ztunnels' scan.
const SCAN_TIMEOUT: Duration = Duration::from_secs(30);

fn io_err(path: &Path) -> impl FnOnce(std::io::Error) -> HarnessError + '_ {
    move |source| HarnessError::Io {
        path: path.to_path_buf(),
        source,
    }
}

impl NetnsMesh {
    /// Waits until every node's ztunnel has captured exactly its fixture pods of ambient
    /// namespaces (found by the scan: they are older than the mesh).
    pub(super) fn wait_fixture_captured(&self) -> Result<(), ScenarioError> {
        for n in self.cluster.nodes() {
            let want: BTreeSet<String> = fixture::PODS
                .iter()
                .filter(|p| fixture::NAMESPACES.iter().any(|(ns, a)| *ns == p.1 && *a))
                .filter_map(|p| self.cluster.pod(p.0).ok())
                .filter(|p| p.node == n.name)
                .map(|p| p.ip.to_string())
                .collect();
            let mut last = Ok(BTreeSet::new());
            let r = wait_for(
                &format!("ztunnel on {} to capture its pods", n.name),
                SCAN_TIMEOUT,
                || {
                    last = self.enrolled_on(&n.name);
                    matches!(&last, Ok(got) if *got == want)
                },
            );
            r.map_err(|e| {
                ScenarioError::Target(format!(
                    "{e}: captured {last:?}, want {want:?}; log:\n{}",
                    self.cluster.log_of(&self.ztunnel_label(&n.name))
                ))
            })?;
        }
        Ok(())
    }

    /// Writes pod `name` into the control plane's YAML directory (`pod-<name>.yaml`) as the
    /// API server has it: scheduled on `node` (`spec.nodeName`), with `status.podIP` once
    /// `ip` is known (kubelet reports it after the sandbox's CNI ADD).
    pub fn write_pod_yaml(&self, pod: &PodSpec, ip: Option<Ipv4Addr>) -> Result<(), ScenarioError> {
        let node = self.cluster.node(&pod.node)?;
        let status = match ip {
            None => "status:\n  phase: Pending\n".to_string(),
            Some(ip) => format!(
                "status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n    - ip: {ip}\n  hostIP: {host}\n  conditions:\n    - type: Ready\n      status: \"True\"\n",
                host = node.ip
            ),
        };
        let yaml = format!(
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  uid: uid-{name}\n  labels:\n    app: {app}\n    version: {version}\nspec:\n  nodeName: {nodename}\n  serviceAccountName: {sa}\n  containers:\n    - name: app\n      image: meshwork-testapp\n      ports:\n        - containerPort: {port}\n{status}",
            name = pod.name,
            ns = pod.namespace,
            app = pod.app,
            version = pod.version,
            nodename = node.netns,
            sa = pod.service_account,
            port = fixture::APP_PORT,
        );
        let tmp = self
            .config_dir()
            .join(format!(".pod-{}.yaml.tmp", pod.name));
        let file = self.config_dir().join(format!("pod-{}.yaml", pod.name));
        std::fs::write(&tmp, yaml).map_err(io_err(&tmp))?;
        std::fs::rename(&tmp, &file).map_err(io_err(&file))?;
        Ok(())
    }

    /// Removes pod `name` from the control plane's YAML (the pod object is deleted).
    pub fn remove_pod_yaml(&self, name: &str) -> Result<(), ScenarioError> {
        let file = self.config_dir().join(format!("pod-{name}.yaml"));
        std::fs::remove_file(&file).map_err(io_err(&file))?;
        Ok(())
    }

    /// A pod sandbox made while the mesh runs: its namespace (`<run>-<name>`, `lo` down,
    /// linked into the cluster's netns directory as the runtime would) and the node's CNI
    /// networks: containerd's loopback and kindnet's list with `meshwork-cni` chained last
    /// (`agentSocket` = the node's ztunnel socket; the plugin from the target directory,
    /// then Debian's). Nothing is set up until [`Sandbox::add`]. kind-ptp only.
    pub fn sandbox(&self, pod: &PodSpec) -> Result<Sandbox, ScenarioError> {
        let kind = self
            .cluster
            .cni()
            .ok_or_else(|| ScenarioError::Target("sandboxes need the kind-ptp network".into()))?;
        let node = self.cluster.node(&pod.node)?.clone();
        let plugin = locate_binary("meshwork-cni")?;
        let plugin_dir = plugin.parent().map(Path::to_path_buf).unwrap_or_default();
        let cni_path = std::env::join_paths([plugin_dir.as_path(), Path::new(DEFAULT_CNI_PATH)])
            .map_err(|e| ScenarioError::Target(format!("CNI_PATH: {e}")))?;
        let mut conf = kind_ptp::pod_network(&node, kind.data_dir());
        let entry = json!({
            "type": "meshwork-cni",
            "agentSocket": self.cni_socket(&pod.node),
            "timeoutSeconds": 10,
            "logFile": self.cluster.log_dir().join(format!("meshwork-cni-{}.log", pod.node)),
        });
        let Value::Object(entry) = entry else {
            unreachable!("a JSON object")
        };
        conf.plugins.push(entry);
        let network = CniNetwork {
            conf,
            cni_path: PathBuf::from(cni_path),
            runtime_netns: node.netns.clone(),
        };
        let loopback = CniNetwork {
            conf: kind_ptp::loopback_network(),
            cni_path: PathBuf::from(DEFAULT_CNI_PATH),
            runtime_netns: node.netns.clone(),
        };
        let netns = self.cluster.add_sandbox_netns(&pod.name)?;
        link_netns(self.netns_dir(), &netns)?;
        Ok(Sandbox {
            spec: pod.clone(),
            netns,
            network,
            loopback,
            lo: None,
            eth0: None,
            ip: None,
        })
    }

    /// Starts `meshwork-testapp serve` on [`fixture::APP_PORT`] in a sandbox (log label
    /// `app-<pod>`).
    pub fn start_app_in(&self, sb: &Sandbox) -> Result<u32, ScenarioError> {
        let mut cmd = Command::new(&self.binaries().testapp);
        cmd.args(["serve", "--port", &fixture::APP_PORT.to_string()])
            .args(["--app", &sb.spec.app, "--version", &sb.spec.version])
            .args(["--pod", &sb.spec.name]);
        Ok(self
            .cluster
            .spawn_in_netns(&sb.netns, &format!("app-{}", sb.spec.name), cmd)?)
    }

    /// `meshwork-testapp get` from a sandbox.
    pub fn http_get_from(
        &self,
        sb: &Sandbox,
        url: &str,
        headers: &[(&str, &str)],
        count: u64,
    ) -> Result<HttpSummary, ScenarioError> {
        self.http_get_netns(&sb.netns, url, headers, count)
    }

    /// Waits (bounded) until `node`'s ztunnel lists `pod_ref` with `captured` = `want`
    /// (`None`: until it does not list it at all).
    pub fn wait_inpod(
        &self,
        node: &str,
        pod_ref: &str,
        want: Option<bool>,
        timeout: Duration,
    ) -> Result<(), ScenarioError> {
        let deadline = Instant::now() + timeout;
        let mut last = Ok(None);
        while Instant::now() < deadline {
            last = self.inpod_pod(node, pod_ref);
            if let Ok(p) = &last {
                if p.as_ref().and_then(|p| p["captured"].as_bool()) == want {
                    return Ok(());
                }
            }
            std::thread::sleep(Duration::from_millis(50));
        }
        Err(ScenarioError::Target(format!(
            "ztunnel on {node}: {pod_ref} not {want:?} within {timeout:?} (last {last:?})"
        )))
    }
}

/// A pod made while the mesh runs (Kubernetes side: what [`NetnsMesh::write_pod_yaml`]
/// publishes).
#[derive(Clone, Debug)]
pub struct PodSpec {
    pub name: String,
    pub namespace: String,
    /// Node name (`n<i>`).
    pub node: String,
    pub app: String,
    pub version: String,
    pub service_account: String,
}

/// A pod sandbox through the CNI chain, as containerd runs it ([`NetnsMesh::sandbox`]).
/// Dropping it runs the DEL it still owes; its namespace goes with the cluster.
pub struct Sandbox {
    pub spec: PodSpec,
    /// Its network namespace's name.
    pub netns: String,
    network: CniNetwork,
    loopback: CniNetwork,
    lo: Option<Attachment>,
    eth0: Option<Attachment>,
    ip: Option<Ipv4Addr>,
}

impl Sandbox {
    fn args(&self) -> String {
        format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE={};K8S_POD_NAME={};K8S_POD_UID=uid-{};K8S_POD_INFRA_CONTAINER_ID={}",
            self.spec.namespace, self.spec.name, self.spec.name, self.netns
        )
    }

    /// CNI ADD: loopback, then the pod network list (ptp, host-local, portmap,
    /// meshwork-cni). On failure the list was DELeted by the driver (as containerd does)
    /// and loopback is DELeted here: nothing is left, the runtime may retry.
    pub fn add(&mut self) -> Result<Ipv4Addr, CniError> {
        let ns = netns_path(&self.netns);
        let args = self.args();
        if self.lo.is_none() {
            self.lo = Some(self.loopback.add(&self.netns, &ns, "lo", &args)?);
        }
        match self.network.add(&self.netns, &ns, "eth0", &args) {
            Ok(a) => {
                let ip = a.result.ipv4_of("eth0").map(|(ip, _)| ip);
                self.eth0 = Some(a);
                self.ip = ip;
                ip.ok_or_else(|| CniError::BadResult {
                    plugin: "meshwork-cni".into(),
                    command: "ADD",
                    reason: "no eth0 IPv4 in the result".into(),
                })
            }
            Err(e) => {
                if let Some(lo) = self.lo.take() {
                    let _ = self.loopback.del(&lo);
                }
                Err(e)
            }
        }
    }

    /// CNI DEL of the pod network list (reverse order: meshwork-cni first), then loopback.
    pub fn del(&mut self) -> Result<(), CniError> {
        let r = match self.eth0.take() {
            Some(a) => self.network.del(&a),
            None => Ok(()),
        };
        if let Some(lo) = self.lo.take() {
            self.loopback.del(&lo)?;
        }
        self.ip = None;
        r
    }

    /// eth0's address (after a successful ADD).
    pub fn ip(&self) -> Option<Ipv4Addr> {
        self.ip
    }

    /// Makes the sandbox dual-stack (before [`Sandbox::add`]): host-local also hands out an
    /// address of `subnet` (an IPv6 range of the test's own, e.g. a ULA `/64`) with an IPv6
    /// default route; ptp configures both families. The ADD result (and so the ztunnel's
    /// record of the pod) then has both addresses.
    pub fn add_ipv6_range(&mut self, subnet: &str) {
        let Some(ipam) = self
            .network
            .conf
            .plugins
            .first_mut()
            .and_then(|p| p.get_mut("ipam"))
        else {
            return;
        };
        if let Some(Value::Array(ranges)) = ipam.get_mut("ranges") {
            ranges.push(json!([{ "subnet": subnet }]));
        }
        if let Some(Value::Array(routes)) = ipam.get_mut("routes") {
            routes.push(json!({ "dst": "::/0" }));
        }
    }

    /// `namespace/name`.
    pub fn pod_ref(&self) -> String {
        format!("{}/{}", self.spec.namespace, self.spec.name)
    }
}

impl Drop for Sandbox {
    fn drop(&mut self) {
        if let Err(e) = self.del() {
            tracing::warn!(pod = %self.spec.name, error = %e, "CNI DEL of a sandbox at drop");
        }
    }
}

impl NetnsMesh {
    /// `meshwork-testapp get` from the namespace `netns`.
    pub(super) fn http_get_netns(
        &self,
        netns: &str,
        url: &str,
        headers: &[(&str, &str)],
        count: u64,
    ) -> Result<HttpSummary, ScenarioError> {
        let mut cmd = Command::new(&self.binaries().testapp);
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
        netns::enter_before_exec(&mut cmd, netns)?;
        let out = cmd
            .output()
            .map_err(|e| ScenarioError::Target(format!("testapp get in {netns}: {e}")))?;
        let text = String::from_utf8_lossy(&out.stdout);
        serde_json::from_str(text.trim()).map_err(|e| {
            ScenarioError::Target(format!(
                "testapp get in {netns}: bad summary {text:?} ({e}); stderr {}",
                String::from_utf8_lossy(&out.stderr)
            ))
        })
    }
}

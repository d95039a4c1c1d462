//! The `kind-ptp` network flavour: a kind node's default network built from the real
//! reference plugins. Every node runs its pods' sandboxes through CNI as containerd does:
//! `loopback` for `lo` (its own network, as containerd's `cni-loopback`), then the
//! kindnet-style list `ptp` + `host-local` (over the node's pod CIDR) + `portmap` for
//! `eth0`. Addresses come from host-local (state in a per-run `dataDir`); services are
//! kube-proxy iptables chains in every node namespace.
use std::collections::BTreeMap;
use std::net::Ipv4Addr;
use std::path::{Path, PathBuf};
use std::sync::Mutex;

use serde_json::json;

use crate::cni::{Attachment, CniNetwork, ConfList, CNI_VERSION, DEFAULT_CNI_PATH};
use crate::netns::netns_path;
use crate::topology::{Node, Pod};
use crate::HarnessError;

/// The cluster CIDR (kube-proxy's `--cluster-cidr`): every node's pod CIDR is inside.
pub const CLUSTER_CIDR: &str = "10.244.0.0/16";
/// Name of the pod network list (kind's is `kindnet`).
pub const NETWORK_NAME: &str = "kindnet";

/// The kindnet-style list of a node: what kind writes to `/etc/cni/net.d/10-kindnet.conflist`
/// (ptp without ipMasq, host-local over the node's range with a default route, portmap),
/// with host-local's state in `data_dir`.
pub fn pod_network(node: &Node, data_dir: &Path) -> ConfList {
    let v = json!({
        "cniVersion": CNI_VERSION,
        "name": NETWORK_NAME,
        "plugins": [
            {
                "type": "ptp",
                "ipMasq": false,
                "mtu": 1500,
                "ipam": {
                    "type": "host-local",
                    "dataDir": data_dir,
                    "routes": [{ "dst": "0.0.0.0/0" }],
                    "ranges": [[{ "subnet": node.pod_cidr() }]]
                }
            },
            { "type": "portmap", "capabilities": { "portMappings": true } }
        ]
    });
    serde_json::from_value(v).expect("a valid conflist")
}

/// containerd's loopback network.
pub fn loopback_network() -> ConfList {
    serde_json::from_value(json!({
        "cniVersion": CNI_VERSION,
        "name": "cni-loopback",
        "plugins": [{ "type": "loopback" }]
    }))
    .expect("a valid conflist")
}

/// A pod's two attachments (lo, eth0) and its node.
struct Sandbox {
    node: usize,
    lo: Attachment,
    eth0: Attachment,
}

/// The runtime side of all nodes of a cluster.
pub struct KindPtp {
    data_dir: PathBuf,
    /// Per node index: (loopback, pod network).
    networks: Vec<(CniNetwork, CniNetwork)>,
    /// Pod name → its attachments (the runtime's cache of ADD results).
    sandboxes: Mutex<BTreeMap<String, Sandbox>>,
}

impl KindPtp {
    /// One runtime per node; host-local's state goes to `data_dir` (created here).
    pub fn new(nodes: &[Node], data_dir: PathBuf) -> Result<Self, HarnessError> {
        std::fs::create_dir_all(&data_dir).map_err(|source| HarnessError::Io {
            path: data_dir.clone(),
            source,
        })?;
        let cni_path = PathBuf::from(DEFAULT_CNI_PATH);
        let networks = nodes
            .iter()
            .map(|n| {
                let net = |conf| CniNetwork {
                    conf,
                    cni_path: cni_path.clone(),
                    runtime_netns: n.netns.clone(),
                };
                (net(loopback_network()), net(pod_network(n, &data_dir)))
            })
            .collect();
        Ok(Self {
            data_dir,
            networks,
            sandboxes: Mutex::new(BTreeMap::new()),
        })
    }

    pub fn data_dir(&self) -> &Path {
        &self.data_dir
    }

    /// The pod network of node index `node`.
    pub fn pod_network(&self, node: usize) -> Option<&CniNetwork> {
        self.networks.get(node).map(|(_, n)| n)
    }

    /// Sets up a pod's sandbox (its namespace exists, `lo` still down): loopback ADD, then
    /// the pod network ADD on `eth0`. Returns eth0's address and the host-side veth.
    pub fn add_pod(&self, pod: &Pod) -> Result<(Ipv4Addr, String), HarnessError> {
        let (lo_net, pod_net) = &self.networks[pod.node_index];
        let ns = netns_path(&pod.netns);
        let args = format!(
            "IgnoreUnknown=1;K8S_POD_NAMESPACE=default;K8S_POD_NAME={};K8S_POD_INFRA_CONTAINER_ID={}",
            pod.name, pod.netns
        );
        let lo = lo_net.add(&pod.netns, &ns, "lo", &args)?;
        let eth0 = match pod_net.add(&pod.netns, &ns, "eth0", &args) {
            Ok(a) => a,
            Err(e) => {
                let _ = lo_net.del(&lo);
                return Err(e.into());
            }
        };
        let found = eth0
            .result
            .ipv4_of("eth0")
            .zip(eth0.result.host_interfaces().next());
        let Some(((ip, _), host)) = found else {
            let reason = format!(
                "pod {}: no eth0 IPv4 or host veth in {:?}",
                pod.name, eth0.result
            );
            let _ = pod_net.del(&eth0);
            let _ = lo_net.del(&lo);
            return Err(HarnessError::Command {
                command: "CNI ADD".into(),
                reason,
            });
        };
        let host = host.name.clone();
        self.sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .insert(
                pod.name.clone(),
                Sandbox {
                    node: pod.node_index,
                    lo,
                    eth0,
                },
            );
        Ok((ip, host))
    }

    /// The cached ADD result of a pod's `eth0`.
    pub fn attachment(&self, pod: &str) -> Option<Attachment> {
        let map = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        map.get(pod).map(|s| s.eth0.clone())
    }

    /// CHECK of a pod's attachments.
    pub fn check_pod(&self, pod: &str) -> Result<(), HarnessError> {
        let map = self.sandboxes.lock().unwrap_or_else(|p| p.into_inner());
        let s = map.get(pod).ok_or_else(|| HarnessError::Unknown {
            kind: "CNI sandbox",
            name: pod.to_string(),
        })?;
        let (lo_net, pod_net) = &self.networks[s.node];
        lo_net.check(&s.lo)?;
        pod_net.check(&s.eth0)?;
        Ok(())
    }

    /// Tears a pod's sandbox down as the runtime does: pod network DEL (plugins in reverse
    /// order), then loopback DEL. The namespace itself stays.
    pub fn del_pod(&self, pod: &str) -> Result<(), HarnessError> {
        let s = self
            .sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .remove(pod)
            .ok_or_else(|| HarnessError::Unknown {
                kind: "CNI sandbox",
                name: pod.to_string(),
            })?;
        let (lo_net, pod_net) = &self.networks[s.node];
        let r = pod_net.del(&s.eth0);
        lo_net.del(&s.lo)?;
        Ok(r?)
    }

    /// DEL of every sandbox still set up, then removal of host-local's state.
    pub fn teardown(&self) {
        let names: Vec<String> = self
            .sandboxes
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .keys()
            .cloned()
            .collect();
        for name in names.iter().rev() {
            if let Err(e) = self.del_pod(name) {
                tracing::warn!(pod = %name, error = %e, "CNI DEL at teardown");
            }
        }
        if let Err(e) = std::fs::remove_dir_all(&self.data_dir) {
            tracing::warn!(dir = %self.data_dir.display(), error = %e, "removing host-local state");
        }
    }
}

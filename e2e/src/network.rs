//! The harness's pod networks besides netlab's bridge: kind's (reference CNI plugins) and
//! an emulated Cilium datapath, wired into a [`Cluster`] as a [`PodWiring`].
use std::net::Ipv4Addr;
use std::path::PathBuf;

use meshwork_netlab::netns::ip_in;
use meshwork_netlab::{Cluster, ClusterBuilder, LabError, Pod, PodWiring};

use crate::cilium_like::{self, CiliumLike};
use crate::kind_ptp::{self, KindPtp};
use crate::HarnessError;

/// How pods are wired into their node.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub enum Network {
    /// The mini-cluster's own plan: fixed addresses, a veth per pod with the gateway on it.
    #[default]
    Bridge,
    /// kind's default network from real parts: pods set up by the reference CNI plugins
    /// (`ptp` + `host-local`, addresses from host-local), services as kube-proxy iptables
    /// chains in every node (see [`crate::kind_ptp`]).
    KindPtp,
    /// Cilium's default datapath shapes: `cilium_host`/`cilium_net`, `lxc` veths without
    /// routes, local delivery by TCX programs over an endpoint map, VXLAN between nodes,
    /// kube-proxy chains for services (see [`crate::cilium_like`]).
    CiliumLike,
}

impl Network {
    pub fn name(self) -> &'static str {
        match self {
            Network::Bridge => "bridge",
            Network::KindPtp => "kind-ptp",
            Network::CiliumLike => "cilium-like",
        }
    }
}

/// [`ClusterBuilder::network`]-style choice of a [`Network`].
pub trait ClusterBuilderExt {
    /// How pods are wired (default [`Network::Bridge`]).
    fn network(self, network: Network) -> Self;
}

impl ClusterBuilderExt for ClusterBuilder {
    fn network(self, network: Network) -> Self {
        match network {
            Network::Bridge => self,
            other => self.wiring(Box::new(Wiring {
                network: other,
                kind: None,
                cilium: None,
            })),
        }
    }
}

/// What a cluster built with a [`Network`] has.
pub trait ClusterExt {
    /// Its [`Network`].
    fn network(&self) -> Network;
    /// The CNI runtime of the nodes ([`Network::KindPtp`] only).
    fn cni(&self) -> Option<&KindPtp>;
    /// The emulated Cilium datapath ([`Network::CiliumLike`] only).
    fn cilium(&self) -> Option<&CiliumLike>;
}

impl ClusterExt for Cluster {
    fn network(&self) -> Network {
        self.wiring::<Wiring>()
            .map_or(Network::Bridge, |w| w.network)
    }

    fn cni(&self) -> Option<&KindPtp> {
        self.wiring::<Wiring>()?.kind.as_ref()
    }

    fn cilium(&self) -> Option<&CiliumLike> {
        self.wiring::<Wiring>()?.cilium.as_ref()
    }
}

/// The runtime of a [`Network`] other than the bridge, made when the cluster wires its
/// pods.
struct Wiring {
    network: Network,
    /// The CNI runtime of [`Network::KindPtp`].
    kind: Option<KindPtp>,
    /// The emulated datapath of [`Network::CiliumLike`].
    cilium: Option<CiliumLike>,
}

impl PodWiring for Wiring {
    fn name(&self) -> &'static str {
        self.network.name()
    }

    fn routes_between_nodes(&self) -> bool {
        // Remote pod CIDRs go into the tunnel (CiliumLike::new).
        self.network != Network::CiliumLike
    }

    fn wire(&mut self, cluster: &Cluster, pods: &mut [Pod]) -> Result<(), LabError> {
        let r = match self.network {
            Network::Bridge => Ok(()),
            Network::KindPtp => self.create_cni_pods(cluster, pods),
            Network::CiliumLike => self.create_cilium_pods(cluster, pods),
        };
        r.map_err(|e| match e {
            HarnessError::Lab(e) => e,
            e => LabError::Wiring {
                network: self.network.name(),
                source: Box::new(e),
            },
        })
    }

    fn teardown(&self) {
        if let Some(kind) = &self.kind {
            kind.teardown();
        }
        if let Some(dp) = &self.cilium {
            dp.teardown();
        }
    }
}

impl Wiring {
    /// Pods through the nodes' CNI runtime; their addresses and host veths are what the
    /// plugins report. Then kube-proxy's chains for the services.
    fn create_cni_pods(&mut self, cluster: &Cluster, pods: &mut [Pod]) -> Result<(), HarnessError> {
        let nodes = cluster.nodes();
        let kind = self
            .kind
            .insert(KindPtp::new(nodes, cni_data_dir(cluster.run_id()))?);
        // A kind node has a default route (the docker network's gateway), so a VIP is
        // routable and meets kube-proxy's FORWARD-side chains; here the fabric's .254.
        for n in nodes {
            let gw = Ipv4Addr::new(10, 250, 0, 254).to_string();
            ip_in(
                &n.netns,
                &["route", "add", "default", "via", &gw, "dev", &n.uplink],
            )?;
        }
        for pod in pods.iter_mut() {
            cluster.add_pod_netns(pod)?;
            let (ip, veth) = kind.add_pod(pod)?;
            pod.ip = ip;
            pod.host_veth = veth;
        }
        crate::kube_proxy::install_services(nodes, pods, cluster.services(), kind_ptp::CLUSTER_CIDR)
    }

    /// The emulated Cilium datapath on every node, then each pod as cilium-cni sets it up
    /// (the harness plan's addresses), then kube-proxy's chains for the services.
    fn create_cilium_pods(
        &mut self,
        cluster: &Cluster,
        pods: &mut [Pod],
    ) -> Result<(), HarnessError> {
        let nodes = cluster.nodes();
        // Kept even on error: its teardown removes what it made.
        let dp = self
            .cilium
            .insert(CiliumLike::new(nodes, crate::socklb::EMU_OBJECT)?);
        for (i, pod) in pods.iter_mut().enumerate() {
            cluster.add_pod_netns(pod)?;
            let node = &nodes[pod.node_index];
            let identity = cilium_like::FIRST_IDENTITY + i as u32;
            pod.host_veth = dp.add_pod(node, pod, identity)?;
        }
        crate::kube_proxy::install_services(nodes, pods, cluster.services(), kind_ptp::CLUSTER_CIDR)
    }
}

/// host-local's state directory of a run (`<tmp>/meshwork-e2e/<run>-cni`).
fn cni_data_dir(run_id: &str) -> PathBuf {
    std::env::temp_dir()
        .join("meshwork-e2e")
        .join(format!("{run_id}-cni"))
}

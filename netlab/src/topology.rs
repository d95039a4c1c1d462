//! The address plan of a mini-cluster (pure data, no side effects).
//!
//! * fabric namespace `<run>-fab` with bridge `br0`; node `i` has `eth0` =
//!   `10.250.0.(i+1)/24` on it.
//! * node `i` owns pod CIDR `10.244.i.0/24`; its pod-facing veths all carry the gateway
//!   `10.244.i.1/32`; pod `j` of node `i` is `10.244.i.(10+j)/32` behind host veth `vp<j>`.
//! * every node routes the other nodes' pod CIDRs via their fabric address.
use std::net::Ipv4Addr;

use crate::LabError;

pub const MAX_NODES: usize = 200;
pub const MAX_PODS_PER_NODE: usize = 200;

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Node {
    /// `n<i>`.
    pub name: String,
    pub index: usize,
    /// Network namespace name (`<run>-n<i>`); also the node name used for BPF pins.
    pub netns: String,
    /// Address on the fabric.
    pub ip: Ipv4Addr,
    /// Gateway address of its pods (on every host-side veth).
    pub gateway: Ipv4Addr,
    /// Interface towards the fabric.
    pub uplink: String,
}

impl Node {
    pub fn pod_cidr(&self) -> String {
        format!("10.244.{}.0/24", self.index)
    }
}

#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Pod {
    pub name: String,
    /// Name of its node (`n<i>`).
    pub node: String,
    pub node_index: usize,
    pub netns: String,
    /// Its address (with a [`crate::PodWiring`]: the one the wiring gave it).
    pub ip: Ipv4Addr,
    /// Host-side veth in the node namespace (with a [`crate::PodWiring`]: the wiring's).
    pub host_veth: String,
}

/// A ClusterIP service: a VIP resolved by the mesh (on the bridge network there is no
/// kube-proxy, so a VIP is only reachable through ztunnel; a [`crate::PodWiring`] may
/// write kube-proxy's chains for it).
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct Service {
    pub name: String,
    pub vip: Ipv4Addr,
    pub port: u16,
    pub target_port: u16,
    /// Pod names.
    pub backends: Vec<String>,
}

pub fn node(run_id: &str, index: usize) -> Node {
    Node {
        name: format!("n{index}"),
        index,
        netns: format!("{run_id}-n{index}"),
        ip: Ipv4Addr::new(10, 250, 0, index as u8 + 1),
        gateway: Ipv4Addr::new(10, 244, index as u8, 1),
        uplink: "eth0".into(),
    }
}

pub fn pod(run_id: &str, name: &str, node: &Node, slot: usize) -> Pod {
    Pod {
        name: name.to_string(),
        node: node.name.clone(),
        node_index: node.index,
        netns: format!("{run_id}-{name}"),
        ip: Ipv4Addr::new(10, 244, node.index as u8, 10 + slot as u8),
        host_veth: format!("vp{slot}"),
    }
}

/// Checks a pod or service name: it becomes part of a namespace name.
pub fn check_name(field: &'static str, name: &str) -> Result<(), LabError> {
    let ok = !name.is_empty()
        && name.len() <= 40
        && name
            .bytes()
            .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || b == b'-')
        && name != "fab";
    if ok {
        Ok(())
    } else {
        Err(LabError::Spec {
            field,
            reason: format!("{name:?}: use 1-40 of [a-z0-9-], not \"fab\""),
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn address_plan() {
        let n = node("mw1r0", 1);
        assert_eq!(n.netns, "mw1r0-n1");
        assert_eq!(n.ip, Ipv4Addr::new(10, 250, 0, 2));
        assert_eq!(n.gateway, Ipv4Addr::new(10, 244, 1, 1));
        assert_eq!(n.pod_cidr(), "10.244.1.0/24");
        let p = pod("mw1r0", "client", &n, 3);
        assert_eq!(p.ip, Ipv4Addr::new(10, 244, 1, 13));
        assert_eq!(p.host_veth, "vp3");
        assert_eq!(p.netns, "mw1r0-client");
    }

    #[test]
    fn names_are_checked() {
        check_name("pod", "server-v1").unwrap();
        for bad in ["", "Upper", "a/b", "fab", "x y"] {
            let e = check_name("pod", bad).unwrap_err().to_string();
            assert!(e.contains("pod"), "{e}");
        }
    }
}

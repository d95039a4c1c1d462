//! The demo cluster: two nodes and their pods (netns mode puts the waypoint on a third
//! node, see `netns.rs`). On loopback they live on a random
//! `127.a.b.0/24` (every pod address is its own loopback IP, so HBONE can use port 15008 on
//! each); in netns mode every pod is a network namespace of the e2e mini-cluster, and a
//! [`Placement`] says where each one ended up.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};

use super::DemoError;

/// Port every demo app listens on (the seed manifests' `containerPort`).
pub const APP_PORT: u16 = 8080;
/// HBONE port on pod addresses (fixed by the control plane's model).
pub const HBONE_PORT: u16 = 15008;

/// One pod of the demo.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Pod {
    pub name: &'static str,
    pub namespace: &'static str,
    pub app: &'static str,
    pub version: &'static str,
    pub service_account: &'static str,
    pub node: &'static str,
    /// Last octet of its address.
    pub host: u8,
    pub role: Role,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Role {
    /// Runs `meshwork-testapp serve`.
    App,
    /// A traffic source only (SOCKS5 username selects it).
    Client,
    /// Runs the `waypoint` binary.
    Waypoint,
}

/// payment-service's cluster IP (a loopback address nobody listens on: it only names the
/// service; the ztunnel sends its traffic to the waypoint).
pub const PAYMENT_VIP_HOST: u8 = 201;

pub const NODES: [(&str, u8); 2] = [("node-a", 1), ("node-b", 2)];

pub const WAYPOINT: &str = "waypoint";
pub const NAMESPACE: &str = "production";
pub const FOREIGN_NAMESPACE: &str = "partners";
/// A namespace outside the mesh (not ambient): its pods speak plaintext.
pub const LEGACY_NAMESPACE: &str = "legacy";

pub const PODS: [Pod; 8] = [
    Pod {
        name: "order-service-v1",
        namespace: NAMESPACE,
        app: "order-service",
        version: "v1",
        service_account: "order-service",
        node: "node-a",
        host: 11,
        role: Role::App,
    },
    Pod {
        name: "order-service-v2",
        namespace: NAMESPACE,
        app: "order-service",
        version: "v2",
        service_account: "order-service",
        node: "node-b",
        host: 12,
        role: Role::App,
    },
    Pod {
        name: "payment-service-1",
        namespace: NAMESPACE,
        app: "payment-service",
        version: "v1",
        service_account: "payment-service",
        node: "node-b",
        host: 13,
        role: Role::App,
    },
    Pod {
        name: "payment-service-2",
        namespace: NAMESPACE,
        app: "payment-service",
        version: "v1",
        service_account: "payment-service",
        node: "node-a",
        host: 14,
        role: Role::App,
    },
    Pod {
        name: "order-client",
        namespace: NAMESPACE,
        app: "order-client",
        version: "v1",
        service_account: "order-service",
        node: "node-a",
        host: 20,
        role: Role::Client,
    },
    Pod {
        name: "partner-client",
        namespace: FOREIGN_NAMESPACE,
        app: "partner-client",
        version: "v1",
        service_account: "default",
        node: "node-a",
        host: 21,
        role: Role::Client,
    },
    Pod {
        name: "legacy-client",
        namespace: LEGACY_NAMESPACE,
        app: "legacy-client",
        version: "v1",
        service_account: "default",
        node: "node-a",
        host: 22,
        role: Role::Client,
    },
    Pod {
        name: "waypoint-0",
        namespace: NAMESPACE,
        app: WAYPOINT,
        version: "v1",
        service_account: WAYPOINT,
        node: "node-b",
        host: 30,
        role: Role::Waypoint,
    },
];

/// Looks a pod up by name.
pub fn pod_named(name: &str) -> &'static Pod {
    PODS.iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("demo pod {name} is not in the topology"))
}

/// Where one demo instance's pods are: their addresses, the node each runs on as the mesh
/// names it (ztunnel `--node`, pods' `spec.nodeName`), payment-service's cluster IP.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Placement {
    pub pods: BTreeMap<&'static str, IpAddr>,
    pub pod_nodes: BTreeMap<&'static str, String>,
    pub payment_vip: IpAddr,
}

impl Placement {
    /// Loopback mode: every pod on its `127.a.b.x` and its node of [`PODS`].
    pub fn loopback(net: &Net) -> Placement {
        Placement {
            pods: PODS.iter().map(|p| (p.name, net.pod_ip(p))).collect(),
            pod_nodes: PODS.iter().map(|p| (p.name, p.node.to_string())).collect(),
            payment_vip: net.ip(PAYMENT_VIP_HOST),
        }
    }

    pub fn pod_ip(&self, p: &Pod) -> IpAddr {
        self.pods[p.name]
    }

    pub fn node_name(&self, p: &Pod) -> &str {
        &self.pod_nodes[p.name]
    }

    /// The demo pod at `ip`.
    pub fn pod_at(&self, ip: &str) -> Option<&'static Pod> {
        PODS.iter().find(|p| self.pod_ip(p).to_string() == ip)
    }
}

/// Addresses of one demo instance.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub a: u8,
    pub b: u8,
}

impl Net {
    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.a, self.b, host))
    }

    pub fn pod_ip(&self, p: &Pod) -> IpAddr {
        self.ip(p.host)
    }

    pub fn node_ip(&self, node: &str) -> IpAddr {
        let host = NODES
            .iter()
            .find(|(n, _)| *n == node)
            .map(|(_, h)| *h)
            .unwrap_or_else(|| panic!("demo node {node} is not in the topology"));
        self.ip(host)
    }

    /// A free port on `ip` (bound then released; the OS does not hand it out again soon).
    pub fn free_port(ip: IpAddr) -> Result<SocketAddr, DemoError> {
        let l = TcpListener::bind(SocketAddr::new(ip, 0)).map_err(|source| DemoError::Bind {
            addr: SocketAddr::new(ip, 0),
            error: source,
        })?;
        l.local_addr().map_err(|source| DemoError::Bind {
            addr: SocketAddr::new(ip, 0),
            error: source,
        })
    }

    /// Whether every fixed-port address of this instance is free.
    fn all_free(&self) -> bool {
        PODS.iter().all(|p| {
            [HBONE_PORT, APP_PORT]
                .iter()
                .all(|port| TcpListener::bind(SocketAddr::new(self.pod_ip(p), *port)).is_ok())
        })
    }

    /// A random `127.a.b.0/24` whose pod ports are free (bounded attempts).
    pub fn pick(seed: u64) -> Result<Net, DemoError> {
        let mut x = seed | 1;
        for _ in 0..32 {
            // xorshift: cheap, good enough to spread parallel demos apart.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let net = Net {
                a: 100 + (x % 150) as u8,
                b: ((x >> 8) % 256) as u8,
            };
            if net.all_free() {
                return Ok(net);
            }
        }
        Err(DemoError::NoFreeNet)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn addresses_are_distinct_and_loopback() {
        let net = Net { a: 120, b: 7 };
        let mut ips: Vec<IpAddr> = PODS.iter().map(|p| net.pod_ip(p)).collect();
        ips.extend(NODES.iter().map(|(n, _)| net.node_ip(n)));
        assert!(ips.iter().all(|ip| ip.is_loopback()));
        let n = ips.len();
        ips.sort();
        ips.dedup();
        assert_eq!(ips.len(), n);
        assert_eq!(net.ip(11).to_string(), "127.120.7.11");
    }

    #[test]
    fn loopback_placement_follows_the_net() {
        let net = Net { a: 120, b: 7 };
        let p = Placement::loopback(&net);
        let v2 = pod_named("order-service-v2");
        assert_eq!(p.pod_ip(v2), net.pod_ip(v2));
        assert_eq!(p.node_name(v2), "node-b");
        assert_eq!(p.pod_at("127.120.7.12").map(|p| p.name), Some(v2.name));
        assert_eq!(p.pod_at("127.120.7.99"), None);
        assert_eq!(p.payment_vip, net.ip(PAYMENT_VIP_HOST));
    }

    #[test]
    fn pick_gives_free_loopback_nets() {
        let a = Net::pick(1).unwrap();
        let b = Net::pick(2).unwrap();
        assert!(a.a >= 100 && b.a >= 100);
        assert_ne!(a, b);
    }
}

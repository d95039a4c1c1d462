//! The demo cluster: two nodes and their pods, as a [`Plan`] for the local mesh library
//! (netns mode puts the waypoint on a third node). On loopback they live on a random
//! `127.a.b.0/24` (every pod address is its own loopback IP, so HBONE can use port 15008 on
//! each); in netns mode every pod is a network namespace of the netlab mini-cluster, and a
//! [`Placement`] says where each one ended up.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};

use meshwork_localmesh::{Plan, PodPlan, Run};

/// Port every demo app listens on (the seed manifests' `containerPort`).
pub const APP_PORT: u16 = 8080;

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
    /// The Deployment the pod is a replica of (names its `destination_workload`), or "".
    pub workload: &'static str,
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

/// payment-service's cluster IP in netns mode (the seed's order-service gets one from
/// the control plane's allocator in the same service CIDR).
pub const PAYMENT_VIP_NETNS: Ipv4Addr = Ipv4Addr::new(10, 96, 100, 1);

pub const NODES: [&str; 2] = ["node-a", "node-b"];

pub const WAYPOINT: &str = "waypoint";
pub const NAMESPACE: &str = "production";
pub const FOREIGN_NAMESPACE: &str = "partners";
/// A namespace outside the mesh (not ambient): its pods speak plaintext.
pub const LEGACY_NAMESPACE: &str = "legacy";

/// The service (and Canary) of pattern 6, progressive delivery.
pub const CATALOG: &str = "catalog";

pub const PODS: [Pod; 11] = [
    Pod {
        name: "order-service-v1",
        namespace: NAMESPACE,
        app: "order-service",
        version: "v1",
        service_account: "order-service",
        node: "node-a",
        host: 11,
        role: Role::App,
        workload: "",
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
        workload: "",
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
        workload: "",
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
        workload: "",
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
        workload: "",
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
        workload: "",
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
        workload: "",
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
        workload: "",
    },
    // Pattern 6: the built-in canary controller's service. v1 runs as the primary
    // (Deployment catalog-primary); v2 and v3 are successive versions of the target
    // Deployment catalog, so the waypoint reports them as destination_workload=catalog.
    Pod {
        name: "catalog-v1",
        namespace: NAMESPACE,
        app: CATALOG,
        version: "v1",
        service_account: CATALOG,
        node: "node-a",
        host: 15,
        role: Role::App,
        workload: "catalog-primary",
    },
    Pod {
        name: "catalog-v2",
        namespace: NAMESPACE,
        app: CATALOG,
        version: "v2",
        service_account: CATALOG,
        node: "node-b",
        host: 16,
        role: Role::App,
        workload: CATALOG,
    },
    Pod {
        name: "catalog-v3",
        namespace: NAMESPACE,
        app: CATALOG,
        version: "v3",
        service_account: CATALOG,
        node: "node-a",
        host: 17,
        role: Role::App,
        workload: CATALOG,
    },
];

/// Looks a pod up by name.
pub fn pod_named(name: &str) -> &'static Pod {
    PODS.iter()
        .find(|p| p.name == name)
        .unwrap_or_else(|| panic!("demo pod {name} is not in the topology"))
}

/// The demo cluster for the local mesh library.
pub fn plan() -> Plan {
    let pods = PODS
        .iter()
        .map(|p| {
            let labels: BTreeMap<String, String> = match p.role {
                Role::Waypoint => [(
                    "gateway.networking.k8s.io/gateway-name".to_string(),
                    WAYPOINT.to_string(),
                )]
                .into(),
                _ => [
                    ("app".to_string(), p.app.to_string()),
                    ("version".to_string(), p.version.to_string()),
                ]
                .into(),
            };
            PodPlan {
                name: p.name.into(),
                namespace: p.namespace.into(),
                node: NODES.iter().position(|n| *n == p.node).unwrap_or(0),
                service_account: p.service_account.into(),
                labels,
                annotations: BTreeMap::new(),
                workload: p.workload.into(),
                ports: vec![APP_PORT],
                run: match p.role {
                    Role::App => Run::TestApp {
                        app: p.app.into(),
                        version: p.version.into(),
                    },
                    Role::Client => Run::Idle,
                    Role::Waypoint => Run::Waypoint {
                        gateway: WAYPOINT.into(),
                    },
                },
                host: Some(p.host),
            }
        })
        .collect();
    Plan {
        nodes: NODES.iter().map(|n| n.to_string()).collect(),
        pods,
        default_namespace: NAMESPACE.into(),
    }
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
    /// The demo's view of where the library placed its pods.
    pub fn new(at: &meshwork_localmesh::Placement, payment_vip: IpAddr) -> Placement {
        let mut pods = BTreeMap::new();
        let mut pod_nodes = BTreeMap::new();
        for p in &PODS {
            if let Some((ip, node)) = at.pods.get(p.name) {
                pods.insert(p.name, *ip);
                pod_nodes.insert(p.name, node.clone());
            }
        }
        Placement {
            pods,
            pod_nodes,
            payment_vip,
        }
    }

    pub fn pod_ip(&self, p: &Pod) -> IpAddr {
        self.pods[p.name]
    }

    /// The demo pod at `ip`.
    pub fn pod_at(&self, ip: &str) -> Option<&'static Pod> {
        PODS.iter().find(|p| self.pod_ip(p).to_string() == ip)
    }
}

#[cfg(test)]
pub mod tests {
    use super::*;

    /// A placement as loopback mode makes it on `127.120.7.0/24`.
    pub fn loopback_placement() -> Placement {
        let plan = plan();
        let mut at = meshwork_localmesh::Placement::default();
        for p in &plan.pods {
            let ip = IpAddr::V4(Ipv4Addr::new(127, 120, 7, p.host.unwrap()));
            at.pods
                .insert(p.name.clone(), (ip, plan.nodes[p.node].clone()));
        }
        Placement::new(
            &at,
            IpAddr::V4(Ipv4Addr::new(127, 120, 7, PAYMENT_VIP_HOST)),
        )
    }

    #[test]
    fn the_plan_has_every_pod_on_its_node_with_its_address() {
        let plan = plan();
        plan.check().unwrap();
        assert_eq!(plan.pods.len(), PODS.len());
        let v2 = plan.pod("order-service-v2").unwrap();
        assert_eq!(plan.nodes[v2.node], "node-b");
        assert_eq!(v2.host, Some(12));
        assert_eq!(v2.labels["version"], "v2");
        assert!(plan.pod("waypoint-0").unwrap().is_waypoint());
        assert_eq!(plan.pod("order-client").unwrap().run, Run::Idle);
        let mut hosts: Vec<u8> = PODS.iter().map(|p| p.host).collect();
        hosts.sort();
        hosts.dedup();
        assert_eq!(hosts.len(), PODS.len());
    }

    #[test]
    fn placement_follows_the_library() {
        let p = loopback_placement();
        let v2 = pod_named("order-service-v2");
        assert_eq!(p.pod_ip(v2).to_string(), "127.120.7.12");
        assert_eq!(p.pod_nodes[v2.name], "node-b");
        assert_eq!(p.pod_at("127.120.7.12").map(|p| p.name), Some(v2.name));
        assert_eq!(p.pod_at("127.120.7.99"), None);
        assert_eq!(p.payment_vip.to_string(), "127.120.7.201");
    }
}

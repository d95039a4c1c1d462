//! Netns mode: the demo cluster as the e2e mini-cluster (`meshwork-e2e`): every pod is a
//! network namespace behind a veth on its node's namespace, the control plane runs in the
//! fabric namespace, each node's ztunnel captures its pods with the eBPF redirection, the
//! `production` waypoint runs (uncaptured) in its own pod. Client traffic is the app's own
//! plain TCP from the client pod's namespace to the service VIP.
//!
//! The waypoint's pod runs on a third node of its own: with today's redirection, HBONE from
//! an uncaptured pod to a captured pod of the same node is not delivered (the program is not
//! attached to the uncaptured pod's veth, so the connection's packets after the SYN are
//! neither marked nor hairpinned; TCP early demux finds the transparent socket and
//! `ip_forward` drops them). For the same reason the pod outside the mesh
//! (`legacy/legacy-client`) sends its plaintext to pods of the other node: from its own node
//! the destination's reply would be captured as the pod's outbound traffic and reset.
//!
//! Teardown: dropping the mesh stops the ztunnels, removes each node's redirection, kills
//! the other processes and deletes the namespaces (with their veths) and BPF pins. If
//! `meshwork` itself is SIGKILLed, its children die with it (`PR_SET_PDEATHSIG`) and the
//! next run removes the namespaces and pins left behind (their run id names a dead pid).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use meshwork_e2e::{
    Binaries, Cluster, MeshConfig, NetnsMesh, WaypointSpec, CONTROL_PLANE_ADMIN_PORT,
    CONTROL_PLANE_IP, WAYPOINT_ADMIN_PORT, WAYPOINT_READINESS_PORT, ZTUNNEL_METRICS_PORT,
};

use super::collector::Collector;
use super::connect::Dial;
use super::http::{self, Request, Via};
use super::mesh::{answers, get_ok, wait_until, Backend, Mesh};
use super::procs::locate;
use super::topology::{
    pod_named, Placement, Pod, Role, APP_PORT, NAMESPACE, NODES, PODS, WAYPOINT,
};
use super::{progress, DemoError};

/// payment-service's cluster IP in netns mode (the seed's order-service gets one from
/// the control plane's allocator in the same service CIDR).
const PAYMENT_VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 100, 1);
const WAYPOINT_POD: &str = "waypoint-0";
/// ztunnel admin listener in each node namespace (its default, `127.0.0.1:15000`).
const ZTUNNEL_ADMIN_PORT: u16 = 15000;

/// The netns part of a running demo mesh.
pub struct Netns {
    mesh: Arc<NetnsMesh>,
    /// Demo node (`node-a`) → harness node (`n0`).
    nodes: BTreeMap<&'static str, String>,
    /// Service name → its VIP, as the control plane's model has it.
    vips: BTreeMap<String, IpAddr>,
}

fn harness(e: impl std::fmt::Display) -> DemoError {
    DemoError::Netns(e.to_string())
}

/// Which harness node (`n<i>`) a demo node is.
fn node_index(demo_node: &str) -> usize {
    NODES.iter().position(|(n, _)| *n == demo_node).unwrap_or(0)
}

/// The harness node index of a pod: its demo node, except the waypoint, which gets the
/// node after them (see the module doc).
fn pod_node_index(p: &Pod) -> usize {
    match p.role {
        Role::Waypoint => NODES.len(),
        _ => node_index(p.node),
    }
}

impl Netns {
    fn cluster(&self) -> &Cluster {
        &self.mesh.cluster
    }

    fn netns_of(&self, target: &str) -> String {
        self.cluster()
            .netns_of(target)
            .map(str::to_string)
            .unwrap_or_else(|_| target.to_string())
    }

    /// The combined stdout/stderr log of a process (names as in loopback mode).
    pub fn log(&self, name: &str) -> PathBuf {
        let label = match name {
            "waypoint" => format!("waypoint-{WAYPOINT_POD}"),
            n => match n.strip_prefix("ztunnel-").and_then(|d| self.nodes.get(d)) {
                Some(node) => format!("ztunnel-{node}-0"),
                None if PODS.iter().any(|p| p.name == n) => format!("app-{n}"),
                None => n.to_string(),
            },
        };
        self.cluster().log_path(&label)
    }

    /// `p`'s own connection to `host`'s VIP on port 8080, from its namespace.
    pub fn via(&self, p: &Pod, host: &str) -> Via {
        let vip = self
            .vips
            .get(host)
            .copied()
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Via::Plain {
            dial: Dial::Netns {
                netns: self.netns_of(p.name),
                addr: SocketAddr::new(vip, APP_PORT),
            },
            host: host.to_string(),
        }
    }

    /// `p`'s own connection to `addr` from its namespace.
    pub fn plaintext(&self, p: &Pod, addr: SocketAddr) -> Via {
        Via::Plain {
            dial: Dial::Netns {
                netns: self.netns_of(p.name),
                addr,
            },
            host: addr.to_string(),
        }
    }

    /// `p`'s app on 127.0.0.1 inside its own namespace (never captured).
    pub fn direct(&self, p: &Pod) -> Via {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, APP_PORT));
        Via::Plain {
            dial: Dial::Netns {
                netns: self.netns_of(p.name),
                addr,
            },
            host: addr.to_string(),
        }
    }

    /// Demo node → its ztunnel's admin endpoint (127.0.0.1:15000 in the node namespace).
    pub fn redirect_endpoints(&self) -> Vec<(String, Dial)> {
        self.nodes
            .iter()
            .map(|(demo, node)| {
                let dial = Dial::Netns {
                    netns: self.netns_of(node),
                    addr: SocketAddr::from((Ipv4Addr::LOCALHOST, ZTUNNEL_ADMIN_PORT)),
                };
                (demo.to_string(), dial)
            })
            .collect()
    }

    pub fn location(&self) -> String {
        format!(
            "in network namespaces {}-* with eBPF redirection",
            self.cluster().run_id()
        )
    }

    pub fn first_exited(&self) -> Option<String> {
        self.cluster().first_exited().map(|(label, status)| {
            format!(
                "{label} exited ({status}): {}",
                super::procs::tail(&self.cluster().log_path(&label), 3)
            )
        })
    }

    pub fn keep_banner(&self, mesh: &Mesh) -> String {
        let client = self.netns_of("order-client");
        let order = self.vips.get("order-service").copied();
        let payment = self.vips.get("payment-service").copied();
        let show = |ip: Option<IpAddr>| ip.map(|i| i.to_string()).unwrap_or_default();
        let (order, payment) = (show(order), show(payment));
        let fabric = self.cluster().fabric_netns().to_string();
        let wp = self.netns_of(WAYPOINT_POD);
        format!(
            "the mesh keeps running in network namespaces {run}-* (Ctrl-C stops it and removes them, their veths, BPF pins and processes):\n\
             \x20 ip netns exec {client} curl http://{order}:8080/api/orders\n\
             \x20 ip netns exec {client} curl -H 'x-canary: true' http://{order}:8080/api/orders\n\
             \x20 ip netns exec {client} curl -X POST http://{payment}:8080/api/payments/charge\n\
             \x20 control plane admin: ip netns exec {fabric} curl http://{cp}/debug/model\n\
             \x20 waypoint admin: ip netns exec {wp} curl http://127.0.0.1:{WAYPOINT_ADMIN_PORT}/metrics\n\
             \x20 ztunnel metrics: {}\n\
             \x20 logs: {}\n",
            mesh.ztunnel_metrics
                .iter()
                .filter_map(|(n, d)| match d {
                    Dial::Netns { netns, addr } => {
                        Some(format!("{n}: ip netns exec {netns} curl http://{addr}/metrics"))
                    }
                    Dial::Here(_) => None,
                })
                .collect::<Vec<_>>()
                .join("; "),
            self.cluster().log_dir().display(),
            run = self.cluster().run_id(),
            cp = mesh.control_plane_admin.addr(),
        )
    }

    /// Brings the netns mesh up. On failure everything is removed again; the logs are
    /// copied to a kept directory named in the error.
    pub async fn start(seed_files: Option<&[(String, String)]>) -> Result<Mesh, DemoError> {
        let bins = Binaries {
            controlplane: locate("controlplane")?,
            ztunnel: locate("ztunnel")?,
            testapp: locate("meshwork-testapp")?,
            waypoint: locate("waypoint")?,
        };
        progress("creating the network namespaces and starting the control plane and the ztunnels (eBPF redirection)");
        // On this (runtime worker) thread, not the blocking pool: the harness's children get
        // SIGKILL when the thread that spawned them exits (PR_SET_PDEATHSIG is per thread),
        // and idle blocking-pool threads exit after a few seconds. It takes about a second.
        let (nm, placement) = boot(bins, seed_files)?;
        let nm = Arc::new(nm);
        let collector = start_collector(&nm).await?;
        let mut netns = Netns {
            mesh: nm.clone(),
            nodes: NODES
                .iter()
                .map(|(n, _)| (*n, format!("n{}", node_index(n))))
                .collect(),
            vips: BTreeMap::new(),
        };
        match netns.bring_up(collector.addr).await {
            Ok(()) => {
                let ztunnel_metrics = NODES
                    .iter()
                    .map(|(n, _)| {
                        let dial = Dial::Netns {
                            netns: netns.netns_of(&netns.nodes[n]),
                            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, ZTUNNEL_METRICS_PORT)),
                        };
                        (n.to_string(), dial)
                    })
                    .collect();
                Ok(Mesh {
                    placement,
                    control_plane_admin: Dial::Netns {
                        netns: nm.cluster.fabric_netns().to_string(),
                        addr: SocketAddr::from((CONTROL_PLANE_IP, CONTROL_PLANE_ADMIN_PORT)),
                    },
                    ztunnel_metrics,
                    waypoint_admin: Dial::Netns {
                        netns: netns.netns_of(WAYPOINT_POD),
                        addr: SocketAddr::from((Ipv4Addr::LOCALHOST, WAYPOINT_ADMIN_PORT)),
                    },
                    collector,
                    backend: Backend::Netns(netns),
                })
            }
            Err(e) => {
                let logs = keep_logs(nm.cluster.log_dir());
                drop(netns);
                drop(nm);
                Err(DemoError::StartFailed {
                    cause: Box::new(e),
                    logs,
                })
            }
        }
    }

    /// Apps, the waypoint, the services' VIPs, and a first request through the mesh.
    async fn bring_up(&mut self, collector: SocketAddr) -> Result<(), DemoError> {
        for p in PODS.iter().filter(|p| p.role == Role::App) {
            self.mesh
                .start_app(p.name, p.app, p.version)
                .map_err(harness)?;
        }
        let wp = pod_named(WAYPOINT_POD);
        let otlp = SocketAddr::new(IpAddr::V4(CONTROL_PLANE_IP), collector.port());
        progress(&format!(
            "starting the waypoint for {NAMESPACE} in pod {WAYPOINT_POD} ({}, not captured, on node {}), exporting spans to the demo's OTLP collector on {otlp}",
            self.cluster().pod(WAYPOINT_POD).map(|p| p.ip.to_string()).unwrap_or_default(),
            self.cluster().pod(WAYPOINT_POD).map(|p| p.node.clone()).unwrap_or_default(),
        ));
        self.mesh
            .start_waypoint(&WaypointSpec {
                pod: WAYPOINT_POD.into(),
                namespace: NAMESPACE.into(),
                gateway: WAYPOINT.into(),
                service_account: wp.service_account.into(),
                extra_args: vec!["--otlp-endpoint".into(), otlp.to_string()],
            })
            .map_err(harness)?;
        progress("waiting for the apps, the waypoint and the services' VIPs");
        for p in PODS.iter().filter(|p| p.role == Role::App) {
            let via = self.direct(p);
            wait_until(
                p.name,
                Duration::from_secs(20),
                || self.first_exited(),
                || get_ok(&via, "/health"),
            )
            .await?;
        }
        let ready = Via::Plain {
            dial: Dial::Netns {
                netns: self.netns_of(WAYPOINT_POD),
                addr: SocketAddr::from((Ipv4Addr::LOCALHOST, WAYPOINT_READINESS_PORT)),
            },
            host: "waypoint".into(),
        };
        wait_until(
            "waypoint",
            Duration::from_secs(30),
            || self.first_exited(),
            || get_ok(&ready, "/healthz/ready"),
        )
        .await?;
        let model = Via::Plain {
            dial: Dial::Netns {
                netns: self.cluster().fabric_netns().to_string(),
                addr: SocketAddr::from((CONTROL_PLANE_IP, CONTROL_PLANE_ADMIN_PORT)),
            },
            host: "controlplane".into(),
        };
        let found = std::cell::RefCell::new(BTreeMap::new());
        wait_until(
            "the services' VIPs in the control plane's model",
            Duration::from_secs(20),
            || self.first_exited(),
            || {
                let (model, found) = (model.clone(), &found);
                async move {
                    let r = http::send(
                        &model,
                        &Request::get("/debug/model?prefix=service/"),
                        Duration::from_secs(3),
                    )
                    .await;
                    let vips = r
                        .ok()
                        .and_then(|r| r.json())
                        .map(|j| service_vips(&j, NAMESPACE))
                        .unwrap_or_default();
                    let all = ["order-service", "payment-service"]
                        .iter()
                        .all(|s| vips.contains_key(*s));
                    *found.borrow_mut() = vips;
                    all
                }
            },
        )
        .await?;
        let vips = found.into_inner();
        progress(&format!(
            "service VIPs from the model: {}",
            vips.iter()
                .map(|(s, ip)| format!("{s} {ip}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.vips = vips;
        // The mesh path is ready once the waypoint answers for payment-service (the
        // demo cluster's own Service), on the client pod's own captured connection.
        let via = self.via(pod_named("order-client"), "payment-service");
        wait_until(
            "payment-service through the mesh",
            Duration::from_secs(30),
            || self.first_exited(),
            || answers(&via, "/health"),
        )
        .await?;
        Ok(())
    }
}

/// Builds the cluster and boots the control plane and ztunnels (blocking).
fn boot(
    bins: Binaries,
    seed_files: Option<&[(String, String)]>,
) -> Result<(NetnsMesh, Placement), DemoError> {
    let mut b = Cluster::builder().nodes(NODES.len() + 1);
    for p in &PODS {
        b = b.pod(p.name, pod_node_index(p));
    }
    let cluster = b.build().map_err(harness)?;
    let placement = placement(&cluster)?;
    let config = MeshConfig {
        files: super::manifests::files(&placement, seed_files),
        controlplane_args: vec!["--default-namespace".into(), NAMESPACE.into()],
        ztunnel_args: vec!["--log-format".into(), "json".into()],
        ..MeshConfig::default()
    };
    let mesh = NetnsMesh::boot(bins, cluster, config).map_err(harness)?;
    Ok((mesh, placement))
}

/// Where the demo's pods ended up in `cluster`.
fn placement(cluster: &Cluster) -> Result<Placement, DemoError> {
    let mut pods = BTreeMap::new();
    let mut pod_nodes = BTreeMap::new();
    for p in &PODS {
        let pod = cluster.pod(p.name).map_err(harness)?;
        pods.insert(p.name, IpAddr::V4(pod.ip));
        pod_nodes.insert(
            p.name,
            cluster.node(&pod.node).map_err(harness)?.netns.clone(),
        );
    }
    Ok(Placement {
        pods,
        pod_nodes,
        payment_vip: IpAddr::V4(PAYMENT_VIP),
    })
}

/// The OTLP collector on a listener made in the fabric namespace, at the control plane's
/// address (the waypoint's pod routes there through its node).
async fn start_collector(nm: &NetnsMesh) -> Result<Collector, DemoError> {
    let want = SocketAddr::from((CONTROL_PLANE_IP, 0));
    let l = nm
        .cluster
        .in_netns("fabric", move || std::net::TcpListener::bind(want))
        .map_err(harness)?
        .map_err(|error| DemoError::Bind { addr: want, error })?;
    Collector::start_on(l)
}

/// `name → first VIP` of the model's services in `namespace` (`/debug/model` JSON).
fn service_vips(model: &serde_json::Value, namespace: &str) -> BTreeMap<String, IpAddr> {
    let mut out = BTreeMap::new();
    for r in model["resources"].as_array().into_iter().flatten() {
        let Some(svc) = r["kind"].as_object().and_then(|k| k.values().next()) else {
            continue;
        };
        if svc["namespace"] != namespace {
            continue;
        }
        let name = svc["name"].as_str();
        let vip = svc["vips"]
            .as_array()
            .and_then(|v| v.first())
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse::<IpAddr>().ok());
        if let (Some(name), Some(vip)) = (name, vip) {
            out.insert(name.to_string(), vip);
        }
    }
    out
}

/// Copies the cluster's log files to a directory that outlives the cluster.
fn keep_logs(from: &Path) -> String {
    let kept = tempfile::Builder::new()
        .prefix("meshwork-demo-netns-")
        .tempdir()
        .map(tempfile::TempDir::keep);
    let Ok(to) = kept else {
        return from.display().to_string();
    };
    if let Ok(dir) = std::fs::read_dir(from) {
        for e in dir.flatten() {
            if e.path().is_file() {
                let _ = std::fs::copy(e.path(), to.join(e.file_name()));
            }
        }
    }
    to.display().to_string()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn vips_come_from_the_model_services_of_the_namespace() {
        let model = serde_json::json!({"version": 3, "resources": [
            {"key": "service/production/order-service.production.svc.cluster.local",
             "kind": {"service": {"name": "order-service", "namespace": "production",
                                   "vips": ["10.96.3.7"]}}},
            {"key": "service/partners/x", "kind": {"service": {"name": "x",
                                   "namespace": "partners", "vips": ["10.96.0.9"]}}},
            {"key": "service/production/novip", "kind": {"service": {"name": "novip",
                                   "namespace": "production", "vips": []}}},
        ]});
        let got = service_vips(&model, "production");
        assert_eq!(got.len(), 1, "{got:?}");
        assert_eq!(got["order-service"].to_string(), "10.96.3.7");
        assert!(service_vips(&serde_json::json!({}), "production").is_empty());
    }

    #[test]
    fn demo_nodes_map_to_harness_nodes_and_the_waypoint_gets_its_own() {
        assert_eq!(node_index("node-a"), 0);
        assert_eq!(node_index("node-b"), 1);
        assert_eq!(pod_node_index(pod_named("order-service-v2")), 1);
        assert_eq!(pod_node_index(pod_named(WAYPOINT_POD)), 2);
    }

    #[test]
    fn kept_logs_are_copied() {
        let from = tempfile::tempdir().unwrap();
        std::fs::write(from.path().join("ztunnel-n0-0.log"), "line").unwrap();
        let kept = PathBuf::from(keep_logs(from.path()));
        assert_eq!(
            std::fs::read_to_string(kept.join("ztunnel-n0-0.log")).unwrap(),
            "line"
        );
        std::fs::remove_dir_all(kept).unwrap();
    }
}

//! Netns mode: the plan as a netlab mini-cluster (`meshwork-netlab`): every pod is a network
//! namespace behind a veth on its node's namespace, the control plane runs in the fabric
//! namespace, each node's ztunnel captures its pods with the eBPF redirection, waypoints
//! run (uncaptured) in their own pods. Client traffic is the app's own plain TCP from the
//! client pod's namespace to the service VIP.
//!
//! Waypoint pods run on a node of their own (after the plan's nodes): with today's
//! redirection, HBONE from an uncaptured pod to a captured pod of the same node is not
//! delivered (the program is not attached to the uncaptured pod's veth, so the
//! connection's packets after the SYN are neither marked nor hairpinned). For the same
//! reason a pod outside the mesh must send plaintext to pods of another node: from its own
//! node the destination's reply would be captured as the pod's outbound traffic and reset.
//!
//! Teardown: dropping the mesh stops the ztunnels, removes each node's redirection, kills
//! the other processes and deletes the namespaces (with their veths) and BPF pins. If the
//! owner is SIGKILLed, its children die with it (`PR_SET_PDEATHSIG`) and the next run
//! removes the namespaces and pins left behind (their run id names a dead pid).

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::Arc;
use std::time::Duration;

use meshwork_netlab::{
    Binaries, Cluster, Mesh, MeshConfig, WaypointSpec, CONTROL_PLANE_ADMIN_PORT, CONTROL_PLANE_IP,
    WAYPOINT_ADMIN_PORT, WAYPOINT_READINESS_PORT, ZTUNNEL_METRICS_PORT,
};

use crate::collector::Collector;
use crate::connect::Dial;
use crate::http::{self, Request, Via};
use crate::plan::{pod_env, pods_yaml, Endpoints, Placement, Plan, PodPlan, Run, StartOptions};
use crate::procs::locate;
use crate::wait::{answers, get_ok, wait_until};
use crate::{progress, Error};

/// ztunnel admin listener in each node namespace (its default, `127.0.0.1:15000`).
pub const ZTUNNEL_ADMIN_PORT: u16 = 15000;

fn harness(e: impl std::fmt::Display) -> Error {
    Error::Netns(e.to_string())
}

/// The harness node index of a pod: its plan node, except waypoints, which get the node
/// after the plan's (see the module doc).
pub fn pod_node_index(plan: &Plan, p: &PodPlan) -> usize {
    if p.is_waypoint() {
        plan.nodes.len()
    } else {
        p.node
    }
}

/// The cluster is built (namespaces and links), nothing runs yet.
pub struct Prepared {
    pub plan: Plan,
    cluster: Cluster,
    pub placement: Placement,
}

impl Prepared {
    /// Builds the mini-cluster (blocking, about a second).
    pub fn new(plan: Plan) -> Result<Prepared, Error> {
        plan.check()?;
        let extra = usize::from(plan.pods.iter().any(PodPlan::is_waypoint));
        let mut b = Cluster::builder().nodes(plan.nodes.len() + extra);
        for p in &plan.pods {
            b = b.pod(&p.name, pod_node_index(&plan, p));
        }
        let cluster = b.build().map_err(harness)?;
        let mut placement = Placement::default();
        for p in &plan.pods {
            let pod = cluster.pod(&p.name).map_err(harness)?;
            let node = cluster.node(&pod.node).map_err(harness)?.netns.clone();
            placement
                .pods
                .insert(p.name.clone(), (IpAddr::V4(pod.ip), node));
        }
        Ok(Prepared {
            plan,
            cluster,
            placement,
        })
    }

    /// Boots the control plane and ztunnels, then the pods and waypoints, and waits for
    /// them. On failure everything is removed again; the logs are copied to a kept
    /// directory named in the error.
    pub async fn start(self, opts: StartOptions) -> Result<(Endpoints, Netns), Error> {
        let bins = Binaries {
            controlplane: locate("controlplane")?,
            ztunnel: locate("ztunnel")?,
            testapp: locate("meshwork-testapp")?,
            waypoint: locate("waypoint")?,
        };
        progress("creating the network namespaces and starting the control plane and the ztunnels (eBPF redirection)");
        let mut files = opts.files.clone();
        files.push((
            crate::live::PODS_FILE.into(),
            pods_yaml(&self.plan, &self.placement),
        ));
        let config = MeshConfig {
            files,
            controlplane_args: [
                "--default-namespace".to_string(),
                self.plan.default_namespace.clone(),
            ]
            .into_iter()
            .chain(opts.controlplane_args.iter().cloned())
            .collect(),
            ztunnel_args: vec!["--log-format".into(), "json".into()],
            ..MeshConfig::default()
        };
        // On this (runtime worker) thread, not the blocking pool: the harness's children
        // get SIGKILL when the thread that spawned them exits (PR_SET_PDEATHSIG is per
        // thread), and idle blocking-pool threads exit after a few seconds.
        let nm = Arc::new(Mesh::boot(bins.clone(), self.cluster, config).map_err(harness)?);
        let collector = start_collector(&nm).await?;
        let mut netns = Netns {
            mesh: nm.clone(),
            plan: self.plan.clone(),
            bins,
            vips: BTreeMap::new(),
        };
        match netns.bring_up(collector.addr, &opts).await {
            Ok(()) => {
                let ztunnel_metrics = self
                    .plan
                    .nodes
                    .iter()
                    .enumerate()
                    .map(|(i, n)| {
                        let dial = Dial::Netns {
                            netns: netns.netns_of(&format!("n{i}")),
                            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, ZTUNNEL_METRICS_PORT)),
                        };
                        (n.clone(), dial)
                    })
                    .collect();
                let waypoint_admin = self
                    .plan
                    .pods
                    .iter()
                    .filter(|p| p.is_waypoint())
                    .map(|p| {
                        let dial = Dial::Netns {
                            netns: netns.netns_of(&p.name),
                            addr: SocketAddr::from((Ipv4Addr::LOCALHOST, WAYPOINT_ADMIN_PORT)),
                        };
                        (p.name.clone(), dial)
                    })
                    .collect();
                Ok((
                    Endpoints {
                        control_plane_admin: Dial::Netns {
                            netns: nm.cluster.fabric_netns().to_string(),
                            addr: SocketAddr::from((CONTROL_PLANE_IP, CONTROL_PLANE_ADMIN_PORT)),
                        },
                        ztunnel_metrics,
                        waypoint_admin,
                        collector,
                    },
                    netns,
                ))
            }
            Err(e) => {
                let logs = keep_logs(nm.cluster.log_dir());
                drop(netns);
                drop(nm);
                Err(Error::StartFailed {
                    cause: Box::new(e),
                    logs,
                })
            }
        }
    }
}

/// The netns part of a running mesh.
pub struct Netns {
    mesh: Arc<Mesh>,
    plan: Plan,
    bins: Binaries,
    /// `(namespace, service name)` → its VIP, as the control plane's model has it.
    pub vips: BTreeMap<(String, String), IpAddr>,
}

impl Netns {
    /// The directory of manifests the control plane reads.
    pub fn config_dir(&self) -> &Path {
        self.mesh.config_dir()
    }

    pub fn cluster(&self) -> &Cluster {
        &self.mesh.cluster
    }

    /// The network namespace of a pod, a harness node (`n0`) or `fabric`.
    pub fn netns_of(&self, target: &str) -> String {
        self.cluster()
            .netns_of(target)
            .map(str::to_string)
            .unwrap_or_else(|_| target.to_string())
    }

    /// The combined stdout/stderr log of a process: `controlplane`, `ztunnel-<plan
    /// node>`, a waypoint's pod name or a pod name.
    pub fn log(&self, name: &str) -> PathBuf {
        let label = if let Some(i) = name
            .strip_prefix("ztunnel-")
            .and_then(|n| self.plan.nodes.iter().position(|x| x == n))
        {
            format!("ztunnel-n{i}-0")
        } else {
            match self.plan.pod(name) {
                Some(p) if p.is_waypoint() => format!("waypoint-{name}"),
                Some(_) => format!("app-{name}"),
                None => name.to_string(),
            }
        };
        self.cluster().log_path(&label)
    }

    /// The VIP of `host` (`name`, `name.ns`, `name.ns.svc[.cluster.local]`; a bare name
    /// is in `default_ns`).
    pub fn vip(&self, host: &str, default_ns: &str) -> Option<IpAddr> {
        let mut parts = host.split('.');
        let name = parts.next()?;
        let ns = parts.next().unwrap_or(default_ns);
        self.vips.get(&(ns.to_string(), name.to_string())).copied()
    }

    /// Pod `p`'s own connection to `host`'s VIP on `port`, from its namespace (a bare
    /// name is looked up in the pod's namespace, then in the plan's default namespace).
    pub fn via(&self, p: &PodPlan, host: &str, port: u16) -> Via {
        let vip = self
            .vip(host, &p.namespace)
            .or_else(|| self.vip(host, &self.plan.default_namespace))
            .unwrap_or(IpAddr::V4(Ipv4Addr::UNSPECIFIED));
        Via::Plain {
            dial: Dial::Netns {
                netns: self.netns_of(&p.name),
                addr: SocketAddr::new(vip, port),
            },
            host: host.to_string(),
        }
    }

    /// `pod`'s own connection to `addr` from its namespace.
    pub fn plaintext(&self, pod: &str, addr: SocketAddr) -> Via {
        Via::Plain {
            dial: Dial::Netns {
                netns: self.netns_of(pod),
                addr,
            },
            host: addr.to_string(),
        }
    }

    /// `pod`'s app on 127.0.0.1:`port` inside its own namespace (never captured).
    pub fn direct(&self, pod: &str, port: u16) -> Via {
        let addr = SocketAddr::from((Ipv4Addr::LOCALHOST, port));
        Via::Plain {
            dial: Dial::Netns {
                netns: self.netns_of(pod),
                addr,
            },
            host: addr.to_string(),
        }
    }

    /// Plan node → its ztunnel's admin endpoint (127.0.0.1:15000 in the node namespace).
    pub fn redirect_endpoints(&self) -> Vec<(String, Dial)> {
        self.plan
            .nodes
            .iter()
            .enumerate()
            .map(|(i, n)| {
                let dial = Dial::Netns {
                    netns: self.netns_of(&format!("n{i}")),
                    addr: SocketAddr::from((Ipv4Addr::LOCALHOST, ZTUNNEL_ADMIN_PORT)),
                };
                (n.clone(), dial)
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
                crate::procs::tail(&self.cluster().log_path(&label), 3)
            )
        })
    }

    /// Apps, waypoints, the services' VIPs, and the readiness probe through the mesh.
    async fn bring_up(&mut self, collector: SocketAddr, opts: &StartOptions) -> Result<(), Error> {
        for p in &self.plan.pods {
            let ip = match self.cluster().pod(&p.name) {
                Ok(pod) => IpAddr::V4(pod.ip),
                Err(e) => return Err(harness(e)),
            };
            match &p.run {
                Run::TestApp { app, version } => {
                    for (i, port) in p.ports.iter().enumerate() {
                        let label = if i == 0 {
                            format!("app-{}", p.name)
                        } else {
                            format!("app-{}-{port}", p.name)
                        };
                        let mut cmd = Command::new(&self.bins.testapp);
                        cmd.args(["serve", "--port", &port.to_string()]).args([
                            "--app",
                            app,
                            "--version",
                            version,
                            "--pod",
                            &p.name,
                        ]);
                        self.cluster()
                            .spawn_in(&p.name, &label, cmd)
                            .map_err(harness)?;
                    }
                }
                Run::Command(argv) => {
                    let Some((prog, rest)) = argv.split_first() else {
                        continue;
                    };
                    let mut cmd = Command::new(prog);
                    cmd.args(rest).envs(pod_env(p, ip)).env("RUST_LOG", "info");
                    self.cluster()
                        .spawn_in(&p.name, &format!("app-{}", p.name), cmd)
                        .map_err(harness)?;
                }
                Run::Idle | Run::Waypoint { .. } => {}
            }
        }
        let otlp = SocketAddr::new(IpAddr::V4(CONTROL_PLANE_IP), collector.port());
        for wp in &self.plan.pods {
            let Run::Waypoint { gateway } = &wp.run else {
                continue;
            };
            progress(&format!(
                "starting the waypoint {}/{gateway} in pod {} ({}, not captured, on node {}), exporting spans to the OTLP receiver on {otlp}",
                wp.namespace,
                wp.name,
                self.cluster().pod(&wp.name).map(|p| p.ip.to_string()).unwrap_or_default(),
                self.cluster().pod(&wp.name).map(|p| p.node.clone()).unwrap_or_default(),
            ));
            self.mesh
                .start_waypoint(&WaypointSpec {
                    pod: wp.name.clone(),
                    namespace: wp.namespace.clone(),
                    gateway: gateway.clone(),
                    service_account: wp.service_account.clone(),
                    extra_args: vec!["--otlp-endpoint".into(), otlp.to_string()],
                })
                .map_err(harness)?;
        }
        progress("waiting for the apps, the waypoints and the services' VIPs");
        for p in &self.plan.pods {
            let Run::TestApp { .. } = p.run else {
                continue;
            };
            for port in &p.ports {
                let via = self.direct(&p.name, *port);
                wait_until(
                    &p.name,
                    Duration::from_secs(20),
                    || self.first_exited(),
                    || get_ok(&via, "/health"),
                )
                .await?;
            }
        }
        for wp in self.plan.pods.iter().filter(|p| p.is_waypoint()) {
            let ready = Via::Plain {
                dial: Dial::Netns {
                    netns: self.netns_of(&wp.name),
                    addr: SocketAddr::from((Ipv4Addr::LOCALHOST, WAYPOINT_READINESS_PORT)),
                },
                host: "waypoint".into(),
            };
            wait_until(
                &wp.name,
                Duration::from_secs(30),
                || self.first_exited(),
                || get_ok(&ready, "/healthz/ready"),
            )
            .await?;
        }
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
                        .map(|j| service_vips(&j))
                        .unwrap_or_default();
                    let all = opts.services.iter().all(|s| vips.contains_key(s));
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
                .map(|((ns, s), ip)| format!("{ns}/{s} {ip}"))
                .collect::<Vec<_>>()
                .join(", ")
        ));
        self.vips = vips;
        if let Some((pod, host, port)) = &opts.ready_probe {
            let p = self
                .plan
                .pod(pod)
                .ok_or_else(|| Error::Plan(format!("no pod {pod}")))?;
            let via = self.via(p, host, *port);
            wait_until(
                &format!("{host} through the mesh"),
                Duration::from_secs(30),
                || self.first_exited(),
                || answers(&via, "/health"),
            )
            .await?;
        }
        Ok(())
    }
}

/// The OTLP receiver on a listener made in the fabric namespace, at the control plane's
/// address (waypoint pods route there through their node).
async fn start_collector(nm: &Mesh) -> Result<Collector, Error> {
    let want = SocketAddr::from((CONTROL_PLANE_IP, 0));
    let l = nm
        .cluster
        .in_netns("fabric", move || std::net::TcpListener::bind(want))
        .map_err(harness)?
        .map_err(|error| Error::Bind { addr: want, error })?;
    Collector::start_on(l)
}

/// `(namespace, name) → first VIP` of the model's services (`/debug/model` JSON).
pub fn service_vips(model: &serde_json::Value) -> BTreeMap<(String, String), IpAddr> {
    let mut out = BTreeMap::new();
    for r in model["resources"].as_array().into_iter().flatten() {
        let Some(svc) = r["kind"].as_object().and_then(|k| k.values().next()) else {
            continue;
        };
        let ns = svc["namespace"].as_str();
        let name = svc["name"].as_str();
        let vip = svc["vips"]
            .as_array()
            .and_then(|v| v.first())
            .and_then(|v| v.as_str())
            .and_then(|v| v.parse::<IpAddr>().ok());
        if let (Some(ns), Some(name), Some(vip)) = (ns, name, vip) {
            out.insert((ns.to_string(), name.to_string()), vip);
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
    fn vips_come_from_the_model_services() {
        let model = serde_json::json!({"version": 3, "resources": [
            {"key": "service/production/order-service.production.svc.cluster.local",
             "kind": {"service": {"name": "order-service", "namespace": "production",
                                   "vips": ["10.96.3.7"]}}},
            {"key": "service/partners/x", "kind": {"service": {"name": "x",
                                   "namespace": "partners", "vips": ["10.96.0.9"]}}},
            {"key": "service/production/novip", "kind": {"service": {"name": "novip",
                                   "namespace": "production", "vips": []}}},
        ]});
        let got = service_vips(&model);
        assert_eq!(got.len(), 2, "{got:?}");
        let k = ("production".to_string(), "order-service".to_string());
        assert_eq!(got[&k].to_string(), "10.96.3.7");
        assert!(service_vips(&serde_json::json!({})).is_empty());
    }

    #[test]
    fn waypoints_get_a_node_of_their_own() {
        let pod = |name: &str, node, run| PodPlan {
            name: String::from(name),
            namespace: "shop".into(),
            node,
            service_account: "default".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            workload: String::new(),
            ports: vec![],
            run,
            host: None,
        };
        let plan = Plan {
            nodes: vec!["a".into(), "b".into()],
            pods: vec![
                pod("web-0", 1, Run::Idle),
                pod(
                    "waypoint-0",
                    0,
                    Run::Waypoint {
                        gateway: "waypoint".into(),
                    },
                ),
            ],
            default_namespace: "default".into(),
        };
        assert_eq!(pod_node_index(&plan, &plan.pods[0]), 1);
        assert_eq!(pod_node_index(&plan, &plan.pods[1]), 2);
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

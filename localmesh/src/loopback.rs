//! Loopback mode: the control plane over the manifests, one ztunnel per node, the
//! waypoints and the pods' processes, each pod on its own `127.a.b.x`; traffic enters
//! through the ztunnels' SOCKS5 entry, from the source pod's own address.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr, TcpListener};
use std::path::{Path, PathBuf};
use std::time::Duration;

use crate::collector::Collector;
use crate::connect::Dial;
use crate::http::Via;
use crate::plan::{pod_env, pods_yaml, Endpoints, Placement, Plan, Run, StartOptions};
use crate::procs::{locate, Procs};
use crate::wait::{answers, get_ok, wait_until};
use crate::{progress, Error};

/// HBONE port on pod addresses (fixed by the control plane's model).
pub const HBONE_PORT: u16 = 15008;
/// Last octets the nodes use (node `i` is `.1 + i`); pods get `.10` and up.
const FIRST_POD_HOST: u8 = 10;

/// Addresses of one loopback mesh: `127.a.b.0/24`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Net {
    pub a: u8,
    pub b: u8,
}

impl Net {
    pub fn ip(&self, host: u8) -> IpAddr {
        IpAddr::V4(Ipv4Addr::new(127, self.a, self.b, host))
    }

    pub fn node_ip(&self, index: usize) -> IpAddr {
        self.ip(1 + index as u8)
    }

    /// A free port on `ip` (bound then released; the OS does not hand it out again soon).
    pub fn free_port(ip: IpAddr) -> Result<SocketAddr, Error> {
        let l = TcpListener::bind(SocketAddr::new(ip, 0)).map_err(|source| Error::Bind {
            addr: SocketAddr::new(ip, 0),
            error: source,
        })?;
        l.local_addr().map_err(|source| Error::Bind {
            addr: SocketAddr::new(ip, 0),
            error: source,
        })
    }

    /// A random `127.a.b.0/24` where every `(host, port)` of `wanted` is free (bounded
    /// attempts).
    pub fn pick(seed: u64, wanted: &[(u8, u16)]) -> Result<Net, Error> {
        let mut x = seed | 1;
        for _ in 0..32 {
            // xorshift: cheap, good enough to spread parallel meshes apart.
            x ^= x << 13;
            x ^= x >> 7;
            x ^= x << 17;
            let net = Net {
                a: 100 + (x % 150) as u8,
                b: ((x >> 8) % 256) as u8,
            };
            let free = wanted.iter().all(|(host, port)| {
                TcpListener::bind(SocketAddr::new(net.ip(*host), *port)).is_ok()
            });
            if free {
                return Ok(net);
            }
        }
        Err(Error::NoFreeNet)
    }
}

/// Each pod's last octet: its own when the plan gives one, else the next free from `.10`.
pub fn hosts(plan: &Plan) -> Result<BTreeMap<String, u8>, Error> {
    let mut used: Vec<u8> = plan.pods.iter().filter_map(|p| p.host).collect();
    let mut next = FIRST_POD_HOST;
    let mut out = BTreeMap::new();
    for p in &plan.pods {
        let host = match p.host {
            Some(h) => h,
            None => {
                while used.contains(&next) {
                    next = next.checked_add(1).ok_or_else(|| {
                        Error::Plan("more than 240 pods do not fit one 127.a.b.0/24".into())
                    })?;
                }
                used.push(next);
                next
            }
        };
        if host < FIRST_POD_HOST || host == 255 {
            return Err(Error::Plan(format!(
                "pod {}: host .{host} is reserved (use .{FIRST_POD_HOST}-.254)",
                p.name
            )));
        }
        out.insert(p.name.clone(), host);
    }
    Ok(out)
}

/// A loopback mesh whose addresses are chosen, not yet started.
pub struct Prepared {
    pub plan: Plan,
    pub net: Net,
    pub placement: Placement,
}

impl Prepared {
    pub fn new(plan: Plan, seed: u64) -> Result<Prepared, Error> {
        plan.check()?;
        let hosts = hosts(&plan)?;
        let mut wanted = Vec::new();
        for p in &plan.pods {
            wanted.push((hosts[&p.name], HBONE_PORT));
            if !p.is_waypoint() {
                wanted.extend(p.ports.iter().map(|port| (hosts[&p.name], *port)));
            }
        }
        let net = Net::pick(seed, &wanted)?;
        let placement = Placement {
            pods: plan
                .pods
                .iter()
                .map(|p| {
                    let node = plan.nodes[p.node].clone();
                    (p.name.clone(), (net.ip(hosts[&p.name]), node))
                })
                .collect(),
        };
        Ok(Prepared {
            plan,
            net,
            placement,
        })
    }

    /// Brings the mesh up; on failure everything is stopped and the logs are kept.
    pub async fn start(self, opts: StartOptions) -> Result<(Endpoints, Loopback), Error> {
        let bins: BTreeMap<&str, PathBuf> = crate::procs::BINARIES
            .iter()
            .map(|b| locate(b).map(|p| (*b, p)))
            .collect::<Result<_, _>>()?;
        let io = |path: &Path| {
            let path = path.to_path_buf();
            move |error| Error::Io { path, error }
        };
        let dir = match &opts.run_dir {
            Some(d) => {
                std::fs::create_dir_all(d).map_err(io(d))?;
                RunDir::Given(d.clone())
            }
            None => RunDir::Temp(
                tempfile::Builder::new()
                    .prefix("meshwork-demo-")
                    .tempdir()
                    .map_err(io(&std::env::temp_dir()))?,
            ),
        };
        let config_dir = dir.path().join("manifests");
        let log_dir = dir.path().join("logs");
        let ca_dir = dir.path().join("ca");
        for d in [&config_dir, &log_dir] {
            std::fs::create_dir_all(d).map_err(io(d))?;
        }
        let mut files = opts.files.clone();
        files.push((
            crate::live::PODS_FILE.into(),
            pods_yaml(&self.plan, &self.placement),
        ));
        for (name, text) in &files {
            let path = config_dir.join(name);
            std::fs::write(&path, text).map_err(io(&path))?;
        }
        let lo: IpAddr = Ipv4Addr::LOCALHOST.into();
        let admin = Net::free_port(lo)?;
        let collector = Collector::start().await?;
        let mut lb = Loopback {
            net: self.net,
            placement: self.placement.clone(),
            control_plane_grpc: Net::free_port(lo)?,
            socks: BTreeMap::new(),
            procs: Procs::default(),
            log_dir,
            dir,
        };
        match lb
            .bring_up(
                &self.plan,
                &bins,
                &config_dir,
                &ca_dir,
                admin,
                collector.addr,
                &opts,
            )
            .await
        {
            Ok((ztunnel_metrics, waypoint_admin)) => Ok((
                Endpoints {
                    control_plane_admin: Dial::Here(admin),
                    ztunnel_metrics: ztunnel_metrics
                        .into_iter()
                        .map(|(n, a)| (n, Dial::Here(a)))
                        .collect(),
                    waypoint_admin: waypoint_admin
                        .into_iter()
                        .map(|(n, a)| (n, Dial::Here(a)))
                        .collect(),
                    collector,
                },
                lb,
            )),
            Err(e) => {
                // Keep the logs for the user to read; stop everything else.
                let Loopback { mut procs, dir, .. } = lb;
                procs.shutdown();
                let kept = dir.keep();
                Err(Error::StartFailed {
                    cause: Box::new(e),
                    logs: kept.join("logs").display().to_string(),
                })
            }
        }
    }
}

/// The run directory: a temporary one (removed with the mesh) or the caller's.
pub enum RunDir {
    Temp(tempfile::TempDir),
    Given(PathBuf),
}

impl RunDir {
    pub fn path(&self) -> &Path {
        match self {
            RunDir::Temp(t) => t.path(),
            RunDir::Given(p) => p,
        }
    }

    fn keep(self) -> PathBuf {
        match self {
            RunDir::Temp(t) => t.keep(),
            RunDir::Given(p) => p,
        }
    }
}

/// The loopback part of a running mesh: its addresses, SOCKS5 entries, processes and run
/// directory.
pub struct Loopback {
    pub net: Net,
    placement: Placement,
    pub control_plane_grpc: SocketAddr,
    /// node → SOCKS5 entry of its ztunnel.
    pub socks: BTreeMap<String, SocketAddr>,
    pub procs: Procs,
    log_dir: PathBuf,
    // Last: removed after the processes are gone.
    dir: RunDir,
}

fn arg(s: impl ToString) -> String {
    s.to_string()
}

/// Process names of a pod's test applications: the pod's name, `-<port>` after the first.
pub fn app_process_names(pod: &str, ports: &[u16]) -> Vec<(String, u16)> {
    ports
        .iter()
        .enumerate()
        .map(|(i, p)| {
            let name = if i == 0 {
                pod.to_string()
            } else {
                format!("{pod}-{p}")
            };
            (name, *p)
        })
        .collect()
}

impl Loopback {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self, name: &str, stream: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.{stream}"))
    }

    /// Source pod `pod` (`<ns>/<name>` on `node`, at `ip`) entering the mesh at its
    /// node's ztunnel, towards `host:port`.
    pub fn via(&self, ns: &str, pod: &str, node: &str, host: &str, port: u16) -> Via {
        Via::Socks {
            proxy: self
                .socks
                .get(node)
                .copied()
                .unwrap_or_else(|| SocketAddr::from((Ipv4Addr::LOCALHOST, 1))),
            workload: format!("{ns}/{pod}"),
            source: self.placement.ip(pod),
            host: host.to_string(),
            port,
        }
    }

    pub fn first_exited(&mut self) -> Option<String> {
        self.procs.first_exited()
    }

    /// Starts every process and waits until the mesh path works; returns each node's
    /// ztunnel metrics address and each waypoint's admin address.
    #[allow(clippy::too_many_arguments)]
    async fn bring_up(
        &mut self,
        plan: &Plan,
        bins: &BTreeMap<&str, PathBuf>,
        config_dir: &Path,
        ca_dir: &Path,
        admin: SocketAddr,
        collector: SocketAddr,
        opts: &StartOptions,
    ) -> Result<(BTreeMap<String, SocketAddr>, BTreeMap<String, SocketAddr>), Error> {
        let mesh = self;
        let net = mesh.net;
        let log_dir = mesh.log_dir.clone();
        let grpc = mesh.control_plane_grpc;
        let mut ztunnel_metrics = BTreeMap::new();
        progress(&format!(
            "starting the control plane over {}",
            config_dir.display(),
        ));
        let mut cp_args = vec![
            arg("--config-dir"),
            arg(config_dir.display()),
            arg("--default-namespace"),
            arg(&plan.default_namespace),
            arg("--grpc-addr"),
            arg(grpc),
            arg("--admin-addr"),
            arg(admin),
            arg("--ca-dir"),
            arg(ca_dir.display()),
        ];
        cp_args.extend(opts.controlplane_args.iter().cloned());
        mesh.procs
            .spawn("controlplane", &bins["controlplane"], &cp_args, &log_dir)?;
        let cp_log = mesh.log("controlplane", "out");
        wait_until(
            "control plane",
            Duration::from_secs(20),
            || mesh.procs.first_exited(),
            || {
                let out = std::fs::read_to_string(&cp_log).unwrap_or_default();
                async move { out.contains("controlplane ready") }
            },
        )
        .await?;
        let control_plane = format!("http://{grpc}");
        let mut tokens = BTreeMap::new();
        for node in &plan.nodes {
            tokens.insert(
                node.clone(),
                node_token(&bins["controlplane"], ca_dir, node)?,
            );
        }
        for (i, node) in plan.nodes.iter().enumerate() {
            let ip = net.node_ip(i);
            let socks = Net::free_port(ip)?;
            let metrics = Net::free_port(ip)?;
            let hbone: Vec<String> = plan
                .pods
                .iter()
                .filter(|p| p.node == i && !p.is_waypoint())
                .filter_map(|p| mesh.placement.ip(&p.name))
                .map(|ip| SocketAddr::new(ip, HBONE_PORT).to_string())
                .collect();
            progress(&format!(
                "starting ztunnel {node}: SOCKS5 {socks}, HBONE on {} pod address(es)",
                hbone.len()
            ));
            let hbone = if hbone.is_empty() {
                "off".to_string()
            } else {
                hbone.join(",")
            };
            mesh.procs.spawn(
                &format!("ztunnel-{node}"),
                &bins["ztunnel"],
                &[
                    arg("--control-plane"),
                    control_plane.clone(),
                    arg("--node"),
                    arg(node),
                    arg("--node-token"),
                    tokens[node].clone(),
                    arg("--socks5-addr"),
                    arg(socks),
                    arg("--outbound-addr"),
                    arg("off"),
                    arg("--inbound-plain-addr"),
                    arg("off"),
                    arg("--hbone-addr"),
                    hbone,
                    arg("--admin-addr"),
                    arg(Net::free_port(ip)?),
                    arg("--metrics-addr"),
                    arg(metrics),
                    arg("--readiness-addr"),
                    arg("off"),
                    arg("--log-format"),
                    arg("json"),
                    arg("--drain-timeout"),
                    arg("1s"),
                ],
                &log_dir,
            )?;
            mesh.socks.insert(node.clone(), socks);
            ztunnel_metrics.insert(node.clone(), metrics);
        }
        let mut waypoint_admin = BTreeMap::new();
        for wp in &plan.pods {
            let Run::Waypoint { gateway } = &wp.run else {
                continue;
            };
            let ip = mesh.placement.ip(&wp.name).expect("placed");
            let admin = Net::free_port(ip)?;
            progress(&format!(
                "starting the waypoint {}/{gateway} on {ip}, exporting spans to the OTLP receiver on {collector}",
                wp.namespace
            ));
            mesh.procs.spawn(
                &wp.name,
                &bins["waypoint"],
                &[
                    arg("--control-plane"),
                    control_plane.clone(),
                    arg("--namespace"),
                    arg(&wp.namespace),
                    arg("--name"),
                    arg(gateway),
                    arg("--service-account"),
                    arg(&wp.service_account),
                    arg("--token"),
                    tokens[&plan.nodes[wp.node]].clone(),
                    arg("--hbone-addr"),
                    arg(SocketAddr::new(ip, HBONE_PORT)),
                    arg("--admin-addr"),
                    arg(admin),
                    // Its admin (on the loopback pod IP) serves /metrics too.
                    arg("--metrics-addr"),
                    arg("off"),
                    arg("--readiness-addr"),
                    arg(Net::free_port(ip)?),
                    arg("--otlp-endpoint"),
                    arg(collector),
                ],
                &log_dir,
            )?;
            waypoint_admin.insert(wp.name.clone(), admin);
        }
        for p in &plan.pods {
            let ip = mesh.placement.ip(&p.name).expect("placed");
            match &p.run {
                Run::TestApp { app, version } => {
                    for (name, port) in app_process_names(&p.name, &p.ports) {
                        mesh.procs.spawn(
                            &name,
                            &bins["meshwork-testapp"],
                            &[
                                arg("serve"),
                                arg("--bind"),
                                arg(ip),
                                arg("--port"),
                                arg(port),
                                arg("--app"),
                                arg(app),
                                arg("--version"),
                                arg(version),
                                arg("--pod"),
                                arg(&p.name),
                            ],
                            &log_dir,
                        )?;
                    }
                }
                Run::Command(argv) => {
                    let Some((prog, rest)) = argv.split_first() else {
                        continue;
                    };
                    let env = pod_env(p, ip);
                    mesh.procs
                        .spawn_env(&p.name, Path::new(prog), rest, &env, &log_dir)?;
                }
                Run::Idle | Run::Waypoint { .. } => {}
            }
        }
        progress("waiting for the apps, the ztunnels' certificates and the waypoints");
        for p in &plan.pods {
            let Run::TestApp { .. } = p.run else {
                continue;
            };
            let ip = mesh.placement.ip(&p.name).expect("placed");
            for port in &p.ports {
                let via = Via::direct(SocketAddr::new(ip, *port));
                wait_until(
                    &p.name,
                    Duration::from_secs(20),
                    || mesh.procs.first_exited(),
                    || get_ok(&via, "/health"),
                )
                .await?;
            }
        }
        for (name, admin) in &waypoint_admin {
            let ready = Via::direct(*admin);
            wait_until(
                name,
                Duration::from_secs(30),
                || mesh.procs.first_exited(),
                || get_ok(&ready, "/healthz/ready"),
            )
            .await?;
        }
        if let Some((pod, host, port)) = &opts.ready_probe {
            let p = plan
                .pod(pod)
                .ok_or_else(|| Error::Plan(format!("no pod {pod}")))?;
            let via = mesh.via(&p.namespace, &p.name, &plan.nodes[p.node], host, *port);
            wait_until(
                &format!("{host} through the mesh"),
                Duration::from_secs(30),
                || mesh.procs.first_exited(),
                || answers(&via, "/health"),
            )
            .await?;
        }
        Ok((ztunnel_metrics, waypoint_admin))
    }
}

fn node_token(bin: &Path, ca_dir: &Path, node: &str) -> Result<String, Error> {
    let out = std::process::Command::new(bin)
        .arg("--ca-dir")
        .arg(ca_dir)
        .args(["token", "--node", node])
        .output()
        .map_err(|source| Error::Spawn {
            name: "controlplane token".into(),
            path: bin.to_path_buf(),
            error: source,
        })?;
    if !out.status.success() {
        return Err(Error::Token {
            node: node.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::plan::PodPlan;

    fn pod(name: &str, host: Option<u8>) -> PodPlan {
        PodPlan {
            name: name.into(),
            namespace: "shop".into(),
            node: 0,
            service_account: "default".into(),
            labels: BTreeMap::new(),
            annotations: BTreeMap::new(),
            workload: String::new(),
            ports: vec![8080],
            run: Run::Idle,
            host,
        }
    }

    #[test]
    fn hosts_keep_given_ones_and_fill_the_rest() {
        let plan = Plan {
            nodes: vec!["n".into()],
            pods: vec![
                pod("a", Some(11)),
                pod("b", None),
                pod("c", None),
                pod("d", Some(10)),
            ],
            default_namespace: "default".into(),
        };
        let h = hosts(&plan).unwrap();
        assert_eq!((h["a"], h["b"], h["c"], h["d"]), (11, 12, 13, 10));
        let bad = Plan {
            pods: vec![pod("a", Some(3))],
            ..plan
        };
        assert!(hosts(&bad).unwrap_err().to_string().contains("reserved"));
    }

    #[test]
    fn pick_gives_free_loopback_nets_and_addresses() {
        let a = Net::pick(1, &[(11, 8080), (11, HBONE_PORT)]).unwrap();
        let b = Net::pick(2, &[(11, 8080)]).unwrap();
        assert!(a.a >= 100 && b.a >= 100);
        assert_ne!(a, b);
        assert!(a.ip(11).is_loopback());
        assert_eq!(Net { a: 120, b: 7 }.node_ip(1).to_string(), "127.120.7.2");
    }

    #[test]
    fn extra_ports_get_their_own_process_names() {
        assert_eq!(
            app_process_names("web-0", &[8080, 9090]),
            [
                ("web-0".to_string(), 8080),
                ("web-0-9090".to_string(), 9090)
            ]
        );
    }
}

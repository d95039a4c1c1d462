//! Loopback mode: control plane over the manifests, one ztunnel per node, the `production`
//! waypoint and a testapp per application pod, each on its own `127.a.b.x`; traffic enters
//! through the ztunnels' SOCKS5 entry.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::Duration;

use super::collector::Collector;
use super::connect::Dial;
use super::http::Via;
use super::mesh::{answers, get_ok, wait_until, Backend, Mesh};
use super::procs::{locate, Procs};
use super::topology::{
    pod_named, Net, Placement, Pod, Role, APP_PORT, HBONE_PORT, NAMESPACE, NODES, PODS, WAYPOINT,
};
use super::{progress, DemoError};

/// The loopback part of a running demo mesh: its addresses, SOCKS5 entries, processes and
/// run directory.
pub struct Loopback {
    pub net: Net,
    pub control_plane_grpc: SocketAddr,
    /// node → SOCKS5 entry of its ztunnel.
    pub socks: BTreeMap<String, SocketAddr>,
    pub procs: Procs,
    log_dir: PathBuf,
    // Last: removed after the processes are gone.
    dir: tempfile::TempDir,
}

fn arg(s: impl ToString) -> String {
    s.to_string()
}

fn here(addr: SocketAddr) -> Dial {
    Dial::Here(addr)
}

impl Loopback {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self, name: &str, stream: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.{stream}"))
    }

    /// Source `p` entering the mesh at its node's ztunnel, towards `host:8080`.
    pub fn via(&self, p: &Pod, host: &str) -> Via {
        Via::Socks {
            proxy: self.socks[p.node],
            workload: format!("{}/{}", p.namespace, p.name),
            host: host.to_string(),
            port: APP_PORT,
        }
    }

    pub fn keep_banner(&self, mesh: &Mesh) -> String {
        let socks = self.socks["node-a"];
        format!(
            "the mesh keeps running (Ctrl-C stops it and removes {}):\n\
             \x20 curl --socks5-hostname {socks} --proxy-user production/order-client:x http://order-service:8080/api/orders\n\
             \x20 curl --socks5-hostname {socks} --proxy-user production/order-client:x -H 'x-canary: true' http://order-service:8080/api/orders\n\
             \x20 curl --socks5-hostname {socks} --proxy-user production/order-client:x -X POST http://payment-service:8080/api/payments/charge\n\
             \x20 control plane admin: http://{}/debug/model   waypoint admin: http://{}/metrics\n\
             \x20 ztunnel metrics: {}\n",
            self.dir().display(),
            mesh.control_plane_admin,
            mesh.waypoint_admin,
            mesh.ztunnel_metrics
                .iter()
                .map(|(n, a)| format!("{n} http://{a}/metrics"))
                .collect::<Vec<_>>()
                .join(", "),
        )
    }

    /// Brings the loopback mesh up.
    pub async fn start(
        seed: u64,
        seed_files: Option<&[(String, String)]>,
    ) -> Result<Mesh, DemoError> {
        let bins: BTreeMap<&str, PathBuf> = super::procs::BINARIES
            .iter()
            .map(|b| locate(b).map(|p| (*b, p)))
            .collect::<Result<_, _>>()?;
        let net = Net::pick(seed)?;
        let placement = Placement::loopback(&net);
        let dir = tempfile::Builder::new()
            .prefix("meshwork-demo-")
            .tempdir()
            .map_err(|source| DemoError::Io {
                path: std::env::temp_dir(),
                error: source,
            })?;
        let config_dir = dir.path().join("manifests");
        let log_dir = dir.path().join("logs");
        let ca_dir = dir.path().join("ca");
        for d in [&config_dir, &log_dir] {
            std::fs::create_dir_all(d).map_err(|source| DemoError::Io {
                path: d.clone(),
                error: source,
            })?;
        }
        super::manifests::write_all(&config_dir, &placement, seed_files)?;
        let lo = "127.0.0.1".parse().expect("literal");
        let admin = Net::free_port(lo)?;
        let waypoint_admin = Net::free_port(net.pod_ip(pod_named("waypoint-0")))?;
        let collector = Collector::start().await?;
        let mut lb = Loopback {
            net,
            control_plane_grpc: Net::free_port(lo)?,
            socks: BTreeMap::new(),
            procs: Procs::default(),
            log_dir: log_dir.clone(),
            dir,
        };
        let up = lb
            .bring_up(
                &bins,
                &config_dir,
                &ca_dir,
                admin,
                waypoint_admin,
                collector.addr,
            )
            .await;
        match up {
            Ok(ztunnel_metrics) => Ok(Mesh {
                placement,
                control_plane_admin: here(admin),
                ztunnel_metrics: ztunnel_metrics
                    .into_iter()
                    .map(|(n, a)| (n, here(a)))
                    .collect(),
                waypoint_admin: here(waypoint_admin),
                collector,
                backend: Backend::Loopback(lb),
            }),
            Err(e) => {
                // Keep the logs for the user to read; stop everything else.
                let Loopback { mut procs, dir, .. } = lb;
                procs.shutdown();
                let kept = dir.keep();
                Err(DemoError::StartFailed {
                    cause: Box::new(e),
                    logs: kept.join("logs").display().to_string(),
                })
            }
        }
    }

    /// Starts every process and waits until the mesh path works; returns each node's
    /// ztunnel metrics address.
    async fn bring_up(
        &mut self,
        bins: &BTreeMap<&str, PathBuf>,
        config_dir: &Path,
        ca_dir: &Path,
        admin: SocketAddr,
        waypoint_admin: SocketAddr,
        collector: SocketAddr,
    ) -> Result<BTreeMap<String, SocketAddr>, DemoError> {
        let mesh = self;
        let net = mesh.net;
        let log_dir = mesh.log_dir.clone();
        let grpc = mesh.control_plane_grpc;
        let mut ztunnel_metrics = BTreeMap::new();
        progress(&format!(
            "starting the control plane over {} (seed manifests + the demo cluster)",
            config_dir.display(),
        ));
        mesh.procs.spawn(
            "controlplane",
            &bins["controlplane"],
            &[
                arg("--config-dir"),
                arg(config_dir.display()),
                arg("--default-namespace"),
                arg(NAMESPACE),
                arg("--grpc-addr"),
                arg(grpc),
                arg("--admin-addr"),
                arg(admin),
                arg("--ca-dir"),
                arg(ca_dir.display()),
            ],
            &log_dir,
        )?;
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
        for (node, _) in NODES {
            tokens.insert(node, node_token(&bins["controlplane"], ca_dir, node)?);
        }
        for (node, _) in NODES {
            let ip = net.node_ip(node);
            let socks = Net::free_port(ip)?;
            let metrics = Net::free_port(ip)?;
            let hbone: Vec<String> = PODS
                .iter()
                .filter(|p| p.node == node && p.role != Role::Waypoint)
                .map(|p| SocketAddr::new(net.pod_ip(p), HBONE_PORT).to_string())
                .collect();
            progress(&format!(
                "starting ztunnel {node}: SOCKS5 {socks}, HBONE on {} pod address(es)",
                hbone.len()
            ));
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
                    hbone.join(","),
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
            mesh.socks.insert(node.to_string(), socks);
            ztunnel_metrics.insert(node.to_string(), metrics);
        }
        let wp = pod_named("waypoint-0");
        progress(&format!(
            "starting the waypoint for {NAMESPACE} on {}, exporting spans to the demo's OTLP collector on {}",
            net.pod_ip(wp),
            collector
        ));
        mesh.procs.spawn(
            "waypoint",
            &bins["waypoint"],
            &[
                arg("--control-plane"),
                control_plane.clone(),
                arg("--namespace"),
                arg(NAMESPACE),
                arg("--name"),
                arg(WAYPOINT),
                arg("--service-account"),
                arg(wp.service_account),
                arg("--token"),
                tokens[wp.node].clone(),
                arg("--hbone-addr"),
                arg(SocketAddr::new(net.pod_ip(wp), HBONE_PORT)),
                arg("--admin-addr"),
                arg(waypoint_admin),
                // Its admin (on the loopback pod IP) serves /metrics too.
                arg("--metrics-addr"),
                arg("off"),
                arg("--readiness-addr"),
                arg(Net::free_port(net.pod_ip(wp))?),
                arg("--otlp-endpoint"),
                arg(collector),
            ],
            &log_dir,
        )?;
        for p in PODS.iter().filter(|p| p.role == Role::App) {
            mesh.procs.spawn(
                p.name,
                &bins["meshwork-testapp"],
                &[
                    arg("serve"),
                    arg("--bind"),
                    arg(net.pod_ip(p)),
                    arg("--port"),
                    arg(APP_PORT),
                    arg("--app"),
                    arg(p.app),
                    arg("--version"),
                    arg(p.version),
                    arg("--pod"),
                    arg(p.name),
                ],
                &log_dir,
            )?;
        }
        progress("waiting for the apps, the ztunnels' certificates and the waypoint");
        for p in PODS.iter().filter(|p| p.role == Role::App) {
            let via = Via::direct(SocketAddr::new(net.pod_ip(p), APP_PORT));
            wait_until(
                p.name,
                Duration::from_secs(20),
                || mesh.procs.first_exited(),
                || get_ok(&via, "/health"),
            )
            .await?;
        }
        let ready = Via::direct(waypoint_admin);
        wait_until(
            "waypoint",
            Duration::from_secs(30),
            || mesh.procs.first_exited(),
            || get_ok(&ready, "/healthz/ready"),
        )
        .await?;
        // The mesh path is ready once the waypoint answers for payment-service (the
        // demo cluster's own Service); the patterns report on everything else.
        let via = mesh.via(pod_named("order-client"), "payment-service");
        wait_until(
            "payment-service through the mesh",
            Duration::from_secs(30),
            || mesh.procs.first_exited(),
            || answers(&via, "/health"),
        )
        .await?;
        Ok(ztunnel_metrics)
    }
}

fn node_token(bin: &Path, ca_dir: &Path, node: &str) -> Result<String, DemoError> {
    let out = std::process::Command::new(bin)
        .arg("--ca-dir")
        .arg(ca_dir)
        .args(["token", "--node", node])
        .output()
        .map_err(|source| DemoError::Spawn {
            name: "controlplane token".into(),
            path: bin.to_path_buf(),
            error: source,
        })?;
    if !out.status.success() {
        return Err(DemoError::Token {
            node: node.to_string(),
            detail: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).trim().to_string())
}

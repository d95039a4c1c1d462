//! Brings the loopback mesh up: control plane over the manifests, one ztunnel per node,
//! the `production` waypoint, and a testapp per application pod.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::path::{Path, PathBuf};
use std::time::{Duration, Instant};

use super::collector::Collector;
use super::http::{self, Request, Via};
use super::procs::{locate, Procs};
use super::topology::{
    pod_named, Net, Role, APP_PORT, HBONE_PORT, NAMESPACE, NODES, PODS, WAYPOINT,
};
use super::{progress, DemoError};

/// A running demo mesh. Dropping it stops every process and removes the run directory.
pub struct Mesh {
    pub net: Net,
    pub control_plane_admin: SocketAddr,
    pub control_plane_grpc: SocketAddr,
    /// node → SOCKS5 entry of its ztunnel.
    pub socks: BTreeMap<String, SocketAddr>,
    /// node → ztunnel metrics.
    pub ztunnel_metrics: BTreeMap<String, SocketAddr>,
    pub waypoint_admin: SocketAddr,
    /// The OTLP/gRPC collector the waypoint exports its spans to.
    pub collector: Collector,
    pub procs: Procs,
    log_dir: PathBuf,
    // Last: removed after the processes are gone.
    dir: tempfile::TempDir,
}

fn arg(s: impl ToString) -> String {
    s.to_string()
}

impl Mesh {
    pub fn dir(&self) -> &Path {
        self.dir.path()
    }

    pub fn log(&self, name: &str, stream: &str) -> PathBuf {
        self.log_dir.join(format!("{name}.{stream}"))
    }

    /// Source `pod` entering the mesh at its node's ztunnel, towards `host:8080`.
    pub fn via(&self, pod: &str, host: &str) -> Via {
        let p = pod_named(pod);
        Via::Socks {
            proxy: self.socks[p.node],
            workload: format!("{}/{}", p.namespace, p.name),
            host: host.to_string(),
            port: APP_PORT,
        }
    }

    /// The app of `pod`, bypassing the mesh (its own port, for the operator's fault switch).
    pub fn direct(&self, pod: &str) -> Via {
        Via::Direct(SocketAddr::new(self.net.pod_ip(pod_named(pod)), APP_PORT))
    }

    pub async fn start(
        seed: u64,
        seed_files: Option<&[(String, String)]>,
    ) -> Result<Mesh, DemoError> {
        let bins: BTreeMap<&str, PathBuf> = super::procs::BINARIES
            .iter()
            .map(|b| locate(b).map(|p| (*b, p)))
            .collect::<Result<_, _>>()?;
        let net = Net::pick(seed)?;
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
        super::manifests::write_all(&config_dir, &net, seed_files)?;
        let lo = "127.0.0.1".parse().expect("literal");
        let grpc = Net::free_port(lo)?;
        let admin = Net::free_port(lo)?;
        let collector = Collector::start().await?;
        let mut mesh = Mesh {
            net,
            control_plane_admin: admin,
            control_plane_grpc: grpc,
            socks: BTreeMap::new(),
            ztunnel_metrics: BTreeMap::new(),
            waypoint_admin: Net::free_port(net.pod_ip(pod_named("waypoint-0")))?,
            collector,
            procs: Procs::default(),
            log_dir: log_dir.clone(),
            dir,
        };
        match mesh.bring_up(&bins, &config_dir, &ca_dir).await {
            Ok(()) => Ok(mesh),
            Err(e) => {
                // Keep the logs for the user to read; stop everything else.
                let Mesh { mut procs, dir, .. } = mesh;
                procs.shutdown();
                let kept = dir.keep();
                Err(DemoError::StartFailed {
                    cause: Box::new(e),
                    logs: kept.join("logs").display().to_string(),
                })
            }
        }
    }

    async fn bring_up(
        &mut self,
        bins: &BTreeMap<&str, PathBuf>,
        config_dir: &Path,
        ca_dir: &Path,
    ) -> Result<(), DemoError> {
        let mesh = self;
        let net = mesh.net;
        let log_dir = mesh.log_dir.clone();
        let (grpc, admin) = (mesh.control_plane_grpc, mesh.control_plane_admin);
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
        mesh.wait_for("control plane", Duration::from_secs(20), |m| {
            let out = std::fs::read_to_string(m.log("controlplane", "out")).unwrap_or_default();
            async move { out.contains("controlplane ready") }
        })
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
            mesh.ztunnel_metrics.insert(node.to_string(), metrics);
        }
        let wp = pod_named("waypoint-0");
        progress(&format!(
            "starting the waypoint for {NAMESPACE} on {}, exporting spans to the demo's OTLP collector on {}",
            net.pod_ip(wp),
            mesh.collector.addr
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
                arg(mesh.waypoint_admin),
                arg("--readiness-addr"),
                arg(Net::free_port(net.pod_ip(wp))?),
                arg("--otlp-endpoint"),
                arg(mesh.collector.addr),
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
            let via = mesh.direct(p.name);
            mesh.wait_for(p.name, Duration::from_secs(20), move |_| {
                let via = via.clone();
                async move { get_ok(&via, "/health").await }
            })
            .await?;
        }
        let ready = Via::Direct(mesh.waypoint_admin);
        mesh.wait_for("waypoint", Duration::from_secs(30), move |_| {
            let ready = ready.clone();
            async move { get_ok(&ready, "/healthz/ready").await }
        })
        .await?;
        // The mesh path is ready once the waypoint answers for payment-service (the
        // demo cluster's own Service); the patterns report on everything else.
        let via = mesh.via("order-client", "payment-service");
        mesh.wait_for(
            "payment-service through the mesh",
            Duration::from_secs(30),
            move |_| {
                let via = via.clone();
                async move {
                    http::send(&via, &Request::get("/health"), Duration::from_secs(3))
                        .await
                        .is_ok()
                }
            },
        )
        .await?;
        Ok(())
    }

    /// Polls `check` until true (bounded by `timeout`), failing early if a child died.
    async fn wait_for<F, Fut>(
        &mut self,
        what: &str,
        timeout: Duration,
        mut check: F,
    ) -> Result<(), DemoError>
    where
        F: FnMut(&Mesh) -> Fut,
        Fut: std::future::Future<Output = bool>,
    {
        let deadline = Instant::now() + timeout;
        loop {
            if let Some(died) = self.procs.first_exited() {
                return Err(DemoError::ChildDied(died));
            }
            if check(self).await {
                return Ok(());
            }
            if Instant::now() >= deadline {
                return Err(DemoError::NotReady {
                    what: what.to_string(),
                    timeout,
                });
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        }
    }
}

async fn get_ok(via: &Via, path: &str) -> bool {
    http::send(via, &Request::get(path), Duration::from_secs(2))
        .await
        .is_ok_and(|r| r.status == 200)
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

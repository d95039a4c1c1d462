//! A running demo mesh: the local mesh library's mesh of the demo cluster, with the
//! demo's names for its pieces (`waypoint`, the pods of [`super::topology::PODS`]).

use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::ops::Deref;

use meshwork_localmesh::connect::Dial;
use meshwork_localmesh::forward::Forwarder;
use meshwork_localmesh::http::Via;
use meshwork_localmesh::mesh::{Prepared, StartOptions};
use meshwork_localmesh::{Backend, Chosen, LocalMesh};

use super::topology::{
    pod_named, Placement, APP_PORT, CATALOG, NAMESPACE, PAYMENT_VIP_HOST, PAYMENT_VIP_NETNS,
};
use super::DemoError;

const WAYPOINT_POD: &str = "waypoint-0";
/// The waypoint's admin port in its pod (netns mode).
const WAYPOINT_ADMIN_PORT: u16 = 15000;

/// Netns mode: the port of the fabric namespace's loopback on which the control plane
/// reads the waypoint's metrics (the fabric is this run's own namespace: the port is free).
const CANARY_METRICS_PORT_NETNS: u16 = 15091;

/// A running demo mesh. Dropping it stops every process and removes everything it created.
pub struct Mesh {
    pub placement: Placement,
    pub local: LocalMesh,
    /// Carries the control plane's scrapes of the waypoint's `/metrics` (the canary
    /// controller's judge, `--canary-waypoint-metrics`) from the control plane's network
    /// namespace to the waypoint's admin port.
    _canary_metrics: Forwarder,
}

impl Deref for Mesh {
    type Target = LocalMesh;

    fn deref(&self) -> &LocalMesh {
        &self.local
    }
}

impl Mesh {
    /// Places the demo cluster, writes its manifests (with `seed_files`, else the built-in
    /// seed manifests) and brings it up.
    pub async fn start(
        chosen: Chosen,
        seed: u64,
        seed_files: Option<&[(String, String)]>,
    ) -> Result<Mesh, DemoError> {
        // Netns mode builds the cluster here, on this runtime worker thread (its children
        // get SIGKILL when the thread that spawned them exits; workers live on).
        let prepared = Prepared::new(chosen, super::topology::plan(), seed)?;
        let payment_vip = prepared
            .loopback_ip(PAYMENT_VIP_HOST)
            .unwrap_or(IpAddr::V4(PAYMENT_VIP_NETNS));
        let placement = Placement::new(prepared.placement(), payment_vip);
        // The canary controller judges from the waypoint's own metrics, which the control
        // plane reads through a forwarder on its loopback (started once the mesh is up).
        let metrics_port = match chosen {
            Chosen::Netns => CANARY_METRICS_PORT_NETNS,
            Chosen::Loopback => std::net::TcpListener::bind((Ipv4Addr::LOCALHOST, 0))
                .and_then(|l| l.local_addr())
                .map(|a| a.port())
                .map_err(|error| DemoError::Bind {
                    addr: SocketAddr::from((Ipv4Addr::LOCALHOST, 0)),
                    error,
                })?,
        };
        let mut files = super::manifests::files(&placement, seed_files);
        files.push(super::wasm_manifest::manifest(
            super::wasm_manifest::plugin_dir().as_deref(),
        ));
        let opts = StartOptions {
            files,
            run_dir: None,
            controlplane_args: vec![
                "--canary-waypoint-metrics".into(),
                format!("http://127.0.0.1:{metrics_port}/metrics"),
            ],
            services: [
                "order-service",
                "payment-service",
                CATALOG,
                super::wasm_manifest::SERVICE,
            ]
            .iter()
            .map(|s| (NAMESPACE.to_string(), s.to_string()))
            .collect(),
            // The mesh path is ready once the waypoint answers for payment-service (the
            // demo cluster's own Service); the patterns report on everything else.
            ready_probe: Some(("order-client".into(), "payment-service".into(), APP_PORT)),
        };
        let local = prepared.start(opts).await?;
        let waypoint = local.waypoint_admin[WAYPOINT_POD].clone();
        let forwarder = match &local.control_plane_admin {
            Dial::Netns { netns, .. } => {
                Forwarder::start_in(netns, metrics_port, waypoint, 8).await
            }
            Dial::Here(_) => Forwarder::start(metrics_port, waypoint, 8).await,
        }?;
        Ok(Mesh {
            placement,
            local,
            _canary_metrics: forwarder,
        })
    }

    /// The waypoint's admin endpoint (serving `/metrics` too).
    pub fn waypoint_admin(&self) -> &Dial {
        &self.local.waypoint_admin[WAYPOINT_POD]
    }

    /// The log of process `name` (`controlplane`, `waypoint`, `ztunnel-<demo node>`, or a
    /// pod name); `stream` is `out` or `err`. In netns mode both streams share one file.
    pub fn log(&self, name: &str, stream: &str) -> std::path::PathBuf {
        let name = if name == "waypoint" {
            WAYPOINT_POD
        } else {
            name
        };
        self.local.log(name, stream)
    }

    /// Source `pod` calling service `host` on port 8080 (see [`LocalMesh::via`]).
    pub fn via(&self, pod: &str, host: &str) -> Via {
        self.local.via(pod, host, APP_PORT)
    }

    /// The app of `pod`, bypassing the mesh (for the operator's fault switch).
    pub fn direct(&self, pod: &str) -> Via {
        self.local.direct(pod, APP_PORT)
    }

    /// Plaintext from `from` (a pod outside the mesh) straight to `to`'s app port, as the
    /// destination node's capture sees it; only netns mode has capture (None on loopback).
    pub fn plaintext(&self, from: &str, to: &str) -> Option<Via> {
        let to = SocketAddr::new(self.placement.pod_ip(pod_named(to)), APP_PORT);
        self.local.plaintext(from, to)
    }

    /// What `--keep` tells the user to try.
    pub fn keep_banner(&self) -> String {
        match &self.local.backend {
            Backend::Loopback(l) => {
                let socks = l.socks["node-a"];
                format!(
                    "the mesh keeps running (Ctrl-C stops it and removes {}):\n\
                     \x20 curl --socks5-hostname {socks} --proxy-user production/order-client:x http://order-service:8080/api/orders\n\
                     \x20 curl --socks5-hostname {socks} --proxy-user production/order-client:x -H 'x-canary: true' http://order-service:8080/api/orders\n\
                     \x20 curl --socks5-hostname {socks} --proxy-user production/order-client:x -X POST http://payment-service:8080/api/payments/charge\n\
                     \x20 control plane admin: http://{}/debug/model   waypoint admin: http://{}/metrics\n\
                     \x20 ztunnel metrics: {}\n",
                    l.dir().display(),
                    self.control_plane_admin,
                    self.waypoint_admin(),
                    self.ztunnel_metrics
                        .iter()
                        .map(|(n, a)| format!("{n} http://{a}/metrics"))
                        .collect::<Vec<_>>()
                        .join(", "),
                )
            }
            Backend::Netns(n) => {
                let client = n.netns_of("order-client");
                let vip = |s: &str| {
                    n.vips
                        .get(&(NAMESPACE.to_string(), s.to_string()))
                        .map(|i| i.to_string())
                        .unwrap_or_default()
                };
                let (order, payment) = (vip("order-service"), vip("payment-service"));
                let fabric = n.cluster().fabric_netns().to_string();
                let wp = n.netns_of(WAYPOINT_POD);
                format!(
                    "the mesh keeps running in network namespaces {run}-* (Ctrl-C stops it and removes them, their veths, BPF pins and processes):\n\
                     \x20 ip netns exec {client} curl http://{order}:8080/api/orders\n\
                     \x20 ip netns exec {client} curl -H 'x-canary: true' http://{order}:8080/api/orders\n\
                     \x20 ip netns exec {client} curl -X POST http://{payment}:8080/api/payments/charge\n\
                     \x20 control plane admin: ip netns exec {fabric} curl http://{cp}/debug/model\n\
                     \x20 waypoint admin: ip netns exec {wp} curl http://{wpa}/metrics\n\
                     \x20 ztunnel metrics: {}\n\
                     \x20 logs: {}\n",
                    self.ztunnel_metrics
                        .iter()
                        .filter_map(|(n, d)| match d {
                            Dial::Netns { netns, addr } => {
                                Some(format!("{n}: ip netns exec {netns} curl http://{addr}/metrics"))
                            }
                            Dial::Here(_) => None,
                        })
                        .collect::<Vec<_>>()
                        .join("; "),
                    n.cluster().log_dir().display(),
                    run = n.cluster().run_id(),
                    cp = self.control_plane_admin.addr(),
                    wpa = SocketAddr::from((Ipv4Addr::LOCALHOST, WAYPOINT_ADMIN_PORT)),
                )
            }
        }
    }
}

//! A running local mesh, whichever mode brought it up: where its pods are, how to reach
//! them and its proxies, and its logs. Dropping it stops every process and removes
//! everything it created.

use std::collections::BTreeMap;
use std::net::{IpAddr, SocketAddr};
use std::path::PathBuf;

use crate::collector::Collector;
use crate::connect::Dial;
use crate::http::Via;
use crate::loopback::{self, Loopback};
use crate::netns::{self, Netns};
use crate::plan::{Endpoints, Plan};
pub use crate::plan::{Placement, StartOptions};
use crate::{Chosen, Error};

/// A mesh whose pods have their addresses (and, in netns mode, their namespaces), with
/// nothing running yet: the caller writes manifests that need the addresses, then starts.
pub enum Prepared {
    Loopback(loopback::Prepared),
    Netns(Box<netns::Prepared>),
}

impl Prepared {
    /// Netns mode builds the mini-cluster here (blocking, about a second: call it on the
    /// thread that will own the mesh's processes, see [`netns`]).
    pub fn new(chosen: Chosen, plan: Plan, seed: u64) -> Result<Prepared, Error> {
        Ok(match chosen {
            Chosen::Loopback => Prepared::Loopback(loopback::Prepared::new(plan, seed)?),
            Chosen::Netns => Prepared::Netns(Box::new(netns::Prepared::new(plan)?)),
        })
    }

    pub fn placement(&self) -> &Placement {
        match self {
            Prepared::Loopback(l) => &l.placement,
            Prepared::Netns(n) => &n.placement,
        }
    }

    /// Loopback mode: the address `127.a.b.<host>` of this mesh's network.
    pub fn loopback_ip(&self, host: u8) -> Option<IpAddr> {
        match self {
            Prepared::Loopback(l) => Some(l.net.ip(host)),
            Prepared::Netns(_) => None,
        }
    }

    pub async fn start(self, opts: StartOptions) -> Result<LocalMesh, Error> {
        let (plan, placement) = match &self {
            Prepared::Loopback(l) => (l.plan.clone(), l.placement.clone()),
            Prepared::Netns(n) => (n.plan.clone(), n.placement.clone()),
        };
        let (endpoints, backend) = match self {
            Prepared::Loopback(l) => {
                let (e, l) = l.start(opts).await?;
                (e, Backend::Loopback(l))
            }
            Prepared::Netns(n) => {
                let (e, n) = n.start(opts).await?;
                (e, Backend::Netns(n))
            }
        };
        let Endpoints {
            control_plane_admin,
            ztunnel_metrics,
            waypoint_admin,
            collector,
        } = endpoints;
        Ok(LocalMesh {
            plan,
            placement,
            control_plane_admin,
            ztunnel_metrics,
            waypoint_admin,
            collector,
            backend,
        })
    }
}

/// The mode-specific part of a running mesh.
pub enum Backend {
    Loopback(Loopback),
    Netns(Netns),
}

/// A running local mesh.
pub struct LocalMesh {
    pub plan: Plan,
    pub placement: Placement,
    pub control_plane_admin: Dial,
    /// Plan node → its ztunnel's metrics endpoint.
    pub ztunnel_metrics: BTreeMap<String, Dial>,
    /// Waypoint pod → its admin endpoint (serving `/metrics` too).
    pub waypoint_admin: BTreeMap<String, Dial>,
    /// The OTLP/gRPC receiver every waypoint exports its spans to.
    pub collector: Collector,
    pub backend: Backend,
}

impl LocalMesh {
    pub fn chosen(&self) -> Chosen {
        match self.backend {
            Backend::Loopback(_) => Chosen::Loopback,
            Backend::Netns(_) => Chosen::Netns,
        }
    }

    /// The log of process `name` (`controlplane`, `ztunnel-<node>`, a waypoint's or an
    /// app's pod name); `stream` is `out` or `err`. In netns mode both share one file.
    pub fn log(&self, name: &str, stream: &str) -> PathBuf {
        match &self.backend {
            Backend::Loopback(l) => l.log(name, stream),
            Backend::Netns(n) => n.log(name),
        }
    }

    /// Source `pod` calling `host:port`: through its node's ztunnel's SOCKS5 entry from
    /// the pod's address on loopback; in netns mode the app's own connection to the
    /// service VIP from the pod's namespace, captured by the eBPF redirection.
    pub fn via(&self, pod: &str, host: &str, port: u16) -> Via {
        let p = self.plan.pod(pod);
        match (&self.backend, p) {
            (Backend::Loopback(l), Some(p)) => {
                l.via(&p.namespace, &p.name, &self.plan.nodes[p.node], host, port)
            }
            (Backend::Netns(n), Some(p)) => n.via(p, host, port),
            (_, None) => Via::direct(SocketAddr::from(([0, 0, 0, 0], port))),
        }
    }

    /// The app of `pod` on `port`, bypassing the mesh.
    pub fn direct(&self, pod: &str, port: u16) -> Via {
        match &self.backend {
            Backend::Loopback(_) => Via::direct(SocketAddr::new(
                self.placement.ip(pod).unwrap_or(IpAddr::from([0, 0, 0, 0])),
                port,
            )),
            Backend::Netns(n) => n.direct(pod, port),
        }
    }

    /// Plaintext from `from` straight to `addr`, as the destination node's capture sees
    /// it; only netns mode has capture (None on loopback).
    pub fn plaintext(&self, from: &str, addr: SocketAddr) -> Option<Via> {
        match &self.backend {
            Backend::Loopback(_) => None,
            Backend::Netns(n) => Some(n.plaintext(from, addr)),
        }
    }

    /// Plan node → its ztunnel's admin endpoint serving `/redirect`; empty on loopback.
    pub fn redirect_endpoints(&self) -> Vec<(String, Dial)> {
        match &self.backend {
            Backend::Loopback(_) => Vec::new(),
            Backend::Netns(n) => n.redirect_endpoints(),
        }
    }

    /// Where the mesh runs, for the progress line.
    pub fn location(&self) -> String {
        match &self.backend {
            Backend::Loopback(l) => format!("on 127.{}.{}.0/24", l.net.a, l.net.b),
            Backend::Netns(n) => n.location(),
        }
    }

    /// A child that exited, with the tail of its log.
    pub fn first_exited(&mut self) -> Option<String> {
        match &mut self.backend {
            Backend::Loopback(l) => l.first_exited(),
            Backend::Netns(n) => n.first_exited(),
        }
    }

    /// The directory of manifests the control plane reads (and follows).
    pub fn config_dir(&self) -> PathBuf {
        match &self.backend {
            Backend::Loopback(l) => l.dir().join("manifests"),
            Backend::Netns(n) => n.config_dir().to_path_buf(),
        }
    }

    /// Netns mode: the network namespace of a pod, a harness node (`n0`) or `fabric`.
    pub fn netns_of(&self, target: &str) -> Option<String> {
        match &self.backend {
            Backend::Loopback(_) => None,
            Backend::Netns(n) => Some(n.netns_of(target)),
        }
    }

    /// Netns mode: `(namespace, name)` → VIP of every service of the model.
    pub fn vips(&self) -> BTreeMap<(String, String), IpAddr> {
        match &self.backend {
            Backend::Loopback(_) => BTreeMap::new(),
            Backend::Netns(n) => n.vips.clone(),
        }
    }

    /// Loopback mode: plan node → its ztunnel's SOCKS5 entry.
    pub fn socks(&self) -> BTreeMap<String, SocketAddr> {
        match &self.backend {
            Backend::Loopback(l) => l.socks.clone(),
            Backend::Netns(_) => BTreeMap::new(),
        }
    }
}

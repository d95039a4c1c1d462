//! The pods' capture programs (`meshwork-redirect`, in-pod mode), driven from async code:
//! every call runs on the blocking pool (BPF syscalls, netlink and `setns` into the pod's
//! namespace are blocking and must not hold a data-path thread). The exception is
//! [`Capture::original_destination`], one map lookup on the accept path.

use meshwork_runtime::sync::LockExt;
use std::net::{IpAddr, SocketAddr};
use std::path::Path;
use std::sync::{Arc, Mutex};

use meshwork_redirect::{
    default_pod_cgroup, ensure_bpffs, OriginalDestinations, Redirect, RedirectError,
    RedirectOptions,
};
use meshwork_runtime::netns::NetNs;

use super::records::PodRecord;

#[derive(Debug, thiserror::Error)]
pub enum CaptureError {
    #[error("in-pod capture: {step}: {source}")]
    Redirect {
        step: &'static str,
        source: RedirectError,
    },
    #[error("in-pod capture task failed: {0}")]
    Task(String),
}

/// The loaded in-pod programs of this node. Cheap to clone.
#[derive(Clone)]
pub struct Capture {
    inner: Arc<Mutex<Redirect>>,
    opts: RedirectOptions,
    /// Original destinations under a socket-LB (no lock: a shared map descriptor).
    orig: OriginalDestinations,
}

fn step(step: &'static str) -> impl FnOnce(RedirectError) -> CaptureError {
    move |source| CaptureError::Redirect { step, source }
}

impl Capture {
    /// Mounts bpffs if needed, loads the programs (adopting the node's pinned maps and
    /// pod links: capture stays in place across a ztunnel restart), and excludes the
    /// node's own addresses (`node_ips`: never captured as destinations; as sources —
    /// kubelet probes — they reach pods directly). Then attaches `mw_pod_connect4` to
    /// `pod_cgroup` (`None`: the kubelet's pod slice if found; empty: detached), so the
    /// service address survives a root-cgroup socket-LB; a failure there is logged, not
    /// fatal (without a socket-LB nothing is lost). Blocking.
    pub fn load(
        opts: RedirectOptions,
        node_ips: &[IpAddr],
        pod_cgroup: Option<&Path>,
    ) -> Result<Capture, CaptureError> {
        let bpffs = opts
            .pin_root
            .parent()
            .unwrap_or(Path::new("/sys/fs/bpf"))
            .to_path_buf();
        ensure_bpffs(&bpffs).map_err(step("mounting bpffs"))?;
        let mut r = Redirect::load(opts.clone()).map_err(step("loading the programs"))?;
        for ip in node_ips {
            r.exclude_destination(*ip)
                .map_err(step("excluding the node's addresses"))?;
        }
        let cgroup = match pod_cgroup {
            Some(p) if p.as_os_str().is_empty() => None,
            Some(p) => Some(p.to_path_buf()),
            None => default_pod_cgroup(),
        };
        match &cgroup {
            Some(cg) => match r.attach_pod_cgroup(cg) {
                Ok(()) => {
                    tracing::info!(cgroup = %cg.display(), "service addresses kept under a socket-LB")
                }
                Err(e) => {
                    tracing::warn!(cgroup = %cg.display(), error = %e, "mw_pod_connect4 not attached: under a root-cgroup socket-LB, connections to services are seen with their backend's address")
                }
            },
            None => {
                if let Err(e) = r.detach_pod_cgroup() {
                    tracing::warn!(error = %e, "mw_pod_connect4 not detached");
                }
                tracing::info!("no pod cgroup: service addresses are not kept under a socket-LB");
            }
        }
        let orig = r.original_destinations();
        Ok(Capture {
            inner: Arc::new(Mutex::new(r)),
            opts,
            orig,
        })
    }

    /// The destination the app connected to, for the captured connection accepted from
    /// `peer` on `local`: the service address a socket-LB rewrote, when one did
    /// (recorded by `mw_pod_connect4`), else `local`. One map lookup (taking the entry);
    /// no blocking pool.
    pub fn original_destination(&self, peer: SocketAddr, local: SocketAddr) -> SocketAddr {
        match (peer, local) {
            (SocketAddr::V4(p), SocketAddr::V4(l)) => match self.orig.lookup(p, l) {
                Some(orig) => {
                    tracing::debug!(%peer, backend = %local, service = %orig, "original destination (socket-LB)");
                    SocketAddr::V4(orig)
                }
                None => local,
            },
            _ => local,
        }
    }

    async fn with<T: Send + 'static>(
        &self,
        f: impl FnOnce(&mut Redirect) -> Result<T, CaptureError> + Send + 'static,
    ) -> Result<T, CaptureError> {
        let inner = self.inner.clone();
        tokio::task::spawn_blocking(move || {
            let mut r = inner.lock_or_recover();
            f(&mut r)
        })
        .await
        .map_err(|e| CaptureError::Task(e.to_string()))?
    }

    /// Attaches the pod's capture in its namespace and enrolls its addresses, IPv4 and
    /// IPv6 (a dual-stack pod gets the IPv6 rule and route too; the IPv6 listeners are
    /// opened by the caller before).
    pub async fn attach(
        &self,
        key: &str,
        netns: NetNs,
        rec: &PodRecord,
    ) -> Result<(), CaptureError> {
        let key = key.to_string();
        let ifname = rec.ifname.clone();
        let ips: Vec<IpAddr> = rec.ips.clone();
        self.with(move |r| {
            r.attach_pod(&netns, &key, &ifname, &ips)
                .map_err(step("attaching to the pod"))
        })
        .await
    }

    /// Removes the pod's capture (its namespace, when still open, is cleaned too).
    pub async fn detach(&self, key: &str, netns: Option<NetNs>) -> Result<(), CaptureError> {
        let key = key.to_string();
        self.with(move |r| {
            r.detach_pod(&key, netns.as_ref())
                .map_err(step("detaching from the pod"))
        })
        .await
    }

    /// Removes the pinned capture of every pod not in `keep` (pods gone while no ztunnel
    /// ran). Failures are logged.
    pub async fn forget_others(&self, keep: &[String]) {
        let keep = keep.to_vec();
        let r = self
            .with(move |r| {
                let pinned = r.pinned_pods().map_err(step("listing pinned pods"))?;
                for key in pinned.into_iter().filter(|k| !keep.contains(k)) {
                    tracing::info!(%key, "removing the capture of a pod no longer on this node");
                    if let Err(e) = r.detach_pod(&key, None) {
                        tracing::warn!(%key, error = %e, "stale pod capture not removed");
                    }
                }
                Ok(())
            })
            .await;
        if let Err(e) = r {
            tracing::warn!(error = %e, "stale pod captures not checked");
        }
    }

    /// Removes the node's pins (programs, maps, every pod's links): after
    /// [`Capture::detach`] of every pod, when the mesh leaves the node.
    pub async fn teardown(&self) -> Result<(), CaptureError> {
        let opts = self.opts.clone();
        self.with(move |_| {
            meshwork_redirect::teardown(&opts).map_err(step("removing the node's pins"))
        })
        .await
    }

    /// Counters of the programs (admin).
    pub async fn stats(&self) -> Option<meshwork_redirect::RedirectStats> {
        self.with(|r| r.stats().map_err(step("reading counters")))
            .await
            .ok()
    }
}

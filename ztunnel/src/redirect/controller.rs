//! The node's redirection, owned by the ztunnel: set up once at start (adopting what a
//! previous ztunnel pinned), then kept equal to the captured pods of the followed config.

use meshwork_runtime::sync::{LockExt, RwLockExt};
use std::collections::{BTreeMap, BTreeSet};
use std::net::Ipv4Addr;
use std::path::Path;
use std::sync::{Arc, Mutex, RwLock};
use std::time::Duration;

use meshwork_model::client::{ClientError, ConfigHandle};
use meshwork_redirect::{
    ensure_bpffs, install_local_routing, route_interface, Redirect, RedirectError, RedirectOptions,
};
use serde_json::json;
use tokio_util::sync::CancellationToken;

use super::pods::{captured_local_pods, CapturedPods};
use super::{uplink, RedirectSetupError};

/// How long after a sync with failures it is tried again (without a config change).
const RETRY: Duration = Duration::from_secs(1);

/// Outcome of the syncs so far (served on `/redirect`).
#[derive(Debug, Clone, Default)]
struct SyncStatus {
    syncs: u64,
    /// A sync has set the enrolled map (readiness).
    synced: bool,
    /// Pod → the interface its capture is attached to.
    pods: BTreeMap<Ipv4Addr, String>,
    /// Pods whose interface could not be attached, with why (retried).
    failed: BTreeMap<Ipv4Addr, String>,
    skipped: Vec<String>,
    last_error: Option<String>,
}

struct Inner {
    redirect: Redirect,
    /// Interfaces attached for pods (never the uplink): detached when no pod uses them.
    pod_ifaces: BTreeSet<String>,
}

/// The loaded redirection of this node.
pub struct Redirector {
    uplink: String,
    inner: Mutex<Inner>,
    status: RwLock<SyncStatus>,
}

fn step(step: &'static str) -> impl FnOnce(RedirectError) -> RedirectSetupError {
    move |source| RedirectSetupError::Redirect { step, source }
}

impl Redirector {
    /// Mounts bpffs if needed (the pin root's parent), installs the local routing, loads
    /// the programs (adopting the node's pins: enrollment and links survive restarts),
    /// attaches the uplink (`uplink`, else the default route's device) and excludes the
    /// node's addresses. Blocking; runs in the node network namespace.
    pub fn setup(
        opts: RedirectOptions,
        uplink: Option<String>,
    ) -> Result<Redirector, RedirectSetupError> {
        let bpffs = opts
            .pin_root
            .parent()
            .unwrap_or(Path::new("/sys/fs/bpf"))
            .to_path_buf();
        ensure_bpffs(&bpffs).map_err(step("mounting bpffs"))?;
        install_local_routing(&opts).map_err(step("installing the local routing"))?;
        enable_request_migration();
        let uplink = match uplink {
            Some(u) => u,
            None => uplink::detect()?,
        };
        let node = opts.node.clone();
        let mut redirect = Redirect::load(opts).map_err(step("loading the programs"))?;
        redirect
            .attach(&uplink)
            .map_err(step("attaching to the uplink"))?;
        redirect
            .exclude_local_addresses()
            .map_err(step("excluding the node's addresses"))?;
        // Links a previous ztunnel attached to pod interfaces: the first sync detaches
        // those no captured pod uses any more.
        let pod_ifaces = redirect
            .attached()
            .into_iter()
            .filter(|i| *i != uplink)
            .collect();
        tracing::info!(%node, %uplink, enrolled = ?redirect.enrolled().map(|e| e.len()), "redirection loaded");
        Ok(Redirector {
            uplink,
            inner: Mutex::new(Inner {
                redirect,
                pod_ifaces,
            }),
            status: RwLock::new(SyncStatus::default()),
        })
    }

    pub fn uplink(&self) -> &str {
        &self.uplink
    }

    /// The first sync has set the enrolled map.
    pub fn synced(&self) -> bool {
        self.status.read_or_recover().synced
    }

    /// Makes the captured pods exactly `pods`: attaches each local pod's host interface
    /// (found by route; uncaptured pods' too), enrolls the captured pods, unenrolls the
    /// others and detaches interfaces no local pod uses. A pod whose interface cannot be attached is logged and retried; it does not
    /// stop the others. Returns whether everything succeeded. Blocking.
    pub fn sync(&self, pods: &CapturedPods) -> bool {
        let mut inner = self.inner.lock_or_recover();
        let previous = self.status.read_or_recover().pods.clone();
        let mut attached = BTreeMap::new();
        let mut failed = BTreeMap::new();
        for &ip in &pods.ips {
            match attach_pod(&mut inner.redirect, ip) {
                Ok(iface) => {
                    attached.insert(ip, iface);
                }
                Err(e) => {
                    tracing::warn!(pod = %ip, error = %e, "redirect: cannot attach to the pod's interface");
                    failed.insert(ip, e.to_string());
                }
            }
        }
        // Every captured pod is enrolled, attached or not: the entry only acts where the
        // program runs, and a pod whose interface lookup failed keeps the capture it had.
        let mut errors = Vec::new();
        if let Err(e) = inner.redirect.sync(pods.ips.iter().copied()) {
            tracing::warn!(error = %e, "redirect: updating the enrolled pods");
            errors.push(e.to_string());
        }
        let mut used: BTreeSet<String> = attached
            .values()
            .filter(|i| **i != self.uplink)
            .cloned()
            .collect();
        // The node's uncaptured pods: their connections to captured pods on this node must
        // meet the program on their own interface (cross-node ones meet it on the uplink),
        // or plaintext would reach a captured pod around ztunnel's inbound (and its replies
        // would be captured as that pod's outbound and reset). Best effort: a failure here
        // (e.g. a host-network pod) is logged once per sync, not retried.
        for &ip in pods.uncaptured.difference(&pods.ips) {
            match attach_pod(&mut inner.redirect, ip) {
                Ok(iface) if iface != self.uplink => {
                    used.insert(iface);
                }
                Ok(_) => {}
                Err(e) => {
                    tracing::debug!(pod = %ip, error = %e, "redirect: not attaching to an uncaptured pod's interface");
                }
            }
        }
        for ip in failed.keys() {
            if let Some(i) = previous.get(ip) {
                used.insert(i.clone());
            }
        }
        let unused: Vec<String> = inner.pod_ifaces.difference(&used).cloned().collect();
        for iface in unused {
            match inner.redirect.detach(&iface) {
                Ok(()) => {}
                Err(e) => {
                    tracing::warn!(interface = %iface, error = %e, "redirect: detaching");
                    errors.push(e.to_string());
                    used.insert(iface);
                }
            }
        }
        inner.pod_ifaces = used;
        drop(inner);
        for s in &pods.skipped {
            tracing::debug!(address = %s, "redirect: address not captured");
        }
        let ok = failed.is_empty() && errors.is_empty();
        let mut st = self.status.write_or_recover();
        st.syncs += 1;
        st.synced |= errors.is_empty();
        st.pods = attached;
        st.failed = failed;
        st.skipped = pods.skipped.clone();
        st.last_error = errors.pop();
        tracing::info!(
            pods = st.pods.len(),
            failed = st.failed.len(),
            "redirect: captured pods synced"
        );
        ok
    }

    /// `/redirect`: enrolled pods, attached interfaces, sync status and counters.
    pub fn report(&self) -> serde_json::Value {
        let st = self.status.read_or_recover().clone();
        let inner = self.inner.lock_or_recover();
        let enrolled = match inner.redirect.enrolled() {
            Ok(v) => json!(v.iter().map(|i| i.to_string()).collect::<Vec<_>>()),
            Err(e) => json!({ "error": e.to_string() }),
        };
        let stats = match inner.redirect.stats() {
            Ok(s) => json!({
                "outbound_syn": s.outbound_syn,
                "inbound_hbone_syn": s.inbound_hbone_syn,
                "inbound_plain_syn": s.inbound_plain_syn,
                "no_listener_drop": s.no_listener_drop,
                "assign_failed": s.assign_failed,
                "marked": s.marked,
                "hairpin": s.hairpin,
            }),
            Err(e) => json!({ "error": e.to_string() }),
        };
        json!({
            "mode": "ebpf",
            "node": inner.redirect.options().node,
            "pin_dir": inner.redirect.options().pin_dir(),
            "uplink": self.uplink,
            "synced": st.synced,
            "syncs": st.syncs,
            "enrolled": enrolled,
            "interfaces": inner.redirect.attached(),
            "pods": st.pods.iter().map(|(ip, i)| (ip.to_string(), json!(i))).collect::<serde_json::Map<_, _>>(),
            "failed": st.failed.iter().map(|(ip, e)| (ip.to_string(), json!(e))).collect::<serde_json::Map<_, _>>(),
            "skipped": st.skipped,
            "last_error": st.last_error,
            "stats": stats,
        })
    }

    /// Follows `config`: once it is synced with the control plane (never sync from the
    /// empty snapshot of a process that just started: it would unenroll every pod the
    /// previous ztunnel captured), syncs the captured pods of `node` on every change, and
    /// retries every second while a sync had failures. Ends on `stop`.
    pub fn follow(self: Arc<Self>, config: ConfigHandle, node: String, stop: CancellationToken) {
        tokio::spawn(async move {
            loop {
                tokio::select! {
                    r = config.wait_synced(Duration::from_secs(3600)) => match r {
                        Ok(_) => break,
                        Err(ClientError::Timeout(_)) => continue,
                        Err(e) => {
                            tracing::warn!(error = %e, "redirect: config client ended before syncing");
                            return;
                        }
                    },
                    _ = stop.cancelled() => return,
                }
            }
            let mut watch = config.watch();
            let mut last: Option<CapturedPods> = None;
            let mut retry = false;
            loop {
                let snap = watch.borrow_and_update().clone();
                let pods = captured_local_pods(&snap, &node);
                if retry || last.as_ref() != Some(&pods) {
                    let me = self.clone();
                    let p = pods.clone();
                    retry = !tokio::task::spawn_blocking(move || me.sync(&p))
                        .await
                        .unwrap_or(false);
                    last = Some(pods);
                }
                tokio::select! {
                    r = watch.changed() => if r.is_err() { return },
                    _ = tokio::time::sleep(RETRY), if retry => {}
                    _ = stop.cancelled() => return,
                }
            }
        });
    }
}

/// `net.ipv4.tcp_migrate_req=1` in the node namespace: when a draining ztunnel closes its
/// SO_REUSEPORT listeners, connections still queued on them move to the new ztunnel's
/// instead of being reset. Best effort (kernels before 5.14 lack it).
fn enable_request_migration() {
    const SYSCTL: &str = "/proc/sys/net/ipv4/tcp_migrate_req";
    if let Err(e) = std::fs::write(SYSCTL, b"1") {
        tracing::warn!(error = %e, "redirect: cannot set {SYSCTL}; a ztunnel handover may reset queued connections");
    }
}

/// Attaches to the interface `pod` is routed through; the node's own addresses are not
/// pods.
fn attach_pod(r: &mut Redirect, pod: Ipv4Addr) -> Result<String, RedirectError> {
    let iface = route_interface(pod)?;
    if iface == "lo" {
        return Err(RedirectError::InvalidOption {
            field: "pods",
            reason: format!("{pod} is a local address of this node, not a pod"),
        });
    }
    r.attach(&iface)?;
    Ok(iface)
}

//! In-pod redirection (`--redirect inpod`, docs/inpod.md): the node's CNI plugin hands
//! each new pod's network namespace to this ztunnel (`agent`); for every pod the model
//! says is captured, the ztunnel opens its listeners *inside the pod's namespace*, makes
//! every socket it uses for the pod there (`crate::scope`), and attaches the pod's capture
//! programs to the pod's own interface (`meshwork-redirect`). Nothing is done in the
//! node's namespace: no host sysctl, no host routes, no dependence on the CNI's devices.
//!
//! Read top-down: [`InPod::start`] (re-open recorded pods, adopt the pinned capture) →
//! [`InPod::add`] / [`InPod::del`] (CNI ADD / DEL) → [`InPod::reconcile`] (every model
//! change: capture on for captured pods, off for the others) → `enable` / `disable`.

mod agent;
mod capture;
mod discover;
mod records;

use std::collections::BTreeMap;
use std::net::IpAddr;
use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshwork_runtime::netns::NetNs;
use serde_json::json;
use tokio::runtime::Handle;
use tokio::sync::Mutex;
use tokio_util::sync::CancellationToken;

pub use agent::serve_agent;
pub use capture::{Capture, CaptureError};
pub use records::{PodRecord, RecordError, Records};

use crate::args::Listen;
use crate::listeners::{bind_shards, spawn_accept, BindError};
use crate::proxy::Proxy;
use crate::scope::{PodScope, Scope};
use crate::{inbound, inbound_plain, outbound, sockets};

#[derive(Debug, thiserror::Error)]
pub enum InPodError {
    #[error("pod {pod}: {source}")]
    NetNs {
        pod: String,
        source: meshwork_runtime::netns::NetNsError,
    },
    #[error(
        "pod {pod} is not in the mesh's config after {waited:?} (is the control plane reachable?); \
         the runtime retries the pod's setup"
    )]
    Unknown { pod: String, waited: Duration },
    #[error("pod {pod}: opening its listeners: {reason}")]
    Listen { pod: String, reason: String },
    #[error("pod {pod}: {source}")]
    Capture { pod: String, source: CaptureError },
    #[error(transparent)]
    Record(#[from] RecordError),
}

/// What an ADD ended with.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Added {
    Enrolled,
    NotCaptured,
}

/// The in-pod settings (from the ztunnel's flags).
#[derive(Debug, Clone)]
pub struct InPodSettings {
    pub outbound: Listen,
    pub inbound_plain: Listen,
    pub hbone: Listen,
    /// `SO_MARK` of the ztunnel's sockets in pods' namespaces.
    pub bypass_mark: u32,
    /// How long an ADD waits for the pod to appear in the config.
    pub enroll_timeout: Duration,
    /// Where pod records are kept (a hostPath).
    pub state_dir: PathBuf,
    /// The runtime's netns directory, scanned for captured pods never handed over (empty:
    /// no scan).
    pub netns_dir: PathBuf,
}

struct Pod {
    rec: PodRecord,
    netns: NetNs,
    /// Set while captured: stops the pod's listeners.
    active: Option<CancellationToken>,
}

/// The pods of this node handed over by the CNI plugin.
pub struct InPod {
    proxy: Arc<Proxy>,
    shards: Vec<Handle>,
    settings: InPodSettings,
    records: Records,
    capture: Capture,
    pods: Mutex<BTreeMap<String, Pod>>,
}

impl InPod {
    /// Re-opens the recorded pods (a restart or an upgrade: each pod's namespace from its
    /// recorded netns path) and adopts the pinned capture; pods whose namespace is gone
    /// are forgotten and their pins removed. Capture is switched on by the first
    /// [`InPod::reconcile`].
    pub async fn start(
        proxy: Arc<Proxy>,
        shards: Vec<Handle>,
        settings: InPodSettings,
        capture: Capture,
    ) -> Result<Arc<InPod>, InPodError> {
        let records = Records::open(&settings.state_dir)?;
        let mut pods = BTreeMap::new();
        for rec in records.load()? {
            match NetNs::open(&rec.netns) {
                Ok(netns) => {
                    tracing::info!(pod = %rec.pod_ref(), netns = %rec.netns.display(), "re-opened a recorded pod");
                    pods.insert(
                        rec.key(),
                        Pod {
                            rec,
                            netns,
                            active: None,
                        },
                    );
                }
                Err(e) => {
                    tracing::info!(pod = %rec.pod_ref(), error = %e, "recorded pod is gone; forgetting it");
                    records.remove(&rec.key());
                }
            }
        }
        let keep: Vec<String> = pods.keys().cloned().collect();
        capture.forget_others(&keep).await;
        Ok(Arc::new(InPod {
            proxy,
            shards,
            settings,
            records,
            capture,
            pods: Mutex::new(pods),
        }))
    }

    /// CNI ADD: remembers the pod and, once the config names it, captures it if it is
    /// captured. Returns only when the pod's capture is in place (or it is not captured):
    /// a pod never starts uncaptured.
    pub async fn add(&self, rec: PodRecord, netns: NetNs) -> Result<Added, InPodError> {
        let key = rec.key();
        let pod = rec.pod_ref();
        self.records.save(&rec)?;
        {
            let mut pods = self.pods.lock().await;
            if let Some(old) = pods.remove(&key) {
                self.disable(&key, old).await;
            }
            pods.insert(
                key.clone(),
                Pod {
                    rec,
                    netns,
                    active: None,
                },
            );
        }
        let captured = self.wait_decision(&pod).await?;
        let mut pods = self.pods.lock().await;
        let Some(p) = pods.get_mut(&key) else {
            // Deleted meanwhile.
            return Ok(Added::NotCaptured);
        };
        if !captured {
            return Ok(Added::NotCaptured);
        }
        if p.active.is_none() {
            p.active = Some(self.enable(&key, p).await?);
        }
        Ok(Added::Enrolled)
    }

    /// CNI DEL of sandbox `container_id`: capture off, listeners closed, the pod
    /// forgotten. Missing pods are fine; a DEL of another sandbox of the pod than the one
    /// handed over last changes nothing.
    pub async fn del(&self, key: &str, container_id: &str) {
        let old = {
            let mut pods = self.pods.lock().await;
            match pods.get(key) {
                Some(p)
                    if !p.rec.container_id.is_empty()
                        && !container_id.is_empty()
                        && p.rec.container_id != container_id =>
                {
                    tracing::info!(pod = %p.rec.pod_ref(), %container_id, "DEL of an older sandbox; kept");
                    return;
                }
                _ => pods.remove(key),
            }
        };
        if let Some(p) = old {
            tracing::info!(pod = %p.rec.pod_ref(), "pod removed");
            self.disable(key, p).await;
        } else {
            self.capture.detach(key, None).await.ok();
        }
        self.records.remove(key);
    }

    /// Makes capture follow the config: on for every known pod the config says is
    /// captured, off for those it says are not. Pods the config does not name are left
    /// as they are (a DEL is coming, or the pod is not published yet).
    pub async fn reconcile(&self) {
        let mut pods = self.pods.lock().await;
        self.discover(&mut pods).await;
        for (key, p) in pods.iter_mut() {
            let Some(captured) = self.decision(&p.rec.pod_ref()) else {
                continue;
            };
            match (captured, p.active.is_some()) {
                (true, false) => match self.enable(key, p).await {
                    Ok(stop) => p.active = Some(stop),
                    Err(e) => {
                        tracing::warn!(error = %e, "in-pod capture not enabled (retried on the next change)")
                    }
                },
                (false, true) => {
                    if let Some(stop) = p.active.take() {
                        self.stop(key, p, stop).await;
                    }
                }
                _ => {}
            }
        }
    }

    /// Follows the config: reconciles on every applied snapshot, until `stop`.
    pub fn follow(self: &Arc<Self>, stop: CancellationToken) {
        let me = self.clone();
        let mut applied = self.proxy.applied();
        tokio::spawn(async move {
            loop {
                me.reconcile().await;
                tokio::select! {
                    r = applied.changed() => if r.is_err() { return },
                    _ = stop.cancelled() => return,
                }
            }
        });
    }

    /// Adds the captured local workloads that no known pod is, found in the runtime's
    /// netns directory (`discover`).
    async fn discover(&self, pods: &mut BTreeMap<String, Pod>) {
        if self.settings.netns_dir.as_os_str().is_empty() {
            return;
        }
        let wanted: Vec<discover::Wanted> = {
            let cur = self.proxy.current();
            cur.state
                .local_workloads()
                .filter(|w| w.captured && !w.addresses.is_empty())
                .filter(|w| !pods.contains_key(&records::key_of(&w.namespace, &w.name)))
                .map(|w| discover::Wanted {
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                    uid: w.uid.clone(),
                    ips: w.addresses.iter().filter_map(|a| a.parse().ok()).collect(),
                })
                .collect()
        };
        if wanted.is_empty() {
            return;
        }
        let dir = self.settings.netns_dir.clone();
        let found = match tokio::task::spawn_blocking(move || discover::scan(&dir, &wanted)).await {
            Ok(f) => f,
            Err(e) => {
                tracing::warn!(error = %e, "netns scan failed");
                return;
            }
        };
        for (rec, netns) in found {
            if let Err(e) = self.records.save(&rec) {
                tracing::warn!(error = %e, "pod record not saved");
            }
            pods.insert(
                rec.key(),
                Pod {
                    rec,
                    netns,
                    active: None,
                },
            );
        }
    }

    /// Whether the config captures `pod` (`namespace/name`) on this node; `None` when the
    /// config does not name it (yet).
    fn decision(&self, pod: &str) -> Option<bool> {
        let cur = self.proxy.current();
        let w = cur.state.workload_by_ref(pod)?;
        Some(w.captured && cur.state.is_local(w))
    }

    async fn wait_decision(&self, pod: &str) -> Result<bool, InPodError> {
        let mut applied = self.proxy.applied();
        let waited = self.settings.enroll_timeout;
        let wait = async {
            loop {
                if let Some(d) = self.decision(pod) {
                    return d;
                }
                if applied.changed().await.is_err() {
                    std::future::pending::<()>().await;
                }
            }
        };
        tokio::time::timeout(waited, wait)
            .await
            .map_err(|_| InPodError::Unknown {
                pod: pod.to_string(),
                waited,
            })
    }

    /// Opens the pod's listeners in its namespace, then attaches its capture (so a
    /// captured SYN always finds a listener). Returns what stops the listeners.
    async fn enable(&self, key: &str, p: &Pod) -> Result<CancellationToken, InPodError> {
        let pod = p.rec.pod_ref();
        let netns = p.netns.try_clone().map_err(|e| InPodError::Listen {
            pod: pod.clone(),
            reason: e.to_string(),
        })?;
        let scope = Scope::pod(PodScope {
            netns,
            key: key.to_string(),
            pod: pod.clone(),
            ips: p.rec.ips.clone(),
            bypass_mark: self.settings.bypass_mark,
        });
        let stop = self.proxy.stop_accept.child_token();
        if let Err(e) = self.listen(&scope, &stop) {
            stop.cancel();
            return Err(InPodError::Listen {
                pod,
                reason: e.to_string(),
            });
        }
        let netns = p.netns.try_clone().map_err(|e| InPodError::Listen {
            pod: pod.clone(),
            reason: e.to_string(),
        })?;
        if let Err(source) = self.capture.attach(key, netns, &p.rec).await {
            stop.cancel();
            return Err(InPodError::Capture { pod, source });
        }
        tracing::info!(%pod, ips = ?p.rec.ips, "pod enrolled (in-pod capture)");
        Ok(stop)
    }

    /// The pod's listeners: on the configured addresses (`0.0.0.0:15001/15006/15008`) and,
    /// for a pod with an IPv6 address, the same ports on `[::]` (IPv6-only sockets, which
    /// `mw_pod_ingress` finds at `[::1]`). Two sockets per port rather than one dual-stack
    /// one: the IPv4 path (its addresses, `SO_ORIGINAL_DST`, the socket-LB lookup) stays
    /// exactly as it was, with no v4-mapped addresses.
    fn listen(&self, scope: &Scope, stop: &CancellationToken) -> Result<(), BindError> {
        let s = &self.settings;
        self.listen_family(scope, stop, s.outbound, s.inbound_plain, s.hbone)?;
        let dual = scope
            .pod_scope()
            .is_some_and(|p| p.ips.iter().any(IpAddr::is_ipv6));
        if dual {
            self.listen_family(
                scope,
                stop,
                ipv6_any(s.outbound),
                ipv6_any(s.inbound_plain),
                ipv6_any(s.hbone),
            )?;
        }
        Ok(())
    }

    fn listen_family(
        &self,
        scope: &Scope,
        stop: &CancellationToken,
        outbound: Listen,
        inbound_plain: Listen,
        hbone: Listen,
    ) -> Result<(), BindError> {
        let out = bind_shards("outbound", outbound, true, true, &self.shards, scope)?;
        let plain = bind_shards(
            "inbound plaintext",
            inbound_plain,
            true,
            true,
            &self.shards,
            scope,
        )?;
        let hbone = bind_shards("hbone", hbone, true, true, &self.shards, scope)?;
        if let Some(ls) = out {
            let (addr, sc, capture) = (ls.addr, scope.clone(), self.capture.clone());
            spawn_accept(
                &self.proxy,
                &self.shards,
                "outbound",
                ls,
                stop.clone(),
                move |p, sock, peer| {
                    let sc = sc.clone();
                    // Under a socket-LB the local address is the backend: the service
                    // address the app asked for comes from `mw_pod_connect4`.
                    let dst = sockets::captured_dst(&sock, addr)
                        .map(|local| capture.original_destination(peer, local));
                    async move {
                        match dst {
                            Some(dst) => outbound::handle_captured(p, sock, peer, dst, sc).await,
                            None => {
                                tracing::warn!(%peer, "in-pod outbound: connection without an original destination")
                            }
                        }
                    }
                },
            );
        }
        if let Some(ls) = plain {
            let (addr, sc) = (ls.addr, scope.clone());
            spawn_accept(
                &self.proxy,
                &self.shards,
                "inbound plaintext",
                ls,
                stop.clone(),
                move |p, sock, peer| {
                    let sc = sc.clone();
                    async move {
                        match sockets::captured_dst(&sock, addr) {
                            Some(dst) => inbound_plain::handle(p, sock, peer, dst, sc).await,
                            None => {
                                tracing::warn!(%peer, "in-pod plaintext inbound: connection without an original destination")
                            }
                        }
                    }
                },
            );
        }
        if let Some(ls) = hbone {
            let sc = scope.clone();
            spawn_accept(
                &self.proxy,
                &self.shards,
                "hbone",
                ls,
                stop.clone(),
                move |p, sock, peer| inbound::serve(p, sock, peer, sc.clone()),
            );
        }
        Ok(())
    }

    async fn stop(&self, key: &str, p: &Pod, stop: CancellationToken) {
        // Capture off first: from now on the pod's new connections go direct, and no SYN
        // is steered to a listener about to close.
        if let Err(e) = self.capture.detach(key, p.netns.try_clone().ok()).await {
            tracing::warn!(pod = %p.rec.pod_ref(), error = %e, "in-pod capture not removed");
        }
        stop.cancel();
        tracing::info!(pod = %p.rec.pod_ref(), "pod no longer captured");
    }

    async fn disable(&self, key: &str, mut p: Pod) {
        if let Some(stop) = p.active.take() {
            self.stop(key, &p, stop).await;
        }
    }

    /// The mesh leaves the node (uninstall): every pod's capture is removed (its programs,
    /// rule and route, in its namespace) and forgotten, then the node's pins. The pods talk
    /// directly again, as without the mesh. Returns how many pods were released.
    pub async fn release_all(&self) -> usize {
        let pods = std::mem::take(&mut *self.pods.lock().await);
        let n = pods.len();
        for (key, mut p) in pods {
            if let Some(stop) = p.active.take() {
                stop.cancel();
            }
            if let Err(e) = self.capture.detach(&key, p.netns.try_clone().ok()).await {
                tracing::warn!(pod = %p.rec.pod_ref(), error = %e, "capture not removed");
            }
            self.records.remove(&key);
        }
        if let Err(e) = self.capture.teardown().await {
            tracing::warn!(error = %e, "node pins not removed");
        }
        tracing::info!(pods = n, "in-pod capture released: the mesh left this node");
        n
    }

    /// On shutdown: waits up to `wait` for the node agent's decision in `file`
    /// (`uninstall` or `restart`, written by `meshwork-cni install --stop-decision-file`);
    /// on `uninstall` releases every pod. Anything else (a restart, an upgrade, no
    /// decision) leaves the capture in place: the pods stay captured and fail closed until
    /// a ztunnel serves them again.
    pub async fn on_stop(&self, file: &std::path::Path, wait: Duration) -> Option<usize> {
        let deadline = tokio::time::Instant::now() + wait;
        let decision = loop {
            if let Ok(d) = std::fs::read_to_string(file) {
                break Some(d);
            }
            if tokio::time::Instant::now() >= deadline {
                break None;
            }
            tokio::time::sleep(Duration::from_millis(100)).await;
        };
        let _ = std::fs::remove_file(file);
        match decision.as_deref().map(str::trim) {
            Some("uninstall") => Some(self.release_all().await),
            other => {
                tracing::info!(decision = ?other, "stopping; the pods stay captured");
                None
            }
        }
    }

    /// What `/inpod` on the admin endpoint shows: the pods and the capture programs'
    /// counters (shared by every pod of the node).
    pub async fn status(&self) -> serde_json::Value {
        let stats = self.capture.stats().await.map(|s| {
            json!({
                "outbound_syn": s.outbound_syn,
                "inbound_hbone_syn": s.inbound_hbone_syn,
                "inbound_plain_syn": s.inbound_plain_syn,
                "no_listener_drop": s.no_listener_drop,
                "assign_failed": s.assign_failed,
                "marked": s.marked,
                "hairpin": s.hairpin,
                "ipv6_unparsed_drop": s.ipv6_unparsed_drop,
                "ipv6_unenrolled_drop": s.ipv6_unenrolled_drop,
            })
        });
        let pods = self.pods.lock().await;
        let list: Vec<_> = pods
            .iter()
            .map(|(k, p)| {
                json!({
                    "key": k,
                    "pod": p.rec.pod_ref(),
                    "netns": p.rec.netns,
                    "ips": p.rec.ips,
                    "captured": p.active.is_some(),
                })
            })
            .collect();
        json!({ "mode": "inpod", "pods": list, "stats": stats })
    }

    /// The pod's addresses of `key` (tests, admin).
    pub async fn ips(&self, key: &str) -> Option<Vec<IpAddr>> {
        self.pods.lock().await.get(key).map(|p| p.rec.ips.clone())
    }
}

/// The IPv6 counterpart of an in-pod listen address: `[::]` on the same port when it is
/// an unspecified IPv4 address (the default), off otherwise (a specific IPv4 address has
/// no IPv6 counterpart; an IPv6 one is already bound).
fn ipv6_any(l: Listen) -> Listen {
    Listen(match l.0 {
        Some(a) if a.ip() == IpAddr::V4(std::net::Ipv4Addr::UNSPECIFIED) => Some(
            std::net::SocketAddr::new(std::net::Ipv6Addr::UNSPECIFIED.into(), a.port()),
        ),
        _ => None,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn ipv6_listeners_mirror_unspecified_ipv4_ones() {
        let l = |s: &str| Listen(Some(s.parse().unwrap()));
        assert_eq!(ipv6_any(l("0.0.0.0:15001")), l("[::]:15001"));
        assert_eq!(ipv6_any(l("127.0.0.1:15001")), Listen(None));
        assert_eq!(ipv6_any(l("[::]:15006")), Listen(None));
        assert_eq!(ipv6_any(Listen(None)), Listen(None));
    }
}

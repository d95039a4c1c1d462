//! The proxies connected to this control plane, for the admin endpoint and for waits on
//! their acknowledgements.

use meshwork_runtime::sync::LockExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Mutex;

use serde::Serialize;

/// What the admin endpoint shows about a connected proxy.
#[derive(Debug, Clone, Serialize)]
pub struct ProxyInfo {
    pub id: u64,
    pub kind: String,
    pub node: String,
    pub gateway: String,
    pub proxy_id: String,
    pub peer: Option<SocketAddr>,
    pub connected_at_unix: u64,
    /// Model generation of the last ACKed update.
    pub acked_version: u64,
    pub resources: usize,
    pub acks: u64,
    pub nacks: u64,
    pub last_nack: Option<String>,
}

#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    proxies: Mutex<HashMap<u64, ProxyInfo>>,
    /// Woken on every ACK (benchmarks wait on it).
    acked: tokio::sync::Notify,
}

impl Registry {
    /// How many connected proxies have ACKed generation `generation` or a later one.
    pub fn acked_at_least(&self, generation: u64) -> usize {
        self.lock()
            .values()
            .filter(|p| p.acked_version >= generation)
            .count()
    }

    /// Waits until `n` proxies have ACKed `generation` or later.
    pub async fn wait_acked(&self, generation: u64, n: usize) {
        loop {
            let woken = self.acked.notified();
            if self.acked_at_least(generation) >= n {
                return;
            }
            woken.await;
        }
    }

    pub fn list(&self) -> Vec<ProxyInfo> {
        let mut v: Vec<_> = self.lock().values().cloned().collect();
        v.sort_by_key(|p| p.id);
        v
    }

    pub(super) fn lock(&self) -> std::sync::MutexGuard<'_, HashMap<u64, ProxyInfo>> {
        self.proxies.lock_or_recover()
    }

    pub(super) fn update(&self, id: u64, f: impl FnOnce(&mut ProxyInfo)) {
        if let Some(p) = self.lock().get_mut(&id) {
            f(p);
        }
    }

    /// A new stream's id.
    pub(super) fn next_id(&self) -> u64 {
        self.next.fetch_add(1, Ordering::Relaxed) + 1
    }

    pub(super) fn remove(&self, id: u64) {
        self.lock().remove(&id);
    }

    pub(super) fn notify_acked(&self) {
        self.acked.notify_waiters();
    }
}

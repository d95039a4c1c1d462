//! Registry of open inbound connections, so a policy change can re-check and close the
//! ones no longer allowed.

use meshwork_runtime::sync::LockExt;
use std::collections::HashMap;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::{Arc, Mutex};

use tokio_util::sync::CancellationToken;

use crate::policy::ConnAttrs;

struct Tracked {
    attrs: ConnAttrs,
    cancel: CancellationToken,
}

#[derive(Default)]
pub struct Registry {
    next: AtomicU64,
    conns: Mutex<HashMap<u64, Tracked>>,
}

/// Removes the connection from the registry when dropped.
pub struct Registration {
    registry: Arc<Registry>,
    id: u64,
    pub cancel: CancellationToken,
}

impl Drop for Registration {
    fn drop(&mut self) {
        self.registry.conns.lock_or_recover().remove(&self.id);
    }
}

impl Registry {
    /// Tracks a connection; its token is a child of `parent` (e.g. the drain deadline).
    pub fn register(
        self: &Arc<Self>,
        attrs: ConnAttrs,
        parent: &CancellationToken,
    ) -> Registration {
        let id = self.next.fetch_add(1, Ordering::Relaxed);
        let cancel = parent.child_token();
        self.conns.lock_or_recover().insert(
            id,
            Tracked {
                attrs,
                cancel: cancel.clone(),
            },
        );
        Registration {
            registry: self.clone(),
            id,
            cancel,
        }
    }

    pub fn len(&self) -> usize {
        self.conns.lock_or_recover().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    /// Closes every connection for which `deny` returns a reason; returns how many.
    pub fn recheck(&self, deny: impl Fn(&ConnAttrs) -> Option<String>) -> usize {
        let conns = self.conns.lock_or_recover();
        let mut closed = 0;
        for t in conns.values() {
            if t.cancel.is_cancelled() {
                continue;
            }
            if let Some(reason) = deny(&t.attrs) {
                tracing::info!(src = %t.attrs.src_addr, dst = %t.attrs.dst, %reason, "closing connection no longer allowed by policy");
                t.cancel.cancel();
                closed += 1;
            }
        }
        closed
    }
}

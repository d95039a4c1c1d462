//! The CA in use, replaceable while serving: a root rotation (new plug-in `cacerts`, a
//! changed Kubernetes Secret) swaps it without a restart. Readers take the current one per
//! request; the version tells the serving certificate and the trust-bundle publisher to
//! follow.

use meshwork_runtime::sync::RwLockExt;
use std::sync::{Arc, RwLock};

use tokio::sync::watch;

use super::authority::Ca;

pub struct CaHandle {
    current: RwLock<Arc<Ca>>,
    version: watch::Sender<u64>,
}

impl CaHandle {
    pub fn new(ca: Ca) -> Arc<Self> {
        Arc::new(CaHandle {
            current: RwLock::new(Arc::new(ca)),
            version: watch::Sender::new(0),
        })
    }

    /// The CA signing now.
    pub fn current(&self) -> Arc<Ca> {
        self.current.read_or_recover().clone()
    }

    /// Starts signing with `ca` (already checked by [`Ca::new`]).
    pub fn replace(&self, ca: Ca) {
        *self.current.write_or_recover() = Arc::new(ca);
        self.version.send_modify(|v| *v += 1);
    }

    /// Bumped at each [`replace`](Self::replace).
    pub fn version(&self) -> u64 {
        *self.version.borrow()
    }

    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.version.subscribe()
    }
}

impl std::fmt::Debug for CaHandle {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("CaHandle")
            .field("current", &self.current())
            .field("version", &self.version())
            .finish()
    }
}

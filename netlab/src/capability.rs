//! Can this process run a namespace mesh with eBPF redirection? Tried, not guessed: a
//! one-node throw-away cluster is built and the redirection programs are loaded and
//! attached (TCX) to its uplink, then everything is removed again.
use std::path::Path;

use meshwork_redirect::{ensure_bpffs, Redirect, RedirectOptions};

use crate::{Cluster, BPF_PIN_ROOT};

/// Why the namespace + eBPF mesh cannot run here.
#[derive(Debug, thiserror::Error)]
pub enum CapabilityError {
    #[error("not running as root (network namespaces and BPF need root)")]
    NotRoot,
    #[error("cannot create network namespaces: {0}")]
    Namespaces(String),
    #[error("cannot load the eBPF redirection: {0}")]
    Redirect(String),
}

/// Loads the redirection into a throw-away node namespace (programs, pins, a TCX link on
/// its uplink), then removes it. Takes a fraction of a second; blocking.
pub fn probe_redirect() -> Result<(), CapabilityError> {
    // SAFETY: geteuid(2) has no preconditions.
    if unsafe { libc::geteuid() } != 0 {
        return Err(CapabilityError::NotRoot);
    }
    let cluster = Cluster::builder()
        .nodes(1)
        .build()
        .map_err(|e| CapabilityError::Namespaces(e.to_string()))?;
    let node = &cluster.nodes()[0];
    let mut opts = RedirectOptions::new(node.netns.clone());
    opts.pin_root = BPF_PIN_ROOT.into();
    let uplink = node.uplink.clone();
    let loaded = cluster
        .in_netns(&node.name, move || -> Result<(), String> {
            ensure_bpffs(Path::new(BPF_PIN_ROOT).parent().unwrap_or(Path::new("/")))
                .map_err(|e| e.to_string())?;
            let mut r = Redirect::load(opts).map_err(|e| e.to_string())?;
            r.attach(&uplink).map_err(|e| e.to_string())?;
            Ok(())
        })
        .map_err(|e| CapabilityError::Namespaces(e.to_string()))?;
    // Dropping the cluster removes the pins (and with them the link) and the namespaces.
    drop(cluster);
    loaded.map_err(CapabilityError::Redirect)
}

//! eBPF traffic redirection driven by the ztunnel (`--redirect ebpf`): at start it loads
//! or adopts the node's pinned programs (`meshwork-redirect`), attaches the uplink and
//! excludes the node's addresses; then it keeps the enrolled pods equal to the workloads
//! of this node with `captured == true` in the followed config. On shutdown nothing is
//! detached: the pins stay for the next ztunnel ([`teardown_node`] removes them).

mod controller;
mod options;
mod pods;
mod uplink;

use clap::ValueEnum;
use meshwork_redirect::{remove_local_routing, teardown, RedirectError, RedirectOptions};

pub use controller::Redirector;
pub use options::{parse_mark, redirect_options};
pub use pods::{captured_local_pods, CapturedPods};
pub use uplink::default_route_device;

/// How pod traffic reaches this ztunnel.
#[derive(Debug, Clone, Copy, Default, PartialEq, Eq, ValueEnum)]
pub enum RedirectMode {
    /// No capture by the ztunnel (loopback setups, SOCKS5, capture installed by others).
    #[default]
    Off,
    /// Load and drive the TC programs of `ebpf/` in the node network namespace.
    Ebpf,
    /// In-pod: listeners, sockets and capture inside each enrolled pod's network
    /// namespace, handed over by the node's CNI plugin (`crate::inpod`, docs/inpod.md).
    #[value(name = "inpod")]
    InPod,
}

#[derive(Debug, thiserror::Error)]
pub enum RedirectSetupError {
    #[error("--redirect ebpf: {flag} {reason}")]
    Flag { flag: &'static str, reason: String },
    #[error("--redirect ebpf: finding the uplink: {reason}")]
    Uplink { reason: String },
    #[error("redirect: {step}: {source}")]
    Redirect {
        step: &'static str,
        source: RedirectError,
    },
}

/// Removes a node's redirection: its pins (detaching the programs from every interface,
/// dropping the enrolled map) and the local routing. Run in the node network namespace
/// when the node leaves the mesh; missing pieces are not an error.
pub fn teardown_node(opts: &RedirectOptions) -> Result<(), RedirectSetupError> {
    teardown(opts).map_err(|source| RedirectSetupError::Redirect {
        step: "removing the pins",
        source,
    })?;
    remove_local_routing(opts).map_err(|source| RedirectSetupError::Redirect {
        step: "removing the local routing",
        source,
    })
}

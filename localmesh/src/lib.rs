//! A whole Meshwork mesh on this machine: the control plane over a directory of
//! manifests, one ztunnel per node, waypoints and the pods (the test application or a
//! command), in one of two modes:
//!
//! * netns: the netlab mini-cluster: every pod is a network namespace behind a veth on its
//!   node's namespace, each node's ztunnel captures its pods with the eBPF redirection.
//!   Needs root and a kernel that loads the redirection (probed, not guessed).
//! * loopback: every pod is its own `127.a.b.x` address; traffic enters through the
//!   ztunnels' SOCKS5 entry, from the pod's own address. Any user.
//!
//! Used by `meshwork demo` (the seed's fixed cluster) and `meshwork up` (a user's
//! directory, [`derive`]). Proxies and apps run as their own binaries ([`procs`]).

pub mod collector;
pub mod connect;
pub mod derive;
mod error;
pub mod forward;
pub mod http;
pub mod live;
pub mod mesh;
pub mod mode;
pub mod plan;
pub mod procs;
pub mod wait;

mod loopback;
mod netns;

pub use error::Error;
pub use mesh::{Backend, LocalMesh, Placement};
pub use mode::{Chosen, Mode};
pub use plan::{Plan, PodPlan, Run};

/// The OTLP messages and `TraceService` (generated once, in the model crate).
pub use meshwork_model::pb::otlp;

static PROGRESS_PREFIX: std::sync::OnceLock<&'static str> = std::sync::OnceLock::new();

/// Names the progress lines (`demo`, `up`); the first call wins, default `localmesh`.
pub fn set_progress_prefix(prefix: &'static str) {
    let _ = PROGRESS_PREFIX.set(prefix);
}

/// A progress line on stderr. A closed stderr (`meshwork demo 2>&1 | head`) is ignored
/// rather than a panic, so the teardown still runs normally.
pub fn progress(line: &str) {
    use std::io::Write;
    let prefix = PROGRESS_PREFIX.get().copied().unwrap_or("localmesh");
    let _ = writeln!(std::io::stderr(), "{prefix}: {line}");
}

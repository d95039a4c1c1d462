//! Process setup shared by the Meshwork binaries (control plane, ztunnel, waypoint).
//!
//! - [`log`]: logs and access logs through a writer thread;
//! - [`accept`]: accept loops that outlive resource errors (`EMFILE`) instead of spinning
//!   or stopping;
//! - [`drain`]: graceful shutdown: stop accepting, let in-flight work finish, bounded;
//! - [`limits`]: the open-files limit raised to what the process may use;
//! - [`netns`]: network namespace handles; run socket creation inside a pod's namespace;
//! - [`socket`]: `TCP_NODELAY` and keepalive on every proxied socket;
//! - [`sync`]: locks that survive a panicking holder ([`sync::LockExt::lock_or_recover`]);
//! - [`tracecontext`]: the W3C `traceparent` value, one parser for every reader.

pub mod accept;
pub mod drain;
pub mod limits;
pub mod log;
pub mod netns;
pub mod socket;
pub mod sync;
pub mod tracecontext;

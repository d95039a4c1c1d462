//! Process setup shared by the Meshwork binaries (control plane, ztunnel, waypoint).
//!
//! - [`log`]: logs and access logs through a writer thread;
//! - [`accept`]: accept loops that outlive resource errors (`EMFILE`) instead of spinning
//!   or stopping;
//! - [`limits`]: the open-files limit raised to what the process may use.

pub mod accept;
pub mod limits;
pub mod log;

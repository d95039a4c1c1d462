//! The waypoint process: [`run`] wires flags, the config stream, certificates ([`ca`]),
//! listeners and the [`admin`] endpoint ([`admin_state`] renders its JSON views); the
//! connection layer accepts HBONE tunnels ([`hbone`], after [`admission`]), detects the
//! protocol inside ([`sniff`]), serves HTTP ([`server`]) or passes TCP through ([`tcp`]);
//! [`shutdown`] drains on SIGTERM.

pub mod admin;
pub mod admin_state;
pub mod admission;
pub mod certs;
pub mod hbone;
pub mod run;
pub mod server;
pub mod shutdown;
pub mod sniff;
pub mod tcp;

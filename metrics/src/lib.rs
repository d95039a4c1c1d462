//! Metrics exposition shared by ztunnel and the waypoint, so both serve the same
//! Prometheus text format and pass `promtool check metrics`.

pub mod exposition;
pub mod log_drops;
pub mod peers;

pub use exposition::{from_openmetrics, CONTENT_TYPE};
pub use log_drops::register_log_drops;
pub use peers::{security_policy, Peer, PeerLabels};

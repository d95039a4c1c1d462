//! Meshwork's waypoint: the per-namespace L7 proxy.
//!
//! [`L7Service`] is the transport-independent request path; [`server::serve_connection`]
//! serves HTTP/1.1 and HTTP/2 on any byte stream; a [`Connector`] reaches endpoints (plain
//! TCP, or HBONE in the mesh).

pub mod access_log;
pub mod admin;
pub mod admin_state;
pub mod admission;
pub mod authority;
pub mod authz;
pub mod body;
pub mod ca;
pub mod cluster;
pub mod config;
pub mod connector;
pub mod cors;
pub mod endpoint;
pub mod fault;
pub mod flags;
pub mod hbone;
pub mod headers;
pub mod label_cache;
pub mod lb;
pub mod metrics;
pub mod normalize;
pub mod outlier;
pub mod pool;
pub mod request_end;
pub mod retry;
pub mod rewrite;
pub mod routing;
pub mod run;
pub mod server;
pub mod service;
pub mod shutdown;
pub mod sniff;
pub mod target;
pub mod tcp;
pub mod telemetry_policy;
pub mod tracing;
pub mod tracked;

pub use config::WaypointId;
pub use connector::{Connector, Target, TcpConnector};
pub use service::{ConnContext, L7Service, Options};

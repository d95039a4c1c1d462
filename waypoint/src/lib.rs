//! Meshwork's waypoint: the per-namespace L7 proxy.
//!
//! The crate has four rooms and a few shared pieces:
//!
//! - [`request`]: the L7 request path, one stage after another ([`request::service`] reads
//!   top-down: authority, normalisation, target, authorization, routing, local replies,
//!   request transformation, then the upstream).
//! - [`upstream`]: clusters, connection pools, load balancing, outlier detection, retries,
//!   and the [`Connector`] that reaches endpoints (plain TCP, or HBONE in the mesh).
//! - [`telemetry`]: metrics, access log, tracing, the Telemetry resource's settings, and the
//!   label cache.
//! - [`process`]: the binary's wiring (flags, config stream, certificates, listeners, admin,
//!   drain) and the connection layer ([`process::server`] serves HTTP/1.1 and HTTP/2 on any
//!   byte stream; [`process::hbone`] accepts tunnels).
//! - [`wasm`]: the WasmPlugins the waypoint loads and which apply to a request (the
//!   request path's `extend` stage runs them, [`request`]'s `wasm`).
//! - Shared: [`config`] (the compiled snapshot), [`body`] and [`tracked`] (body plumbing).
//!
//! [`L7Service`] is the transport-independent request path.

pub mod body;
pub mod config;
pub mod process;
pub mod request;
pub mod telemetry;
pub mod tracked;
pub mod upstream;
pub mod wasm;

// The paths other crates and the tests used before the rooms.
pub use process::{admin, admin_state, admission, certs, hbone, run, server, shutdown, sniff, tcp};
pub use request::{
    authority, authz, cors, fault, flags, headers, normalize, request_end, rewrite, routing,
    service, target,
};
pub use telemetry::{access_log, label_cache, metrics, policy as telemetry_policy, tracing};
pub use upstream::{cluster, connector, endpoint, lb, outlier, pool, retry};

pub use config::WaypointId;
pub use request::{ConnContext, L7Service, Options};
pub use upstream::connector::{Connector, Target, TcpConnector};

//! A live picture of the mesh from the proxies' own Prometheus metrics.
//!
//! - [`parse`]: the Prometheus text format the ztunnels and waypoints serve on `/metrics`;
//! - [`graph`]: two successive scrapes → per-edge rate, success, p50/p99, mTLS, bytes and
//!   policy denials, nodes with their identities, waypoints marked ([`quantile`] computes
//!   percentiles as PromQL's `histogram_quantile` does);
//! - [`scrape`]: fetching many targets at once, [`scrape::Monitor`] keeping the previous
//!   snapshot;
//! - [`top`]: the plain-text tables of `meshwork top` (`--json` is the [`graph::Graph`]);
//! - [`server`]: the self-contained web page with the SVG service graph and `/api/graph`,
//!   loopback only unless asked;
//! - [`prometheus`]: a local Debian `prometheus` scraping the same targets.

pub mod graph;
pub mod parse;
pub mod prometheus;
pub mod quantile;
pub mod scrape;
pub mod server;
pub mod top;

pub use graph::{compute, Edge, Graph, Mtls, Node, NodeKind, Protocol, Snapshot, Target};
pub use scrape::Monitor;
pub use server::{serve, GraphServer, ServeOptions};

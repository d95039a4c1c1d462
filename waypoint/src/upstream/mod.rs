//! Reaching the endpoints behind a route: the cluster of a destination (service port and
//! subset) with its endpoints ([`cluster`], [`endpoint`]), connection pools enforcing
//! `connectionPool` as Envoy's circuit breakers ([`pool`]), load balancing ([`lb`]), outlier
//! detection ([`outlier`]), retries ([`retry`]), one request's tries ([`forward`]), and the
//! [`connector`] that opens connections (plain TCP, or HBONE in the mesh).

pub mod cluster;
pub mod connector;
pub mod endpoint;
pub mod forward;
pub mod lb;
pub mod outlier;
pub mod pool;
pub mod retry;

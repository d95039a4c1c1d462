//! What the waypoint reports about requests: Istio's standard [`metrics`], the
//! [`access_log`], [`tracing`] (W3C/B3 context, sampling, OTLP export), the Telemetry
//! resource's per-service settings ([`policy`]), the [`label_cache`] of metric label sets,
//! and [`record`], which turns one finished exchange into those.

pub mod access_log;
pub mod label_cache;
pub mod metrics;
pub mod policy;
pub mod record;
pub mod tracing;

//! Meshwork control plane library: sources, model translation, distribution and CA.
//!
//! Flow: [`source`] (YAML directory) → [`engine`] (validated store → incremental
//! [`translate`]) → [`distribute`] (model hub → per-proxy gRPC streams); [`ca`] signs
//! workload certificates for authorized nodes ([`auth`]); [`canary`] runs Flagger's
//! `Canary` resources (weights fed back to the engine); [`admin`] shows it all;
//! [`run`] starts everything.

pub mod admin;
pub mod auth;
pub mod ca;
pub mod canary;
pub mod checks;
pub mod distribute;
pub mod engine;
pub mod fail_closed;
pub mod logging;
pub mod run;
pub mod source;
pub mod state;
pub mod tls_listener;
pub mod translate;

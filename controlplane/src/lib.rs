//! Meshwork control plane library: sources, model translation, distribution and CA.
//!
//! Flow: [`source`] (YAML directory) → engine (validated store → incremental
//! [`translate`]) → [`distribute`] (model hub → per-proxy gRPC streams); [`ca`] signs
//! workload certificates for authorized nodes; [`admin`] shows it all.

pub mod admin;
pub mod ca;
pub mod distribute;
pub mod logging;
pub mod source;
pub mod translate;

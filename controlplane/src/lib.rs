//! Meshwork control plane library: sources, model translation, distribution and CA.

pub mod ca;
pub mod distribute;
pub mod translate;

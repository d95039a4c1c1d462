//! Meshwork control plane library.

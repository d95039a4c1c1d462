//! Meshwork's chained CNI plugin and the node-agent protocol.
//!
//! - [`agent`]: the protocol between the plugin and the ztunnel's node-agent socket (the
//!   ztunnel links this module to serve it);
//! - [`plugin`]: the CNI side: configuration, environment, ADD/DEL/CHECK/VERSION;
//! - [`install`]: installing the plugin into a node's CNI configuration and removing it.
pub mod agent;
pub mod install;
pub mod plugin;

//! Meshwork's chained CNI plugin and the node-agent protocol.
//!
//! - [`agent`]: the protocol between the plugin and the ztunnel's node-agent socket (the
//!   ztunnel links this module to serve it);
//! - [`plugin`]: the CNI side: configuration, environment, ADD/DEL/CHECK/VERSION;
//! - [`install`]: installing the plugin into a node's CNI configuration and removing it;
//! - [`owner`]: whether the installer's DaemonSet still exists (restart) or not (uninstall).
pub mod agent;
pub mod install;
pub mod owner;
pub mod plugin;

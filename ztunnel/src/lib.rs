//! Meshwork ztunnel: the per-node L4 proxy.
//!
//! Outbound connections of local workloads (captured on 15001, or via SOCKS5 on 15080)
//! are carried over HBONE (HTTP/2 CONNECT in mutual TLS 1.3) to the destination pod's
//! address on port 15008 — where the destination node's ztunnel listens — or to the
//! destination's waypoint. Inbound HBONE (15008) and captured plaintext (15006) are
//! authorized with Istio L4 semantics and relayed to the local pod.
//!
//! Start one in-process with [`Ztunnel::start`]; the `ztunnel` binary wires it to the
//! control plane (config stream and CA).

pub mod access_log;
pub mod admin;
pub mod alloc;
pub mod args;
pub mod certs;
pub mod connections;
mod copy;
pub use meshwork_metrics::exposition;
pub mod inbound;
pub mod inbound_plain;
pub mod inpod;
mod listeners;
pub mod metrics;
pub mod outbound;
pub mod policy;
pub mod proxy;
pub mod redirect;
pub mod relay;
pub mod scope;
pub mod shards;
pub mod sockets;
pub mod socks5;
pub mod state;
pub mod tracecontext;
mod ztunnel;

pub use args::{Config, Listen, LogFormat};
pub use certs::{CaClient, CertManager, CertSigner, DirSigner, SignError, SignFuture};
pub use proxy::LogControl;
pub use ztunnel::{BoundAddrs, Deps, StartError, Ztunnel};

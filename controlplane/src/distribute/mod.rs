//! Distribution of the model to proxies over `MeshConfig.Stream`.
//!
//! [`hub::ModelHub`] holds the current model with a generation counter and a short log of
//! which keys each generation changed. Each proxy stream ([`server`]) keeps the versions
//! it has sent, filters the model for that proxy ([`filter`]) and sends only what differs:
//! a full diff against what the proxy says it holds when it (re)connects, then deltas of
//! the changed keys. One update is in flight per stream; an ACK makes it the proxy's
//! acknowledged state, a NACK reverts to the previous one (the rejected resources are not
//! re-sent until they change again). [`stream`] keeps per-proxy state small (a generation
//! plus exceptions, not a copy of every key); [`wire`] sends each resource's encoding,
//! made once by the hub, to every proxy.

pub mod filter;
pub mod hub;
pub mod registry;
pub mod server;
mod stream;
pub mod wire;

pub use hub::ModelHub;
pub use registry::{ProxyInfo, Registry};
pub use server::{MeshConfigService, SubscriptionAuth};

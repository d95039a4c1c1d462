//! HBONE: TCP tunnels carried as HTTP/2 CONNECT streams over mutual TLS 1.3 (port 15008),
//! wire-compatible with Istio ambient's HBONE.
//!
//! - [`Server`] accepts TLS (ALPN `h2`), then CONNECT requests, each handed to a
//!   [`ConnectHandler`] that accepts (200) or refuses (4xx/5xx) it.
//! - [`Pool`] opens CONNECT streams over pooled, multiplexed client connections keyed by
//!   (source identity, destination address, destination identity).
//! - [`H2Stream`] is the tunnel, an `AsyncRead + AsyncWrite` byte stream.
//!
//! TLS configuration (certificates, SPIFFE verification, ALPN `h2`) is the caller's:
//! `meshwork-identity` builds it.

pub mod dial;
pub mod forwarded;
mod pool;
mod server;
mod settings;
mod stream;

pub use dial::{DialFrom, SocketFactory};
pub use pool::{ClientError, Pool, PoolKey, PoolSettings, PoolStats, DEFAULT_MAX_STREAMS_PER_CONN};
pub use server::{ConnInfo, ConnectHandler, ConnectRequest, Responder, Server, ServerError};
pub use settings::{H2Settings, DEFAULT_MAX_HEADER_LIST_SIZE};
pub use stream::H2Stream;

/// Default HBONE port.
pub const HBONE_PORT: u16 = 15008;
/// ALPN protocol HBONE negotiates.
pub const ALPN_H2: &[u8] = b"h2";

//! rustls configuration for HBONE: TLS 1.3 only, ALPN `h2`, ring, SPIFFE identities on both sides.
//!
//! * [`server_config`] requires a client certificate chaining to the mesh roots and asks a
//!   [`ResolvesServerCert`](rustls::server::ResolvesServerCert) which certificate to present:
//!   [`RotatingCert`] (one identity, swapped on renewal) or [`CertStore`] resolvers (a ztunnel
//!   presenting the identity of the local destination workload).
//! * [`client_config`] presents a workload certificate and accepts the server only if its chain
//!   verifies against the mesh roots and its URI SAN is one of the expected identities (no DNS
//!   name check).
//! * [`peer_identity`] reads the authenticated peer's identity after the handshake.

mod client;
mod peer;
mod server;

use std::sync::{Arc, OnceLock};

use rustls::crypto::CryptoProvider;

pub use client::{
    client_config, client_config_with_resolver, ServerIdentityError, SpiffeServerVerifier,
};
pub use peer::{peer_identity, PeerIdentityError};
pub use server::{server_config, CertStore, IdentityResolver, RotatingCert};

/// ALPN protocol of HBONE (HTTP/2).
pub const HBONE_ALPN: &[u8] = b"h2";

/// The ring provider shared by every configuration built here.
pub fn crypto_provider() -> Arc<CryptoProvider> {
    static PROVIDER: OnceLock<Arc<CryptoProvider>> = OnceLock::new();
    PROVIDER
        .get_or_init(|| Arc::new(rustls::crypto::ring::default_provider()))
        .clone()
}

/// Failure to build a TLS configuration.
#[derive(Debug, thiserror::Error)]
pub enum TlsConfigError {
    #[error("TLS configuration: {0}")]
    Rustls(#[from] rustls::Error),
    #[error("TLS configuration: client certificate verifier: {0}")]
    ClientVerifier(#[from] rustls::server::VerifierBuilderError),
    #[error("TLS configuration: no expected server identity given")]
    NoExpectedIdentity,
}

#[cfg(test)]
mod tests;

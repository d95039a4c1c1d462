//! What the request path knows about the downstream connection a request arrived on.

use std::net::SocketAddr;

/// Facts about the downstream connection a request arrived on.
#[derive(Debug, Clone, Default)]
pub struct ConnContext {
    /// Verified peer identity (`spiffe://td/ns/x/sa/y`), `None` for plaintext.
    pub source_identity: Option<String>,
    pub source: Option<SocketAddr>,
    /// Original destination (service VIP and port), e.g. the HBONE CONNECT target.
    pub destination: Option<SocketAddr>,
}

//! The authenticated identity of the other side of a finished handshake.

use rustls::CommonState;

use crate::spiffe::{SpiffeId, SpiffeIdError};
use crate::x509::{leaf_spiffe_id, LeafError};

/// Why the peer of a connection has no usable identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PeerIdentityError {
    #[error("peer presented no certificate (handshake not complete, or client auth not required)")]
    NoCertificate,
    #[error("peer certificate: {0}")]
    Leaf(#[from] LeafError),
    #[error("peer certificate: invalid SPIFFE identity: {0}")]
    Identity(#[from] SpiffeIdError),
}

/// The SPIFFE id of the verified peer certificate (the client, on the server side).
///
/// Works on `tokio_rustls::server::TlsStream::get_ref().1` (a `ServerConnection`, which derefs
/// to `CommonState`) and on the client side alike.
pub fn peer_identity(state: &CommonState) -> Result<SpiffeId, PeerIdentityError> {
    let leaf = state
        .peer_certificates()
        .and_then(|certs| certs.first())
        .ok_or(PeerIdentityError::NoCertificate)?;
    Ok(leaf_spiffe_id(leaf)?.uri.parse()?)
}

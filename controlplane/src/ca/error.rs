//! Why a certificate request is refused.

use meshwork_identity::SpiffeId;

/// A refused or failed `CreateCertificate`. Messages are returned to the caller.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error("malformed CSR: {0}")]
    MalformedCsr(String),
    #[error("CSR public key is too weak: {0}")]
    WeakKey(String),
    #[error("CSR signature does not verify against its public key")]
    BadSignature,
    #[error("CSR has no URI subject alternative name; exactly one SPIFFE id is required")]
    NoUriSan,
    #[error("CSR has {} URI subject alternative names ({}); exactly one SPIFFE id is required", .0.len(), .0.join(", "))]
    ManyUriSans(Vec<String>),
    #[error("CSR URI subject alternative name {uri:?} is not a valid SPIFFE id: {reason}")]
    InvalidIdentity { uri: String, reason: String },
    #[error(
        "CSR identity {identity} is in trust domain {:?}, this CA only signs for {expected:?}",
        identity.trust_domain()
    )]
    ForeignTrustDomain {
        identity: Box<SpiffeId>,
        expected: String,
    },
    #[error("metadata ImpersonatedIdentity {value:?} is not a valid SPIFFE id: {reason}")]
    InvalidImpersonatedIdentity { value: String, reason: String },
    #[error(
        "metadata ImpersonatedIdentity {impersonated} does not match the CSR identity {requested}"
    )]
    ImpersonationMismatch {
        impersonated: Box<SpiffeId>,
        requested: Box<SpiffeId>,
    },
    #[error("node {node:?} may not obtain a certificate for {identity}: no workload of that service account runs on the node")]
    NotAllowedForNode {
        node: String,
        identity: Box<SpiffeId>,
    },
    #[error("service account {namespace}/{name} may obtain only its own identity, not {identity}")]
    NotOwnIdentity {
        namespace: String,
        name: String,
        identity: Box<SpiffeId>,
    },
    #[error("missing \"authorization: Bearer <node token>\" metadata")]
    MissingToken,
    #[error("unknown node or bad token")]
    InvalidToken,
    #[error("signing the certificate failed: {0}")]
    Signing(String),
}

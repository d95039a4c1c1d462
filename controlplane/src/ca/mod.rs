//! Mesh CA: root of trust, CSR signing, node authorization.
//!
//! * [`Ca::open`] loads the CA directory — Istio-style plug-in certificates (`ca-cert.pem`,
//!   `ca-key.pem`, `root-cert.pem`, `cert-chain.pem`) or a self-signed root (`ca-root.pem`,
//!   `ca-key.pem`) generated on first start — or [`Ca::new`] takes [`CaMaterial`] directly.
//! * [`Ca::sign`] verifies a CSR (signature, exactly one SPIFFE URI SAN in the mesh trust
//!   domain), asks the caller's authorization closure, and returns the PEM chain leaf → root.
//! * [`NodeTokens`] authenticates ztunnels (`Bearer <node>.<hmac>` tokens, secret in the CA
//!   directory); [`WorkloadDirectory`] says which service accounts run on a node.
//! * [`service`] is the `istio.v1.auth.IstioCertificateService` gRPC service combining them.
//!
//! Client side (ztunnel), with the generated client and `meshwork_identity::CertRequest`:
//!
//! ```text
//! let req = CertRequest::generate(&identity)?;
//! let mut request = tonic::Request::new(IstioCertificateRequest {
//!     csr: req.csr_pem().to_string(),
//!     validity_duration: 24 * 3600,
//!     metadata: Some(prost_types::Struct { fields: [("ImpersonatedIdentity".to_string(),
//!         prost_types::Value { kind: Some(Kind::StringValue(identity.to_string())) })].into() }),
//! });
//! request.metadata_mut().insert("authorization", format!("Bearer {token}").parse()?);
//! let chain = client.create_certificate(request).await?.into_inner().cert_chain;
//! let cert = req.into_certificate(&chain, None)?;
//! ```

mod authn;
mod authority;
mod csr;
mod directory;
mod error;
mod grpc;
mod handle;
mod material;
mod serving;
mod signer;
mod store;
mod tokens;

pub use authn::{to_status as authn_status, Caller, NodeAuthError, NodeAuthenticator};
pub use authority::Ca;
pub use directory::{authorize_node, StaticDirectory, WorkloadDirectory};
pub use error::SignError;
pub use grpc::{service, to_status, CaService, IMPERSONATED_IDENTITY};
pub use handle::CaHandle;
pub use material::{CaConfig, CaLoadError, CaMaterial, CLOCK_SKEW_BACKDATE};
pub use serving::{server_config, ServingCerts, ServingIdentity};
pub use signer::SignerError;
pub use store::{
    fingerprint, follow_dir, KEY_FILE, PLUGIN_CERT_FILE, PLUGIN_CHAIN_FILE, PLUGIN_ROOTS_FILE,
    ROOT_CERT_FILE, ROOT_TTL,
};
pub use tokens::{NodeName, NodeTokens, TokenError, OBSERVER_PREFIX, TOKEN_KEY_FILE};

#[cfg(test)]
mod handshake_tests;
#[cfg(test)]
mod rotation_tests;
#[cfg(test)]
mod tests;

//! SPIFFE identities, workload certificates and rustls configuration for mesh mTLS.
//!
//! Typical data-plane flow:
//!
//! 1. [`CertRequest::generate`] a key + CSR for a [`SpiffeId`];
//! 2. send `csr_pem()` to the mesh CA with the generated gRPC client
//!    `meshwork_model::pb::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient`
//!    (`IstioCertificateRequest { csr, validity_duration, metadata }`, with an
//!    `authorization: Bearer <node token>` header, and for a node agent the metadata field
//!    `ImpersonatedIdentity` set to the SPIFFE id);
//! 3. [`CertRequest::into_certificate`] with the returned `cert_chain`;
//! 4. serve with [`tls::server_config`] and connect with [`tls::client_config`]; renew when
//!    [`WorkloadCertificate::should_renew`] says so and swap it into the [`tls::RotatingCert`] /
//!    [`tls::CertStore`].

mod bundle;
mod cert;
mod csr;
pub mod files;
pub mod pem;
mod spiffe;
pub mod tls;
mod x509;

#[cfg(any(test, feature = "test-util"))]
pub mod testing;

pub use bundle::{TrustBundle, TrustBundleError};
pub use cert::{CertificateError, WorkloadCertificate};
pub use csr::{CertRequest, CsrError};
pub use spiffe::{SpiffeId, SpiffeIdError};
pub use x509::LeafError;

//! Key and certificate signing request generation for a workload identity.

use std::fmt;

use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType, PKCS_ECDSA_P256_SHA256};

use crate::bundle::TrustBundle;
use crate::cert::{CertificateError, WorkloadCertificate};
use crate::spiffe::SpiffeId;

/// Failure to generate a key or CSR.
#[derive(Debug, thiserror::Error)]
pub enum CsrError {
    #[error("generating an ECDSA P-256 key for {identity}: {source}")]
    KeyGeneration {
        identity: SpiffeId,
        #[source]
        source: rcgen::Error,
    },
    #[error("building the certificate signing request for {identity}: {source}")]
    Request {
        identity: SpiffeId,
        #[source]
        source: rcgen::Error,
    },
}

/// A fresh ECDSA P-256 key and a PKCS#10 CSR whose only subject alternative name is the
/// identity's SPIFFE URI (empty subject, as Istio's agents send).
///
/// Send [`csr_pem`](Self::csr_pem) to the CA (`IstioCertificateService/CreateCertificate`),
/// then combine the answer with the key via [`into_certificate`](Self::into_certificate).
pub struct CertRequest {
    identity: SpiffeId,
    csr_pem: String,
    key_pem: String,
}

impl CertRequest {
    pub fn generate(identity: &SpiffeId) -> Result<Self, CsrError> {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(|source| {
            CsrError::KeyGeneration {
                identity: identity.clone(),
                source,
            }
        })?;
        let request_error = |source| CsrError::Request {
            identity: identity.clone(),
            source,
        };
        let uri = identity.to_string().try_into().map_err(request_error)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(uri)];
        let csr = params.serialize_request(&key).map_err(request_error)?;
        Ok(CertRequest {
            identity: identity.clone(),
            csr_pem: csr.pem().map_err(request_error)?,
            key_pem: key.serialize_pem(),
        })
    }

    pub fn identity(&self) -> &SpiffeId {
        &self.identity
    }

    /// The PKCS#10 request, PEM (`CERTIFICATE REQUEST`).
    pub fn csr_pem(&self) -> &str {
        &self.csr_pem
    }

    /// The private key, PKCS#8 PEM.
    pub fn key_pem(&self) -> &str {
        &self.key_pem
    }

    /// Combines the CA's answer (`cert_chain`: leaf first, root last) with this request's key,
    /// checking it is for the requested identity and verifies against its roots now.
    /// See [`WorkloadCertificate::from_ca_response`].
    pub fn into_certificate(
        self,
        cert_chain: &[String],
        extra_roots: Option<&TrustBundle>,
    ) -> Result<WorkloadCertificate, CertificateError> {
        let cert = WorkloadCertificate::from_ca_response(&self.key_pem, cert_chain, extra_roots)?;
        if cert.identity() != &self.identity {
            return Err(CertificateError::IdentityMismatch {
                requested: Box::new(self.identity),
                issued: Box::new(cert.identity().clone()),
            });
        }
        cert.verify(std::time::SystemTime::now())?;
        Ok(cert)
    }
}

impl fmt::Debug for CertRequest {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertRequest")
            .field("identity", &self.identity)
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use x509_parser::certification_request::X509CertificationRequest;
    use x509_parser::extensions::{GeneralName, ParsedExtension};
    use x509_parser::prelude::FromDer;

    #[test]
    fn csr_carries_the_spiffe_uri_and_a_valid_signature() {
        let id: SpiffeId = "spiffe://cluster.local/ns/default/sa/sleep"
            .parse()
            .unwrap();
        let req = CertRequest::generate(&id).unwrap();
        assert!(req.key_pem().contains("BEGIN PRIVATE KEY"));
        let der = ::pem::parse(req.csr_pem()).unwrap();
        assert_eq!(der.tag(), "CERTIFICATE REQUEST");
        let (_, csr) = X509CertificationRequest::from_der(der.contents()).unwrap();
        csr.verify_signature().unwrap();
        let uris: Vec<String> = csr
            .requested_extensions()
            .into_iter()
            .flatten()
            .filter_map(|ext| match ext {
                ParsedExtension::SubjectAlternativeName(san) => Some(san),
                _ => None,
            })
            .flat_map(|san| san.general_names.iter())
            .filter_map(|n| match n {
                GeneralName::URI(u) => Some(u.to_string()),
                _ => None,
            })
            .collect();
        assert_eq!(uris, vec![id.to_string()]);
        assert!(!format!("{req:?}").contains("PRIVATE"));
    }

    #[test]
    fn each_request_has_a_fresh_key() {
        let id: SpiffeId = "spiffe://td/ns/a/sa/b".parse().unwrap();
        let a = CertRequest::generate(&id).unwrap();
        let b = CertRequest::generate(&id).unwrap();
        assert_ne!(a.key_pem(), b.key_pem());
    }
}

//! Reading a PKCS#10 request: signature, the single SPIFFE URI SAN, the public key.

use meshwork_identity::SpiffeId;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;

use super::error::SignError;

/// What the CA takes from a verified CSR.
#[derive(Debug)]
pub struct ParsedCsr {
    pub identity: SpiffeId,
    /// The requester's public key.
    pub public_key: rcgen::SubjectPublicKeyInfo,
}

/// Parses a PEM (`CERTIFICATE REQUEST`) CSR, verifies its self-signature and extracts its
/// single URI SAN as a SPIFFE id. Other SAN kinds are ignored (and never copied to the leaf).
pub fn parse_csr(csr_pem: &str) -> Result<ParsedCsr, SignError> {
    let block = ::pem::parse(csr_pem).map_err(|e| SignError::MalformedCsr(e.to_string()))?;
    if !matches!(
        block.tag(),
        "CERTIFICATE REQUEST" | "NEW CERTIFICATE REQUEST"
    ) {
        return Err(SignError::MalformedCsr(format!(
            "PEM block is {:?}, expected \"CERTIFICATE REQUEST\"",
            block.tag()
        )));
    }
    let (_, csr) = X509CertificationRequest::from_der(block.contents())
        .map_err(|e| SignError::MalformedCsr(e.to_string()))?;
    csr.verify_signature()
        .map_err(|_| SignError::BadSignature)?;

    let mut uris = Vec::new();
    for ext in csr.requested_extensions().into_iter().flatten() {
        if let ParsedExtension::SubjectAlternativeName(san) = ext {
            for name in &san.general_names {
                if let GeneralName::URI(uri) = name {
                    uris.push(uri.to_string());
                }
            }
        }
    }
    let uri = match uris.len() {
        0 => return Err(SignError::NoUriSan),
        1 => uris.remove(0),
        _ => return Err(SignError::ManyUriSans(uris)),
    };
    let identity: SpiffeId = uri.parse().map_err(|e| SignError::InvalidIdentity {
        uri: uri.clone(),
        reason: format!("{e}"),
    })?;
    let public_key =
        rcgen::SubjectPublicKeyInfo::from_der(csr.certification_request_info.subject_pki.raw)
            .map_err(|e| SignError::MalformedCsr(format!("unsupported public key: {e}")))?;
    Ok(ParsedCsr {
        identity,
        public_key,
    })
}

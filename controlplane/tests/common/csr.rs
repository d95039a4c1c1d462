//! CSRs crafted to trick a signer, shared by the attack tests and the CA's unit tests
//! (`src/ca/tests.rs` includes this file with `#[path]`).

use meshwork_identity::{CertRequest, SpiffeId};
use x509_parser::prelude::FromDer;

/// A CSR for `identity` whose subject public key was replaced, after it was signed, by
/// another key of the same type: its self-signature no longer verifies.
pub fn csr_with_swapped_key(identity: &SpiffeId) -> String {
    let a = CertRequest::generate(identity).unwrap();
    let b = CertRequest::generate(identity).unwrap();
    let a_der = ::pem::parse(a.csr_pem()).unwrap().into_contents();
    let b_der = ::pem::parse(b.csr_pem()).unwrap().into_contents();
    let key_of = |der: &[u8]| {
        let (_, csr) =
            x509_parser::certification_request::X509CertificationRequest::from_der(der).unwrap();
        csr.certification_request_info.subject_pki.raw.to_vec()
    };
    let (ka, kb) = (key_of(&a_der), key_of(&b_der));
    assert_eq!(ka.len(), kb.len());
    let pos = a_der.windows(ka.len()).position(|w| w == ka).unwrap();
    let mut swapped = a_der.clone();
    swapped[pos..pos + kb.len()].copy_from_slice(&kb);
    ::pem::encode(&::pem::Pem::new("CERTIFICATE REQUEST", swapped))
}

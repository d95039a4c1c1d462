//! The CA's private key as an rcgen signer, loaded through rustls' key provider so that PKCS#8,
//! SEC1 and PKCS#1 keys (Istio's `cacerts` often hold `RSA PRIVATE KEY`) all work.

use std::fmt;

use meshwork_identity::tls::crypto_provider;
use rcgen::{PublicKeyData, SignatureAlgorithm};
use rustls::sign::Signer;
use rustls::SignatureScheme;
use rustls_pki_types::PrivateKeyDer;
use x509_parser::prelude::FromDer;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Why a CA private key cannot be used for signing.
#[derive(Debug, thiserror::Error)]
pub enum SignerError {
    #[error("unsupported or malformed private key: {0}")]
    Load(#[source] rustls::Error),
    #[error(
        "private key algorithm is not usable for certificate signing (supported: ECDSA P-256/P-384, RSA, Ed25519)"
    )]
    UnsupportedAlgorithm,
    #[error("private key does not expose its public key")]
    NoPublicKey,
    #[error("private key's public key is malformed: {0}")]
    PublicKey(String),
}

/// Certificate-signing schemes, in order of preference, with their rcgen algorithms.
const SCHEMES: &[(SignatureScheme, &SignatureAlgorithm)] = &[
    (
        SignatureScheme::ECDSA_NISTP256_SHA256,
        &rcgen::PKCS_ECDSA_P256_SHA256,
    ),
    (
        SignatureScheme::ECDSA_NISTP384_SHA384,
        &rcgen::PKCS_ECDSA_P384_SHA384,
    ),
    (SignatureScheme::RSA_PKCS1_SHA256, &rcgen::PKCS_RSA_SHA256),
    (SignatureScheme::ED25519, &rcgen::PKCS_ED25519),
];

/// Signs certificates with the CA key.
pub struct CaSigner {
    signer: Box<dyn Signer>,
    algorithm: &'static SignatureAlgorithm,
    /// The DER SubjectPublicKeyInfo.
    spki: Vec<u8>,
    /// The subjectPublicKey bits of `spki`.
    public_key: Vec<u8>,
}

impl CaSigner {
    pub fn new(key: PrivateKeyDer<'static>) -> Result<Self, SignerError> {
        let key = crypto_provider()
            .key_provider
            .load_private_key(key)
            .map_err(SignerError::Load)?;
        let (signer, algorithm) = SCHEMES
            .iter()
            .find_map(|(scheme, alg)| key.choose_scheme(&[*scheme]).map(|s| (s, *alg)))
            .ok_or(SignerError::UnsupportedAlgorithm)?;
        let spki = key.public_key().ok_or(SignerError::NoPublicKey)?.to_vec();
        let (_, parsed) = SubjectPublicKeyInfo::from_der(&spki)
            .map_err(|e| SignerError::PublicKey(e.to_string()))?;
        let public_key = parsed.subject_public_key.data.to_vec();
        Ok(CaSigner {
            signer,
            algorithm,
            spki,
            public_key,
        })
    }

    /// The DER SubjectPublicKeyInfo of the key.
    pub fn spki(&self) -> &[u8] {
        &self.spki
    }
}

impl PublicKeyData for CaSigner {
    fn der_bytes(&self) -> &[u8] {
        &self.public_key
    }

    fn algorithm(&self) -> &'static SignatureAlgorithm {
        self.algorithm
    }
}

impl rcgen::SigningKey for CaSigner {
    fn sign(&self, msg: &[u8]) -> Result<Vec<u8>, rcgen::Error> {
        self.signer
            .sign(msg)
            .map_err(|_| rcgen::Error::RemoteKeyError)
    }
}

impl fmt::Debug for CaSigner {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CaSigner")
            .field("scheme", &self.signer.scheme())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rustls_pki_types::PrivatePkcs8KeyDer;

    #[test]
    fn loads_ecdsa_keys_and_reports_their_public_key() {
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        let signer = CaSigner::new(der).unwrap();
        assert_eq!(signer.der_bytes(), key.der_bytes());
        assert_eq!(signer.spki(), key.subject_public_key_info());
        assert_eq!(
            PublicKeyData::algorithm(&signer),
            &rcgen::PKCS_ECDSA_P256_SHA256
        );
    }

    #[test]
    fn rejects_garbage_keys() {
        let der = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(vec![1u8, 2, 3]));
        assert!(matches!(CaSigner::new(der), Err(SignerError::Load(_))));
    }
}

//! PEM encoding and decoding of certificates and private keys.

use rustls_pki_types::{
    CertificateDer, PrivateKeyDer, PrivatePkcs1KeyDer, PrivatePkcs8KeyDer, PrivateSec1KeyDer,
};

const CERTIFICATE: &str = "CERTIFICATE";
const PKCS8_KEY: &str = "PRIVATE KEY";
const SEC1_KEY: &str = "EC PRIVATE KEY";
const PKCS1_KEY: &str = "RSA PRIVATE KEY";

/// A PEM document that does not hold what it should. `what` names the document (e.g. a file).
#[derive(Debug, thiserror::Error)]
pub enum PemError {
    #[error("{what}: malformed PEM: {source}")]
    Malformed {
        what: String,
        #[source]
        source: pem::PemError,
    },
    #[error("{what}: no \"CERTIFICATE\" PEM block found")]
    NoCertificates { what: String },
    #[error(
        "{what}: no private key PEM block found (expected \"PRIVATE KEY\", \"EC PRIVATE KEY\" or \"RSA PRIVATE KEY\")"
    )]
    NoPrivateKey { what: String },
    #[error("{what}: {count} private keys found, expected exactly one")]
    SeveralPrivateKeys { what: String, count: usize },
}

/// Decodes every `CERTIFICATE` block of `text`, in order; other blocks are ignored.
pub fn certificates_from_pem(
    what: &str,
    text: &str,
) -> Result<Vec<CertificateDer<'static>>, PemError> {
    let certs: Vec<_> = parse(what, text)?
        .into_iter()
        .filter(|p| p.tag() == CERTIFICATE)
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect();
    if certs.is_empty() {
        return Err(PemError::NoCertificates {
            what: what.to_string(),
        });
    }
    Ok(certs)
}

/// Decodes the single private key of `text` (PKCS#8, SEC1 or PKCS#1).
pub fn private_key_from_pem(what: &str, text: &str) -> Result<PrivateKeyDer<'static>, PemError> {
    let mut keys: Vec<PrivateKeyDer<'static>> = parse(what, text)?
        .into_iter()
        .filter_map(|p| match p.tag() {
            PKCS8_KEY => Some(PrivatePkcs8KeyDer::from(p.into_contents()).into()),
            SEC1_KEY => Some(PrivateSec1KeyDer::from(p.into_contents()).into()),
            PKCS1_KEY => Some(PrivatePkcs1KeyDer::from(p.into_contents()).into()),
            _ => None,
        })
        .collect();
    match keys.len() {
        0 => Err(PemError::NoPrivateKey {
            what: what.to_string(),
        }),
        1 => Ok(keys.remove(0)),
        count => Err(PemError::SeveralPrivateKeys {
            what: what.to_string(),
            count,
        }),
    }
}

/// Encodes certificates as concatenated `CERTIFICATE` blocks.
pub fn certificates_to_pem(certs: &[CertificateDer<'_>]) -> String {
    certs.iter().map(|c| certificate_to_pem(c)).collect()
}

/// Encodes one certificate as a `CERTIFICATE` block.
pub fn certificate_to_pem(cert: &CertificateDer<'_>) -> String {
    encode(CERTIFICATE, cert.as_ref())
}

/// Encodes a private key with the PEM label of its format.
pub fn private_key_to_pem(key: &PrivateKeyDer<'_>) -> String {
    let tag = match key {
        PrivateKeyDer::Sec1(_) => SEC1_KEY,
        PrivateKeyDer::Pkcs1(_) => PKCS1_KEY,
        _ => PKCS8_KEY,
    };
    encode(tag, key.secret_der())
}

fn encode(tag: &str, der: &[u8]) -> String {
    let config = pem::EncodeConfig::new().set_line_ending(pem::LineEnding::LF);
    pem::encode_config(&pem::Pem::new(tag, der), config)
}

fn parse(what: &str, text: &str) -> Result<Vec<pem::Pem>, PemError> {
    pem::parse_many(text).map_err(|source| PemError::Malformed {
        what: what.to_string(),
        source,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn certificates_round_trip_and_keep_order() {
        let certs = vec![
            CertificateDer::from(vec![1u8, 2, 3]),
            CertificateDer::from(vec![4u8, 5]),
        ];
        let text = certificates_to_pem(&certs);
        assert_eq!(certificates_from_pem("chain", &text).unwrap(), certs);
    }

    #[test]
    fn key_round_trip() {
        let key = PrivateKeyDer::from(PrivatePkcs8KeyDer::from(vec![9u8, 8, 7]));
        let text = private_key_to_pem(&key);
        assert!(text.starts_with("-----BEGIN PRIVATE KEY-----"));
        let back = private_key_from_pem("key", &text).unwrap();
        assert_eq!(back.secret_der(), key.secret_der());
    }

    #[test]
    fn errors_name_the_document() {
        let err = certificates_from_pem("root-cert.pem", "").unwrap_err();
        assert!(matches!(err, PemError::NoCertificates { .. }));
        assert!(err.to_string().starts_with("root-cert.pem:"), "{err}");
        let err = private_key_from_pem(
            "key.pem",
            "-----BEGIN PRIVATE KEY-----\n%%%\n-----END PRIVATE KEY-----\n",
        )
        .unwrap_err();
        assert!(matches!(err, PemError::Malformed { .. }), "{err}");
        let two = format!("{}{}", encode(PKCS8_KEY, &[1]), encode(SEC1_KEY, &[2]));
        let err = private_key_from_pem("key.pem", &two).unwrap_err();
        assert!(matches!(err, PemError::SeveralPrivateKeys { count: 2, .. }));
    }
}

//! Reading a PKCS#10 request: signature, the single SPIFFE URI SAN, the public key.

use meshwork_identity::SpiffeId;
use x509_parser::certification_request::X509CertificationRequest;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::FromDer;
use x509_parser::public_key::PublicKey;
use x509_parser::x509::SubjectPublicKeyInfo;

/// Smallest RSA modulus accepted, in bits.
pub const MIN_RSA_BITS: usize = 2048;

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
    let spki = &csr.certification_request_info.subject_pki;
    check_key_strength(spki)?;
    let public_key = rcgen::SubjectPublicKeyInfo::from_der(spki.raw)
        .map_err(|e| SignError::MalformedCsr(format!("unsupported public key: {e}")))?;
    Ok(ParsedCsr {
        identity,
        public_key,
    })
}

/// Refuses RSA keys below [`MIN_RSA_BITS`]; other key types are vetted by the signer.
fn check_key_strength(spki: &SubjectPublicKeyInfo<'_>) -> Result<(), SignError> {
    if let Ok(PublicKey::RSA(rsa)) = spki.parsed() {
        let significant = rsa.modulus.iter().skip_while(|b| **b == 0).count();
        let bits = significant * 8;
        if bits < MIN_RSA_BITS {
            return Err(SignError::WeakKey(format!(
                "RSA key of {bits} bits, at least {MIN_RSA_BITS} required"
            )));
        }
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    fn der(tag: u8, content: &[u8]) -> Vec<u8> {
        let mut out = vec![tag];
        let len = content.len();
        if len < 0x80 {
            out.push(len as u8);
        } else {
            let bytes: Vec<u8> = len
                .to_be_bytes()
                .into_iter()
                .skip_while(|b| *b == 0)
                .collect();
            out.push(0x80 | bytes.len() as u8);
            out.extend(bytes);
        }
        out.extend_from_slice(content);
        out
    }

    /// A DER SubjectPublicKeyInfo for an RSA key with a `bits`-bit modulus.
    fn rsa_spki(bits: usize) -> Vec<u8> {
        let mut modulus = vec![0x00, 0xc0];
        modulus.resize(1 + bits / 8, 0x01);
        let key = der(0x30, &[der(0x02, &modulus), der(0x02, &[1, 0, 1])].concat());
        // rsaEncryption OID 1.2.840.113549.1.1.1, NULL parameters.
        let oid = der(
            0x06,
            &[0x2a, 0x86, 0x48, 0x86, 0xf7, 0x0d, 0x01, 0x01, 0x01],
        );
        let alg = der(0x30, &[oid, vec![0x05, 0x00]].concat());
        let bit_string = der(0x03, &[vec![0u8], key].concat());
        der(0x30, &[alg, bit_string].concat())
    }

    #[test]
    fn rsa_keys_below_2048_bits_are_refused() {
        let weak = rsa_spki(1024);
        let (_, spki) = SubjectPublicKeyInfo::from_der(&weak).unwrap();
        let err = check_key_strength(&spki).unwrap_err();
        assert!(
            matches!(err, SignError::WeakKey(ref m) if m.contains("1024")),
            "{err}"
        );
        let strong = rsa_spki(2048);
        let (_, spki) = SubjectPublicKeyInfo::from_der(&strong).unwrap();
        check_key_strength(&spki).unwrap();
    }
}

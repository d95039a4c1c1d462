//! The mesh CA: checks material at startup, signs CSRs.

use std::time::{Duration, SystemTime};

use meshwork_identity::pem::{certificate_to_pem, certificates_from_pem};
use meshwork_identity::{SpiffeId, TrustBundle};
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::CertificateDer;
use x509_parser::prelude::{FromDer, X509Certificate};

use super::csr::parse_csr;
use super::error::SignError;
use super::material::{
    build_tail, parse_cert, validate_config, CaConfig, CaLoadError, CaMaterial, CLOCK_SKEW_BACKDATE,
};
use super::signer::CaSigner;

/// The mesh certificate authority.
pub struct Ca {
    config: CaConfig,
    issuer: Issuer<'static, CaSigner>,
    signing_not_after: SystemTime,
    /// PEM certificates returned after the leaf: intermediates, then the root.
    tail: Vec<String>,
    roots: TrustBundle,
}

impl Ca {
    pub fn new(material: CaMaterial, config: CaConfig) -> Result<Self, CaLoadError> {
        validate_config(&config)?;
        let signing = parse_cert("ca-cert.pem", &material.signing_cert)?;
        let is_ca = signing
            .basic_constraints()
            .ok()
            .flatten()
            .is_some_and(|bc| bc.value.ca);
        if !is_ca {
            return Err(CaLoadError::Certificate {
                what: "ca-cert.pem".into(),
                reason: "not a CA certificate (basicConstraints CA:TRUE missing)".into(),
            });
        }
        let signer = CaSigner::new(material.signing_key).map_err(|source| CaLoadError::Key {
            what: "ca-key.pem".into(),
            source,
        })?;
        if signer.spki() != signing.tbs_certificate.subject_pki.raw {
            return Err(CaLoadError::KeyMismatch);
        }
        let signing_not_after = unix_to_system(signing.validity().not_after.timestamp());
        let tail = build_tail(&material.signing_cert, material.chain, &material.roots)?;
        let issuer = Issuer::from_ca_cert_der(&material.signing_cert, signer).map_err(|e| {
            CaLoadError::Certificate {
                what: "ca-cert.pem".into(),
                reason: e.to_string(),
            }
        })?;
        let ca = Ca {
            config,
            issuer,
            signing_not_after,
            tail,
            roots: material.roots,
        };
        ca.self_check()?;
        Ok(ca)
    }

    pub fn config(&self) -> &CaConfig {
        &self.config
    }

    pub fn trust_domain(&self) -> &str {
        &self.config.trust_domain
    }

    /// The roots every mesh workload must trust.
    pub fn trust_bundle(&self) -> &TrustBundle {
        &self.roots
    }

    pub(super) fn issuer(&self) -> &Issuer<'static, CaSigner> {
        &self.issuer
    }

    pub(super) fn signing_not_after(&self) -> SystemTime {
        self.signing_not_after
    }

    /// The PEM certificates between a leaf and the roots.
    pub(super) fn intermediates_pem(&self) -> &[String] {
        &self.tail[..self.tail.len() - 1]
    }

    /// Verifies the CSR, checks its identity is in the mesh's trust domain, asks `authorize`
    /// whether the caller may have it, and signs. Returns PEM certificates, leaf first, root
    /// last. `requested_ttl` of `None` means the default; longer than the max is shortened.
    pub fn sign(
        &self,
        csr_pem: &str,
        requested_ttl: Option<Duration>,
        authorize: impl FnOnce(&SpiffeId) -> Result<(), SignError>,
    ) -> Result<Vec<String>, SignError> {
        let csr = parse_csr(csr_pem)?;
        if csr.identity.trust_domain() != self.config.trust_domain {
            return Err(SignError::ForeignTrustDomain {
                identity: Box::new(csr.identity),
                expected: self.config.trust_domain.clone(),
            });
        }
        authorize(&csr.identity)?;
        let ttl = self.effective_ttl(requested_ttl);
        let leaf = self.issue(&csr.identity, &csr.public_key, ttl, SystemTime::now())?;
        tracing::info!(
            identity = %csr.identity,
            serial = %serial_hex(&leaf),
            ttl_secs = ttl.as_secs(),
            "issued workload certificate"
        );
        let mut chain = Vec::with_capacity(1 + self.tail.len());
        chain.push(certificate_to_pem(&leaf));
        chain.extend(self.tail.iter().cloned());
        Ok(chain)
    }

    fn effective_ttl(&self, requested: Option<Duration>) -> Duration {
        match requested {
            None => self.config.default_ttl,
            Some(ttl) if ttl.is_zero() => self.config.default_ttl,
            Some(ttl) if ttl > self.config.max_ttl => {
                tracing::debug!(
                    requested_secs = ttl.as_secs(),
                    max_secs = self.config.max_ttl.as_secs(),
                    "shortening requested certificate lifetime"
                );
                self.config.max_ttl
            }
            Some(ttl) => ttl,
        }
    }

    /// Signs a leaf for `identity` without any check (callers check first).
    fn issue(
        &self,
        identity: &SpiffeId,
        public_key: &impl PublicKeyData,
        ttl: Duration,
        now: SystemTime,
    ) -> Result<CertificateDer<'static>, SignError> {
        let signing = |e: rcgen::Error| SignError::Signing(e.to_string());
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = vec![SanType::URI(
            identity.to_string().try_into().map_err(signing)?,
        )];
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        params.not_before = (now - CLOCK_SKEW_BACKDATE).into();
        params.not_after = (now + ttl).min(self.signing_not_after).into();
        let cert = params
            .signed_by(public_key, &self.issuer)
            .map_err(signing)?;
        Ok(cert.der().clone())
    }

    /// Issues a probe certificate and verifies it like a mesh peer would.
    fn self_check(&self) -> Result<(), CaLoadError> {
        use rustls::client::danger::ServerCertVerifier;
        let failed = |e: &dyn std::fmt::Display| CaLoadError::SelfCheck(e.to_string());
        let probe = SpiffeId::new(
            &self.config.trust_domain,
            "meshwork-system",
            "ca-self-check",
        )
        .map_err(|e| failed(&e))?;
        let key =
            rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).map_err(|e| failed(&e))?;
        let leaf = self
            .issue(&probe, &key, Duration::from_secs(60), SystemTime::now())
            .map_err(|e| failed(&e))?;
        let intermediates: Vec<CertificateDer<'static>> = self.tail[..self.tail.len() - 1]
            .iter()
            .map(|pem| certificates_from_pem("chain", pem).map(|mut c| c.remove(0)))
            .collect::<Result<_, _>>()?;
        let verifier = meshwork_identity::tls::SpiffeServerVerifier::new(&self.roots, [probe])
            .map_err(|e| failed(&e))?;
        verifier
            .verify_server_cert(
                &leaf,
                &intermediates,
                &rustls_pki_types::ServerName::try_from("ca.self-check").map_err(|e| failed(&e))?,
                &[],
                rustls_pki_types::UnixTime::now(),
            )
            .map_err(|e| failed(&e))?;
        Ok(())
    }
}

impl std::fmt::Debug for Ca {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Ca")
            .field("config", &self.config)
            .field("chain_after_leaf", &self.tail.len())
            .field("roots", &self.roots)
            .finish_non_exhaustive()
    }
}

fn serial_hex(der: &CertificateDer<'_>) -> String {
    X509Certificate::from_der(der)
        .map(|(_, c)| c.raw_serial().iter().map(|b| format!("{b:02x}")).collect())
        .unwrap_or_default()
}

fn unix_to_system(unix: i64) -> SystemTime {
    if unix >= 0 {
        SystemTime::UNIX_EPOCH + Duration::from_secs(unix.unsigned_abs())
    } else {
        SystemTime::UNIX_EPOCH - Duration::from_secs(unix.unsigned_abs())
    }
}

/// 16 random bytes, positive as a DER INTEGER and without a leading zero byte.
pub(crate) fn random_serial() -> Result<[u8; 16], SignError> {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .map_err(|_| SignError::Signing("system randomness unavailable".into()))?;
    serial[0] = (serial[0] & 0x7f) | 0x01;
    Ok(serial)
}

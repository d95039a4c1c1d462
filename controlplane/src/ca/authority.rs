//! The mesh CA: signing material, validity policy, CSR signing.

use std::time::{Duration, SystemTime};

use meshwork_identity::pem::{
    certificate_to_pem, certificates_from_pem, private_key_from_pem, PemError,
};
use meshwork_identity::{SpiffeId, TrustBundle, TrustBundleError};
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, Issuer, KeyUsagePurpose,
    PublicKeyData, SanType, SerialNumber,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::csr::parse_csr;
use super::error::SignError;
use super::signer::{CaSigner, SignerError};

/// Validity starts this much before "now", to tolerate clock skew between nodes.
pub const CLOCK_SKEW_BACKDATE: Duration = Duration::from_secs(120);

/// Signing policy.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CaConfig {
    /// The only trust domain this CA signs for.
    pub trust_domain: String,
    /// Lifetime of a certificate when the request does not ask for one.
    pub default_ttl: Duration,
    /// Longer requested lifetimes are shortened to this.
    pub max_ttl: Duration,
}

impl CaConfig {
    /// 24 h by default, at most 90 days (Istio's defaults).
    pub fn new(trust_domain: impl Into<String>) -> Self {
        CaConfig {
            trust_domain: trust_domain.into(),
            default_ttl: Duration::from_secs(24 * 3600),
            max_ttl: Duration::from_secs(90 * 24 * 3600),
        }
    }
}

/// Why the CA cannot start with the given material.
#[derive(Debug, thiserror::Error)]
pub enum CaLoadError {
    #[error("CA: {path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
    #[error("CA: {0}")]
    Pem(#[from] PemError),
    #[error("CA: {what}: {source}")]
    Key {
        what: String,
        #[source]
        source: SignerError,
    },
    #[error("CA: {what}: {reason}")]
    Certificate { what: String, reason: String },
    #[error("CA: the signing key does not match the public key of the signing certificate")]
    KeyMismatch,
    #[error("CA: {0}")]
    Roots(#[from] TrustBundleError),
    #[error("CA: invalid trust domain {trust_domain:?}: {reason}")]
    TrustDomain {
        trust_domain: String,
        reason: String,
    },
    #[error("CA: generating the root: {0}")]
    Generate(#[source] rcgen::Error),
    #[error("CA: self-check failed, a certificate issued with this material does not verify: {0}")]
    SelfCheck(String),
    #[error("CA: default TTL {default:?} must be positive and not above the max TTL {max:?}")]
    Ttl { default: Duration, max: Duration },
}

/// The signing certificate and key, the chain from it towards the root, and the trusted roots.
pub struct CaMaterial {
    /// The certificate whose key signs leaves (the root itself, or an intermediate).
    pub signing_cert: CertificateDer<'static>,
    pub signing_key: PrivateKeyDer<'static>,
    /// From `signing_cert` (first) towards the root; the root may be included. Empty means
    /// `[signing_cert]`.
    pub chain: Vec<CertificateDer<'static>>,
    /// Every root workloads must trust (several during a root migration).
    pub roots: TrustBundle,
}

impl CaMaterial {
    /// From PEM documents, named in errors as Istio's `cacerts` files.
    pub fn from_pem(
        signing_cert_pem: &str,
        signing_key_pem: &str,
        chain_pem: Option<&str>,
        roots_pem: &str,
    ) -> Result<Self, CaLoadError> {
        let mut signing = certificates_from_pem("ca-cert.pem", signing_cert_pem)?;
        Ok(CaMaterial {
            signing_cert: signing.remove(0),
            signing_key: private_key_from_pem("ca-key.pem", signing_key_pem)?,
            chain: match chain_pem {
                Some(pem) => certificates_from_pem("cert-chain.pem", pem)?,
                None => Vec::new(),
            },
            roots: TrustBundle::from_pem("root-cert.pem", roots_pem)?,
        })
    }
}

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

fn validate_config(config: &CaConfig) -> Result<(), CaLoadError> {
    SpiffeId::new(&config.trust_domain, "ns", "sa").map_err(|e| CaLoadError::TrustDomain {
        trust_domain: config.trust_domain.clone(),
        reason: e.to_string(),
    })?;
    if config.default_ttl.is_zero() || config.default_ttl > config.max_ttl {
        return Err(CaLoadError::Ttl {
            default: config.default_ttl,
            max: config.max_ttl,
        });
    }
    Ok(())
}

/// What follows the leaf in answers: the chain from the signing certificate, completed with
/// the root that issued its last element when that root is not already included.
fn build_tail(
    signing_cert: &CertificateDer<'static>,
    chain: Vec<CertificateDer<'static>>,
    roots: &TrustBundle,
) -> Result<Vec<String>, CaLoadError> {
    let mut chain = if chain.is_empty() {
        vec![signing_cert.clone()]
    } else {
        chain
    };
    if chain[0] != *signing_cert {
        return Err(CaLoadError::Certificate {
            what: "cert-chain.pem".into(),
            reason: "must start with the signing certificate (ca-cert.pem)".into(),
        });
    }
    let last = chain.last().expect("non-empty chain").clone();
    if !roots.contains(&last) {
        let last_parsed = parse_cert("cert-chain.pem", &last)?;
        let issuer = last_parsed.issuer().as_raw();
        let mut root = roots.roots()[0].clone();
        for candidate in roots.roots() {
            if parse_cert("root-cert.pem", candidate)?.subject().as_raw() == issuer {
                root = candidate.clone();
                break;
            }
        }
        chain.push(root);
    }
    Ok(chain.iter().map(|c| certificate_to_pem(c)).collect())
}

fn parse_cert<'a>(
    what: &str,
    der: &'a CertificateDer<'_>,
) -> Result<X509Certificate<'a>, CaLoadError> {
    X509Certificate::from_der(der)
        .map(|(_, c)| c)
        .map_err(|e| CaLoadError::Certificate {
            what: what.to_string(),
            reason: e.to_string(),
        })
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

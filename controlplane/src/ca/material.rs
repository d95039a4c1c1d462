//! CA settings and signing material: policy, load errors, the certificates and key, and
//! the chain returned after each leaf.

use std::time::Duration;

use meshwork_identity::pem::{
    certificate_to_pem, certificates_from_pem, private_key_from_pem, PemError,
};
use meshwork_identity::{SpiffeId, TrustBundle, TrustBundleError};
use rustls_pki_types::{CertificateDer, PrivateKeyDer};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::signer::SignerError;

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

pub(super) fn validate_config(config: &CaConfig) -> Result<(), CaLoadError> {
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
/// the root that issued its last element when that root is not already included; the last
/// element holds every trusted root (the issuing one first).
pub(super) fn build_tail(
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
    // The last element carries every root, the issuing one first: as istiod answers, so
    // workloads trust all roots during a rotation (Istio's ztunnel reads it the same way).
    let issuing_root = chain.pop().expect("non-empty chain");
    let mut tail: Vec<String> = chain.iter().map(|c| certificate_to_pem(c)).collect();
    let mut bundle = certificate_to_pem(&issuing_root);
    for root in roots.roots().iter().filter(|r| **r != issuing_root) {
        bundle.push_str(&certificate_to_pem(root));
    }
    tail.push(bundle);
    Ok(tail)
}

pub(super) fn parse_cert<'a>(
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

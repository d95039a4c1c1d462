//! A workload's certificate: key, chain (leaf first) and the roots it is verified against.

use std::fmt;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use rustls::client::verify_server_cert_signed_by_trust_anchor;
use rustls::server::ParsedCertificate;
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, UnixTime};

use crate::bundle::{TrustBundle, TrustBundleError};
use crate::pem::{
    certificates_from_pem, certificates_to_pem, private_key_from_pem, private_key_to_pem, PemError,
};
use crate::spiffe::{SpiffeId, SpiffeIdError};
use crate::tls::crypto_provider;
use crate::x509::{leaf_spiffe_id, LeafError};

/// Why key, chain and roots do not make a usable workload certificate.
#[derive(Debug, thiserror::Error)]
pub enum CertificateError {
    #[error(transparent)]
    Pem(#[from] PemError),
    #[error("certificate chain is empty")]
    EmptyChain,
    #[error("leaf certificate: {0}")]
    Leaf(#[from] LeafError),
    #[error("leaf certificate: invalid SPIFFE identity: {0}")]
    Identity(#[from] SpiffeIdError),
    #[error("private key is unusable or does not match the leaf certificate: {0}")]
    Key(#[source] rustls::Error),
    #[error(
        "CA answer has a single certificate and no trust bundle was given: cannot tell the roots"
    )]
    NoRoot,
    #[error(transparent)]
    Roots(#[from] TrustBundleError),
    #[error("requested a certificate for {requested} but the CA issued one for {issued}")]
    IdentityMismatch {
        requested: Box<SpiffeId>,
        issued: Box<SpiffeId>,
    },
    #[error("certificate chain does not verify against the trust bundle: {0}")]
    Chain(#[source] rustls::Error),
    #[error("{path}: {source}")]
    Io {
        path: String,
        #[source]
        source: std::io::Error,
    },
}

/// A workload's key with its certificate chain and the mesh roots. Cheap to clone.
#[derive(Clone)]
pub struct WorkloadCertificate {
    inner: Arc<Inner>,
}

struct Inner {
    identity: SpiffeId,
    chain: Vec<CertificateDer<'static>>,
    key: PrivateKeyDer<'static>,
    roots: TrustBundle,
    not_before: SystemTime,
    not_after: SystemTime,
    serial: String,
    certified_key: Arc<CertifiedKey>,
}

impl WorkloadCertificate {
    /// Checks that the leaf (first of `chain`) carries a SPIFFE URI SAN and matches `key`.
    pub fn new(
        key: PrivateKeyDer<'static>,
        chain: Vec<CertificateDer<'static>>,
        roots: TrustBundle,
    ) -> Result<Self, CertificateError> {
        let leaf = chain.first().ok_or(CertificateError::EmptyChain)?;
        let info = leaf_spiffe_id(leaf)?;
        let identity: SpiffeId = info.uri.parse()?;
        let certified_key =
            CertifiedKey::from_der(chain.clone(), key.clone_key(), &crypto_provider())
                .map_err(CertificateError::Key)?;
        Ok(WorkloadCertificate {
            inner: Arc::new(Inner {
                identity,
                chain,
                key,
                roots,
                not_before: info.not_before,
                not_after: info.not_after,
                serial: info.serial,
                certified_key: Arc::new(certified_key),
            }),
        })
    }

    /// From PEM documents: the key, the chain (leaf first) and the roots.
    pub fn from_pem(
        key_pem: &str,
        chain_pem: &str,
        roots_pem: &str,
    ) -> Result<Self, CertificateError> {
        Self::new(
            private_key_from_pem("private key", key_pem)?,
            certificates_from_pem("certificate chain", chain_pem)?,
            TrustBundle::from_pem("root certificates", roots_pem)?,
        )
    }

    /// From an `IstioCertificateResponse.cert_chain` (PEM strings, leaf first, root last):
    /// the last entry becomes a trusted root (merged with `extra_roots`, e.g. the configured
    /// mesh bundle during a root migration) and the others the presented chain.
    /// A one-entry answer is accepted only with `extra_roots`.
    pub fn from_ca_response(
        key_pem: &str,
        cert_chain: &[String],
        extra_roots: Option<&TrustBundle>,
    ) -> Result<Self, CertificateError> {
        // As Istio's CA answers: leaf, intermediates, and last the roots — possibly several
        // concatenated in that last element during a root rotation.
        let mut parsed = Vec::with_capacity(cert_chain.len());
        for (i, pem) in cert_chain.iter().enumerate() {
            parsed.push(certificates_from_pem(&format!("cert_chain[{i}]"), pem)?);
        }
        let answered_roots = if parsed.len() >= 2 {
            parsed.pop()
        } else {
            None
        };
        let certs: Vec<_> = parsed.into_iter().flatten().collect();
        if certs.is_empty() {
            return Err(CertificateError::EmptyChain);
        }
        let roots = match (answered_roots, extra_roots) {
            (Some(roots), Some(extra)) => TrustBundle::new(roots)?.merged(extra),
            (Some(roots), None) => TrustBundle::new(roots)?,
            (None, Some(extra)) => extra.clone(),
            (None, None) => return Err(CertificateError::NoRoot),
        };
        Self::new(private_key_from_pem("private key", key_pem)?, certs, roots)
    }

    /// The SPIFFE identity in the leaf's URI SAN.
    pub fn identity(&self) -> &SpiffeId {
        &self.inner.identity
    }

    /// Leaf first, then intermediates (never the root).
    pub fn chain(&self) -> &[CertificateDer<'static>] {
        &self.inner.chain
    }

    pub fn private_key(&self) -> &PrivateKeyDer<'static> {
        &self.inner.key
    }

    pub fn roots(&self) -> &TrustBundle {
        &self.inner.roots
    }

    pub fn not_before(&self) -> SystemTime {
        self.inner.not_before
    }

    pub fn not_after(&self) -> SystemTime {
        self.inner.not_after
    }

    /// The leaf serial number, lowercase hex.
    pub fn serial(&self) -> &str {
        &self.inner.serial
    }

    /// Half-way through the validity period, as Istio's agents do.
    pub fn renew_at(&self) -> SystemTime {
        let lifetime = self
            .inner
            .not_after
            .duration_since(self.inner.not_before)
            .unwrap_or(Duration::ZERO);
        self.inner.not_before + lifetime / 2
    }

    pub fn should_renew(&self, now: SystemTime) -> bool {
        now >= self.renew_at()
    }

    pub fn is_expired(&self, now: SystemTime) -> bool {
        now >= self.inner.not_after
    }

    /// Verifies the chain against the roots at `now` as a peer would: signatures, validity
    /// periods, CA constraints and the serverAuth usage.
    pub fn verify(&self, now: SystemTime) -> Result<(), CertificateError> {
        let leaf =
            ParsedCertificate::try_from(&self.inner.chain[0]).map_err(CertificateError::Chain)?;
        let since_epoch = now
            .duration_since(SystemTime::UNIX_EPOCH)
            .unwrap_or_default();
        verify_server_cert_signed_by_trust_anchor(
            &leaf,
            &self.inner.roots.root_store(),
            &self.inner.chain[1..],
            UnixTime::since_unix_epoch(since_epoch),
            crypto_provider().signature_verification_algorithms.all,
        )
        .map_err(CertificateError::Chain)
    }

    /// The rustls signing form, shared by every TLS configuration presenting this cert.
    pub fn certified_key(&self) -> Arc<CertifiedKey> {
        self.inner.certified_key.clone()
    }

    pub fn chain_pem(&self) -> String {
        certificates_to_pem(&self.inner.chain)
    }

    pub fn key_pem(&self) -> String {
        private_key_to_pem(&self.inner.key)
    }

    pub fn roots_pem(&self) -> String {
        self.inner.roots.to_pem()
    }
}

impl PartialEq for WorkloadCertificate {
    fn eq(&self, other: &Self) -> bool {
        self.inner.chain == other.inner.chain
            && self.inner.key.secret_der() == other.inner.key.secret_der()
            && self.inner.roots == other.inner.roots
    }
}

impl fmt::Debug for WorkloadCertificate {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("WorkloadCertificate")
            .field("identity", &self.inner.identity.to_string())
            .field("serial", &self.inner.serial)
            .field("not_before", &self.inner.not_before)
            .field("not_after", &self.inner.not_after)
            .field("chain", &self.inner.chain.len())
            .field("roots", &self.inner.roots.len())
            .finish_non_exhaustive()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;

    fn id(text: &str) -> SpiffeId {
        text.parse().unwrap()
    }

    #[test]
    fn exposes_leaf_details_and_renews_at_half_life() {
        let ca = TestCa::new("cluster.local");
        let sleep = id("spiffe://cluster.local/ns/default/sa/sleep");
        let cert = ca.issue(&sleep, Duration::from_secs(3600));
        assert_eq!(cert.identity(), &sleep);
        assert_eq!(cert.chain().len(), 1);
        assert_eq!(cert.roots(), &ca.bundle());
        assert!(!cert.serial().is_empty());
        let lifetime = cert.not_after().duration_since(cert.not_before()).unwrap();
        assert_eq!(lifetime, Duration::from_secs(3600));
        let half = cert.not_before() + Duration::from_secs(1800);
        assert!(!cert.should_renew(half - Duration::from_secs(1)));
        assert!(cert.should_renew(half));
        assert!(!cert.is_expired(half));
        assert!(cert.is_expired(cert.not_after()));
    }

    #[test]
    fn pem_round_trip() {
        let ca = TestCa::new("cluster.local");
        let cert = ca.issue(
            &id("spiffe://cluster.local/ns/a/sa/b"),
            Duration::from_secs(60),
        );
        let back =
            WorkloadCertificate::from_pem(&cert.key_pem(), &cert.chain_pem(), &cert.roots_pem())
                .unwrap();
        assert_eq!(back, cert);
        assert_eq!(back.serial(), cert.serial());
    }

    #[test]
    fn from_ca_response_splits_root_and_merges_extra_roots() {
        let ca = TestCa::new("cluster.local");
        let other = TestCa::new("cluster.local");
        let cert = ca.issue(
            &id("spiffe://cluster.local/ns/a/sa/b"),
            Duration::from_secs(60),
        );
        let response = vec![cert.chain_pem(), ca.bundle().to_pem()];
        let got = WorkloadCertificate::from_ca_response(&cert.key_pem(), &response, None).unwrap();
        assert_eq!(got.chain(), cert.chain());
        assert_eq!(got.roots(), &ca.bundle());
        let got = WorkloadCertificate::from_ca_response(
            &cert.key_pem(),
            &response,
            Some(&other.bundle()),
        )
        .unwrap();
        assert_eq!(got.roots().len(), 2);
        let err = WorkloadCertificate::from_ca_response(&cert.key_pem(), &response[..1], None)
            .unwrap_err();
        assert!(matches!(err, CertificateError::NoRoot), "{err}");
    }

    #[test]
    fn rejects_a_key_that_does_not_match_the_leaf() {
        let ca = TestCa::new("cluster.local");
        let a = ca.issue(
            &id("spiffe://cluster.local/ns/a/sa/a"),
            Duration::from_secs(60),
        );
        let b = ca.issue(
            &id("spiffe://cluster.local/ns/a/sa/b"),
            Duration::from_secs(60),
        );
        let err =
            WorkloadCertificate::new(b.private_key().clone_key(), a.chain().to_vec(), ca.bundle())
                .unwrap_err();
        assert!(matches!(err, CertificateError::Key(_)), "{err}");
    }

    #[test]
    fn verify_checks_roots_and_validity() {
        let ca = TestCa::new("cluster.local");
        let other = TestCa::new("cluster.local");
        let ident = id("spiffe://cluster.local/ns/a/sa/b");
        let cert = ca.issue(&ident, Duration::from_secs(60));
        cert.verify(SystemTime::now()).unwrap();
        let err = cert
            .verify(cert.not_after() + Duration::from_secs(1))
            .unwrap_err();
        assert!(err.to_string().contains("expired"), "{err}");
        let foreign = WorkloadCertificate::new(
            cert.private_key().clone_key(),
            cert.chain().to_vec(),
            other.bundle(),
        )
        .unwrap();
        let err = foreign.verify(SystemTime::now()).unwrap_err();
        assert!(matches!(err, CertificateError::Chain(_)), "{err}");
    }

    #[test]
    fn rejects_a_leaf_without_spiffe_uri() {
        let ca = TestCa::new("cluster.local");
        let (key, leaf) = ca.issue_raw(vec![rcgen::SanType::DnsName(
            "example.com".try_into().unwrap(),
        )]);
        let err = WorkloadCertificate::new(key, vec![leaf], ca.bundle()).unwrap_err();
        assert!(
            matches!(err, CertificateError::Leaf(LeafError::NoUriSan)),
            "{err}"
        );
    }
}

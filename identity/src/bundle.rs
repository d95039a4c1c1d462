//! The mesh trust bundle: the root certificates that workload certificates must chain to.
//!
//! Several roots may be trusted at once (root rotation, or migration from/to Istio's root).

use std::fmt;
use std::sync::Arc;

use rustls::RootCertStore;
use rustls_pki_types::CertificateDer;

use crate::pem::{certificates_from_pem, certificates_to_pem, PemError};

/// Why a set of roots cannot be used as a trust bundle.
#[derive(Debug, thiserror::Error)]
pub enum TrustBundleError {
    #[error("trust bundle: no root certificate given")]
    Empty,
    #[error("trust bundle: root certificate #{index} is not a usable trust anchor: {source}")]
    InvalidRoot {
        index: usize,
        #[source]
        source: rustls::Error,
    },
    #[error(transparent)]
    Pem(#[from] PemError),
}

/// An immutable, cheaply clonable set of trusted root certificates.
#[derive(Clone)]
pub struct TrustBundle {
    roots: Arc<[CertificateDer<'static>]>,
    store: Arc<RootCertStore>,
}

impl TrustBundle {
    /// Builds a bundle from DER roots; duplicates are dropped, order is kept.
    pub fn new(
        roots: impl IntoIterator<Item = CertificateDer<'static>>,
    ) -> Result<Self, TrustBundleError> {
        let mut unique: Vec<CertificateDer<'static>> = Vec::new();
        for root in roots {
            if !unique.contains(&root) {
                unique.push(root);
            }
        }
        if unique.is_empty() {
            return Err(TrustBundleError::Empty);
        }
        let mut store = RootCertStore::empty();
        for (index, root) in unique.iter().enumerate() {
            store
                .add(root.clone())
                .map_err(|source| TrustBundleError::InvalidRoot { index, source })?;
        }
        Ok(TrustBundle {
            roots: unique.into(),
            store: Arc::new(store),
        })
    }

    /// Parses every `CERTIFICATE` block of a PEM document (e.g. Istio's `root-cert.pem`).
    pub fn from_pem(what: &str, pem: &str) -> Result<Self, TrustBundleError> {
        Self::new(certificates_from_pem(what, pem)?)
    }

    /// The union of two bundles (self's roots first).
    pub fn merged(&self, other: &TrustBundle) -> TrustBundle {
        if other.roots.iter().all(|r| self.contains(r)) {
            return self.clone();
        }
        Self::new(self.roots.iter().chain(other.roots.iter()).cloned())
            .expect("roots of two valid bundles stay valid")
    }

    pub fn contains(&self, root: &CertificateDer<'_>) -> bool {
        self.roots.iter().any(|r| r.as_ref() == root.as_ref())
    }

    /// The roots, in the order given.
    pub fn roots(&self) -> &[CertificateDer<'static>] {
        &self.roots
    }

    pub fn len(&self) -> usize {
        self.roots.len()
    }

    pub fn is_empty(&self) -> bool {
        self.roots.is_empty()
    }

    pub fn to_pem(&self) -> String {
        certificates_to_pem(&self.roots)
    }

    /// The roots as a rustls store, shared by every TLS configuration built from this bundle.
    pub fn root_store(&self) -> Arc<RootCertStore> {
        self.store.clone()
    }
}

impl PartialEq for TrustBundle {
    fn eq(&self, other: &Self) -> bool {
        self.roots == other.roots
    }
}

impl Eq for TrustBundle {}

impl fmt::Debug for TrustBundle {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("TrustBundle")
            .field("roots", &self.roots.len())
            .finish()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;

    #[test]
    fn merges_and_deduplicates() {
        let a = TestCa::new("cluster.local").bundle();
        let b = TestCa::new("cluster.local").bundle();
        let ab = a.merged(&b);
        assert_eq!(ab.len(), 2);
        assert_eq!(ab.merged(&a), ab);
        let pem = ab.to_pem();
        assert_eq!(TrustBundle::from_pem("roots", &pem).unwrap(), ab);
    }

    #[test]
    fn rejects_empty_and_garbage() {
        assert!(matches!(
            TrustBundle::new(Vec::new()),
            Err(TrustBundleError::Empty)
        ));
        let err = TrustBundle::new(vec![CertificateDer::from(vec![1u8, 2, 3])]).unwrap_err();
        assert!(
            matches!(err, TrustBundleError::InvalidRoot { index: 0, .. }),
            "{err}"
        );
    }
}

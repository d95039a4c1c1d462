//! The waypoint's own certificate, through the signers both proxies share
//! ([`meshwork_model::certs`]): loaded from disk ([`DirSigner`]), or requested from the mesh
//! CA (`IstioCertificateService/CreateCertificate`), and renewed half-way through its
//! lifetime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshwork_identity::tls::RotatingCert;
use meshwork_identity::{SpiffeId, WorkloadCertificate};
pub use meshwork_model::ca_client::{CaClient, CaClientError};
use meshwork_model::certs::{self, Backoff, CertSigner, DirSigner, Renewal, SignError};
use tracing::warn;

/// Why the waypoint's certificate could not be obtained.
pub type CaError = SignError;

/// Where the certificate comes from.
pub enum Source {
    /// `key.pem`, `cert-chain.pem`, `root-cert.pem` in a directory (or its
    /// `<namespace>/<service-account>/`, [`DirSigner`]'s layout); re-read on renewal.
    Dir(PathBuf),
    Ca(CaClient),
}

impl CertSigner for Source {
    fn sign<'a>(&'a self, identity: &'a SpiffeId) -> certs::SignFuture<'a> {
        Box::pin(self.fetch(identity))
    }
}

impl Source {
    pub async fn fetch(&self, identity: &SpiffeId) -> Result<WorkloadCertificate, CaError> {
        match self {
            Source::Dir(dir) => DirSigner { dir: dir.clone() }.sign(identity).await,
            Source::Ca(ca) => CertSigner::sign(ca, identity).await,
        }
    }

    /// The first certificate, retried with backoff (bounded by `attempts`).
    pub async fn initial(
        &self,
        identity: &SpiffeId,
        attempts: u32,
    ) -> Result<WorkloadCertificate, CaError> {
        let mut backoff = Backoff::new(Duration::from_millis(200), Duration::from_secs(10));
        let mut last = None;
        for _ in 0..attempts.max(1) {
            match self.fetch(identity).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    let delay = backoff.next_delay();
                    warn!("certificate for {identity}: {e}; retrying in {delay:?}");
                    last = Some(e);
                    tokio::time::sleep(delay).await;
                }
            }
        }
        Err(last.unwrap_or(CaError::Ca(CaClientError::Token)))
    }
}

/// First and last delay between failed renewals.
const RENEW_RETRY_MIN: Duration = Duration::from_secs(1);
const RENEW_RETRY_MAX: Duration = Duration::from_secs(30);

/// Renews `cert` half-way through its lifetime, for the life of the process, and at once
/// when the mesh roots the control plane publishes change (a root rotation: this waypoint
/// must trust the new roots before peers present certificates under them). A failed
/// renewal (CA down, token file unreadable) keeps the current certificate and is retried
/// with exponential backoff.
pub async fn keep_renewed(
    source: Arc<Source>,
    identity: SpiffeId,
    cert: Arc<RotatingCert>,
    mesh_roots: tokio::sync::watch::Receiver<String>,
) {
    let timing = Renewal {
        floor: Duration::from_secs(1),
        backoff: Backoff::new(RENEW_RETRY_MIN, RENEW_RETRY_MAX),
    };
    let current = Some(cert.current());
    certs::keep_renewed(
        &*source,
        &identity,
        current,
        timing,
        Some(mesh_roots),
        |c| cert.set(c),
    )
    .await;
}

/// The mesh roots the control plane publishes, as a watch that changes only when they do
/// (not at every config update).
pub fn mesh_roots(
    mut config: tokio::sync::watch::Receiver<Arc<meshwork_model::Snapshot>>,
) -> tokio::sync::watch::Receiver<String> {
    let roots_of =
        |s: &meshwork_model::Snapshot| s.mesh().map(|m| m.ca_roots_pem.clone()).unwrap_or_default();
    let (tx, rx) = tokio::sync::watch::channel(roots_of(&config.borrow()));
    tokio::spawn(async move {
        while config.changed().await.is_ok() {
            let roots = roots_of(&config.borrow_and_update());
            if roots.is_empty() {
                continue;
            }
            tx.send_if_modified(|old| {
                let changed = *old != roots;
                *old = roots;
                changed
            });
            if tx.is_closed() {
                return;
            }
        }
    });
    rx
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_identity::testing::TestCa;
    use meshwork_model::token::TokenSource;
    use std::time::SystemTime;

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_token_file_keeps_the_current_certificate() {
        let ca = TestCa::new("cluster.local");
        let identity = SpiffeId::new("cluster.local", "shop", "waypoint").unwrap();
        // Already due for renewal: every attempt fails on the token, before any request.
        let now = SystemTime::now();
        let first = ca.issue_with_validity(
            &identity,
            now - Duration::from_secs(3000),
            now + Duration::from_secs(600),
        );
        let serial = first.serial().to_string();
        let cert = RotatingCert::new(first);
        let client = CaClient::new(
            "http://127.0.0.1:9",
            TokenSource::File("/nonexistent/meshwork/token".into()),
            Duration::from_secs(3600),
            None,
        )
        .unwrap();
        let source = Arc::new(Source::Ca(client));
        let err = source.fetch(&identity).await.unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/meshwork/token"),
            "{err}"
        );
        let (_roots_tx, roots) = tokio::sync::watch::channel(String::new());
        let task = tokio::spawn(keep_renewed(source, identity, cert.clone(), roots));
        tokio::time::sleep(Duration::from_secs(120)).await;
        assert!(!task.is_finished(), "renewal keeps retrying");
        assert_eq!(cert.current().serial(), serial);
        task.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn new_mesh_roots_renew_the_certificate_at_once() {
        let ca = TestCa::new("cluster.local");
        let identity = SpiffeId::new("cluster.local", "shop", "waypoint").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let first = ca.issue(&identity, Duration::from_secs(3600));
        let serial = first.serial().to_string();
        first.save(dir.path()).unwrap();
        let cert = RotatingCert::new(first);
        let (roots_tx, roots) = tokio::sync::watch::channel("ROOT-A".to_string());
        let source = Arc::new(Source::Dir(dir.path().to_path_buf()));
        let task = tokio::spawn(keep_renewed(source, identity.clone(), cert.clone(), roots));
        // The next certificate waits on disk; half-life is 30 minutes away.
        ca.issue(&identity, Duration::from_secs(3600))
            .save(dir.path())
            .unwrap();
        tokio::time::sleep(Duration::from_secs(5)).await;
        assert_eq!(cert.current().serial(), serial, "nothing before half-life");
        roots_tx.send("ROOT-A\nROOT-B".to_string()).unwrap();
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_ne!(
            cert.current().serial(),
            serial,
            "renewed at once on new roots"
        );
        task.abort();
    }
}

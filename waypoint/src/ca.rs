//! The waypoint's own certificate: loaded from disk, or requested from the mesh CA
//! (`IstioCertificateService/CreateCertificate`) and renewed half-way through its lifetime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshwork_identity::tls::RotatingCert;
use meshwork_identity::{SpiffeId, WorkloadCertificate};
pub use meshwork_model::ca_client::{CaClient, CaClientError};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error(transparent)]
    Ca(#[from] CaClientError),
    #[error("loading certificate from {dir}: {reason}")]
    Load { dir: PathBuf, reason: String },
}

/// Where the certificate comes from.
pub enum Source {
    /// `key.pem`, `cert-chain.pem`, `root-cert.pem` in a directory; re-read on renewal.
    Dir(PathBuf),
    Ca(CaClient),
}

impl Source {
    pub async fn fetch(&self, identity: &SpiffeId) -> Result<WorkloadCertificate, CaError> {
        match self {
            Source::Dir(dir) => WorkloadCertificate::load(dir).map_err(|e| CaError::Load {
                dir: dir.clone(),
                reason: e.to_string(),
            }),
            Source::Ca(ca) => Ok(ca.sign(identity).await?),
        }
    }

    /// The first certificate, retried with backoff (bounded by `attempts`).
    pub async fn initial(
        &self,
        identity: &SpiffeId,
        attempts: u32,
    ) -> Result<WorkloadCertificate, CaError> {
        let mut delay = Duration::from_millis(200);
        let mut last = None;
        for _ in 0..attempts.max(1) {
            match self.fetch(identity).await {
                Ok(c) => return Ok(c),
                Err(e) => {
                    warn!("certificate for {identity}: {e}; retrying in {delay:?}");
                    last = Some(e);
                    tokio::time::sleep(delay).await;
                    delay = (delay * 2).min(Duration::from_secs(10));
                }
            }
        }
        Err(last.unwrap_or(CaError::Ca(CaClientError::Token)))
    }
}

/// Renews `cert` half-way through its lifetime, for the life of the process.
pub async fn keep_renewed(source: Arc<Source>, identity: SpiffeId, cert: Arc<RotatingCert>) {
    loop {
        let renew_at = cert.current().renew_at();
        let wait = renew_at
            .duration_since(SystemTime::now())
            .unwrap_or(Duration::ZERO)
            .max(Duration::from_secs(1));
        tokio::time::sleep(wait).await;
        match source.fetch(&identity).await {
            Ok(c) => {
                info!(serial = c.serial(), "waypoint certificate renewed");
                cert.set(c);
            }
            Err(e) => warn!("renewing the waypoint certificate: {e}"),
        }
    }
}

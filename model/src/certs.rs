//! Where a proxy's certificates come from, for both proxies: one signer trait
//! ([`CertSigner`]) with its two sources — the mesh CA ([`CaClient`], next door) and a
//! directory of provisioned files ([`DirSigner`]) — and the renewal timing they share:
//! renew at half-life ([`renew_in`]), retry failures with exponential [`Backoff`] — and the
//! one renewal loop both proxies run ([`keep_renewed`]).

use std::future::Future;
use std::path::{Path, PathBuf};
use std::pin::Pin;
use std::time::{Duration, SystemTime};

use meshwork_identity::{SpiffeId, WorkloadCertificate};

use crate::ca_client::{CaClient, CaClientError};

/// Why a certificate could not be obtained.
#[derive(Debug, thiserror::Error)]
pub enum SignError {
    #[error(transparent)]
    Ca(#[from] CaClientError),
    #[error("{0}")]
    Other(String),
}

pub type SignFuture<'a> =
    Pin<Box<dyn Future<Output = Result<WorkloadCertificate, SignError>> + Send + 'a>>;

/// Issues a certificate for an identity (the mesh CA in production, a directory of
/// provisioned files, a test CA in tests).
pub trait CertSigner: Send + Sync + 'static {
    fn sign<'a>(&'a self, identity: &'a SpiffeId) -> SignFuture<'a>;
}

/// The mesh CA over gRPC.
impl CertSigner for CaClient {
    fn sign<'a>(&'a self, identity: &'a SpiffeId) -> SignFuture<'a> {
        Box::pin(async move { Ok(CaClient::sign(self, identity).await?) })
    }
}

/// Certificates provisioned on disk, as `WorkloadCertificate::save` writes them:
/// `key.pem`, `cert-chain.pem` and `root-cert.pem` in `<dir>/<namespace>/<service-account>/`
/// for each identity; a proxy with a single identity (the waypoint) may have them in
/// `<dir>` itself. Re-read on every renewal, so replacing the files rotates them.
pub struct DirSigner {
    pub dir: PathBuf,
}

impl DirSigner {
    /// The per-identity directory of `identity`.
    pub fn path_for(&self, identity: &SpiffeId) -> PathBuf {
        self.dir
            .join(identity.namespace())
            .join(identity.service_account())
    }

    /// Where `identity`'s files are: its own directory, else `dir` itself when that holds
    /// a certificate directly.
    fn find(&self, identity: &SpiffeId) -> PathBuf {
        let own = self.path_for(identity);
        if !own.exists() && self.dir.join("cert-chain.pem").exists() {
            return self.dir.clone();
        }
        own
    }
}

impl CertSigner for DirSigner {
    fn sign<'a>(&'a self, identity: &'a SpiffeId) -> SignFuture<'a> {
        let path = self.find(identity);
        Box::pin(async move { load(&path, identity) })
    }
}

fn load(path: &Path, identity: &SpiffeId) -> Result<WorkloadCertificate, SignError> {
    let cert = WorkloadCertificate::load(path).map_err(|e| {
        SignError::Other(format!(
            "loading certificate of {identity} from {}: {e}",
            path.display()
        ))
    })?;
    if cert.identity() != identity {
        return Err(SignError::Other(format!(
            "{} holds a certificate for {}, not {identity}",
            path.display(),
            cert.identity()
        )));
    }
    Ok(cert)
}

/// How long until `cert` is due for renewal (its half-life), at least `floor`.
pub fn renew_in(cert: &WorkloadCertificate, floor: Duration) -> Duration {
    cert.renew_at()
        .duration_since(SystemTime::now())
        .unwrap_or(Duration::ZERO)
        .max(floor)
}

/// Exponential back-off between failed certificate requests: doubles from `min` up to
/// `max`, back to `min` after a success.
#[derive(Debug, Clone)]
pub struct Backoff {
    min: Duration,
    max: Duration,
    next: Duration,
}

impl Backoff {
    pub fn new(min: Duration, max: Duration) -> Self {
        Backoff {
            min,
            max,
            next: min,
        }
    }

    /// The delay before the next retry; the one after is twice as long (up to `max`).
    pub fn next_delay(&mut self) -> Duration {
        let d = self.next;
        self.next = (self.next * 2).min(self.max);
        d
    }

    /// Waits out [`Backoff::next_delay`].
    pub async fn wait(&mut self) {
        tokio::time::sleep(self.next_delay()).await;
    }

    pub fn reset(&mut self) {
        self.next = self.min;
    }
}

/// How a proxy keeps one identity's certificate: the timing of [`keep_renewed`].
#[derive(Debug, Clone)]
pub struct Renewal {
    /// The shortest wait before a renewal (a certificate already past half-life).
    pub floor: Duration,
    /// Retries of failed requests.
    pub backoff: Backoff,
}

/// Keeps `identity`'s certificate for as long as the future runs: requests one at once when
/// there is no `current`, else at the current one's half-life (or at once when `renew_now`
/// changes: a root rotation), hands each new certificate to `install`, and retries a failed
/// or mismatched answer with backoff while the current certificate keeps serving. The one
/// renewal loop of both proxies.
pub async fn keep_renewed<S: CertSigner + ?Sized>(
    signer: &S,
    identity: &SpiffeId,
    mut current: Option<WorkloadCertificate>,
    mut timing: Renewal,
    mut renew_now: Option<tokio::sync::watch::Receiver<String>>,
    mut install: impl FnMut(WorkloadCertificate),
) {
    if let Some(r) = renew_now.as_mut() {
        r.mark_unchanged();
    }
    loop {
        if let Some(cert) = &current {
            let wait = renew_in(cert, timing.floor);
            let roots_changed = async {
                match renew_now.as_mut() {
                    Some(r) => r.changed().await.is_ok(),
                    None => std::future::pending().await,
                }
            };
            tokio::select! {
                _ = tokio::time::sleep(wait) => {}
                open = roots_changed => {
                    if !open {
                        renew_now = None;
                        continue;
                    }
                    tracing::info!(%identity, "mesh roots changed: renewing the certificate now");
                }
            }
        }
        match signer.sign(identity).await {
            Ok(cert) if cert.identity() == identity => {
                timing.backoff.reset();
                tracing::info!(%identity, serial = cert.serial(), renew_in = ?renew_in(&cert, timing.floor), "certificate installed");
                install(cert.clone());
                current = Some(cert);
            }
            Ok(cert) => {
                tracing::warn!(%identity, issued = %cert.identity(), "the CA issued a certificate for another identity; keeping the current one");
                timing.backoff.wait().await;
            }
            Err(e) => {
                let retry_in = timing.backoff.next_delay();
                let serving = current
                    .as_ref()
                    .is_some_and(|c| !c.is_expired(SystemTime::now()));
                tracing::warn!(%identity, error = %e, ?retry_in, serving, "certificate request failed");
                tokio::time::sleep(retry_in).await;
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn backoff_doubles_to_its_bound_and_resets() {
        let mut b = Backoff::new(Duration::from_millis(200), Duration::from_secs(1));
        let got: Vec<_> = (0..5).map(|_| b.next_delay().as_millis()).collect();
        assert_eq!(got, [200, 400, 800, 1000, 1000]);
        b.reset();
        assert_eq!(b.next_delay(), Duration::from_millis(200));
    }

    #[tokio::test]
    async fn dir_signer_reads_the_identity_directory_or_a_single_identity_dir() {
        let ca = meshwork_identity::testing::TestCa::new("cluster.local");
        let a = SpiffeId::new("cluster.local", "shop", "a").unwrap();
        let b = SpiffeId::new("cluster.local", "shop", "b").unwrap();
        let dir = tempfile::tempdir().unwrap();
        let signer = DirSigner {
            dir: dir.path().to_path_buf(),
        };
        assert!(signer.sign(&a).await.is_err(), "nothing provisioned yet");
        let per_identity = signer.path_for(&a);
        ca.issue(&a, Duration::from_secs(3600))
            .save(&per_identity)
            .unwrap();
        assert_eq!(signer.sign(&a).await.unwrap().identity(), &a);
        // A single identity's files in the directory itself.
        let single = tempfile::tempdir().unwrap();
        ca.issue(&b, Duration::from_secs(3600))
            .save(single.path())
            .unwrap();
        let signer = DirSigner {
            dir: single.path().to_path_buf(),
        };
        assert_eq!(signer.sign(&b).await.unwrap().identity(), &b);
        let err = signer.sign(&a).await.unwrap_err().to_string();
        assert!(err.contains("holds a certificate for"), "{err}");
    }
}

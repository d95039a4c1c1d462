//! The waypoint's own certificate: loaded from disk, or requested from the mesh CA
//! (`IstioCertificateService/CreateCertificate`) and renewed half-way through its lifetime.

use std::path::PathBuf;
use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshwork_identity::tls::RotatingCert;
use meshwork_identity::{CertRequest, SpiffeId, TrustBundle, WorkloadCertificate};
use meshwork_model::pb::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use meshwork_model::pb::istio_ca::IstioCertificateRequest;
use prost_types::{value::Kind, Struct, Value};
use tracing::{info, warn};

#[derive(Debug, thiserror::Error)]
pub enum CaError {
    #[error("invalid CA address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("CSR for {identity}: {reason}")]
    Csr { identity: String, reason: String },
    #[error("the token is not a valid header value")]
    Token,
    #[error("CA refused to sign {identity}: {status}")]
    Rpc {
        identity: String,
        status: Box<tonic::Status>,
    },
    #[error("CA answer for {identity} is unusable: {reason}")]
    Answer { identity: String, reason: String },
    #[error("loading certificate from {dir}: {reason}")]
    Load { dir: PathBuf, reason: String },
}

/// Where the certificate comes from.
pub enum Source {
    /// `key.pem`, `cert-chain.pem`, `root-cert.pem` in a directory; re-read on renewal.
    Dir(PathBuf),
    Ca(CaClient),
}

pub struct CaClient {
    channel: tonic::transport::Channel,
    token: String,
    ttl: Duration,
    extra_roots: Option<TrustBundle>,
}

impl CaClient {
    pub fn new(
        address: &str,
        token: &str,
        ttl: Duration,
        extra_roots: Option<TrustBundle>,
    ) -> Result<Self, CaError> {
        let channel = tonic::transport::Endpoint::from_shared(address.to_string())
            .map_err(|e| CaError::Address {
                address: address.to_string(),
                reason: e.to_string(),
            })?
            .connect_timeout(Duration::from_secs(5))
            .timeout(Duration::from_secs(15))
            .connect_lazy();
        Ok(CaClient {
            channel,
            token: token.to_string(),
            ttl,
            extra_roots,
        })
    }

    pub async fn sign(&self, identity: &SpiffeId) -> Result<WorkloadCertificate, CaError> {
        let csr = CertRequest::generate(identity).map_err(|e| CaError::Csr {
            identity: identity.to_string(),
            reason: e.to_string(),
        })?;
        let metadata = Struct {
            fields: [(
                "ImpersonatedIdentity".to_string(),
                Value {
                    kind: Some(Kind::StringValue(identity.to_string())),
                },
            )]
            .into_iter()
            .collect(),
        };
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr: csr.csr_pem().to_string(),
            validity_duration: self.ttl.as_secs() as i64,
            metadata: Some(metadata),
        });
        if !self.token.is_empty() {
            let bearer = format!("Bearer {}", self.token)
                .parse()
                .map_err(|_| CaError::Token)?;
            req.metadata_mut().insert("authorization", bearer);
        }
        let resp = IstioCertificateServiceClient::new(self.channel.clone())
            .create_certificate(req)
            .await
            .map_err(|status| CaError::Rpc {
                identity: identity.to_string(),
                status: Box::new(status),
            })?;
        csr.into_certificate(&resp.into_inner().cert_chain, self.extra_roots.as_ref())
            .map_err(|e| CaError::Answer {
                identity: identity.to_string(),
                reason: e.to_string(),
            })
    }
}

impl Source {
    pub async fn fetch(&self, identity: &SpiffeId) -> Result<WorkloadCertificate, CaError> {
        match self {
            Source::Dir(dir) => WorkloadCertificate::load(dir).map_err(|e| CaError::Load {
                dir: dir.clone(),
                reason: e.to_string(),
            }),
            Source::Ca(ca) => ca.sign(identity).await,
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
        Err(last.unwrap_or(CaError::Token))
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

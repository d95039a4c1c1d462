//! The client side of the mesh CA (`istio.v1.auth.IstioCertificateService`), shared by
//! the proxies: generate a key and CSR for a workload identity, ask the CA with the node's
//! bearer token (impersonating the workload, as Istio's ztunnel does), and check that the
//! answer is a chain for that identity. The token is taken from its [`TokenSource`] for
//! every request, so a rotated token file is picked up at the next CSR.

use std::time::Duration;

use meshwork_identity::{CertRequest, SpiffeId, TrustBundle, WorkloadCertificate};
use prost_types::{value::Kind, Struct, Value};

use crate::endpoint::ControlPlane;
use crate::pb::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use crate::pb::istio_ca::IstioCertificateRequest;
use crate::token::{TokenError, TokenSource};

/// Metadata key naming the identity a node agent requests on a workload's behalf.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

#[derive(Debug, thiserror::Error)]
pub enum CaClientError {
    #[error("invalid CA address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error("generating a CSR for {identity}: {reason}")]
    Csr { identity: String, reason: String },
    #[error("the node token is not a valid header value")]
    Token,
    #[error("no token for the CA request for {identity}: {source}")]
    TokenUnavailable {
        identity: String,
        source: TokenError,
    },
    #[error("CA refused to sign {identity}: {status}")]
    Rpc {
        identity: String,
        status: Box<tonic::Status>,
    },
    #[error("CA answer for {identity} is unusable: {reason}")]
    Answer { identity: String, reason: String },
}

pub struct CaClient {
    endpoint: ControlPlane,
    channel: tonic::transport::Channel,
    token: TokenSource,
    ttl: Duration,
    extra_roots: Option<TrustBundle>,
}

impl CaClient {
    /// `endpoint` like `https://cp:15012` with the mesh root (or `http://127.0.0.1:15010`
    /// on the same host; see [`crate::endpoint`]); connects lazily. `extra_roots` are
    /// trusted besides the roots the CA returns (root migration). `token` is read anew for
    /// each request.
    pub fn new(
        endpoint: impl Into<ControlPlane>,
        token: impl Into<TokenSource>,
        ttl: Duration,
        extra_roots: Option<TrustBundle>,
    ) -> Result<Self, CaClientError> {
        let endpoint: ControlPlane = endpoint.into();
        let channel = endpoint
            .connect_lazy(|e| {
                e.connect_timeout(Duration::from_secs(5))
                    .timeout(Duration::from_secs(15))
            })
            .map_err(|e| CaClientError::Address {
                address: endpoint.to_string(),
                reason: e.to_string(),
            })?;
        Ok(CaClient {
            endpoint,
            channel,
            token: token.into(),
            ttl,
            extra_roots,
        })
    }

    /// A fresh certificate for `identity`.
    pub async fn sign(&self, identity: &SpiffeId) -> Result<WorkloadCertificate, CaClientError> {
        let token = self
            .token
            .current()
            .map_err(|source| CaClientError::TokenUnavailable {
                identity: identity.to_string(),
                source,
            })?;
        let csr = CertRequest::generate(identity).map_err(|e| CaClientError::Csr {
            identity: identity.to_string(),
            reason: e.to_string(),
        })?;
        let metadata = Struct {
            fields: [(
                IMPERSONATED_IDENTITY.to_string(),
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
        if !token.is_empty() {
            let bearer = format!("Bearer {token}")
                .parse()
                .map_err(|_| CaClientError::Token)?;
            req.metadata_mut().insert("authorization", bearer);
        }
        let resp = IstioCertificateServiceClient::new(self.channel.clone())
            .create_certificate(req)
            .await
            .map_err(|status| CaClientError::Rpc {
                identity: identity.to_string(),
                status: Box::new(status),
            })?;
        tracing::debug!(endpoint = %self.endpoint, %identity, "CA signed certificate");
        csr.into_certificate(&resp.into_inner().cert_chain, self.extra_roots.as_ref())
            .map_err(|e| CaClientError::Answer {
                identity: identity.to_string(),
                reason: e.to_string(),
            })
    }
}

#[cfg(test)]
mod tests;

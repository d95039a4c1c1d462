//! `istio.v1.auth.IstioCertificateService`: the CA over gRPC, as Istio's ztunnel calls istiod.

use std::sync::Arc;
use std::time::Duration;

use meshwork_identity::SpiffeId;
use meshwork_model::pb::istio_ca::istio_certificate_service_server::{
    IstioCertificateService, IstioCertificateServiceServer,
};
use meshwork_model::pb::istio_ca::{IstioCertificateRequest, IstioCertificateResponse};
use tonic::{Request, Response, Status};

use super::authn::{self, Caller, NodeAuthenticator};
use super::directory::{authorize_node, WorkloadDirectory};
use super::error::SignError;
use super::handle::CaHandle;

/// Metadata key under which a node agent names the workload identity it requests for.
pub const IMPERSONATED_IDENTITY: &str = "ImpersonatedIdentity";

/// The gRPC service to add to the control plane's tonic router.
/// `nodes` authenticates the caller's bearer token: the CA's node tokens in file mode,
/// TokenReview in Kubernetes.
pub fn service(
    ca: Arc<CaHandle>,
    nodes: Arc<dyn NodeAuthenticator>,
    directory: Arc<dyn WorkloadDirectory>,
) -> IstioCertificateServiceServer<CaService> {
    IstioCertificateServiceServer::new(CaService {
        ca,
        nodes,
        directory,
    })
}

/// Authenticates the node by its bearer token, then signs CSRs for identities of workloads
/// running on that node.
pub struct CaService {
    ca: Arc<CaHandle>,
    nodes: Arc<dyn NodeAuthenticator>,
    directory: Arc<dyn WorkloadDirectory>,
}

impl CaService {
    /// Signs for an authenticated caller: a node gets its workloads' identities, a
    /// service account its own.
    fn create(
        &self,
        caller: &Caller,
        body: IstioCertificateRequest,
    ) -> Result<Vec<String>, SignError> {
        let impersonated = impersonated_identity(&body)?;
        let ttl = (body.validity_duration > 0)
            .then(|| Duration::from_secs(body.validity_duration.unsigned_abs()));
        self.ca
            .current()
            .sign(&body.csr, ttl, |requested| {
                if let Some(impersonated) = impersonated {
                    if &impersonated != requested {
                        return Err(SignError::ImpersonationMismatch {
                            impersonated: Box::new(impersonated),
                            requested: Box::new(requested.clone()),
                        });
                    }
                }
                match caller {
                    Caller::Node(node) => authorize_node(self.directory.as_ref(), node, requested),
                    Caller::ServiceAccount { namespace, name }
                        if requested.namespace() == namespace
                            && requested.service_account() == name =>
                    {
                        Ok(())
                    }
                    Caller::ServiceAccount { namespace, name } => Err(SignError::NotOwnIdentity {
                        namespace: namespace.clone(),
                        name: name.clone(),
                        identity: Box::new(requested.clone()),
                    }),
                }
            })
            .inspect(|_| tracing::debug!(?caller, "certificate request granted"))
            .inspect_err(|e| tracing::warn!(?caller, error = %e, "certificate request refused"))
    }
}

#[tonic::async_trait]
impl IstioCertificateService for CaService {
    async fn create_certificate(
        &self,
        request: Request<IstioCertificateRequest>,
    ) -> Result<Response<IstioCertificateResponse>, Status> {
        let token = bearer_token(request.metadata()).map_err(|e| to_status(&e))?;
        let caller = self.nodes.authenticate_caller(token).await.map_err(|e| {
            tracing::warn!(error = %e, "certificate request from an unauthenticated caller");
            authn::to_status(&e)
        })?;
        match self.create(&caller, request.into_inner()) {
            Ok(cert_chain) => Ok(Response::new(IstioCertificateResponse { cert_chain })),
            Err(e) => Err(to_status(&e)),
        }
    }
}

/// The gRPC status for a refusal; the message is the error's text.
pub fn to_status(error: &SignError) -> Status {
    let message = error.to_string();
    match error {
        SignError::MissingToken | SignError::InvalidToken => Status::unauthenticated(message),
        SignError::ForeignTrustDomain { .. }
        | SignError::ImpersonationMismatch { .. }
        | SignError::NotAllowedForNode { .. }
        | SignError::NotOwnIdentity { .. } => Status::permission_denied(message),
        SignError::MalformedCsr(_)
        | SignError::BadSignature
        | SignError::WeakKey(_)
        | SignError::NoUriSan
        | SignError::ManyUriSans(_)
        | SignError::InvalidIdentity { .. }
        | SignError::InvalidImpersonatedIdentity { .. } => Status::invalid_argument(message),
        SignError::Signing(_) => Status::internal(message),
    }
}

fn bearer_token(metadata: &tonic::metadata::MetadataMap) -> Result<&str, SignError> {
    let value = metadata
        .get("authorization")
        .ok_or(SignError::MissingToken)?
        .to_str()
        .map_err(|_| SignError::InvalidToken)?;
    let (scheme, token) = value.split_once(' ').ok_or(SignError::MissingToken)?;
    if !scheme.eq_ignore_ascii_case("bearer") || token.trim().is_empty() {
        return Err(SignError::MissingToken);
    }
    Ok(token.trim())
}

fn impersonated_identity(body: &IstioCertificateRequest) -> Result<Option<SpiffeId>, SignError> {
    use prost_types::value::Kind;
    let Some(value) = body
        .metadata
        .as_ref()
        .and_then(|m| m.fields.get(IMPERSONATED_IDENTITY))
    else {
        return Ok(None);
    };
    let text = match &value.kind {
        Some(Kind::StringValue(s)) => s.clone(),
        other => {
            return Err(SignError::InvalidImpersonatedIdentity {
                value: format!("{other:?}"),
                reason: "expected a string".into(),
            })
        }
    };
    text.parse()
        .map(Some)
        .map_err(|e| SignError::InvalidImpersonatedIdentity {
            value: text.clone(),
            reason: format!("{e}"),
        })
}

//! Who is asking: a bearer token proves a node. File mode uses the CA's HMAC node tokens
//! ([`NodeTokens`]); Kubernetes mode reviews projected service-account tokens
//! (`source::kube::TokenReviewAuthenticator`). The CA and the config stream take either.
//!
//! The CA asks [`NodeAuthenticator::authenticate_caller`], which may also answer with a
//! single service account ([`Caller::ServiceAccount`]): in Kubernetes, a pod that is not a
//! ztunnel (a waypoint) proves its own service account with its projected token, and may
//! obtain that identity only.

use std::future::Future;
use std::pin::Pin;

use thiserror::Error;

use super::tokens::{NodeName, NodeTokens};

/// Why a node token is refused.
#[derive(Debug, Error, PartialEq, Eq)]
pub enum NodeAuthError {
    #[error("node token refused: {0}")]
    Unauthenticated(String),
    #[error("node token not allowed: {0}")]
    PermissionDenied(String),
    #[error("cannot verify the node token now: {0}")]
    Unavailable(String),
}

/// Who a token proves.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Caller {
    /// A node agent: may obtain the identities of the workloads on its node.
    Node(NodeName),
    /// One workload: may obtain `spiffe://<td>/ns/<namespace>/sa/<name>` only.
    ServiceAccount { namespace: String, name: String },
}

/// Turns a bearer token into the node it proves.
pub trait NodeAuthenticator: Send + Sync {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<NodeName, NodeAuthError>> + Send + 'a>>;

    /// The caller a token proves, for the CA. By default every caller is a node.
    fn authenticate_caller<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Caller, NodeAuthError>> + Send + 'a>> {
        let node = self.authenticate(token);
        Box::pin(async move { node.await.map(Caller::Node) })
    }
}

/// File mode: the HMAC node tokens.
impl NodeAuthenticator for NodeTokens {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<NodeName, NodeAuthError>> + Send + 'a>> {
        let r = NodeTokens::authenticate(self, token)
            .map_err(|e| NodeAuthError::Unauthenticated(e.to_string()));
        Box::pin(std::future::ready(r))
    }
}

/// The gRPC status for a refused node token.
pub fn to_status(e: &NodeAuthError) -> tonic::Status {
    match e {
        NodeAuthError::Unauthenticated(_) => tonic::Status::unauthenticated(e.to_string()),
        NodeAuthError::PermissionDenied(_) => tonic::Status::permission_denied(e.to_string()),
        NodeAuthError::Unavailable(_) => tonic::Status::unavailable(e.to_string()),
    }
}

//! CA authentication in Kubernetes: a ztunnel proves its node with its projected
//! service-account token (audience e.g. `istio-ca`).
//!
//! [`TokenReviewAuthenticator::authenticate`]:
//! 1. `POST /apis/authentication.k8s.io/v1/tokenreviews` with the token and audience; the
//!    token must be authenticated, for that audience;
//! 2. the user must be one of the allowed service accounts (the ztunnel's: any other pod's
//!    token would otherwise let it obtain its node's identities);
//! 3. the token must be bound to a pod (`authentication.kubernetes.io/pod-name` and
//!    `pod-uid` in the user's extra), which `GET /api/v1/namespaces/<ns>/pods/<name>`
//!    finds with the same uid (a deleted-and-recreated pod does not count);
//! 4. the node is that pod's `spec.nodeName` (and, when the API server put
//!    `authentication.kubernetes.io/node-name` in the extra, it must agree).
//!
//! The CA then signs only identities of workloads on that node (`WorkloadDirectory`).

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use ::kube::api::{Api, PostParams};
use ::kube::Client;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use tracing::debug;

use crate::ca::{NodeAuthError, NodeAuthenticator, NodeName};

const EXTRA_POD_NAME: &str = "authentication.kubernetes.io/pod-name";
const EXTRA_POD_UID: &str = "authentication.kubernetes.io/pod-uid";
const EXTRA_NODE_NAME: &str = "authentication.kubernetes.io/node-name";
const SA_PREFIX: &str = "system:serviceaccount:";

/// Kubernetes mode: TokenReview + pod → node.
#[derive(Clone)]
pub struct TokenReviewAuthenticator {
    client: Client,
    audience: String,
    /// `(namespace, service account)` whose tokens prove a node.
    allowed: Vec<(String, String)>,
}

impl TokenReviewAuthenticator {
    pub fn new(
        client: Client,
        audience: impl Into<String>,
        allowed: impl IntoIterator<Item = (String, String)>,
    ) -> Self {
        TokenReviewAuthenticator {
            client,
            audience: audience.into(),
            allowed: allowed.into_iter().collect(),
        }
    }

    /// See the module documentation.
    pub async fn review(&self, token: &str) -> Result<NodeName, NodeAuthError> {
        if token.is_empty() {
            return Err(NodeAuthError::Unauthenticated("empty token".into()));
        }
        let review = TokenReview {
            spec: TokenReviewSpec {
                token: Some(token.to_string()),
                audiences: Some(vec![self.audience.clone()]),
            },
            ..Default::default()
        };
        let reviews: Api<TokenReview> = Api::all(self.client.clone());
        let answer = reviews
            .create(&PostParams::default(), &review)
            .await
            .map_err(|e| NodeAuthError::Unavailable(format!("TokenReview: {e}")))?;
        let status = answer.status.unwrap_or_default();
        if status.authenticated != Some(true) {
            let why = status.error.unwrap_or_else(|| "not authenticated".into());
            return Err(NodeAuthError::Unauthenticated(why));
        }
        if !status
            .audiences
            .as_ref()
            .is_some_and(|a| a.contains(&self.audience))
        {
            return Err(NodeAuthError::Unauthenticated(format!(
                "token is not for audience {:?}",
                self.audience
            )));
        }
        let user = status.user.unwrap_or_default();
        let username = user.username.unwrap_or_default();
        let (ns, sa) = username
            .strip_prefix(SA_PREFIX)
            .and_then(|s| s.split_once(':'))
            .ok_or_else(|| {
                NodeAuthError::PermissionDenied(format!("{username:?} is not a service account"))
            })?;
        if !self.allowed.iter().any(|(a, b)| a == ns && b == sa) {
            return Err(NodeAuthError::PermissionDenied(format!(
                "service account {ns}/{sa} may not act for a node"
            )));
        }
        let extra = user.extra.unwrap_or_default();
        let pod_name = single(&extra, EXTRA_POD_NAME).ok_or_else(|| {
            NodeAuthError::PermissionDenied(format!(
                "token of {ns}/{sa} is not bound to a pod (use a projected token)"
            ))
        })?;
        let pod_uid = single(&extra, EXTRA_POD_UID);
        let pods: Api<Pod> = Api::namespaced(self.client.clone(), ns);
        let pod = pods
            .get_opt(pod_name)
            .await
            .map_err(|e| NodeAuthError::Unavailable(format!("pod {ns}/{pod_name}: {e}")))?
            .ok_or_else(|| {
                NodeAuthError::Unauthenticated(format!("pod {ns}/{pod_name} no longer exists"))
            })?;
        if pod_uid.is_some() && pod.metadata.uid.as_deref() != pod_uid {
            return Err(NodeAuthError::Unauthenticated(format!(
                "pod {ns}/{pod_name} was replaced (uid differs from the token's)"
            )));
        }
        let node = pod
            .spec
            .and_then(|s| s.node_name)
            .filter(|n| !n.is_empty())
            .ok_or_else(|| {
                NodeAuthError::PermissionDenied(format!(
                    "pod {ns}/{pod_name} is not scheduled on a node"
                ))
            })?;
        if let Some(claimed) = single(&extra, EXTRA_NODE_NAME) {
            if claimed != node {
                return Err(NodeAuthError::PermissionDenied(format!(
                    "token names node {claimed:?} but pod {ns}/{pod_name} runs on {node:?}"
                )));
            }
        }
        debug!(%node, pod = %format!("{ns}/{pod_name}"), "node token accepted");
        Ok(node)
    }

    /// Authenticates and requires the token's node to be `claimed` (a ztunnel subscribing
    /// as a node, or asking for certificates on its behalf).
    pub async fn review_for_node(
        &self,
        token: &str,
        claimed: &str,
    ) -> Result<NodeName, NodeAuthError> {
        let node = self.review(token).await?;
        if node != claimed {
            return Err(NodeAuthError::PermissionDenied(format!(
                "token is for a pod on node {node:?}, not {claimed:?}"
            )));
        }
        Ok(node)
    }
}

impl NodeAuthenticator for TokenReviewAuthenticator {
    fn authenticate<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<NodeName, NodeAuthError>> + Send + 'a>> {
        Box::pin(self.review(token))
    }
}

fn single<'a>(extra: &'a BTreeMap<String, Vec<String>>, key: &str) -> Option<&'a str> {
    extra
        .get(key)
        .and_then(|v| v.first())
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

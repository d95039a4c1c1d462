//! CA authentication in Kubernetes: a ztunnel proves its node with its projected
//! service-account token (audience e.g. `istio-ca`); any other pod (a waypoint) proves
//! only its own service account.
//!
//! [`TokenReviewAuthenticator::review`] (node tokens):
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
//!
//! [`TokenReviewAuthenticator::review_caller`] (what the CA asks) does the same for the
//! allowed service accounts and, for any other service account, steps 1 and 3 only: the
//! caller is that service account ([`Caller::ServiceAccount`]) and the CA signs its own
//! identity only, as istiod does for a pod's projected token. A waypoint pod gets its
//! certificate this way; no new privilege arises, since whoever can run a pod as a
//! service account can already obtain that account's tokens. The config stream asks the
//! same question ([`crate::auth::TokenAuth`]): such a caller may subscribe only as a
//! waypoint of its own namespace.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;

use ::kube::api::{Api, PostParams};
use ::kube::Client;
use k8s_openapi::api::authentication::v1::{TokenReview, TokenReviewSpec};
use k8s_openapi::api::core::v1::Pod;
use tracing::debug;

use crate::ca::{Caller, NodeAuthError, NodeAuthenticator, NodeName};

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

    /// A node token: see the module documentation.
    pub async fn review(&self, token: &str) -> Result<NodeName, NodeAuthError> {
        match self.review_as(token, false).await? {
            Caller::Node(node) => Ok(node),
            Caller::ServiceAccount { namespace, name } => Err(NodeAuthError::PermissionDenied(
                format!("service account {namespace}/{name} may not act for a node"),
            )),
        }
    }

    /// A node token or, for any other service account, that service account.
    pub async fn review_caller(&self, token: &str) -> Result<Caller, NodeAuthError> {
        self.review_as(token, true).await
    }

    async fn review_as(&self, token: &str, workloads: bool) -> Result<Caller, NodeAuthError> {
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
        let is_node_agent = self.allowed.iter().any(|(a, b)| a == ns && b == sa);
        if !is_node_agent && !workloads {
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
        if !is_node_agent {
            debug!(pod = %format!("{ns}/{pod_name}"), "service account token accepted");
            return Ok(Caller::ServiceAccount {
                namespace: ns.to_string(),
                name: sa.to_string(),
            });
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
        Ok(Caller::Node(node))
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

    fn authenticate_caller<'a>(
        &'a self,
        token: &'a str,
    ) -> Pin<Box<dyn Future<Output = Result<Caller, NodeAuthError>> + Send + 'a>> {
        Box::pin(self.review_caller(token))
    }
}

fn single<'a>(extra: &'a BTreeMap<String, Vec<String>>, key: &str) -> Option<&'a str> {
    extra
        .get(key)
        .and_then(|v| v.first())
        .map(String::as_str)
        .filter(|s| !s.is_empty())
}

#[cfg(test)]
mod tests {
    use http::Method;
    use serde_json::{json, Value};

    use meshwork_model::pb::config::{ProxyKind, Subscribe};

    use super::*;
    use crate::auth::TokenAuth;
    use crate::distribute::SubscriptionAuth;
    use crate::source::kube::test_api::MockApi;

    const REVIEWS: &str = "/apis/authentication.k8s.io/v1/tokenreviews";

    fn answer(username: &str, pod: &str, uid: &str) -> Value {
        json!({"apiVersion": "authentication.k8s.io/v1", "kind": "TokenReview", "spec": {},
               "status": {"authenticated": true, "audiences": ["istio-ca"],
                          "user": {"username": username, "extra": {
                              "authentication.kubernetes.io/pod-name": [pod],
                              "authentication.kubernetes.io/pod-uid": [uid]}}}})
    }

    fn waypoint_api(uid_now: &str) -> MockApi {
        let api = MockApi::default();
        api.on(
            Method::POST,
            REVIEWS,
            201,
            answer("system:serviceaccount:shop:waypoint", "waypoint-7d9", "u-1"),
        );
        api.on(
            Method::GET,
            "/api/v1/namespaces/shop/pods/waypoint-7d9",
            200,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "waypoint-7d9", "namespace": "shop", "uid": uid_now},
                   "spec": {"nodeName": "node-a", "containers": [{"name": "waypoint"}]}}),
        );
        api
    }

    fn auth(api: &MockApi) -> TokenReviewAuthenticator {
        TokenReviewAuthenticator::new(
            api.client(),
            "istio-ca",
            [("istio-system".to_string(), "meshwork-ztunnel".to_string())],
        )
    }

    #[tokio::test]
    async fn a_waypoint_token_proves_its_service_account_not_a_node() {
        let api = waypoint_api("u-1");
        let a = auth(&api);
        assert_eq!(
            a.review_caller("tok").await.unwrap(),
            Caller::ServiceAccount {
                namespace: "shop".into(),
                name: "waypoint".into()
            }
        );
        let reqs = api.requests();
        assert_eq!(reqs.len(), 2, "review, then the pod lookup");
        assert_eq!(reqs[0].body["spec"]["audiences"], json!(["istio-ca"]));
        assert_eq!(reqs[1].path, "/api/v1/namespaces/shop/pods/waypoint-7d9");
        let e = a.review("tok").await.unwrap_err();
        assert!(
            matches!(&e, NodeAuthError::PermissionDenied(m) if m.contains("shop/waypoint")),
            "{e}"
        );
    }

    fn waypoint_sub(namespace: &str) -> Subscribe {
        Subscribe {
            kind: ProxyKind::Waypoint as i32,
            namespace: namespace.into(),
            name: "waypoint".into(),
            token: "tok".into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_waypoint_token_subscribes_only_as_a_waypoint_of_its_own_namespace() {
        let api = waypoint_api("u-1");
        let subs = TokenAuth::new(std::sync::Arc::new(auth(&api)));
        subs.check(&waypoint_sub("shop")).await.unwrap();
        let e = subs.check(&waypoint_sub("billing")).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied);
        assert!(
            e.message().contains("\"shop\"") && e.message().contains("\"billing\""),
            "{}",
            e.message()
        );
        let ztunnel = Subscribe {
            kind: ProxyKind::Ztunnel as i32,
            node: "node-a".into(),
            token: "tok".into(),
            ..Default::default()
        };
        let e = subs.check(&ztunnel).await.unwrap_err();
        assert_eq!(e.code(), tonic::Code::PermissionDenied, "{}", e.message());
        assert_eq!(api.requests().len(), 6, "each check reviews the token anew");
    }

    #[tokio::test]
    async fn istios_ztunnel_is_a_node_agent_when_listed() {
        let api = MockApi::default();
        api.on(
            Method::POST,
            REVIEWS,
            201,
            answer(
                "system:serviceaccount:istio-system:ztunnel",
                "ztunnel-x1",
                "u-9",
            ),
        );
        api.on(
            Method::GET,
            "/api/v1/namespaces/istio-system/pods/ztunnel-x1",
            200,
            json!({"apiVersion": "v1", "kind": "Pod",
                   "metadata": {"name": "ztunnel-x1", "namespace": "istio-system", "uid": "u-9"},
                   "spec": {"nodeName": "node-b", "containers": [{"name": "istio-proxy"}]}}),
        );
        // Only Meshwork's ztunnel listed: Istio's is an ordinary service account.
        let e = auth(&api).review("tok").await.unwrap_err();
        assert!(matches!(e, NodeAuthError::PermissionDenied(_)), "{e}");
        let both = TokenReviewAuthenticator::new(
            api.client(),
            "istio-ca",
            [
                ("istio-system".to_string(), "meshwork-ztunnel".to_string()),
                ("istio-system".to_string(), "ztunnel".to_string()),
            ],
        );
        assert_eq!(both.review("tok").await.unwrap(), "node-b");
    }

    #[tokio::test]
    async fn a_replaced_waypoint_pod_token_is_refused() {
        let e = auth(&waypoint_api("u-2"))
            .review_caller("tok")
            .await
            .unwrap_err();
        assert!(
            matches!(&e, NodeAuthError::Unauthenticated(m) if m.contains("replaced")),
            "{e}"
        );
    }
}

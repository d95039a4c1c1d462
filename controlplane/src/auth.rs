//! Who may do what: which service accounts run on a node (for the CA, answered from the
//! model), and whether a proxy may subscribe as the node or waypoint it names.

use std::sync::Arc;

use meshwork_model::pb::config::{resource, ProxyKind, Subscribe};
use tonic::Status;

use crate::ca::{self, Caller, NodeAuthenticator, NodeTokens, WorkloadDirectory};
use crate::distribute::{ModelHub, SubscriptionAuth};

/// The CA's view of the model: a node may have the identities of its own workloads.
pub struct HubDirectory {
    hub: Arc<ModelHub>,
}

impl HubDirectory {
    pub fn new(hub: Arc<ModelHub>) -> Self {
        HubDirectory { hub }
    }
}

impl WorkloadDirectory for HubDirectory {
    fn has_workload(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        let state = self.hub.read();
        let prefix = format!("workload/{namespace}/");
        state.resources.iter().any(|(k, r)| {
            k.starts_with(&prefix)
                && matches!(&r.kind, Some(resource::Kind::Workload(w))
                    if w.node == node && w.service_account == service_account)
        })
    }
}

/// Who may subscribe as what. The token names a caller
/// ([`NodeAuthenticator::authenticate_caller`]): the node's bootstrap token in file mode,
/// a projected service-account token in Kubernetes (a ztunnel's proves its node; any
/// other pod's proves its own service account).
///
/// - a ztunnel must hold a token for the node it names;
/// - a waypoint may subscribe with a node token (file mode, where waypoints run beside a
///   node's ztunnel), or with a service-account token of the waypoint's own namespace:
///   a pod of namespace A can not read namespace B's waypoint configuration;
/// - an observer (read-only, the whole model) must hold an observer token
///   ([`ObserverPolicy`]); without one it is refused.
pub struct TokenAuth {
    nodes: Arc<dyn NodeAuthenticator>,
    observers: ObserverPolicy,
}

/// Who may subscribe as an observer. By default nobody.
#[derive(Clone, Default)]
pub struct ObserverPolicy {
    /// Observer tokens of the CA's token secret (`controlplane token --observer NAME`).
    pub tokens: Option<NodeTokens>,
    /// Kubernetes: `(namespace, service account)` whose pod-bound projected tokens prove
    /// an observer.
    pub service_accounts: Vec<(String, String)>,
}

impl TokenAuth {
    pub fn new(nodes: Arc<dyn NodeAuthenticator>) -> Self {
        TokenAuth {
            nodes,
            observers: ObserverPolicy::default(),
        }
    }

    /// Who may subscribe as an observer.
    pub fn with_observers(mut self, observers: ObserverPolicy) -> Self {
        self.observers = observers;
        self
    }

    async fn check_observer(&self, token: &str) -> Result<(), Status> {
        if token.is_empty() {
            return Err(Status::unauthenticated(
                "an observer subscription needs a token: `controlplane token --observer NAME`, \
                 or in Kubernetes an allowed observer service account's",
            ));
        }
        if token.starts_with(ca::OBSERVER_PREFIX) {
            let tokens = self
                .observers
                .tokens
                .as_ref()
                .ok_or_else(|| Status::unauthenticated("observer tokens are not accepted"))?;
            return tokens
                .authenticate_observer(token)
                .map(|_| ())
                .map_err(|e| Status::unauthenticated(format!("observer token refused: {e}")));
        }
        match self.caller(token).await? {
            Caller::ServiceAccount { namespace, name }
                if self
                    .observers
                    .service_accounts
                    .iter()
                    .any(|(ns, sa)| *ns == namespace && *sa == name) =>
            {
                Ok(())
            }
            Caller::ServiceAccount { namespace, name } => Err(Status::permission_denied(format!(
                "service account {namespace}/{name} is not an observer service account"
            ))),
            Caller::Node(node) => Err(Status::permission_denied(format!(
                "the token of node {node:?} may not subscribe as an observer"
            ))),
        }
    }

    async fn caller(&self, token: &str) -> Result<Caller, Status> {
        self.nodes
            .authenticate_caller(token)
            .await
            .map_err(|e| ca::authn_status(&e))
    }
}

#[tonic::async_trait]
impl SubscriptionAuth for TokenAuth {
    async fn check(&self, sub: &Subscribe) -> Result<(), Status> {
        match ProxyKind::try_from(sub.kind) {
            Ok(ProxyKind::Observer) => self.check_observer(&sub.token).await,
            Ok(ProxyKind::Ztunnel) => match self.caller(&sub.token).await? {
                Caller::Node(node) if node == sub.node => Ok(()),
                Caller::Node(node) => Err(Status::permission_denied(format!(
                    "token is for node {node:?}, not {:?}",
                    sub.node
                ))),
                Caller::ServiceAccount { namespace, name } => {
                    Err(Status::permission_denied(format!(
                        "service account {namespace}/{name} may not subscribe as the ztunnel \
                         of node {:?}",
                        sub.node
                    )))
                }
            },
            Ok(ProxyKind::Waypoint) => match self.caller(&sub.token).await? {
                Caller::Node(_) => Ok(()),
                Caller::ServiceAccount { namespace, .. } if namespace == sub.namespace => Ok(()),
                Caller::ServiceAccount { namespace, name } => {
                    Err(Status::permission_denied(format!(
                        "service account {namespace}/{name} may subscribe only as a waypoint \
                         of namespace {namespace:?}, not as waypoint {}/{} of namespace {:?}",
                        sub.namespace, sub.name, sub.namespace
                    )))
                }
            },
            _ => Err(Status::invalid_argument(format!(
                "unknown proxy kind {} in the subscription of {:?}",
                sub.kind, sub.proxy_id
            ))),
        }
    }
}

#[cfg(test)]
mod tests {
    use std::future::Future;
    use std::pin::Pin;

    use super::*;
    use crate::ca::{NodeAuthError, NodeName};
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::Workload;

    #[test]
    fn directory_answers_from_the_model() {
        let hub = ModelHub::new();
        let w = Workload {
            name: "pay-1".into(),
            namespace: "production".into(),
            service_account: "payment".into(),
            node: "node-a".into(),
            ..Default::default()
        };
        let key = "workload/production/pay-1".to_string();
        hub.apply([(
            key.clone(),
            Some(make_resource(key, resource::Kind::Workload(w))),
        )]);
        let d = HubDirectory::new(hub);
        assert!(d.has_workload("node-a", "production", "payment"));
        assert!(!d.has_workload("node-b", "production", "payment"));
        assert!(!d.has_workload("node-a", "production", "other"));
        assert!(!d.has_workload("node-a", "staging", "payment"));
    }

    #[tokio::test]
    async fn subscriptions_need_their_nodes_token() {
        let tokens = crate::ca::NodeTokens::from_secret(b"test secret of enough length for hmac");
        let auth = TokenAuth::new(Arc::new(tokens.clone()));
        let sub = |node: &str, token: String| Subscribe {
            kind: ProxyKind::Ztunnel as i32,
            node: node.into(),
            token,
            ..Default::default()
        };
        let tok_a = tokens.token_for("node-a").unwrap();
        assert!(auth.check(&sub("node-a", tok_a.clone())).await.is_ok());
        let err = auth.check(&sub("node-b", tok_a)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        let err = auth
            .check(&sub("node-a", "garbage".into()))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }

    fn observer(token: &str) -> Subscribe {
        Subscribe {
            kind: ProxyKind::Observer as i32,
            token: token.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn observers_need_an_observer_token() {
        let tokens = crate::ca::NodeTokens::from_secret(b"test secret of enough length for hmac");
        let auth =
            TokenAuth::new(Arc::new(MixedTokens(tokens.clone()))).with_observers(ObserverPolicy {
                tokens: Some(tokens.clone()),
                service_accounts: vec![("istio-system".into(), "meshwork-cli".into())],
            });
        let err = auth.check(&observer("")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        let cli = tokens.observer_token_for("cli").unwrap();
        assert!(auth.check(&observer(&cli)).await.is_ok());
        let other = crate::ca::NodeTokens::from_secret(b"another secret")
            .observer_token_for("cli")
            .unwrap();
        let err = auth.check(&observer(&other)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
        // A node token is no observer token.
        let node = tokens.token_for("node-a").unwrap();
        let err = auth.check(&observer(&node)).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        // Kubernetes: only the allowed service accounts.
        assert!(auth
            .check(&observer("sa:istio-system/meshwork-cli"))
            .await
            .is_ok());
        let err = auth.check(&observer("sa:shop/waypoint")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        // And an observer token subscribes as nothing else.
        let as_ztunnel = Subscribe {
            kind: ProxyKind::Ztunnel as i32,
            node: "observer:cli".into(),
            token: cli.clone(),
            ..Default::default()
        };
        assert!(auth.check(&as_ztunnel).await.is_err());
        assert!(auth.check(&waypoint("shop", &cli)).await.is_err());
        // Without a policy nobody observes.
        let closed = TokenAuth::new(Arc::new(tokens.clone()));
        assert!(closed.check(&observer(&cli)).await.is_err());
    }

    /// `sa:<ns>/<name>` proves that service account; anything else is a node token.
    struct MixedTokens(crate::ca::NodeTokens);

    impl NodeAuthenticator for MixedTokens {
        fn authenticate<'a>(
            &'a self,
            token: &'a str,
        ) -> Pin<Box<dyn Future<Output = Result<NodeName, NodeAuthError>> + Send + 'a>> {
            NodeAuthenticator::authenticate(&self.0, token)
        }

        fn authenticate_caller<'a>(
            &'a self,
            token: &'a str,
        ) -> Pin<Box<dyn Future<Output = Result<Caller, NodeAuthError>> + Send + 'a>> {
            match token.strip_prefix("sa:").and_then(|s| s.split_once('/')) {
                Some((ns, name)) => Box::pin(std::future::ready(Ok(Caller::ServiceAccount {
                    namespace: ns.into(),
                    name: name.into(),
                }))),
                None => NodeAuthenticator::authenticate_caller(&self.0, token),
            }
        }
    }

    fn waypoint(namespace: &str, token: &str) -> Subscribe {
        Subscribe {
            kind: ProxyKind::Waypoint as i32,
            namespace: namespace.into(),
            name: "waypoint".into(),
            token: token.into(),
            ..Default::default()
        }
    }

    #[tokio::test]
    async fn a_service_account_subscribes_only_as_a_waypoint_of_its_namespace() {
        let tokens = crate::ca::NodeTokens::from_secret(b"test secret of enough length for hmac");
        let auth = TokenAuth::new(Arc::new(MixedTokens(tokens.clone())));
        assert!(auth
            .check(&waypoint("shop", "sa:shop/waypoint"))
            .await
            .is_ok());

        let err = auth
            .check(&waypoint("billing", "sa:shop/waypoint"))
            .await
            .unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert_eq!(
            err.message(),
            "service account shop/waypoint may subscribe only as a waypoint of namespace \
             \"shop\", not as waypoint billing/waypoint of namespace \"billing\""
        );

        let as_ztunnel = Subscribe {
            kind: ProxyKind::Ztunnel as i32,
            node: "node-a".into(),
            token: "sa:shop/waypoint".into(),
            ..Default::default()
        };
        let err = auth.check(&as_ztunnel).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::PermissionDenied);
        assert!(err.message().contains("shop/waypoint"), "{}", err.message());

        // A node token may serve any waypoint (file mode), and still its own node only.
        let tok_a = tokens.token_for("node-a").unwrap();
        assert!(auth.check(&waypoint("billing", &tok_a)).await.is_ok());
        let ztunnel_a = Subscribe {
            kind: ProxyKind::Ztunnel as i32,
            node: "node-a".into(),
            token: tok_a,
            ..Default::default()
        };
        assert!(auth.check(&ztunnel_a).await.is_ok());
        let err = auth.check(&waypoint("shop", "garbage")).await.unwrap_err();
        assert_eq!(err.code(), tonic::Code::Unauthenticated);
    }
}

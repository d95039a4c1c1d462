//! Who may do what, answered from the model: which service accounts run on a node (for
//! the CA) and whether a proxy may subscribe as the node it names.

use std::sync::Arc;

use meshwork_model::pb::config::{resource, ProxyKind, Subscribe};
use tonic::Status;

use crate::ca::{self, NodeAuthenticator, WorkloadDirectory};
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

/// A ztunnel (and a waypoint, which runs on a node too) proves its node with a token:
/// the node's bootstrap token in file mode, its projected service-account token in
/// Kubernetes; observers (the CLI) need none.
pub struct TokenAuth {
    nodes: Arc<dyn NodeAuthenticator>,
}

impl TokenAuth {
    pub fn new(nodes: Arc<dyn NodeAuthenticator>) -> Self {
        TokenAuth { nodes }
    }
}

#[tonic::async_trait]
impl SubscriptionAuth for TokenAuth {
    async fn check(&self, sub: &Subscribe) -> Result<(), Status> {
        match ProxyKind::try_from(sub.kind) {
            Ok(ProxyKind::Observer) => Ok(()),
            Ok(ProxyKind::Ztunnel) => {
                let node = self
                    .nodes
                    .authenticate(&sub.token)
                    .await
                    .map_err(|e| ca::authn_status(&e))?;
                if node == sub.node {
                    Ok(())
                } else {
                    Err(Status::permission_denied(format!(
                        "token is for node {node:?}, not {:?}",
                        sub.node
                    )))
                }
            }
            Ok(ProxyKind::Waypoint) => self
                .nodes
                .authenticate(&sub.token)
                .await
                .map(|_| ())
                .map_err(|e| ca::authn_status(&e)),
            _ => Err(Status::invalid_argument("unknown proxy kind")),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
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
        let observer = Subscribe {
            kind: ProxyKind::Observer as i32,
            ..Default::default()
        };
        assert!(auth.check(&observer).await.is_ok());
    }
}

//! Which identities a node may obtain: those of workloads scheduled on it.

use meshwork_runtime::sync::RwLockExt;
use std::collections::HashSet;
use std::sync::RwLock;

use meshwork_identity::SpiffeId;

use super::error::SignError;

/// Answers "does a workload with this service account run on this node?". The control plane
/// implements it from its model; waypoint pods are workloads too, so the same rule covers them.
pub trait WorkloadDirectory: Send + Sync {
    fn has_workload(&self, node: &str, namespace: &str, service_account: &str) -> bool;
}

/// Node `node` may have `identity` only if one of its workloads runs as that service account.
pub fn authorize_node(
    directory: &dyn WorkloadDirectory,
    node: &str,
    identity: &SpiffeId,
) -> Result<(), SignError> {
    if directory.has_workload(node, identity.namespace(), identity.service_account()) {
        Ok(())
    } else {
        Err(SignError::NotAllowedForNode {
            node: node.to_string(),
            identity: Box::new(identity.clone()),
        })
    }
}

/// A directory held in memory: explicit `(node, namespace, service account)` entries.
/// Handy for tests and harnesses; the control plane answers from its model instead.
#[derive(Debug, Default)]
pub struct StaticDirectory {
    entries: RwLock<HashSet<(String, String, String)>>,
}

impl StaticDirectory {
    pub fn new() -> Self {
        Self::default()
    }

    pub fn insert(&self, node: &str, namespace: &str, service_account: &str) {
        self.entries.write_or_recover().insert((
            node.into(),
            namespace.into(),
            service_account.into(),
        ));
    }

    pub fn remove(&self, node: &str, namespace: &str, service_account: &str) {
        self.entries.write_or_recover().remove(&(
            node.into(),
            namespace.into(),
            service_account.into(),
        ));
    }
}

impl WorkloadDirectory for StaticDirectory {
    fn has_workload(&self, node: &str, namespace: &str, service_account: &str) -> bool {
        self.entries.read_or_recover().contains(&(
            node.into(),
            namespace.into(),
            service_account.into(),
        ))
    }
}

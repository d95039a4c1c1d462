//! Errors of the Kubernetes source.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum KubeSourceError {
    #[error("{kind} in namespace {namespace:?} has no metadata.name")]
    MissingName { kind: String, namespace: String },
    #[error("{object}: cannot encode as JSON: {reason}")]
    Encode { object: String, reason: String },
    #[error("Kubernetes client configuration: {0}")]
    Config(String),
}

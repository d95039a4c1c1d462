//! Errors of the waypoint deployment controller.

use thiserror::Error;

#[derive(Debug, Error)]
pub enum WaypointError {
    #[error("waypoint template {source_name}: {reason}")]
    Template { source_name: String, reason: String },
    #[error("applying {kind} {namespace}/{name}: {source}")]
    Apply {
        kind: String,
        namespace: String,
        name: String,
        #[source]
        source: Box<::kube::Error>,
    },
    #[error("writing status of Gateway {namespace}/{name}: {source}")]
    Status {
        namespace: String,
        name: String,
        #[source]
        source: Box<::kube::Error>,
    },
}

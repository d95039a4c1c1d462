use std::path::PathBuf;

/// Errors of the mini-cluster and its mesh; every variant names the namespace, command,
/// file or process.
#[derive(Debug, thiserror::Error)]
pub enum LabError {
    #[error("invalid cluster spec {field}: {reason}")]
    Spec { field: &'static str, reason: String },
    #[error("command `{command}` failed: {reason}")]
    Command { command: String, reason: String },
    #[error("entering network namespace {netns}: {source}")]
    Setns {
        netns: String,
        source: std::io::Error,
    },
    #[error("spawning `{command}` in {target}: {source}")]
    Spawn {
        command: String,
        target: String,
        source: std::io::Error,
    },
    #[error("unknown {kind} {name}")]
    Unknown { kind: &'static str, name: String },
    #[error("file {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("timed out after {millis} ms waiting for {what}")]
    Timeout { what: String, millis: u64 },
    /// A pod network other than the bridge (see [`crate::PodWiring`]) failed.
    #[error("{network} pod network: {source}")]
    Wiring {
        network: &'static str,
        source: Box<dyn std::error::Error + Send + Sync>,
    },
    /// A mesh process did not do what it should (the message names it, with its answer
    /// or log).
    #[error("{0}")]
    Mesh(String),
}

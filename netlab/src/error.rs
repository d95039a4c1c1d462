use std::path::PathBuf;

/// Errors of the mini-cluster harness; every variant names the namespace or command.
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
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
    #[error(transparent)]
    Cni(#[from] crate::cni::CniError),
    #[error("timed out after {millis} ms waiting for {what}")]
    Timeout { what: String, millis: u64 },
}

use std::path::PathBuf;

/// Errors of the e2e harness (its pod networks, CNI runtime, probes); every variant names
/// the namespace, command or file. The mini-cluster's own errors come as [`LabError`].
#[derive(Debug, thiserror::Error)]
pub enum HarnessError {
    #[error("command `{command}` failed: {reason}")]
    Command { command: String, reason: String },
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
    #[error(transparent)]
    Lab(#[from] LabError),
}

pub use meshwork_netlab::LabError;

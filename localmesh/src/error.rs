use std::net::SocketAddr;
use std::path::PathBuf;
use std::time::Duration;

/// Why a local mesh could not be brought up (or a piece of it used).
#[derive(Debug, thiserror::Error)]
pub enum Error {
    #[error("cannot find the {name} binary (looked in {searched}, …); build it with scripts/demo or `cargo build --workspace`, or set MESHWORK_BIN_DIR")]
    MissingBinary { name: String, searched: String },
    // The I/O errors are printed in the message (not chained as sources) so the one-line
    // `error: …` output does not repeat them.
    #[error("starting {name} ({path}): {error}")]
    Spawn {
        name: String,
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{path}: {error}")]
    Io {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("binding {addr}: {error}")]
    Bind {
        addr: SocketAddr,
        error: std::io::Error,
    },
    #[error("no free 127.x.y.0/24 network for the pods (their ports taken everywhere tried)")]
    NoFreeNet,
    #[error("node token for {node}: {detail}")]
    Token { node: String, detail: String },
    #[error("{0}")]
    ChildDied(String),
    #[error("{what} not ready within {timeout:?}")]
    NotReady { what: String, timeout: Duration },
    #[error("{cause}; the run directory is kept for inspection: {logs}")]
    StartFailed { cause: Box<Error>, logs: String },
    #[error("{0}: no YAML files (*.yaml, *.yml) in the --seed-dir directory")]
    EmptySeedDir(PathBuf),
    #[error("{0}: no YAML files (*.yaml, *.yml) in the directory")]
    EmptyDir(PathBuf),
    #[error("--mode netns is not possible here: {0} (--mode loopback works for any user)")]
    NetnsUnavailable(String),
    #[error("netns mesh: {0}")]
    Netns(String),
    #[error(transparent)]
    Manifest(Box<ManifestError>),
    #[error("plan: {0}")]
    Plan(String),
    #[error(transparent)]
    Forward(#[from] crate::forward::ForwardError),
    #[error("interrupted")]
    Interrupted,
}

/// A manifest the local mesh cannot run as written.
#[derive(Debug, thiserror::Error)]
#[error("{file}: {kind} {namespace}/{name}: {field}: {reason}")]
pub struct ManifestError {
    pub file: String,
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub field: String,
    pub reason: String,
}

use std::path::PathBuf;

/// Errors of the redirection loader. Every variant names what it was acting on.
#[derive(Debug, thiserror::Error)]
pub enum RedirectError {
    #[error(
        "the BPF programs were not built (AYA_BUILD_SKIP was set when compiling meshwork-redirect)"
    )]
    BpfNotBuilt,
    #[error("invalid redirect option {field}: {reason}")]
    InvalidOption { field: &'static str, reason: String },
    #[error("bpffs at {path}: {reason}")]
    Bpffs { path: PathBuf, reason: String },
    #[error("creating pin directory {path}: {source}")]
    PinDir {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("loading the BPF object (maps pinned in {path}): {source}")]
    Load {
        path: PathBuf,
        source: Box<aya::EbpfError>,
    },
    #[error("BPF object has no {kind} named {name}")]
    Missing {
        kind: &'static str,
        name: &'static str,
    },
    #[error("BPF program {name}: {source}")]
    Program {
        name: &'static str,
        source: Box<aya::programs::ProgramError>,
    },
    #[error("BPF map {name}: {source}")]
    Map {
        name: &'static str,
        source: Box<aya::maps::MapError>,
    },
    #[error("attaching to interface {interface}: {reason}")]
    Attach { interface: String, reason: String },
    #[error("pinned link {path}: {reason}")]
    Link { path: PathBuf, reason: String },
    #[error("routing setup `ip {args}`: {reason}")]
    Routing { args: String, reason: String },
    #[error("listing local addresses: {0}")]
    Addresses(std::io::Error),
    #[error("pod {key}: {reason}")]
    Pod { key: String, reason: String },
    #[error("pod {key}: {source}")]
    PodNetlink {
        key: String,
        source: crate::NetlinkError,
    },
    #[error("pod {key}: {source}")]
    PodNetns {
        key: String,
        source: meshwork_runtime::netns::NetNsError,
    },
    #[error(transparent)]
    SockLb(#[from] crate::SockLbError),
    #[error("removing pins in {path}: {source}")]
    Teardown {
        path: PathBuf,
        source: std::io::Error,
    },
}

impl RedirectError {
    pub(crate) fn map(name: &'static str, e: aya::maps::MapError) -> Self {
        Self::Map {
            name,
            source: Box::new(e),
        }
    }

    pub(crate) fn program(name: &'static str, e: aya::programs::ProgramError) -> Self {
        Self::Program {
            name,
            source: Box::new(e),
        }
    }
}

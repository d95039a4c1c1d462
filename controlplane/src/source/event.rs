//! What every configuration source produces: a file (a YAML file of the directory
//! source, or the pseudo-file `k8s://<Kind>/<ns>/<name>` of a Kubernetes object) with its
//! full text, or its removal. The engine parses, validates and stores them alike.

use std::path::{Path, PathBuf};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEvent {
    /// A new or changed file with its full text.
    Changed(PathBuf, String),
    Removed(PathBuf),
}

impl FileEvent {
    /// The file the event is about.
    pub fn path(&self) -> &Path {
        match self {
            FileEvent::Changed(p, _) | FileEvent::Removed(p) => p,
        }
    }
}

//! Configuration sources. The embedded default is a directory of YAML ([`dir`]); the
//! Kubernetes source (kube-rs) feeds the same [`crate::engine::Engine`].

pub mod dir;
mod event;
pub mod kube;

pub use event::FileEvent;

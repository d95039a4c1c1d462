//! A proxy-wasm host (ABI 0.2.1 and 0.2.0) on wasmtime.
//!
//! - [`engine`]: the shared engine, the epoch thread and per-instance [`Limits`];
//! - [`abi`]: the host functions, by group (headers, body, properties, logging, metrics,
//!   timers, shared data and queues, http calls, local responses);
//! - [`wasi`]: WASI preview1 for `wasm32-wasip1` modules;
//! - [`instance`]: one instance and its contexts' lifecycle;
//! - [`caller`]: what the proxy offers for the plugins' calls;
//! - [`plugin`]: a loaded plugin — one instance per worker, streams, traps and recovery.

pub mod abi;
pub mod caller;
pub mod engine;
pub mod instance;
pub mod metrics;
pub mod plugin;
pub mod shared;
pub mod state;
pub mod types;
mod wasi;

pub use engine::{EngineError, Host, Limits};
pub use instance::InstanceError;
pub use metrics::PluginMetrics;
pub use plugin::{
    HostContext, HttpCaller, NoCalls, Plugin, PluginError, PluginSpec, Stream, Verdict,
};
pub use shared::Shared;
pub use types::{CallRequest, CallResponse, HeaderMap, LocalResponse, Value};

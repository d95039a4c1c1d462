//! The waypoint's WasmPlugins: which ones it loads, and which apply to a request.
//!
//! - [`registry`]: the loaded plugins of the current config. A config change loads the
//!   plugins that changed (their module from `url` through [`meshwork_wasm::fetch`], with
//!   its cache) and keeps the others; requests in flight keep the `Arc` of the set they
//!   started with, so a reload drops none of them.
//! - [`select`]: the plugins that apply to one request (targetRefs: this waypoint's Gateway,
//!   or the destination Service, as Istio ambient; `match` on mode and ports), in the order
//!   they run (phase, then priority).
//! - [`caller`]: `dispatch_http_call` to mesh services, through the waypoint's clusters.

pub mod caller;
pub mod registry;
pub mod select;

pub use registry::{Loaded, PluginSet, Plugins, WasmOptions};
pub use select::{Selected, FAIL_STATUS};

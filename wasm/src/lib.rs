//! Proxy-wasm plugins for the waypoint (Istio's `WasmPlugin`).
//!
//! - [`fetch`]: from a plugin's `url` and `sha256` to verified module bytes.

pub mod fetch;

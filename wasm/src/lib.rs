//! Proxy-wasm plugins for the waypoint (Istio's `WasmPlugin`).
//!
//! - [`fetch`]: from a plugin's `url` and `sha256` to verified module bytes.
//! - [`host`]: the proxy-wasm host that runs them.
//! - `examples` (feature `test-util`): the example plugins, built for tests.

#[cfg(feature = "test-util")]
pub mod examples;
pub mod fetch;
pub mod host;

//! What one plugin instance's store holds: the per-stream data the ABI reads and writes,
//! the plugin's configuration, and what callbacks asked of the host (calls, replies,
//! timers), collected for the caller to act on once the callback returns.

use std::collections::HashMap;
use std::sync::Arc;
use std::time::Duration;

use wasmtime::StoreLimits;
use wasmtime_wasi::p1::WasiP1Ctx;

use super::caller::HttpCaller;
use super::metrics::PluginMetrics;
use super::shared::Shared;
use super::types::{CallRequest, CallResponse, HeaderMap, LocalResponse, Value};

/// One HTTP context's data: what the stream callbacks and the ABI's map and buffer calls see.
#[derive(Debug, Default)]
pub struct StreamData {
    pub request_headers: HeaderMap,
    pub request_body: Vec<u8>,
    pub request_trailers: HeaderMap,
    pub response_headers: HeaderMap,
    pub response_body: Vec<u8>,
    pub response_trailers: HeaderMap,
    /// Attributes the proxy knows about the stream (`source.address`, `destination.port` …).
    pub attributes: Arc<HashMap<String, Value>>,
    /// Properties the plugin set on the stream (`proxy_set_property`).
    pub set_properties: HashMap<String, Vec<u8>>,
    /// The plugin answered the request itself.
    pub local_response: Option<LocalResponse>,
    /// The plugin resumed the paused request (`proxy_continue_stream`).
    pub resumed_request: bool,
    pub resumed_response: bool,
}

/// A call the plugin made, waiting to be sent.
#[derive(Debug)]
pub struct PendingCall {
    pub token: u32,
    pub context_id: u32,
    pub request: CallRequest,
}

/// The store data of one plugin instance.
pub struct HostState {
    pub wasi: WasiP1Ctx,
    pub limits: StoreLimits,
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    /// Attributes of the proxy itself (`node.*`), shared by every stream.
    pub node: Arc<HashMap<String, Value>>,
    pub streams: HashMap<u32, StreamData>,
    /// The context the running callback belongs to (`proxy_set_effective_context` moves it).
    pub effective: u32,
    pub root_context: u32,
    /// The answer being handed to `proxy_on_http_call_response`.
    pub call_response: Option<CallResponse>,
    pub next_token: u32,
    pub pending_calls: Vec<PendingCall>,
    /// Calls sent and not yet answered: token → context.
    pub calls_in_flight: HashMap<u32, u32>,
    pub tick_period: Option<Duration>,
    pub metrics: Arc<PluginMetrics>,
    pub shared: Arc<Shared>,
    /// Queues this instance registered, whose `proxy_on_queue_ready` it wants.
    pub queues_ready: Vec<u32>,
    /// Who sends the plugin's calls (asked at once whether it knows the upstream).
    pub caller: Arc<dyn HttpCaller>,
}

impl HostState {
    pub fn stream(&mut self) -> Option<&mut StreamData> {
        self.streams.get_mut(&self.effective)
    }
}

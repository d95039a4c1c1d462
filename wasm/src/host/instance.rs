//! One plugin instance and its contexts' lifecycle: instantiation and the root context
//! (`proxy_on_context_create`, `proxy_on_vm_start`, `proxy_on_configure`), HTTP contexts
//! (create, the stream callbacks, `proxy_on_done` / `proxy_on_log` / `proxy_on_delete`),
//! `proxy_on_tick`, `proxy_on_queue_ready` and `proxy_on_http_call_response`.
//!
//! Every callback runs under the instance's CPU budget (an epoch deadline) and its memory
//! limit. A callback that traps poisons the instance: the plugin replaces it.

use std::collections::HashMap;
use std::sync::Arc;

use wasmtime::{InstancePre, Store, StoreLimitsBuilder, WasmParams, WasmResults};
use wasmtime_wasi::WasiCtxBuilder;

use super::caller::HttpCaller;
use super::engine::Limits;
use super::metrics::PluginMetrics;
use super::shared::Shared;
use super::state::{HostState, PendingCall, StreamData};
use super::types::{Action, CallResponse, HeaderMap, Value};

/// Why an instance could not be made or a callback failed.
#[derive(Debug, Clone, thiserror::Error, PartialEq, Eq)]
pub enum InstanceError {
    #[error("WasmPlugin {plugin}: instantiating: {reason}")]
    Instantiate { plugin: String, reason: String },
    #[error("WasmPlugin {plugin}: the module exports neither proxy_abi_version_0_2_1 nor proxy_abi_version_0_2_0 (only proxy-wasm ABI 0.2.x is supported)")]
    Abi { plugin: String },
    #[error("WasmPlugin {plugin}: {callback} returned false (the plugin refused its {what})")]
    Refused {
        plugin: String,
        callback: &'static str,
        what: &'static str,
    },
    #[error("WasmPlugin {plugin}: {callback} trapped: {reason}")]
    Trap {
        plugin: String,
        callback: &'static str,
        reason: String,
    },
}

/// What an instance is made from.
#[derive(Clone)]
pub(crate) struct Recipe {
    pub pre: InstancePre<HostState>,
    pub plugin_name: String,
    pub root_id: String,
    pub vm_id: String,
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    pub env: Vec<(String, String)>,
    pub node: Arc<HashMap<String, Value>>,
    pub limits: Limits,
    pub metrics: Arc<PluginMetrics>,
    pub shared: Arc<Shared>,
    pub caller: Arc<dyn HttpCaller>,
}

/// The root context's id; HTTP contexts count up from the next.
const ROOT: u32 = 1;

pub(crate) struct Instance {
    store: Store<HostState>,
    instance: wasmtime::Instance,
    next_context: u32,
    deadline_ticks: u64,
    /// A callback trapped: the instance must not be used again.
    pub poisoned: bool,
}

impl Instance {
    /// Instantiates the module and starts its root context with the plugin's configuration.
    pub fn new(r: &Recipe) -> Result<Instance, InstanceError> {
        let plugin = r.plugin_name.clone();
        let failed = |reason: String| InstanceError::Instantiate {
            plugin: plugin.clone(),
            reason,
        };
        let wasi = WasiCtxBuilder::new().envs(&r.env).build_p1();
        let limits = StoreLimitsBuilder::new()
            .memory_size(r.limits.memory_bytes)
            .instances(1)
            .memories(1)
            .tables(4)
            .build();
        let state = HostState {
            wasi,
            limits,
            plugin_name: r.plugin_name.clone(),
            root_id: r.root_id.clone(),
            vm_id: r.vm_id.clone(),
            plugin_config: r.plugin_config.clone(),
            vm_config: r.vm_config.clone(),
            node: r.node.clone(),
            streams: HashMap::new(),
            effective: ROOT,
            root_context: ROOT,
            call_response: None,
            next_token: 0,
            pending_calls: Vec::new(),
            calls_in_flight: HashMap::new(),
            tick_period: None,
            metrics: r.metrics.clone(),
            shared: r.shared.clone(),
            queues_ready: Vec::new(),
            caller: r.caller.clone(),
        };
        let mut store = Store::new(r.pre.module().engine(), state);
        store.limiter(|s| &mut s.limits);
        store.epoch_deadline_trap();
        let deadline_ticks = r.limits.deadline_ticks();
        store.set_epoch_deadline(deadline_ticks);
        let instance = r
            .pre
            .instantiate(&mut store)
            .map_err(|e| failed(format!("{e:#}")))?;
        let abi_ok = ["proxy_abi_version_0_2_1", "proxy_abi_version_0_2_0"]
            .iter()
            .any(|n| instance.get_func(&mut store, n).is_some());
        if !abi_ok {
            return Err(InstanceError::Abi { plugin });
        }
        let mut inst = Instance {
            store,
            instance,
            next_context: ROOT + 1,
            deadline_ticks,
            poisoned: false,
        };
        // A wasip1 reactor initialises its runtime in `_initialize`; a command in `_start`.
        for start in ["_initialize", "_start"] {
            if inst.has(start) {
                inst.call::<(), ()>(start, ())?;
                break;
            }
        }
        inst.call::<(i32, i32), ()>("proxy_on_context_create", (ROOT as i32, 0))?;
        let vm_len = r.vm_config.len() as i32;
        if inst.call::<(i32, i32), i32>("proxy_on_vm_start", (ROOT as i32, vm_len))? == Some(0) {
            return Err(InstanceError::Refused {
                plugin,
                callback: "proxy_on_vm_start",
                what: "vmConfig",
            });
        }
        let conf_len = r.plugin_config.len() as i32;
        if inst.call::<(i32, i32), i32>("proxy_on_configure", (ROOT as i32, conf_len))? == Some(0) {
            return Err(InstanceError::Refused {
                plugin,
                callback: "proxy_on_configure",
                what: "pluginConfig",
            });
        }
        Ok(inst)
    }

    fn has(&mut self, name: &str) -> bool {
        self.instance.get_func(&mut self.store, name).is_some()
    }

    /// Calls an export under the CPU budget; `None` when the module does not export it.
    /// A trap poisons the instance.
    fn call<P: WasmParams, R: WasmResults>(
        &mut self,
        name: &'static str,
        params: P,
    ) -> Result<Option<R>, InstanceError> {
        if self.poisoned {
            return Err(self.trap(name, "the instance trapped before".into()));
        }
        let Some(f) = self.instance.get_func(&mut self.store, name) else {
            return Ok(None);
        };
        let f = f
            .typed::<P, R>(&self.store)
            .map_err(|e| self.trap(name, format!("wrong signature: {e}")))?;
        self.store.set_epoch_deadline(self.deadline_ticks);
        match f.call(&mut self.store, params) {
            Ok(r) => Ok(Some(r)),
            Err(e) => {
                self.poisoned = true;
                Err(self.trap(name, describe(&e)))
            }
        }
    }

    fn trap(&self, callback: &'static str, reason: String) -> InstanceError {
        InstanceError::Trap {
            plugin: self.store.data().plugin_name.clone(),
            callback,
            reason,
        }
    }

    fn with_effective<T>(
        &mut self,
        ctx: u32,
        f: impl FnOnce(&mut Self) -> Result<T, InstanceError>,
    ) -> Result<T, InstanceError> {
        self.store.data_mut().effective = ctx;
        let r = f(self);
        self.store.data_mut().effective = ROOT;
        r
    }

    /// A new HTTP context, with what the proxy knows about its stream.
    pub fn create_stream(
        &mut self,
        attributes: Arc<HashMap<String, Value>>,
    ) -> Result<u32, InstanceError> {
        let id = self.next_context;
        self.next_context = self.next_context.wrapping_add(1).max(ROOT + 1);
        self.store.data_mut().streams.insert(
            id,
            StreamData {
                attributes,
                ..Default::default()
            },
        );
        self.with_effective(id, |i| {
            i.call::<(i32, i32), ()>("proxy_on_context_create", (id as i32, ROOT as i32))
        })?;
        Ok(id)
    }

    pub fn stream(&mut self, ctx: u32) -> Option<&mut StreamData> {
        self.store.data_mut().streams.get_mut(&ctx)
    }

    /// `proxy_on_request_headers` / `proxy_on_response_headers` with the given map.
    pub fn on_headers(
        &mut self,
        ctx: u32,
        response: bool,
        headers: HeaderMap,
        end_of_stream: bool,
    ) -> Result<(Action, HeaderMap), InstanceError> {
        let n = headers.len() as i32;
        let Some(st) = self.stream(ctx) else {
            return Err(self.trap("stream", "no such context".into()));
        };
        if response {
            st.response_headers = headers;
        } else {
            st.request_headers = headers;
        }
        let name = if response {
            "proxy_on_response_headers"
        } else {
            "proxy_on_request_headers"
        };
        let eos = i32::from(end_of_stream);
        let r = self.with_effective(ctx, |i| {
            i.call::<(i32, i32, i32), i32>(name, (ctx as i32, n, eos))
        })?;
        let Some(st) = self.stream(ctx) else {
            return Err(self.trap(name, "context gone".into()));
        };
        let out = if response {
            st.response_headers.clone()
        } else {
            st.request_headers.clone()
        };
        Ok((Action::from_raw(r.unwrap_or(0)), out))
    }

    /// `proxy_on_request_body` / `proxy_on_response_body` with the whole body.
    pub fn on_body(
        &mut self,
        ctx: u32,
        response: bool,
        body: Vec<u8>,
        end_of_stream: bool,
    ) -> Result<(Action, Vec<u8>), InstanceError> {
        let len = body.len() as i32;
        let Some(st) = self.stream(ctx) else {
            return Err(self.trap("stream", "no such context".into()));
        };
        if response {
            st.response_body = body;
        } else {
            st.request_body = body;
        }
        let name = if response {
            "proxy_on_response_body"
        } else {
            "proxy_on_request_body"
        };
        let eos = i32::from(end_of_stream);
        let r = self.with_effective(ctx, |i| {
            i.call::<(i32, i32, i32), i32>(name, (ctx as i32, len, eos))
        })?;
        let Some(st) = self.stream(ctx) else {
            return Err(self.trap(name, "context gone".into()));
        };
        let out = if response {
            std::mem::take(&mut st.response_body)
        } else {
            std::mem::take(&mut st.request_body)
        };
        Ok((Action::from_raw(r.unwrap_or(0)), out))
    }

    /// `proxy_on_request_trailers` / `proxy_on_response_trailers`.
    pub fn on_trailers(
        &mut self,
        ctx: u32,
        response: bool,
        trailers: HeaderMap,
    ) -> Result<(Action, HeaderMap), InstanceError> {
        let n = trailers.len() as i32;
        let Some(st) = self.stream(ctx) else {
            return Err(self.trap("stream", "no such context".into()));
        };
        if response {
            st.response_trailers = trailers;
        } else {
            st.request_trailers = trailers;
        }
        let name = if response {
            "proxy_on_response_trailers"
        } else {
            "proxy_on_request_trailers"
        };
        let r = self.with_effective(ctx, |i| i.call::<(i32, i32), i32>(name, (ctx as i32, n)))?;
        let Some(st) = self.stream(ctx) else {
            return Err(self.trap(name, "context gone".into()));
        };
        let out = if response {
            st.response_trailers.clone()
        } else {
            st.request_trailers.clone()
        };
        Ok((Action::from_raw(r.unwrap_or(0)), out))
    }

    /// The answer to call `token` (or `None`: it failed or timed out, reported to the plugin
    /// as a response with no headers, as Envoy does).
    pub fn on_http_call_response(
        &mut self,
        ctx: u32,
        token: u32,
        resp: Option<CallResponse>,
    ) -> Result<(), InstanceError> {
        if ctx != ROOT && !self.store.data().streams.contains_key(&ctx) {
            // The stream ended before the answer came: nobody to hand it to.
            self.store.data_mut().calls_in_flight.remove(&token);
            return Ok(());
        }
        let resp = resp.unwrap_or_default();
        let (nh, bl, nt) = (
            resp.headers.len() as i32,
            resp.body.len() as i32,
            resp.trailers.len() as i32,
        );
        self.store.data_mut().calls_in_flight.remove(&token);
        self.store.data_mut().call_response = Some(resp);
        let r = self.with_effective(ctx, |i| {
            i.call::<(i32, i32, i32, i32, i32), ()>(
                "proxy_on_http_call_response",
                (ctx as i32, token as i32, nh, bl, nt),
            )
        });
        self.store.data_mut().call_response = None;
        r.map(|_| ())
    }

    /// The end of a stream: `proxy_on_done`, `proxy_on_log`, `proxy_on_delete`.
    pub fn finish(&mut self, ctx: u32) -> Result<(), InstanceError> {
        if !self.store.data().streams.contains_key(&ctx) {
            return Ok(());
        }
        let r = self.with_effective(ctx, |i| {
            i.call::<i32, i32>("proxy_on_done", ctx as i32)?;
            i.call::<i32, ()>("proxy_on_log", ctx as i32)?;
            i.call::<i32, ()>("proxy_on_delete", ctx as i32)
        });
        self.store.data_mut().streams.remove(&ctx);
        r.map(|_| ())
    }

    pub fn tick(&mut self) -> Result<(), InstanceError> {
        self.call::<i32, ()>("proxy_on_tick", ROOT as i32)
            .map(|_| ())
    }

    pub fn queue_ready(&mut self, queue: u32) -> Result<(), InstanceError> {
        self.call::<(i32, i32), ()>("proxy_on_queue_ready", (ROOT as i32, queue as i32))
            .map(|_| ())
    }

    pub fn tick_period(&self) -> Option<std::time::Duration> {
        self.store.data().tick_period
    }

    /// Queues this instance registered.
    pub fn queues(&self) -> Vec<u32> {
        self.store.data().queues_ready.clone()
    }

    /// Calls made by the last callbacks, now to be sent.
    pub fn take_calls(&mut self) -> Vec<PendingCall> {
        let s = self.store.data_mut();
        let calls = std::mem::take(&mut s.pending_calls);
        for c in &calls {
            s.calls_in_flight.insert(c.token, c.context_id);
        }
        calls
    }
}

/// A trap's one-line reason: the wasm trap code when there is one (out of budget, unreachable
/// …), else the error chain.
fn describe(e: &wasmtime::Error) -> String {
    match e.downcast_ref::<wasmtime::Trap>() {
        Some(wasmtime::Trap::Interrupt) => "CPU budget exceeded (interrupted)".into(),
        Some(t) => t.to_string(),
        None => format!("{e:#}"),
    }
}

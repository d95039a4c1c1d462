//! A loaded plugin: its compiled module, one instance per worker (as Envoy has one VM per
//! worker thread), and the streams that run through them.
//!
//! A stream keeps to the instance it started on (its HTTP context lives there). Callbacks run
//! synchronously under the instance's lock and its CPU budget; a callback that pauses waits,
//! without the lock, for the plugin's calls to be answered and for the plugin to resume
//! the stream or answer it. A trap poisons only its instance: it is re-instantiated from the
//! compiled module at once, and the streams it held fail; others go on.

use std::collections::HashMap;
use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, Weak};
use std::time::Duration;

use futures::stream::{FuturesUnordered, StreamExt};
use tracing::{debug, warn};

pub use super::caller::{HttpCaller, NoCalls};
use super::engine::{EngineError, Host, Limits};
use super::instance::{Instance, InstanceError, Recipe};
use super::metrics::PluginMetrics;
use super::shared::Shared;
use super::state::PendingCall;
use super::types::{Action, CallRequest, CallResponse, HeaderMap, LocalResponse, Value};

/// What a plugin is loaded with.
#[derive(Debug, Clone, Default)]
pub struct PluginSpec {
    /// `<namespace>/<name>`, for logs and errors; also the `plugin_name` property.
    pub name: String,
    /// The root id (`pluginName` in Istio's API).
    pub root_id: String,
    pub vm_id: String,
    pub plugin_config: Vec<u8>,
    pub vm_config: Vec<u8>,
    /// `vmConfig.env`.
    pub env: Vec<(String, String)>,
    /// Instances (one per worker); at least one.
    pub workers: usize,
    pub limits: Limits,
    /// Longest a stream stays paused with nothing the host could answer it with.
    pub pause_limit: Option<Duration>,
}

/// What plugins share with the proxy.
#[derive(Clone)]
pub struct HostContext {
    pub metrics: Arc<PluginMetrics>,
    pub shared: Arc<Shared>,
    /// `node.*` properties.
    pub node: Arc<HashMap<String, Value>>,
    pub caller: Arc<dyn HttpCaller>,
}

impl Default for HostContext {
    fn default() -> Self {
        HostContext {
            metrics: Arc::default(),
            shared: Arc::default(),
            node: Arc::default(),
            caller: Arc::new(NoCalls),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PluginError {
    #[error(transparent)]
    Engine(#[from] EngineError),
    #[error(transparent)]
    Instance(#[from] InstanceError),
    #[error("WasmPlugin {plugin}: linking: {reason}")]
    Link { plugin: String, reason: String },
}

/// What a stream callback decided.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Verdict<T> {
    /// Go on, with the (possibly changed) headers, body or trailers.
    Continue(T),
    /// The plugin answered the request itself.
    Respond(LocalResponse),
}

struct Slot {
    instance: Mutex<Option<Instance>>,
    generation: AtomicU64,
}

struct Inner {
    recipe: Recipe,
    slots: Vec<Slot>,
    next: AtomicUsize,
    caller: Arc<dyn HttpCaller>,
    replaced: AtomicU64,
    ticker: AtomicBool,
    pause_limit: Duration,
}

/// A loaded plugin. Cheap to clone.
#[derive(Clone)]
pub struct Plugin {
    inner: Arc<Inner>,
}

impl std::fmt::Debug for Plugin {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Plugin")
            .field("name", &self.inner.recipe.plugin_name)
            .finish()
    }
}

impl Plugin {
    /// Compiles `module`, makes every worker's instance and configures it: a plugin whose
    /// `proxy_on_configure` refuses its configuration is an error here, not at request time.
    pub fn load(
        host: &Host,
        spec: PluginSpec,
        module: &[u8],
        cx: HostContext,
    ) -> Result<Plugin, PluginError> {
        let compiled = host.compile(&spec.name, module)?;
        let linker = host.linker_for(&compiled)?;
        let pre = linker
            .instantiate_pre(&compiled)
            .map_err(|e| PluginError::Link {
                plugin: spec.name.clone(),
                reason: format!("{e:#}"),
            })?;
        let recipe = Recipe {
            pre,
            plugin_name: spec.name.clone(),
            root_id: spec.root_id.clone(),
            vm_id: spec.vm_id.clone(),
            plugin_config: spec.plugin_config.clone(),
            vm_config: spec.vm_config.clone(),
            env: spec.env.clone(),
            node: cx.node.clone(),
            limits: spec.limits,
            metrics: cx.metrics.clone(),
            shared: cx.shared.clone(),
            caller: cx.caller.clone(),
        };
        let mut slots = Vec::new();
        for _ in 0..spec.workers.max(1) {
            slots.push(Slot {
                instance: Mutex::new(Some(Instance::new(&recipe)?)),
                generation: AtomicU64::new(0),
            });
        }
        let plugin = Plugin {
            inner: Arc::new(Inner {
                recipe,
                slots,
                next: AtomicUsize::new(0),
                caller: cx.caller,
                replaced: AtomicU64::new(0),
                ticker: AtomicBool::new(false),
                pause_limit: spec.pause_limit.unwrap_or(Duration::from_secs(30)),
            }),
        };
        plugin.inner.maybe_start_ticker();
        Ok(plugin)
    }

    pub fn name(&self) -> &str {
        &self.inner.recipe.plugin_name
    }

    /// How many instances were replaced after a trap.
    pub fn replaced(&self) -> u64 {
        self.inner.replaced.load(Ordering::Relaxed)
    }

    /// A new HTTP stream on the next worker's instance.
    pub fn stream(&self, attributes: Arc<HashMap<String, Value>>) -> Result<Stream, InstanceError> {
        let inner = &self.inner;
        let slot = inner.next.fetch_add(1, Ordering::Relaxed) % inner.slots.len();
        let (ctx, generation) = inner.with_instance(slot, None, |i| i.create_stream(attributes))?;
        Ok(Stream {
            plugin: self.inner.clone(),
            slot,
            generation,
            ctx,
            finished: false,
        })
    }
}

impl Inner {
    fn lock(&self, slot: usize) -> MutexGuard<'_, Option<Instance>> {
        self.slots[slot]
            .instance
            .lock()
            .unwrap_or_else(|e| e.into_inner())
    }

    /// Runs `f` on the slot's instance (of generation `expect`, when given), re-instantiating
    /// it when it is missing or `f` trapped. Returns `f`'s result and the generation it ran on.
    fn with_instance<T>(
        &self,
        slot: usize,
        expect: Option<u64>,
        f: impl FnOnce(&mut Instance) -> Result<T, InstanceError>,
    ) -> Result<(T, u64), InstanceError> {
        let mut g = self.lock(slot);
        let s = &self.slots[slot];
        let generation = s.generation.load(Ordering::Acquire);
        if expect.is_some_and(|e| e != generation) {
            return Err(InstanceError::Trap {
                plugin: self.recipe.plugin_name.clone(),
                callback: "stream",
                reason: "the stream's instance trapped and was replaced".into(),
            });
        }
        if g.is_none() {
            *g = Some(Instance::new(&self.recipe)?);
        }
        let inst = g.as_mut().expect("instance present");
        let r = f(inst);
        if inst.poisoned {
            warn!(plugin = %self.recipe.plugin_name, slot, "wasm instance trapped; re-instantiating");
            s.generation.fetch_add(1, Ordering::AcqRel);
            self.replaced.fetch_add(1, Ordering::Relaxed);
            *g = match Instance::new(&self.recipe) {
                Ok(i) => Some(i),
                Err(e) => {
                    warn!(plugin = %self.recipe.plugin_name, "re-instantiating failed: {e}");
                    None
                }
            };
        }
        r.map(|v| (v, generation))
    }

    /// Starts the timer task once an instance asked for ticks or registered a queue.
    fn maybe_start_ticker(self: &Arc<Self>) {
        if self.ticker.load(Ordering::Relaxed) {
            return;
        }
        let wants = (0..self.slots.len()).any(|s| {
            self.lock(s)
                .as_ref()
                .is_some_and(|i| i.tick_period().is_some() || !i.queues().is_empty())
        });
        let Ok(rt) = tokio::runtime::Handle::try_current() else {
            return;
        };
        if wants && !self.ticker.swap(true, Ordering::AcqRel) {
            rt.spawn(ticker(Arc::downgrade(self)));
        }
    }

    /// Sends the calls the root context made (from a tick or a queue), delivering answers.
    fn send_root_calls(self: &Arc<Self>, slot: usize, generation: u64, calls: Vec<PendingCall>) {
        for c in calls {
            let weak = Arc::downgrade(self);
            let fut = send(&self.caller, c.request);
            tokio::spawn(async move {
                let resp = fut.await;
                if let Some(inner) = weak.upgrade() {
                    let r = inner.with_instance(slot, Some(generation), |i| {
                        i.on_http_call_response(c.context_id, c.token, resp)?;
                        Ok(i.take_calls())
                    });
                    if let Ok((more, g)) = r {
                        inner.send_root_calls(slot, g, more);
                    }
                }
            });
        }
    }
}

/// A call being answered: (context, token, answer).
type Answer = Pin<Box<dyn Future<Output = (u32, u32, Option<CallResponse>)> + Send>>;

/// One call's answer, `None` on failure or timeout.
fn send(
    caller: &Arc<dyn HttpCaller>,
    req: CallRequest,
) -> impl Future<Output = Option<CallResponse>> + Send + 'static {
    let timeout = if req.timeout.is_zero() {
        Duration::from_secs(60)
    } else {
        req.timeout
    };
    let upstream = req.upstream.clone();
    let fut = caller.call(req);
    async move {
        match tokio::time::timeout(timeout, fut).await {
            Ok(Ok(r)) => Some(r),
            Ok(Err(e)) => {
                debug!(%upstream, "plugin call failed: {e}");
                None
            }
            Err(_) => {
                debug!(%upstream, "plugin call timed out");
                None
            }
        }
    }
}

/// `proxy_on_tick` when due and `proxy_on_queue_ready` for non-empty queues, for every
/// instance, while the plugin lives.
async fn ticker(weak: Weak<Inner>) {
    let step = Duration::from_millis(10);
    let mut last: Vec<tokio::time::Instant> = Vec::new();
    loop {
        tokio::time::sleep(step).await;
        let Some(inner) = weak.upgrade() else { return };
        last.resize(inner.slots.len(), tokio::time::Instant::now());
        for (slot, last_tick) in last.iter_mut().enumerate() {
            let now = tokio::time::Instant::now();
            let due = *last_tick;
            let r = inner.with_instance(slot, None, |i| {
                if let Some(p) = i.tick_period() {
                    if now.duration_since(due) >= p {
                        i.tick()?;
                    }
                }
                for q in i.queues() {
                    // Told once per pass while the queue holds items.
                    if inner.recipe.shared.has_items(q) {
                        i.queue_ready(q)?;
                    }
                }
                Ok((i.tick_period(), i.take_calls()))
            });
            match r {
                Ok(((Some(p), calls), g)) => {
                    if now.duration_since(due) >= p {
                        *last_tick = now;
                    }
                    inner.send_root_calls(slot, g, calls);
                }
                Ok(((None, calls), g)) => inner.send_root_calls(slot, g, calls),
                Err(e) => warn!("wasm timer: {e}"),
            }
        }
    }
}

/// One HTTP stream's context on one instance. Ends the context (`proxy_on_done`,
/// `proxy_on_log`, `proxy_on_delete`) when finished or dropped.
pub struct Stream {
    plugin: Arc<Inner>,
    slot: usize,
    generation: u64,
    ctx: u32,
    finished: bool,
}

impl std::fmt::Debug for Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Stream")
            .field("plugin", &self.plugin.recipe.plugin_name)
            .field("ctx", &self.ctx)
            .finish()
    }
}

impl Stream {
    pub async fn request_headers(
        &mut self,
        h: HeaderMap,
        eos: bool,
    ) -> Result<Verdict<HeaderMap>, InstanceError> {
        self.run(
            false,
            |i, c| i.on_headers(c, false, h, eos),
            |i, c| {
                i.stream(c)
                    .map(|s| s.request_headers.clone())
                    .unwrap_or_default()
            },
        )
        .await
    }

    pub async fn request_body(
        &mut self,
        b: Vec<u8>,
        eos: bool,
    ) -> Result<Verdict<Vec<u8>>, InstanceError> {
        self.run(
            false,
            |i, c| i.on_body(c, false, b, eos),
            |i, c| {
                i.stream(c)
                    .map(|s| std::mem::take(&mut s.request_body))
                    .unwrap_or_default()
            },
        )
        .await
    }

    pub async fn request_trailers(
        &mut self,
        t: HeaderMap,
    ) -> Result<Verdict<HeaderMap>, InstanceError> {
        self.run(
            false,
            |i, c| i.on_trailers(c, false, t),
            |i, c| {
                i.stream(c)
                    .map(|s| s.request_trailers.clone())
                    .unwrap_or_default()
            },
        )
        .await
    }

    pub async fn response_headers(
        &mut self,
        h: HeaderMap,
        eos: bool,
    ) -> Result<Verdict<HeaderMap>, InstanceError> {
        self.run(
            true,
            |i, c| i.on_headers(c, true, h, eos),
            |i, c| {
                i.stream(c)
                    .map(|s| s.response_headers.clone())
                    .unwrap_or_default()
            },
        )
        .await
    }

    pub async fn response_body(
        &mut self,
        b: Vec<u8>,
        eos: bool,
    ) -> Result<Verdict<Vec<u8>>, InstanceError> {
        self.run(
            true,
            |i, c| i.on_body(c, true, b, eos),
            |i, c| {
                i.stream(c)
                    .map(|s| std::mem::take(&mut s.response_body))
                    .unwrap_or_default()
            },
        )
        .await
    }

    pub async fn response_trailers(
        &mut self,
        t: HeaderMap,
    ) -> Result<Verdict<HeaderMap>, InstanceError> {
        self.run(
            true,
            |i, c| i.on_trailers(c, true, t),
            |i, c| {
                i.stream(c)
                    .map(|s| s.response_trailers.clone())
                    .unwrap_or_default()
            },
        )
        .await
    }

    /// Runs one stream callback; while it pauses, answers its calls until it resumes,
    /// responds, or has nothing left to wait for past the pause limit.
    async fn run<T>(
        &mut self,
        response: bool,
        invoke: impl FnOnce(&mut Instance, u32) -> Result<(Action, T), InstanceError>,
        read_back: impl Fn(&mut Instance, u32) -> T,
    ) -> Result<Verdict<T>, InstanceError> {
        let ctx = self.ctx;
        let inner = self.plugin.clone();
        let ((action, value, local, calls), _) =
            inner.with_instance(self.slot, Some(self.generation), |i| {
                if let Some(st) = i.stream(ctx) {
                    st.resumed_request = false;
                    st.resumed_response = false;
                }
                let (action, value) = invoke(i, ctx)?;
                let local = i.stream(ctx).and_then(|s| s.local_response.take());
                Ok((action, value, local, i.take_calls()))
            })?;
        inner.maybe_start_ticker();
        if let Some(l) = local {
            self.detach_calls(calls);
            return Ok(Verdict::Respond(l));
        }
        if action == Action::Continue {
            self.detach_calls(calls);
            return Ok(Verdict::Continue(value));
        }
        // Paused: answer the plugin's calls until it resumes or responds.
        let answer = |c: PendingCall| -> Answer {
            let fut = send(&inner.caller, c.request);
            Box::pin(async move { (c.context_id, c.token, fut.await) })
        };
        let mut waiting: FuturesUnordered<Answer> = calls.into_iter().map(answer).collect();
        let deadline = tokio::time::Instant::now() + inner.pause_limit;
        loop {
            let next = if waiting.is_empty() {
                // Nothing to answer: a timer or queue may still resume the stream.
                tokio::time::sleep(Duration::from_millis(5)).await;
                None
            } else {
                tokio::time::timeout_at(deadline, waiting.next())
                    .await
                    .unwrap_or_default()
            };
            let ((resumed, local, more, value), _) =
                inner.with_instance(self.slot, Some(self.generation), |i| {
                    if let Some((cctx, token, resp)) = next {
                        i.on_http_call_response(cctx, token, resp)?;
                    }
                    let st = i.stream(ctx);
                    let resumed = st.as_ref().is_some_and(|s| {
                        if response {
                            s.resumed_response
                        } else {
                            s.resumed_request
                        }
                    });
                    let local = i.stream(ctx).and_then(|s| s.local_response.take());
                    let value = (resumed && local.is_none()).then(|| read_back(i, ctx));
                    Ok((resumed, local, i.take_calls(), value))
                })?;
            if let Some(l) = local {
                self.detach_calls(more);
                return Ok(Verdict::Respond(l));
            }
            if resumed {
                self.detach_calls(more);
                return Ok(Verdict::Continue(value.expect("read back when resumed")));
            }
            for c in more {
                waiting.push(answer(c));
            }
            if tokio::time::Instant::now() >= deadline {
                return Err(InstanceError::Trap {
                    plugin: inner.recipe.plugin_name.clone(),
                    callback: if response {
                        "response (paused)"
                    } else {
                        "request (paused)"
                    },
                    reason: format!(
                        "the plugin paused the stream and did not resume it within {:?}",
                        inner.pause_limit
                    ),
                });
            }
        }
    }

    /// Calls made by a callback that did not pause are still sent (a mirror); their
    /// answers reach the plugin while the stream lives.
    fn detach_calls(&self, calls: Vec<PendingCall>) {
        if calls.is_empty() {
            return;
        }
        self.plugin
            .send_root_calls(self.slot, self.generation, calls);
    }

    /// Ends the context now.
    pub fn finish(mut self) {
        self.end();
    }

    fn end(&mut self) {
        if std::mem::replace(&mut self.finished, true) {
            return;
        }
        let ctx = self.ctx;
        if let Err(e) = self
            .plugin
            .with_instance(self.slot, Some(self.generation), |i| i.finish(ctx))
        {
            debug!("wasm stream end: {e}");
        }
    }
}

impl Drop for Stream {
    fn drop(&mut self) {
        self.end();
    }
}

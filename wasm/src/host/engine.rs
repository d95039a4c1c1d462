//! The shared wasmtime engine and the limits every plugin instance runs under.
//!
//! CPU: epoch interruption. One thread advances the engine's epoch every [`EPOCH_TICK`]; each
//! callback gets a deadline of [`Limits::callback_budget`] worth of ticks and traps when it
//! runs past it, so a spinning plugin holds its worker for at most that long.
//! Memory: each instance's store has a [`wasmtime::StoreLimits`] of
//! [`Limits::memory_bytes`]; a `memory.grow` past it fails (and Rust guests abort, a trap).

use std::sync::{Arc, OnceLock};
use std::time::Duration;

use wasmtime::{Config, Engine, Linker, Module, OptLevel};

use super::abi;
use super::state::HostState;

/// How often the epoch advances.
pub const EPOCH_TICK: Duration = Duration::from_millis(5);

/// Per-instance limits.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Limits {
    /// Largest linear memory of one instance.
    pub memory_bytes: usize,
    /// Longest one callback may run.
    pub callback_budget: Duration,
}

impl Default for Limits {
    fn default() -> Self {
        Limits {
            memory_bytes: 64 << 20,
            callback_budget: Duration::from_millis(100),
        }
    }
}

impl Limits {
    pub(crate) fn deadline_ticks(&self) -> u64 {
        (self.callback_budget.as_nanos() / EPOCH_TICK.as_nanos()).max(1) as u64 + 1
    }
}

#[derive(Debug, thiserror::Error)]
pub enum EngineError {
    #[error("wasm engine: {0}")]
    Engine(String),
    #[error("WasmPlugin {plugin}: module does not compile: {reason}")]
    Compile { plugin: String, reason: String },
}

/// The engine and linker every plugin shares. Cheap to clone.
#[derive(Clone)]
pub struct Host {
    pub(crate) engine: Engine,
    pub(crate) linker: Arc<Linker<HostState>>,
}

impl std::fmt::Debug for Host {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str("Host")
    }
}

impl Host {
    /// The process's host: one engine, one epoch thread.
    pub fn shared() -> Result<Host, EngineError> {
        static HOST: OnceLock<Result<Host, String>> = OnceLock::new();
        HOST.get_or_init(|| Host::new().map_err(|e| e.to_string()))
            .clone()
            .map_err(EngineError::Engine)
    }

    fn new() -> Result<Host, EngineError> {
        let mut cfg = Config::new();
        cfg.epoch_interruption(true)
            .cranelift_opt_level(OptLevel::Speed);
        let engine = Engine::new(&cfg).map_err(|e| EngineError::Engine(e.to_string()))?;
        let mut linker: Linker<HostState> = Linker::new(&engine);
        wasmtime_wasi::p1::add_to_linker_sync(&mut linker, |s: &mut HostState| &mut s.wasi)
            .map_err(|e| EngineError::Engine(e.to_string()))?;
        abi::add_to_linker(&mut linker).map_err(|e| EngineError::Engine(e.to_string()))?;
        let host = Host {
            engine,
            linker: Arc::new(linker),
        };
        spawn_epoch_thread(host.engine.weak());
        Ok(host)
    }

    /// The linker for one module: the shared one, with the WASI calls that would need an
    /// async runtime replaced by synchronous ones (see [`super::wasi`]).
    pub(crate) fn linker_for(&self, module: &Module) -> Result<Linker<HostState>, EngineError> {
        let mut l = (*self.linker).clone();
        super::wasi::shadow_async_calls(&mut l, module)
            .map_err(|e| EngineError::Engine(e.to_string()))?;
        Ok(l)
    }

    /// Compiles a module (Cranelift; the cost of loading a plugin, paid once per module).
    pub fn compile(&self, plugin: &str, bytes: &[u8]) -> Result<Module, EngineError> {
        Module::new(&self.engine, bytes).map_err(|e| EngineError::Compile {
            plugin: plugin.to_string(),
            reason: format!("{e:#}"),
        })
    }
}

/// Advances the epoch while the engine lives.
fn spawn_epoch_thread(engine: wasmtime::EngineWeak) {
    let spawned = std::thread::Builder::new()
        .name("wasm-epoch".into())
        .spawn(move || loop {
            std::thread::sleep(EPOCH_TICK);
            match engine.upgrade() {
                Some(e) => e.increment_epoch(),
                None => return,
            }
        });
    if let Err(e) = spawned {
        tracing::error!(
            "wasm: cannot start the epoch thread, plugins run without a CPU budget: {e}"
        );
    }
}

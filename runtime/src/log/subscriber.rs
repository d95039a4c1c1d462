//! The process's `tracing` subscriber: a reloadable `RUST_LOG` filter (default `info`) and
//! plain or JSON lines written through a [`LineSink`].

use std::io;
use std::sync::Arc;

use tracing_subscriber::layer::SubscriberExt;
use tracing_subscriber::util::SubscriberInitExt;
use tracing_subscriber::{reload, EnvFilter, Registry};

use super::sink::{LineSink, SinkGuard, Stream};

/// How log lines are written (the proxies' `--log-format`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[cfg_attr(feature = "clap", derive(clap::ValueEnum))]
pub enum Format {
    Plain,
    Json,
}

/// Changes the filter at run time (`RUST_LOG` syntax, e.g. `info,meshwork_ztunnel=debug`).
pub type LevelControl = Arc<dyn Fn(&str) -> Result<(), String> + Send + Sync>;

/// The installed logging. Keep it until the process ends: dropping it writes the queued
/// lines and stops the writer thread.
pub struct Logging {
    sink: LineSink,
    reload: reload::Handle<EnvFilter, Registry>,
    _guard: SinkGuard,
}

/// Installs the process's `tracing` subscriber writing to `stream` from a thread named
/// `thread_name`. Colours only when `stream` is a terminal. If a subscriber is already
/// installed (tests), it stays and this one is not used.
pub fn init(format: Format, stream: Stream, thread_name: &str) -> io::Result<Logging> {
    let (sink, guard) = LineSink::new(stream, thread_name)?;
    let filter = EnvFilter::try_from_default_env().unwrap_or_else(|_| EnvFilter::new("info"));
    let (filter, reload) = reload::Layer::new(filter);
    let fmt = tracing_subscriber::fmt::layer()
        .with_writer(sink.make_writer())
        .with_ansi(stream.is_terminal());
    let registry = tracing_subscriber::registry().with(filter);
    let _ = match format {
        Format::Json => registry.with(fmt.json()).try_init(),
        Format::Plain => registry.with(fmt).try_init(),
    };
    Ok(Logging {
        sink,
        reload,
        _guard: guard,
    })
}

impl Logging {
    /// Replaces the filter; an invalid one is refused and the current one stays.
    pub fn set_level(&self, directives: &str) -> Result<(), String> {
        set_filter(&self.reload, directives)
    }

    /// [`Logging::set_level`] as a shareable function.
    pub fn level_control(&self) -> LevelControl {
        let handle = self.reload.clone();
        Arc::new(move |directives: &str| set_filter(&handle, directives))
    }

    /// The sink the log lines go through (its drop count).
    pub fn sink(&self) -> &LineSink {
        &self.sink
    }
}

fn set_filter(
    handle: &reload::Handle<EnvFilter, Registry>,
    directives: &str,
) -> Result<(), String> {
    let f = EnvFilter::try_new(directives).map_err(|e| e.to_string())?;
    handle.reload(f).map_err(|e| e.to_string())
}

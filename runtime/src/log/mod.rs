//! Logging for the Meshwork binaries.
//!
//! Every line, whether a `tracing` event or an access-log entry, is handed to a background
//! thread that writes it to stdout or stderr. A data-path thread therefore never blocks on
//! a slow or stuck log reader: a full pipe to the container runtime, a paused terminal, a
//! log shipper that fell behind. While the reader keeps up, no line is lost and order is
//! kept. Once it is [`BUFFERED_LINES`] lines behind, new lines are dropped and counted
//! ([`LineSink::dropped`]): traffic is worth more than its log.

mod sink;
mod subscriber;

pub use sink::{dropped_lines, LineSink, SinkGuard, Stream, BUFFERED_LINES};
pub use subscriber::{init, Format, LevelControl, Logging};

//! HTTP/2 tuning shared by the HBONE client and server.

use std::time::Duration;

/// HTTP/2 and connection settings. The defaults favour throughput: large windows so a
/// single stream is not throttled by flow control on a fast link.
#[derive(Debug, Clone)]
pub struct H2Settings {
    /// Initial per-stream receive window.
    pub stream_window: u32,
    /// Connection-level receive window.
    pub connection_window: u32,
    /// Largest frame we accept.
    pub max_frame_size: u32,
    /// Per-stream send buffer.
    pub max_send_buffer: usize,
    /// Concurrent streams a peer may open on one connection (server side).
    pub max_concurrent_streams: u32,
    /// TLS + HTTP/2 handshake deadline.
    pub handshake_timeout: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            stream_window: 4 * 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 1024 * 1024,
            max_send_buffer: 1024 * 1024,
            max_concurrent_streams: 1000,
            handshake_timeout: Duration::from_secs(10),
        }
    }
}

impl H2Settings {
    pub(crate) fn server_builder(&self) -> h2::server::Builder {
        let mut b = h2::server::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.max_send_buffer)
            .max_concurrent_streams(self.max_concurrent_streams);
        b
    }

    pub(crate) fn client_builder(&self) -> h2::client::Builder {
        let mut b = h2::client::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.max_send_buffer)
            .enable_push(false);
        b
    }
}

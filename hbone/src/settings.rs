//! HTTP/2 tuning shared by the HBONE client and server.
//!
//! Flow control is sized so that one stream can never stall another on the same
//! connection: the connection window the pool advertises is at least
//! `max_streams_per_conn × stream_window` ([`H2Settings::connection_window_for`]), so the
//! streams whose readers never read can hold at most their own windows and every other
//! stream keeps its full window. Memory is bounded per stream (`stream_window`) and per
//! connection (the connection window), and the pool spreads streams over several
//! connections instead of growing one.

use std::time::Duration;

/// Largest HTTP/2 window (RFC 9113 §6.9.1).
pub const MAX_WINDOW: u32 = (1 << 31) - 1;

/// Default limit on a request's header list (the sum of names, values and 32 bytes per
/// field, RFC 9113 §6.5.2): Envoy's default `max_request_headers_kb`, 60 KiB.
pub const DEFAULT_MAX_HEADER_LIST_SIZE: u32 = 60 * 1024;

/// HTTP/2 and connection settings.
#[derive(Debug, Clone)]
pub struct H2Settings {
    /// Initial per-stream receive window.
    pub stream_window: u32,
    /// Connection-level receive window (the pool raises it to
    /// [`H2Settings::connection_window_for`] its stream cap).
    pub connection_window: u32,
    /// Largest frame we accept.
    pub max_frame_size: u32,
    /// Per-stream send buffer.
    pub max_send_buffer: usize,
    /// Concurrent streams a peer may open on one connection (server side).
    pub max_concurrent_streams: u32,
    /// Largest header list a peer may send (server side); a larger request is refused
    /// (431 and stream reset) before it reaches the handler.
    pub max_header_list_size: u32,
    /// TLS + HTTP/2 handshake deadline; also how long a new connection may go without
    /// opening its first stream (server side).
    pub handshake_timeout: Duration,
    /// Server side: a connection whose streams have all ended is closed (GOAWAY) after
    /// this long without a new one. Longer than any client pool keeps an unused
    /// connection (Meshwork's 60 s, Istio ztunnel's 5 min), so it only ends connections a
    /// well-behaved client has forgotten or a hostile one holds.
    pub idle_timeout: Duration,
}

impl Default for H2Settings {
    fn default() -> Self {
        H2Settings {
            // 1 MiB per stream still fills a data-centre link (1 MiB per 1 ms RTT is
            // 1 GB/s); 16 of them fit the 16 MiB connection window, which is the pool's
            // default stream cap per connection.
            stream_window: 1024 * 1024,
            connection_window: 16 * 1024 * 1024,
            max_frame_size: 1024 * 1024,
            max_send_buffer: 1024 * 1024,
            // Istio's ztunnel opens up to 100 streams per connection; a peer opening more
            // waits (SETTINGS_MAX_CONCURRENT_STREAMS).
            max_concurrent_streams: 100,
            max_header_list_size: DEFAULT_MAX_HEADER_LIST_SIZE,
            handshake_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(10 * 60),
        }
    }
}

impl H2Settings {
    /// The connection window that leaves every one of `streams` concurrent streams its
    /// full `stream_window`, whatever the others do (at least `connection_window`, at most
    /// the HTTP/2 maximum).
    pub fn connection_window_for(&self, streams: usize) -> u32 {
        let all = (self.stream_window as u64).saturating_mul(streams as u64);
        all.max(self.connection_window as u64)
            .min(MAX_WINDOW as u64) as u32
    }

    pub(crate) fn server_builder(&self) -> h2::server::Builder {
        let mut b = h2::server::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(self.connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.max_send_buffer)
            .max_concurrent_streams(self.max_concurrent_streams)
            .max_header_list_size(self.max_header_list_size);
        b
    }

    /// Client side: `connection_window` is the window the connection advertises.
    pub(crate) fn client_builder(&self, connection_window: u32) -> h2::client::Builder {
        let mut b = h2::client::Builder::new();
        b.initial_window_size(self.stream_window)
            .initial_connection_window_size(connection_window)
            .max_frame_size(self.max_frame_size)
            .max_send_buffer_size(self.max_send_buffer)
            .max_header_list_size(self.max_header_list_size)
            .enable_push(false);
        b
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_connection_window_covers_every_stream_of_a_full_connection() {
        let s = H2Settings::default();
        // The defaults: 16 streams of 1 MiB fit the 16 MiB window exactly.
        assert_eq!(s.connection_window_for(16), s.connection_window);
        assert_eq!(s.connection_window_for(1), s.connection_window);
        assert_eq!(s.connection_window_for(100), 100 * 1024 * 1024);
        assert_eq!(s.connection_window_for(usize::MAX), MAX_WINDOW);
    }
}

//! Copying bytes both ways between a downstream and an upstream, counting them live.

use std::io;
use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use prometheus_client::metrics::counter::Counter;
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio_util::sync::CancellationToken;

/// Byte totals of one connection, readable while it runs.
#[derive(Debug, Default)]
pub struct Bytes {
    /// Downstream → upstream.
    pub received: AtomicU64,
    /// Upstream → downstream.
    pub sent: AtomicU64,
}

/// Counts what is read from (received) and written to (sent) the downstream.
struct Counted<'a, T> {
    inner: T,
    totals: &'a Bytes,
    received: Option<&'a Counter>,
    sent: Option<&'a Counter>,
}

impl<T: AsyncRead + Unpin> AsyncRead for Counted<'_, T> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let before = buf.filled().len();
        let r = Pin::new(&mut self.inner).poll_read(cx, buf);
        let n = (buf.filled().len() - before) as u64;
        if n > 0 {
            self.totals.received.fetch_add(n, Ordering::Relaxed);
            if let Some(c) = self.received {
                c.inc_by(n);
            }
        }
        r
    }
}

impl<T: AsyncWrite + Unpin> AsyncWrite for Counted<'_, T> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        let r = Pin::new(&mut self.inner).poll_write(cx, buf);
        if let Poll::Ready(Ok(n)) = r {
            self.totals.sent.fetch_add(n as u64, Ordering::Relaxed);
            if let Some(c) = self.sent {
                c.inc_by(n as u64);
            }
        }
        r
    }
    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }
    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

/// How a relay ended.
#[derive(Debug)]
pub enum RelayEnd {
    /// Both directions finished.
    Done,
    /// An I/O error on either side.
    Error(io::Error),
    /// Closed by `cancel` (policy change, drain deadline).
    Cancelled,
}

/// Copies both ways until both sides finish, an error occurs or `cancel` fires.
pub async fn relay<D, U>(
    downstream: D,
    mut upstream: U,
    totals: Arc<Bytes>,
    counters: Option<&crate::metrics::ConnCounters>,
    cancel: &CancellationToken,
) -> RelayEnd
where
    D: AsyncRead + AsyncWrite + Unpin,
    U: AsyncRead + AsyncWrite + Unpin,
{
    let mut down = Counted {
        inner: downstream,
        totals: &totals,
        received: counters.map(|c| &c.received),
        sent: counters.map(|c| &c.sent),
    };
    tokio::select! {
        r = crate::copy::bidirectional(&mut down, &mut upstream) => match r {
            Ok(_) => RelayEnd::Done,
            Err(e) => RelayEnd::Error(e),
        },
        _ = cancel.cancelled() => RelayEnd::Cancelled,
    }
}

/// Like [`relay`] between a TCP stream and an HBONE tunnel, without copying payloads
/// into or out of HTTP/2. `tcp_is_downstream` says which side the byte counts are
/// reported for (outbound: the client's TCP; inbound: the tunnel).
pub async fn relay_h2<T>(
    mut tcp: T,
    mut h2: meshwork_hbone::H2Stream,
    tcp_is_downstream: bool,
    totals: Arc<Bytes>,
    counters: Option<&crate::metrics::ConnCounters>,
    cancel: &CancellationToken,
) -> RelayEnd
where
    T: AsyncRead + AsyncWrite + Unpin,
{
    let received = |n: u64| {
        totals.received.fetch_add(n, Ordering::Relaxed);
        if let Some(c) = counters {
            c.received.inc_by(n);
        }
    };
    let sent = |n: u64| {
        totals.sent.fetch_add(n, Ordering::Relaxed);
        if let Some(c) = counters {
            c.sent.inc_by(n);
        }
    };
    // Reads from the TCP side are what the downstream sent us when the TCP side is the
    // downstream, and what we send to the downstream otherwise.
    let (on_read, on_write): (&(dyn Fn(u64) + Sync), &(dyn Fn(u64) + Sync)) = if tcp_is_downstream {
        (&received, &sent)
    } else {
        (&sent, &received)
    };
    tokio::select! {
        r = crate::copy::bidirectional_h2(&mut tcp, &mut h2, on_read, on_write) => match r {
            Ok(()) => RelayEnd::Done,
            Err(e) => RelayEnd::Error(e),
        },
        _ = cancel.cancelled() => RelayEnd::Cancelled,
    }
}

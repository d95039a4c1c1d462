//! Serving HTTP/1.1 and HTTP/2 (detected from the connection preface) on any byte stream:
//! a TCP socket in tests, a tunneled HBONE stream in the mesh.

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, Incoming, SizeHint};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use meshwork_runtime::drain::Drain;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use crate::body::{Body, BoxError};
use crate::request::conn::ConnContext;
use crate::request::service::L7Service;

/// Downstream protocol limits, and the drain that ends downstream connections gracefully.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Largest request header block; larger gets 431 (HTTP/1.1) or a stream error (HTTP/2).
    pub max_header_bytes: usize,
    /// HTTP/1.1: the deadline for a request's headers. Both protocols: a new connection
    /// (a tunnel's inner HTTP/2 connection too) must start its first request within it.
    pub header_read_timeout: Duration,
    /// A connection with no request in flight (none started, or all answered) for this
    /// long is closed gracefully (Envoy's HTTP connection manager `idle_timeout`, 1 h).
    pub idle_timeout: Duration,
    pub max_concurrent_streams: u32,
    /// Once it starts, each connection finishes what is in flight and closes: HTTP/1.1
    /// answers with `Connection: close` (an idle connection closes at once), HTTP/2 sends
    /// GOAWAY. Connections are tracked by it (the caller spawns them on it).
    pub drain: Drain,
}

impl Default for ServerLimits {
    /// Envoy's defaults: 60 KiB of headers, 100 concurrent streams.
    fn default() -> Self {
        ServerLimits {
            max_header_bytes: 60 * 1024,
            header_read_timeout: Duration::from_secs(30),
            idle_timeout: Duration::from_secs(3600),
            max_concurrent_streams: 100,
            drain: Drain::new(),
        }
    }
}

/// Serves one downstream connection until it closes, or until `limits.drain` has started
/// and what was in flight is done. Protocol errors end the connection (after an HTTP/1.1
/// 400/431 reply or an HTTP/2 GOAWAY), never the process.
pub async fn serve_connection<IO>(io: IO, svc: L7Service, ctx: ConnContext, limits: &ServerLimits)
where
    IO: AsyncRead + AsyncWrite + Send + Unpin + 'static,
{
    let ctx = Arc::new(ctx);
    let in_flight = Arc::new(InFlight::default());
    let requests = in_flight.clone();
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let svc = svc.clone();
        let ctx = ctx.clone();
        // In flight until its response body has been sent (or dropped).
        let guard = InFlight::start(&requests);
        // Boxed: HTTP/2 spawns a task per stream holding this future, and moving the
        // whole request state machine into it costs more than one allocation.
        Box::pin(async move {
            let resp = svc.handle(req, &ctx).await;
            Ok::<_, Infallible>(resp.map(|body| Guarded {
                body,
                _guard: guard,
            }))
        })
    });
    let mut builder = auto::Builder::new(TokioExecutor::new());
    builder
        .http1()
        .max_buf_size(limits.max_header_bytes.max(8192))
        .timer(TokioTimer::new())
        .header_read_timeout(limits.header_read_timeout);
    builder
        .http2()
        .max_header_list_size(limits.max_header_bytes as u32)
        .max_concurrent_streams(limits.max_concurrent_streams)
        .timer(TokioTimer::new());
    let conn = builder.serve_connection(TokioIo::new(io), service);
    tokio::pin!(conn);
    // With no request in flight the connection lives until this deadline: the header
    // read timeout for its first request, `idle_timeout` after its last. Once shutting
    // down (drain or idle), a connection with nothing in flight that has not closed
    // within the header read timeout (a peer that never acknowledges GOAWAY) is dropped.
    let mut deadline = Instant::now() + limits.header_read_timeout;
    let mut shutting_down = false;
    let ended = loop {
        let idle = in_flight.count() == 0;
        tokio::select! {
            ended = conn.as_mut() => break ended,
            _ = limits.drain.started(), if !shutting_down => {
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
                deadline = Instant::now() + limits.header_read_timeout;
            }
            _ = in_flight.none_left.notified() => {
                if in_flight.count() == 0 {
                    let wait = if shutting_down {
                        limits.header_read_timeout
                    } else {
                        limits.idle_timeout
                    };
                    deadline = Instant::now() + wait;
                }
            }
            _ = tokio::time::sleep_until(deadline), if idle => {
                if shutting_down {
                    debug!("downstream connection did not close after GOAWAY, dropping it");
                    return;
                }
                debug!("downstream connection idle, closing");
                conn.as_mut().graceful_shutdown();
                shutting_down = true;
                deadline = Instant::now() + limits.header_read_timeout;
            }
        }
    };
    if let Err(e) = ended {
        debug!("downstream connection ended: {e}");
    }
}

/// The requests of one downstream connection that are still in flight.
#[derive(Default)]
struct InFlight {
    count: AtomicUsize,
    /// Notified when the count drops to zero.
    none_left: Notify,
}

impl InFlight {
    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn start(this: &Arc<Self>) -> InFlightGuard {
        this.count.fetch_add(1, Ordering::AcqRel);
        InFlightGuard(this.clone())
    }
}

/// One request in flight; dropped with its response body.
struct InFlightGuard(Arc<InFlight>);

impl Drop for InFlightGuard {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_one();
        }
    }
}

/// A response body that keeps its request in flight until it is done.
struct Guarded {
    body: Body,
    _guard: InFlightGuard,
}

impl HttpBody for Guarded {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        Pin::new(&mut self.body).poll_frame(cx)
    }

    fn is_end_stream(&self) -> bool {
        self.body.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.body.size_hint()
    }
}

//! Serving HTTP/1.1 and HTTP/2 (detected from the connection preface) on any byte stream:
//! a TCP socket in tests, a tunneled HBONE stream in the mesh.

use std::convert::Infallible;
use std::sync::Arc;
use std::time::Duration;

use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use hyper_util::server::conn::auto;
use meshwork_runtime::drain::Drain;
use tokio::io::{AsyncRead, AsyncWrite};
use tracing::debug;

use crate::service::{ConnContext, L7Service};

/// Downstream protocol limits, and the drain that ends downstream connections gracefully.
#[derive(Debug, Clone)]
pub struct ServerLimits {
    /// Largest request header block; larger gets 431 (HTTP/1.1) or a stream error (HTTP/2).
    pub max_header_bytes: usize,
    pub header_read_timeout: Duration,
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
    let service = service_fn(move |req: hyper::Request<Incoming>| {
        let svc = svc.clone();
        let ctx = ctx.clone();
        // Boxed: HTTP/2 spawns a task per stream holding this future, and moving the
        // whole request state machine into it costs more than one allocation.
        Box::pin(async move { Ok::<_, Infallible>(svc.handle(req, &ctx).await) })
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
    let ended = tokio::select! {
        ended = conn.as_mut() => ended,
        _ = limits.drain.started() => {
            conn.as_mut().graceful_shutdown();
            conn.await
        }
    };
    if let Err(e) = ended {
        debug!("downstream connection ended: {e}");
    }
}

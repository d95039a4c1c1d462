//! Accepting TLS connections for the gRPC server: handshakes run concurrently (a slow or
//! silent client never holds up the next accept) and are bounded in time.

use std::io;
use std::net::SocketAddr;
use std::pin::Pin;
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::mpsc;
use tokio_rustls::server::TlsStream;
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::server::{Connected, TcpConnectInfo};

/// A client that has not finished its handshake by then is dropped.
pub const HANDSHAKE_TIMEOUT: Duration = Duration::from_secs(10);
/// Handshakes in progress at once; connections beyond are closed at once (a flood of
/// silent clients costs at most this many tasks for [`HANDSHAKE_TIMEOUT`]).
pub const MAX_HANDSHAKES: usize = 1024;

/// Accepts on `listener` and yields the connections whose TLS handshake succeeded.
pub fn incoming(
    listener: TcpListener,
    config: Arc<rustls::ServerConfig>,
    what: &'static str,
) -> ReceiverStream<io::Result<TlsConn>> {
    let (tx, rx) = mpsc::channel(64);
    let acceptor = tokio_rustls::TlsAcceptor::from(config);
    let slots = Arc::new(tokio::sync::Semaphore::new(MAX_HANDSHAKES));
    tokio::spawn(async move {
        loop {
            let (tcp, peer) = meshwork_runtime::accept::accept(&listener, what).await;
            let _ = tcp.set_nodelay(true);
            if tx.is_closed() {
                return;
            }
            let Ok(slot) = slots.clone().try_acquire_owned() else {
                tracing::warn!(listener = what, %peer, "too many TLS handshakes in progress: connection closed");
                continue;
            };
            let acceptor = acceptor.clone();
            let tx = tx.clone();
            tokio::spawn(async move {
                let _slot = slot;
                let peer = tcp.peer_addr().ok();
                let local = tcp.local_addr().ok();
                match tokio::time::timeout(HANDSHAKE_TIMEOUT, acceptor.accept(tcp)).await {
                    Ok(Ok(tls)) => {
                        let _ = tx.send(Ok(TlsConn { tls, peer, local })).await;
                    }
                    Ok(Err(e)) => {
                        tracing::debug!(listener = what, ?peer, error = %e, "TLS handshake failed")
                    }
                    Err(_) => {
                        tracing::debug!(listener = what, ?peer, "TLS handshake timed out")
                    }
                }
            });
        }
    });
    ReceiverStream::new(rx)
}

/// A TLS connection as tonic's server sees it (with the TCP addresses for `remote_addr`).
pub struct TlsConn {
    tls: TlsStream<TcpStream>,
    peer: Option<SocketAddr>,
    local: Option<SocketAddr>,
}

impl Connected for TlsConn {
    type ConnectInfo = TcpConnectInfo;

    fn connect_info(&self) -> Self::ConnectInfo {
        TcpConnectInfo {
            local_addr: self.local,
            remote_addr: self.peer,
        }
    }
}

impl AsyncRead for TlsConn {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_read(cx, buf)
    }
}

impl AsyncWrite for TlsConn {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.tls).poll_shutdown(cx)
    }

    fn poll_write_vectored(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        bufs: &[io::IoSlice<'_>],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.tls).poll_write_vectored(cx, bufs)
    }

    fn is_write_vectored(&self) -> bool {
        self.tls.is_write_vectored()
    }
}

//! HBONE server: TLS 1.3 with ALPN h2, then HTTP/2 CONNECT requests, each handed to the
//! caller's handler together with the verified peer certificate.
//!
//! Anything that is not a well-formed CONNECT gets a clean refusal (TLS alert, HTTP/2
//! GOAWAY or a 4xx response) and a log line; nothing here panics on peer input.

use std::future::Future;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::Arc;

use bytes::Bytes;
use h2::server::SendResponse;
use http::{HeaderMap, Method, Response, StatusCode};
use meshwork_identity::tls::peer_identity;
use meshwork_identity::SpiffeId;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::sync::Notify;
use tokio::time::Instant;
use tokio_rustls::TlsAcceptor;
use tokio_util::sync::CancellationToken;

use crate::settings::H2Settings;
use crate::stream::{H2Stream, StreamGuard};

/// Why an HBONE connection ended before or outside normal operation.
#[derive(Debug, thiserror::Error)]
pub enum ServerError {
    #[error("TLS handshake from {peer} failed: {source}")]
    Tls {
        peer: SocketAddr,
        source: std::io::Error,
    },
    #[error("TLS handshake from {peer} timed out")]
    HandshakeTimeout { peer: SocketAddr },
    #[error("peer {peer} did not negotiate ALPN h2 (got {alpn:?})")]
    NoH2Alpn {
        peer: SocketAddr,
        alpn: Option<String>,
    },
    #[error("peer {peer} presented no usable SPIFFE identity: {source}")]
    PeerIdentity {
        peer: SocketAddr,
        source: meshwork_identity::tls::PeerIdentityError,
    },
    #[error("HTTP/2 from {peer} failed: {source}")]
    H2 { peer: SocketAddr, source: h2::Error },
}

/// Facts about the TLS connection a CONNECT arrived on.
#[derive(Debug, Clone)]
pub struct ConnInfo {
    pub peer_addr: SocketAddr,
    pub local_addr: SocketAddr,
    /// Verified SPIFFE identity of the peer.
    pub peer_identity: SpiffeId,
}

/// One CONNECT request.
#[derive(Debug)]
pub struct ConnectRequest {
    /// `:authority`, the target `ip:port`.
    pub authority: String,
    pub headers: HeaderMap,
    pub conn: ConnInfo,
}

/// Answers one CONNECT: accept (200) to get the tunnel, or refuse with a status.
pub struct Responder {
    respond: SendResponse<Bytes>,
    recv: h2::RecvStream,
    guard: Option<StreamGuard>,
}

impl Responder {
    /// Sends `200 OK` and returns the tunnel.
    pub fn accept(mut self) -> Result<H2Stream, h2::Error> {
        let send = self.respond.send_response(Response::new(()), false)?;
        Ok(H2Stream::new(send, self.recv, self.guard))
    }

    /// Refuses the CONNECT with `status` (ends the stream).
    pub fn refuse(mut self, status: StatusCode) {
        let resp = Response::builder()
            .status(status)
            .body(())
            .expect("static response is valid");
        let _ = self.respond.send_response(resp, true);
    }
}

/// Handles accepted CONNECT requests; called once per stream, on its own task.
pub trait ConnectHandler: Clone + Send + Sync + 'static {
    fn handle(&self, req: ConnectRequest, responder: Responder) -> impl Future<Output = ()> + Send;
}

/// HBONE server over any transport (a TCP stream in production, an in-memory duplex in
/// tests).
#[derive(Clone)]
pub struct Server {
    settings: H2Settings,
}

impl Server {
    pub fn new(settings: H2Settings) -> Self {
        Server { settings }
    }

    /// TLS handshake with `tls` (which must offer ALPN `h2` and require client certs),
    /// then serves CONNECTs until the peer goes away. When `drain` fires, sends GOAWAY
    /// and returns once open streams end.
    pub async fn serve_tls<IO, H>(
        &self,
        io: IO,
        tls: Arc<rustls::ServerConfig>,
        peer_addr: SocketAddr,
        local_addr: SocketAddr,
        handler: H,
        drain: CancellationToken,
    ) -> Result<(), ServerError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: ConnectHandler,
    {
        let acceptor = TlsAcceptor::from(tls);
        let tls_stream = match tokio::time::timeout(
            self.settings.handshake_timeout,
            acceptor.accept(io),
        )
        .await
        {
            Err(_) => return Err(ServerError::HandshakeTimeout { peer: peer_addr }),
            Ok(Err(source)) => {
                return Err(ServerError::Tls {
                    peer: peer_addr,
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        let (_, session) = tls_stream.get_ref();
        let alpn = session.alpn_protocol().map(|a| a.to_vec());
        if alpn.as_deref() != Some(b"h2") {
            return Err(ServerError::NoH2Alpn {
                peer: peer_addr,
                alpn: alpn.map(|a| String::from_utf8_lossy(&a).into_owned()),
            });
        }
        let peer_identity = peer_identity(session).map_err(|source| ServerError::PeerIdentity {
            peer: peer_addr,
            source,
        })?;
        let info = ConnInfo {
            peer_addr,
            local_addr,
            peer_identity,
        };
        self.serve_h2(tls_stream, info, handler, drain).await
    }

    /// Serves HTTP/2 CONNECTs on an already-authenticated transport.
    pub async fn serve_h2<IO, H>(
        &self,
        io: IO,
        info: ConnInfo,
        handler: H,
        drain: CancellationToken,
    ) -> Result<(), ServerError>
    where
        IO: AsyncRead + AsyncWrite + Unpin + Send + 'static,
        H: ConnectHandler,
    {
        let peer = info.peer_addr;
        let h2err = |source| ServerError::H2 { peer, source };
        let mut conn = match tokio::time::timeout(
            self.settings.handshake_timeout,
            self.settings.server_builder().handshake::<_, Bytes>(io),
        )
        .await
        {
            Err(_) => return Err(ServerError::HandshakeTimeout { peer }),
            Ok(r) => r.map_err(h2err)?,
        };
        conn.set_target_window_size(self.settings.connection_window);
        let streams = Arc::new(OpenStreams::default());
        // With no stream open, the connection lives until this deadline: the handshake
        // deadline for the first stream, then `idle_timeout` after the last one ended.
        // Refused requests do not move it.
        let mut idle_deadline = Instant::now() + self.settings.handshake_timeout;
        let mut draining = false;
        loop {
            let idle = streams.count() == 0 && !draining;
            let next = tokio::select! {
                next = conn.accept() => next,
                _ = drain.cancelled(), if !draining => {
                    draining = true;
                    conn.graceful_shutdown();
                    continue;
                }
                _ = streams.none_left.notified() => {
                    if streams.count() == 0 {
                        idle_deadline = Instant::now() + self.settings.idle_timeout;
                    }
                    continue;
                }
                _ = tokio::time::sleep_until(idle_deadline), if idle => {
                    tracing::debug!(%peer, "hbone connection idle, closing");
                    return self.close_idle(conn).await;
                }
            };
            let Some(next) = next else { return Ok(()) };
            let (req, mut respond) = match next {
                Ok(r) => r,
                Err(e) if e.is_go_away() && e.reason() == Some(h2::Reason::NO_ERROR) => {
                    return Ok(())
                }
                Err(e) if e.is_io() => return Err(h2err(e)),
                Err(e) if e.is_reset() || e.is_remote() && !e.is_go_away() => {
                    // A single stream failed; the connection goes on.
                    tracing::debug!(%peer, error = %e, "hbone stream error");
                    continue;
                }
                Err(e) => return Err(h2err(e)),
            };
            let (parts, body) = req.into_parts();
            let authority = match check_connect(&parts) {
                Ok(a) => a,
                Err(e) => {
                    tracing::warn!(%peer, error = %e, "hbone: refusing request");
                    let _ = respond.send_response(status(e.status()), true);
                    continue;
                }
            };
            let request = ConnectRequest {
                authority,
                headers: parts.headers,
                conn: info.clone(),
            };
            // The stream counts as open as long as its responder or tunnel lives.
            let responder = Responder {
                respond,
                recv: body,
                guard: Some(Box::new(OpenStreams::open(&streams))),
            };
            let handler = handler.clone();
            tokio::spawn(async move { handler.handle(request, responder).await });
        }
    }

    /// Ends an idle connection: GOAWAY naming the last stream served, then close, within
    /// the handshake deadline whatever the peer does.
    async fn close_idle<IO>(
        &self,
        mut conn: h2::server::Connection<IO, Bytes>,
    ) -> Result<(), ServerError>
    where
        IO: AsyncRead + AsyncWrite + Unpin,
    {
        conn.abrupt_shutdown(h2::Reason::NO_ERROR);
        let _ = tokio::time::timeout(self.settings.handshake_timeout, async {
            while let Some(Ok(_)) = conn.accept().await {}
        })
        .await;
        Ok(())
    }
}

/// The streams of one connection whose handlers are still running.
#[derive(Default)]
struct OpenStreams {
    count: AtomicUsize,
    /// Notified when the count drops to zero.
    none_left: Notify,
}

impl OpenStreams {
    fn count(&self) -> usize {
        self.count.load(Ordering::Acquire)
    }

    fn open(this: &Arc<Self>) -> OpenStream {
        this.count.fetch_add(1, Ordering::AcqRel);
        OpenStream(this.clone())
    }
}

/// One open stream; dropping it (with its responder or tunnel) closes it.
struct OpenStream(Arc<OpenStreams>);

impl Drop for OpenStream {
    fn drop(&mut self) {
        if self.0.count.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.0.none_left.notify_one();
        }
    }
}

/// Why a request on the HBONE port is not a well-formed CONNECT.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum BadConnect {
    #[error("method {0} is not CONNECT")]
    Method(Method),
    #[error("CONNECT without :authority")]
    NoAuthority,
    #[error("CONNECT with :scheme or :path (RFC 9113 section 8.5 forbids both)")]
    SchemeOrPath,
    #[error("CONNECT :authority {0:?} is not ip:port")]
    Authority(String),
    #[error("CONNECT :authority {0:?} has port 0")]
    PortZero(String),
}

impl BadConnect {
    fn status(&self) -> StatusCode {
        match self {
            BadConnect::Method(_) => StatusCode::METHOD_NOT_ALLOWED,
            _ => StatusCode::BAD_REQUEST,
        }
    }
}

/// The CONNECT's target: the method must be CONNECT, without `:scheme` and `:path`, and
/// `:authority` must be a literal `ip:port` (no name, no userinfo, port not 0) — an HBONE
/// peer names the destination pod or service address, never a host to resolve.
pub(crate) fn check_connect(parts: &http::request::Parts) -> Result<String, BadConnect> {
    if parts.method != Method::CONNECT {
        return Err(BadConnect::Method(parts.method.clone()));
    }
    if parts.uri.scheme().is_some() || parts.uri.path_and_query().is_some() {
        return Err(BadConnect::SchemeOrPath);
    }
    let authority = parts
        .uri
        .authority()
        .ok_or(BadConnect::NoAuthority)?
        .as_str();
    let addr: SocketAddr = authority
        .parse()
        .map_err(|_| BadConnect::Authority(authority.to_string()))?;
    if addr.port() == 0 {
        return Err(BadConnect::PortZero(authority.to_string()));
    }
    Ok(authority.to_string())
}

fn status(code: StatusCode) -> Response<()> {
    Response::builder()
        .status(code)
        .body(())
        .expect("static response is valid")
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(method: Method, uri: &str) -> http::request::Parts {
        http::Request::builder()
            .method(method)
            .uri(uri)
            .body(())
            .unwrap()
            .into_parts()
            .0
    }

    #[test]
    fn only_connect_to_a_literal_ip_and_port_is_accepted() {
        for ok in ["10.0.0.5:8080", "[fd00::1]:80"] {
            assert_eq!(check_connect(&parts(Method::CONNECT, ok)).unwrap(), ok);
        }
        let bad = |m, u| check_connect(&parts(m, u)).unwrap_err();
        assert_eq!(
            bad(Method::GET, "10.0.0.5:80"),
            BadConnect::Method(Method::GET)
        );
        for name in ["example.com:80", "u@10.0.0.5:80", "10.0.0.5", "10.0.0.5:x"] {
            assert_eq!(
                bad(Method::CONNECT, name),
                BadConnect::Authority(name.into()),
                "{name}"
            );
        }
        assert_eq!(
            bad(Method::CONNECT, "10.0.0.5:0"),
            BadConnect::PortZero("10.0.0.5:0".into())
        );
        assert_eq!(
            bad(Method::CONNECT, "https://10.0.0.5:80/x"),
            BadConnect::SchemeOrPath
        );
        assert_eq!(bad(Method::CONNECT, "/x"), BadConnect::SchemeOrPath);
    }
}

//! HBONE client connection pool.
//!
//! Connections per [`PoolKey`] (source identity, destination address, destination
//! identity) each carry up to `max_streams_per_conn` CONNECT streams; a full connection
//! makes the pool open another, so the streams of one key spread over several
//! connections. Each connection advertises a receive window covering all its streams'
//! windows ([`H2Settings::connection_window_for`]): a stream whose reader stops holds at
//! most its own window and never starves the other streams of its connection (no
//! head-of-line blocking behind a slow reader). Idle
//! connections (no streams for `idle_timeout`) are closed; live ones are kept alive with
//! HTTP/2 PINGs, and a connection whose PING goes unanswered is dropped.

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, MutexGuard, PoisonError};
use std::time::Duration;

use bytes::Bytes;
use h2::client::SendRequest;
use http::{HeaderMap, Method, Request, StatusCode};
use rustls::pki_types::ServerName;
use tokio::sync::Notify;
use tokio_rustls::TlsConnector;

use crate::dial::DialFrom;
use crate::settings::H2Settings;
use crate::stream::H2Stream;

/// Identifies a pooled connection.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct PoolKey {
    /// SPIFFE identity we present.
    pub src_identity: String,
    /// HBONE address (`ip:15008`) of the destination.
    pub dst: SocketAddr,
    /// SPIFFE identity the destination must present.
    pub dst_identity: String,
    /// Where the connection is dialed from (the default namespace, or a pod's).
    pub from: DialFrom,
}

/// Default streams per pooled connection: as many 1 MiB stream windows as fit the
/// default 16 MiB connection window.
pub const DEFAULT_MAX_STREAMS_PER_CONN: usize = 16;

/// Pool behaviour.
#[derive(Debug, Clone)]
pub struct PoolSettings {
    pub h2: H2Settings,
    /// Streams per connection before another connection is opened (at least 1). The
    /// connection's receive window grows with it (`stream_window` per stream).
    pub max_streams_per_conn: usize,
    /// Close a connection that carried no stream for this long.
    pub idle_timeout: Duration,
    /// Interval between keepalive PINGs on a connection.
    pub keepalive_interval: Duration,
    /// Time a PING may take before the connection is declared dead.
    pub keepalive_timeout: Duration,
    /// TCP connect deadline.
    pub connect_timeout: Duration,
}

impl Default for PoolSettings {
    fn default() -> Self {
        PoolSettings {
            h2: H2Settings::default(),
            max_streams_per_conn: DEFAULT_MAX_STREAMS_PER_CONN,
            idle_timeout: Duration::from_secs(60),
            keepalive_interval: Duration::from_secs(30),
            keepalive_timeout: Duration::from_secs(10),
            connect_timeout: Duration::from_secs(5),
        }
    }
}

/// Why a CONNECT through the pool failed.
#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("connecting to {dst}: {source}")]
    Connect {
        dst: SocketAddr,
        source: std::io::Error,
    },
    #[error("connecting to {dst} timed out")]
    ConnectTimeout { dst: SocketAddr },
    #[error("TLS handshake with {dst} (expecting {identity}) failed: {source}")]
    Tls {
        dst: SocketAddr,
        identity: String,
        source: std::io::Error,
    },
    #[error("{dst} did not negotiate ALPN h2")]
    NoH2Alpn { dst: SocketAddr },
    #[error("HTTP/2 with {dst}: {source}")]
    H2 { dst: SocketAddr, source: h2::Error },
    #[error("invalid CONNECT authority {authority:?}: {source}")]
    Authority {
        authority: String,
        source: http::Error,
    },
    #[error("{dst} refused CONNECT {authority} with status {status}")]
    Refused {
        dst: SocketAddr,
        authority: String,
        status: StatusCode,
    },
}

/// Counters about the pool, for tests and metrics.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PoolStats {
    /// TLS connections ever opened.
    pub connections_opened: u64,
    /// TLS connections currently pooled.
    pub connections_open: usize,
    /// CONNECT streams ever opened.
    pub streams_opened: u64,
}

struct PooledConn {
    id: u64,
    send: SendRequest<Bytes>,
    active: Arc<AtomicUsize>,
    closed: AtomicBool,
    became_idle: Arc<Notify>,
}

#[derive(Default)]
struct Inner {
    conns: Mutex<HashMap<PoolKey, Vec<Arc<PooledConn>>>>,
    // Serializes connection establishment per key, so a burst of CONNECTs shares one
    // new connection instead of racing to open many.
    dialing: Mutex<HashMap<PoolKey, Arc<tokio::sync::Mutex<()>>>>,
    next_id: AtomicU64,
    connections_opened: AtomicU64,
    streams_opened: AtomicU64,
}

/// A pool of HBONE client connections. Cheap to clone.
#[derive(Clone)]
pub struct Pool {
    inner: Arc<Inner>,
    settings: Arc<PoolSettings>,
}

/// Decrements the connection's stream count when the tunnel is dropped.
struct ActiveGuard {
    active: Arc<AtomicUsize>,
    became_idle: Arc<Notify>,
}

impl Drop for ActiveGuard {
    fn drop(&mut self) {
        if self.active.fetch_sub(1, Ordering::AcqRel) == 1 {
            self.became_idle.notify_one();
        }
    }
}

impl Pool {
    pub fn new(settings: PoolSettings) -> Self {
        Pool {
            inner: Arc::new(Inner::default()),
            settings: Arc::new(settings),
        }
    }

    pub fn stats(&self) -> PoolStats {
        let open = lock(&self.inner.conns).values().map(Vec::len).sum();
        PoolStats {
            connections_opened: self.inner.connections_opened.load(Ordering::Relaxed),
            connections_open: open,
            streams_opened: self.inner.streams_opened.load(Ordering::Relaxed),
        }
    }

    /// Opens a CONNECT stream to `authority` over a pooled connection for `key`, dialing
    /// a new connection with `tls` (which must verify `key.dst_identity`) if needed.
    pub async fn connect(
        &self,
        key: &PoolKey,
        tls: impl FnOnce() -> Arc<rustls::ClientConfig>,
        authority: &str,
        headers: HeaderMap,
    ) -> Result<H2Stream, ClientError> {
        let mut tls = Some(tls);
        let mut last = None;
        // A pooled connection may have been closed by the peer (GOAWAY, restart) since its
        // last use: when a stream cannot be opened on a reused connection before the request
        // reached the peer, the connection is retired and the next one (or a new dial) tried.
        for _ in 0..3 {
            let (conn, fresh) = match self.checkout(key) {
                Some(c) => (c, false),
                None => {
                    let lock = {
                        let mut d = lock(&self.inner.dialing);
                        d.entry(key.clone()).or_default().clone()
                    };
                    let _dialing = lock.lock().await;
                    match self.checkout(key) {
                        Some(c) => (c, false),
                        None => {
                            let Some(tls) = tls.take() else { break };
                            let c = self.dial(key, tls()).await?;
                            self.checkout_conn(&c);
                            (c, true)
                        }
                    }
                }
            };
            match self
                .open_stream(key, &conn, authority, headers.clone())
                .await
            {
                Ok(s) => return Ok(s),
                Err((e, retryable)) if retryable && !fresh => {
                    tracing::debug!(dst = %key.dst, error = %e, "pooled hbone connection unusable, retiring it");
                    conn.closed.store(true, Ordering::Release);
                    self.remove(key, conn.id);
                    last = Some(e);
                }
                Err((e, _)) => return Err(e),
            }
        }
        Err(last.unwrap_or(ClientError::ConnectTimeout { dst: key.dst }))
    }

    /// Opens one CONNECT stream on `conn`. The flag tells whether the failure happened
    /// before the peer could have acted on the request (safe to retry elsewhere).
    async fn open_stream(
        &self,
        key: &PoolKey,
        conn: &Arc<PooledConn>,
        authority: &str,
        headers: HeaderMap,
    ) -> Result<H2Stream, (ClientError, bool)> {
        let guard = ActiveGuard {
            active: conn.active.clone(),
            became_idle: conn.became_idle.clone(),
        };
        let mut req = Request::builder()
            .method(Method::CONNECT)
            .uri(authority)
            .body(())
            .map_err(|source| {
                (
                    ClientError::Authority {
                        authority: authority.to_string(),
                        source,
                    },
                    false,
                )
            })?;
        *req.headers_mut() = headers;
        let dst = key.dst;
        let before = |source| (ClientError::H2 { dst, source }, true);
        let mut send = conn.send.clone().ready().await.map_err(before)?;
        let (resp, stream) = send.send_request(req, false).map_err(before)?;
        self.inner.streams_opened.fetch_add(1, Ordering::Relaxed);
        let resp = resp.await.map_err(|source: h2::Error| {
            let unprocessed = source.reason() == Some(h2::Reason::REFUSED_STREAM)
                || (source.is_go_away() && source.is_remote());
            (ClientError::H2 { dst, source }, unprocessed)
        })?;
        if resp.status() != StatusCode::OK {
            return Err((
                ClientError::Refused {
                    dst,
                    authority: authority.to_string(),
                    status: resp.status(),
                },
                false,
            ));
        }
        Ok(H2Stream::new(
            stream,
            resp.into_body(),
            Some(Box::new(guard)),
        ))
    }

    /// A pooled connection for `key` with room for one more stream, reserving the slot.
    fn checkout(&self, key: &PoolKey) -> Option<Arc<PooledConn>> {
        let conns = lock(&self.inner.conns);
        let c = conns.get(key)?.iter().find(|c| {
            !c.closed.load(Ordering::Acquire)
                && c.active.load(Ordering::Acquire) < self.max_streams()
        })?;
        c.active.fetch_add(1, Ordering::AcqRel);
        Some(c.clone())
    }

    fn max_streams(&self) -> usize {
        self.settings.max_streams_per_conn.max(1)
    }

    fn checkout_conn(&self, c: &Arc<PooledConn>) {
        c.active.fetch_add(1, Ordering::AcqRel);
    }

    async fn dial(
        &self,
        key: &PoolKey,
        tls: Arc<rustls::ClientConfig>,
    ) -> Result<Arc<PooledConn>, ClientError> {
        let dst = key.dst;
        let connect = async {
            let sock = key.from.socket(dst)?;
            sock.connect(dst).await
        };
        let tcp = match tokio::time::timeout(self.settings.connect_timeout, connect).await {
            Err(_) => return Err(ClientError::ConnectTimeout { dst }),
            Ok(Err(source)) => return Err(ClientError::Connect { dst, source }),
            Ok(Ok(s)) => s,
        };
        let _ = tcp.set_nodelay(true);
        let connector = TlsConnector::from(tls);
        let server_name = ServerName::IpAddress(dst.ip().into());
        let tls_stream = match tokio::time::timeout(
            self.settings.h2.handshake_timeout,
            connector.connect(server_name, tcp),
        )
        .await
        {
            Err(_) => return Err(ClientError::ConnectTimeout { dst }),
            Ok(Err(source)) => {
                return Err(ClientError::Tls {
                    dst,
                    identity: key.dst_identity.clone(),
                    source,
                })
            }
            Ok(Ok(s)) => s,
        };
        if tls_stream.get_ref().1.alpn_protocol() != Some(b"h2") {
            return Err(ClientError::NoH2Alpn { dst });
        }
        let h2err = |source| ClientError::H2 { dst, source };
        let window = self.settings.h2.connection_window_for(self.max_streams());
        let (send, mut connection) = self
            .settings
            .h2
            .client_builder(window)
            .handshake::<_, Bytes>(tls_stream)
            .await
            .map_err(h2err)?;
        connection.set_target_window_size(window);
        let pinger = connection.ping_pong();
        let conn = Arc::new(PooledConn {
            id: self.inner.next_id.fetch_add(1, Ordering::Relaxed),
            send,
            active: Arc::new(AtomicUsize::new(0)),
            closed: AtomicBool::new(false),
            became_idle: Arc::new(Notify::new()),
        });
        self.inner
            .connections_opened
            .fetch_add(1, Ordering::Relaxed);
        lock(&self.inner.conns)
            .entry(key.clone())
            .or_default()
            .push(conn.clone());
        tracing::debug!(%dst, identity = %key.dst_identity, id = conn.id, "hbone connection opened");
        let pool = self.clone();
        let key = key.clone();
        let watched = conn.clone();
        tokio::spawn(async move {
            tokio::select! {
                r = connection => {
                    if let Err(e) = r {
                        tracing::debug!(dst = %key.dst, error = %e, "hbone connection ended");
                    }
                }
                _ = pool.idle_watch(&key, &watched) => {
                    tracing::debug!(dst = %key.dst, id = watched.id, "hbone connection idle, closing");
                }
                _ = keepalive(pinger, pool.settings.keepalive_interval, pool.settings.keepalive_timeout) => {
                    tracing::debug!(dst = %key.dst, id = watched.id, "hbone keepalive failed, closing");
                }
            }
            pool.remove(&key, watched.id);
        });
        Ok(conn)
    }

    /// Resolves once the connection has been idle for `idle_timeout` and was retired.
    async fn idle_watch(&self, key: &PoolKey, conn: &Arc<PooledConn>) {
        loop {
            if conn.active.load(Ordering::Acquire) > 0 {
                conn.became_idle.notified().await;
                continue;
            }
            tokio::time::sleep(self.settings.idle_timeout).await;
            // Retire under the pool lock so no checkout races with closing.
            let conns = lock(&self.inner.conns);
            if conn.active.load(Ordering::Acquire) == 0 {
                conn.closed.store(true, Ordering::Release);
                drop(conns);
                self.remove(key, conn.id);
                return;
            }
        }
    }

    fn remove(&self, key: &PoolKey, id: u64) {
        let mut conns = lock(&self.inner.conns);
        if let Some(list) = conns.get_mut(key) {
            list.retain(|c| {
                if c.id == id {
                    c.closed.store(true, Ordering::Release);
                }
                c.id != id
            });
            if list.is_empty() {
                conns.remove(key);
                lock(&self.inner.dialing).remove(key);
            }
        }
    }
}

async fn keepalive(pinger: Option<h2::PingPong>, interval: Duration, timeout: Duration) {
    let Some(mut pinger) = pinger else {
        return std::future::pending().await;
    };
    loop {
        tokio::time::sleep(interval).await;
        match tokio::time::timeout(timeout, pinger.ping(h2::Ping::opaque())).await {
            Ok(Ok(_)) => {}
            Ok(Err(e)) => {
                tracing::debug!(error = %e, "hbone ping failed");
                return;
            }
            Err(_) => return,
        }
    }
}

/// The pool's maps stay usable after a panic elsewhere: a poisoned lock is taken over.
fn lock<T>(m: &Mutex<T>) -> MutexGuard<'_, T> {
    m.lock().unwrap_or_else(PoisonError::into_inner)
}

//! Upstream connection pool per cluster with Istio's `connectionPool` limits (Envoy circuit
//! breakers): maxConnections, http1MaxPendingRequests, http2MaxRequests (max concurrent
//! requests), maxRequestsPerConnection, maxRetries, connectTimeout, idleTimeout. Hitting a
//! limit fails fast with [`PoolError::Overflow`] (503, flag `UO`) instead of queueing forever.

use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_model::pb::config as pb;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use crate::body::Body;
use crate::connector::{Connector, Target};

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PoolLimits {
    pub max_connections: usize,
    pub max_pending: usize,
    pub max_requests: usize,
    /// 0: unlimited.
    pub max_requests_per_connection: u32,
    pub max_retries: usize,
    pub connect_timeout: Duration,
    pub idle_timeout: Duration,
}

impl Default for PoolLimits {
    /// Istio's defaults: limits effectively unlimited, 10 s connect timeout, 1 h idle timeout.
    fn default() -> Self {
        PoolLimits {
            max_connections: u32::MAX as usize,
            max_pending: u32::MAX as usize,
            max_requests: u32::MAX as usize,
            max_requests_per_connection: 0,
            max_retries: u32::MAX as usize,
            connect_timeout: Duration::from_secs(10),
            idle_timeout: Duration::from_secs(3600),
        }
    }
}

impl PoolLimits {
    pub fn from_pb(p: Option<&pb::ConnectionPool>) -> Self {
        let d = PoolLimits::default();
        let Some(p) = p else { return d };
        let n = |v: u32, d: usize| if v == 0 { d } else { v as usize };
        let t = |v: u64, d: Duration| if v == 0 { d } else { Duration::from_millis(v) };
        PoolLimits {
            max_connections: n(p.max_connections, d.max_connections),
            max_pending: n(p.http1_max_pending_requests, d.max_pending),
            max_requests: n(p.http2_max_requests, d.max_requests),
            max_requests_per_connection: p.max_requests_per_connection,
            max_retries: n(p.max_retries, d.max_retries),
            connect_timeout: t(p.connect_timeout_ms, d.connect_timeout),
            idle_timeout: t(p.idle_timeout_ms, d.idle_timeout),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum PoolError {
    #[error("upstream connection pool overflow ({0} reached)")]
    Overflow(&'static str),
    #[error("connect to {addr} failed: {source}")]
    Connect { addr: SocketAddr, source: io::Error },
    #[error("connect to {addr} timed out after {timeout:?}")]
    ConnectTimeout { addr: SocketAddr, timeout: Duration },
    #[error("HTTP handshake with {addr} failed: {source}")]
    Handshake {
        addr: SocketAddr,
        source: hyper::Error,
    },
}

/// Upstream HTTP protocol.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash)]
pub enum Proto {
    Http1,
    Http2,
}

#[derive(Debug)]
struct Shared {
    limits: PoolLimits,
    connections: AtomicUsize,
    pending: AtomicUsize,
    active: AtomicUsize,
    retries: AtomicUsize,
    notify: Notify,
    state: Mutex<State>,
}

#[derive(Default, Debug)]
struct State {
    idle: HashMap<SocketAddr, Vec<H1Conn>>,
    h2: HashMap<SocketAddr, H2Conn>,
    active_by_host: HashMap<SocketAddr, usize>,
}

/// Holds one of `maxConnections`; releasing it wakes pending requests.
#[derive(Debug)]
struct ConnSlot(Arc<Shared>);

impl Drop for ConnSlot {
    fn drop(&mut self) {
        self.0.connections.fetch_sub(1, Ordering::AcqRel);
        self.0.notify.notify_waiters();
    }
}

#[derive(Debug)]
struct H1Conn {
    send: http1::SendRequest<Body>,
    served: u32,
    since: Instant,
    _slot: ConnSlot,
}

#[derive(Debug, Clone)]
struct H2Conn {
    send: http2::SendRequest<Body>,
    served: Arc<AtomicUsize>,
    _slot: Arc<ConnSlot>,
}

/// One in-flight request's share of `http2MaxRequests`.
#[derive(Debug)]
struct RequestSlot {
    shared: Arc<Shared>,
    host: SocketAddr,
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        if let Some(n) = st.active_by_host.get_mut(&self.host) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.active_by_host.remove(&self.host);
            }
        }
    }
}

struct PendingSlot<'a>(&'a Shared);

impl Drop for PendingSlot<'_> {
    fn drop(&mut self) {
        self.0.pending.fetch_sub(1, Ordering::AcqRel);
    }
}

/// One of `maxRetries` concurrent retries.
#[derive(Debug)]
pub struct RetrySlot(Arc<Shared>);

impl Drop for RetrySlot {
    fn drop(&mut self) {
        self.0.retries.fetch_sub(1, Ordering::AcqRel);
    }
}

enum Conn {
    H1(H1Conn),
    H2(H2Conn),
}

/// A connection lent to one request.
pub struct Lease {
    shared: Arc<Shared>,
    host: SocketAddr,
    conn: Conn,
    _request: RequestSlot,
}

impl Lease {
    /// Sends the request on the leased connection.
    pub async fn send(
        &mut self,
        req: http::Request<Body>,
    ) -> Result<http::Response<Incoming>, hyper::Error> {
        match &mut self.conn {
            Conn::H1(c) => {
                c.send.ready().await?;
                c.served += 1;
                c.send.send_request(req).await
            }
            Conn::H2(c) => {
                c.send.ready().await?;
                c.send.send_request(req).await
            }
        }
    }

    /// The response completed: an HTTP/1.1 connection goes back to the idle list unless it
    /// reached maxRequestsPerConnection.
    pub fn release(self) {
        if let Conn::H1(mut c) = self.conn {
            let max = self.shared.limits.max_requests_per_connection;
            if (max == 0 || c.served < max) && !c.send.is_closed() {
                c.since = Instant::now();
                let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                st.idle.entry(self.host).or_default().push(c);
                drop(st);
                self.shared.notify.notify_waiters();
            }
        }
    }
}

/// A cluster's connection pool.
#[derive(Clone)]
pub struct ClusterPool {
    shared: Arc<Shared>,
    connector: Arc<dyn Connector>,
}

impl std::fmt::Debug for ClusterPool {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ClusterPool")
            .field("limits", &self.shared.limits)
            .finish()
    }
}

impl ClusterPool {
    pub fn new(limits: PoolLimits, connector: Arc<dyn Connector>) -> Self {
        ClusterPool {
            shared: Arc::new(Shared {
                limits,
                connections: AtomicUsize::new(0),
                pending: AtomicUsize::new(0),
                active: AtomicUsize::new(0),
                retries: AtomicUsize::new(0),
                notify: Notify::new(),
                state: Mutex::new(State::default()),
            }),
            connector,
        }
    }

    pub fn limits(&self) -> &PoolLimits {
        &self.shared.limits
    }

    /// Open upstream connections.
    pub fn connections(&self) -> usize {
        self.shared.connections.load(Ordering::Acquire)
    }

    /// In-flight requests to one host (for LEAST_REQUEST).
    pub fn active_on(&self, host: &SocketAddr) -> usize {
        let st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        st.active_by_host.get(host).copied().unwrap_or(0)
    }

    /// Takes one of `maxRetries`; `None` when the retry budget is exhausted.
    pub fn try_retry(&self) -> Option<RetrySlot> {
        reserve(&self.shared.retries, self.shared.limits.max_retries)
            .then(|| RetrySlot(self.shared.clone()))
    }

    /// Gets a connection to `target`: an idle one, a new one within maxConnections, or waits
    /// as a pending request within http1MaxPendingRequests. Bound the wait with a timeout.
    pub async fn acquire(&self, target: &Target, proto: Proto) -> Result<Lease, PoolError> {
        let sh = &self.shared;
        if !reserve(&sh.active, sh.limits.max_requests) {
            return Err(PoolError::Overflow("http2MaxRequests"));
        }
        let request = RequestSlot {
            shared: sh.clone(),
            host: target.addr,
        };
        *sh.state
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .active_by_host
            .entry(target.addr)
            .or_default() += 1;
        let mut pending: Option<PendingSlot<'_>> = None;
        loop {
            let notified = sh.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if let Some(conn) = self.reuse(target.addr, proto) {
                return Ok(self.lease(target.addr, conn, request));
            }
            if reserve(&sh.connections, sh.limits.max_connections) {
                let slot = ConnSlot(sh.clone());
                drop(pending.take());
                let conn = self.connect(target, proto, slot).await?;
                return Ok(self.lease(target.addr, conn, request));
            }
            if self.evict_idle_elsewhere(target.addr) {
                continue;
            }
            if pending.is_none() {
                if !reserve(&sh.pending, sh.limits.max_pending) {
                    return Err(PoolError::Overflow("http1MaxPendingRequests"));
                }
                pending = Some(PendingSlot(sh));
            }
            debug!(addr = %target.addr, "pool: waiting for a connection");
            notified.await;
        }
    }

    fn lease(&self, host: SocketAddr, conn: Conn, request: RequestSlot) -> Lease {
        Lease {
            shared: self.shared.clone(),
            host,
            conn,
            _request: request,
        }
    }

    fn reuse(&self, addr: SocketAddr, proto: Proto) -> Option<Conn> {
        let idle_timeout = self.shared.limits.idle_timeout;
        let max = self.shared.limits.max_requests_per_connection as usize;
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        match proto {
            Proto::Http1 => {
                let list = st.idle.get_mut(&addr)?;
                let now = Instant::now();
                while let Some(c) = list.pop() {
                    if !c.send.is_closed() && now.duration_since(c.since) < idle_timeout {
                        return Some(Conn::H1(c));
                    }
                }
                None
            }
            Proto::Http2 => {
                let c = st.h2.get(&addr)?;
                let exhausted = max != 0 && c.served.load(Ordering::Acquire) >= max;
                if c.send.is_closed() || exhausted {
                    st.h2.remove(&addr);
                    return None;
                }
                c.served.fetch_add(1, Ordering::AcqRel);
                Some(Conn::H2(c.clone()))
            }
        }
    }

    /// Closes an idle connection to another host so a new one fits in maxConnections.
    fn evict_idle_elsewhere(&self, addr: SocketAddr) -> bool {
        let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
        let victim = st
            .idle
            .iter_mut()
            .find(|(a, l)| **a != addr && !l.is_empty())
            .and_then(|(_, l)| l.pop());
        drop(st);
        victim.is_some()
    }

    async fn connect(
        &self,
        target: &Target,
        proto: Proto,
        slot: ConnSlot,
    ) -> Result<Conn, PoolError> {
        let addr = target.addr;
        let timeout = self.shared.limits.connect_timeout;
        let io = match tokio::time::timeout(timeout, self.connector.connect(target)).await {
            Err(_) => return Err(PoolError::ConnectTimeout { addr, timeout }),
            Ok(Err(source)) => return Err(PoolError::Connect { addr, source }),
            Ok(Ok(io)) => TokioIo::new(io),
        };
        match proto {
            Proto::Http1 => {
                let (send, conn) = http1::handshake(io)
                    .await
                    .map_err(|source| PoolError::Handshake { addr, source })?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(%addr, "upstream HTTP/1.1 connection ended: {e}");
                    }
                });
                Ok(Conn::H1(H1Conn {
                    send,
                    served: 0,
                    since: Instant::now(),
                    _slot: slot,
                }))
            }
            Proto::Http2 => {
                let (send, conn) = http2::handshake(TokioExecutor::new(), io)
                    .await
                    .map_err(|source| PoolError::Handshake { addr, source })?;
                tokio::spawn(async move {
                    if let Err(e) = conn.await {
                        debug!(%addr, "upstream HTTP/2 connection ended: {e}");
                    }
                });
                let c = H2Conn {
                    send,
                    served: Arc::new(AtomicUsize::new(1)),
                    _slot: Arc::new(slot),
                };
                let mut st = self.shared.state.lock().unwrap_or_else(|e| e.into_inner());
                st.h2.insert(addr, c.clone());
                Ok(Conn::H2(c))
            }
        }
    }
}

/// Increments `counter` if it is below `limit`.
fn reserve(counter: &AtomicUsize, limit: usize) -> bool {
    counter
        .fetch_update(Ordering::AcqRel, Ordering::Acquire, |n| {
            (n < limit).then_some(n + 1)
        })
        .is_ok()
}

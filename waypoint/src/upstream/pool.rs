//! Upstream connection pool per cluster with Istio's `connectionPool` limits, enforced the way
//! Envoy's circuit breakers enforce them for Istio's waypoint:
//!
//! - `tcp.maxConnections` (Envoy `max_connections`): open upstream connections of the
//!   cluster, all hosts together. A request that finds no ready connection and no room for a
//!   new one waits as a *pending* request (an idle HTTP/1.1 connection to another host is
//!   closed to make room).
//! - `http.http1MaxPendingRequests` (Envoy `max_pending_requests`, any protocol): requests
//!   waiting for a connection. One more fails at once with [`PoolError::Overflow`] (503, flag
//!   `UO`). Pending requests wait until a connection frees up or the route timeout fires.
//! - `http.http2MaxRequests` (Envoy `max_requests`, every protocol): requests in flight on
//!   upstream connections. It is checked when a request is given a connection (as Envoy does
//!   when it attaches a stream), so pending requests do not count against it: with
//!   `maxConnections: 50`, `http1MaxPendingRequests: 30`, `http2MaxRequests: 50` and 120
//!   concurrent slow HTTP/1.1 requests, 50 are sent, 30 wait and 40 get 503 `UO` at once.
//!   A request that would get a connection while the limit is reached fails with 503 `UO`.
//! - `http.maxRetries` (Envoy `max_retries`): retries in flight at once; see
//!   [`ClusterPool::try_retry`].
//! - `http.maxRequestsPerConnection`: an HTTP/1.1 connection is closed after serving that
//!   many requests; an HTTP/2 connection takes no new streams after that many (0: no limit;
//!   1 disables keep-alive).
//! - `tcp.connectTimeout`: bound on connecting (default 10 s) → connect failure (`UF`).
//! - `http.idleTimeout`: a connection with no request in flight for that long is closed
//!   (default 1 h), freeing its `maxConnections` slot.
//!
//! Each limit is per cluster (service port + subset), as Envoy's are.

use meshwork_runtime::sync::LockExt;
use std::collections::{HashMap, HashSet};
use std::io;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex, Weak};
use std::time::Duration;

use hyper::body::Incoming;
use hyper::client::conn::{http1, http2};
use hyper_util::rt::{TokioExecutor, TokioIo, TokioTimer};
use meshwork_model::pb::config as pb;
use tokio::sync::Notify;
use tokio::time::Instant;
use tracing::debug;

use crate::body::Body;
use crate::upstream::connector::{Connector, Target};

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
    /// HTTP/2 PING every `interval` (also while idle); no answer within `timeout` closes
    /// the connection (Envoy's `connection_keepalive`).
    pub h2_keepalive: Option<H2Keepalive>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct H2Keepalive {
    pub interval: Duration,
    pub timeout: Duration,
}

/// The answer a keepalive PING waits for when the DestinationRule does not say.
const H2_KEEPALIVE_TIMEOUT: Duration = Duration::from_secs(20);

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
            h2_keepalive: None,
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
            h2_keepalive: (p.h2_keepalive_interval_ms != 0).then(|| H2Keepalive {
                interval: Duration::from_millis(p.h2_keepalive_interval_ms),
                timeout: t(p.h2_keepalive_timeout_ms, H2_KEEPALIVE_TIMEOUT),
            }),
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

impl Shared {
    fn state(&self) -> std::sync::MutexGuard<'_, State> {
        self.state.lock_or_recover()
    }
}

#[derive(Default, Debug)]
struct State {
    idle: HashMap<SocketAddr, Vec<H1Conn>>,
    h2: HashMap<SocketAddr, H2Conn>,
    active_by_host: HashMap<SocketAddr, usize>,
    /// Hosts with an idle reaper running (at most one per host, not one per request).
    reaping: HashSet<SocketAddr>,
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
    /// Streams opened on this connection (for maxRequestsPerConnection).
    served: Arc<AtomicUsize>,
    /// Streams in flight, and since when none is (for idleTimeout).
    streams: Arc<AtomicUsize>,
    idle_since: Arc<Mutex<Instant>>,
    _slot: Arc<ConnSlot>,
}

/// One in-flight request's share of `http2MaxRequests`.
#[derive(Debug)]
struct RequestSlot {
    shared: Arc<Shared>,
    host: SocketAddr,
}

impl RequestSlot {
    /// Takes one of `http2MaxRequests` for a request to `host`.
    fn reserve(shared: &Arc<Shared>, host: SocketAddr) -> Option<RequestSlot> {
        if !reserve(&shared.active, shared.limits.max_requests) {
            return None;
        }
        *shared.state().active_by_host.entry(host).or_default() += 1;
        Some(RequestSlot {
            shared: shared.clone(),
            host,
        })
    }
}

impl Drop for RequestSlot {
    fn drop(&mut self) {
        self.shared.active.fetch_sub(1, Ordering::AcqRel);
        let mut st = self.shared.state();
        if let Some(n) = st.active_by_host.get_mut(&self.host) {
            *n = n.saturating_sub(1);
            if *n == 0 {
                st.active_by_host.remove(&self.host);
            }
        }
        drop(st);
        self.shared.notify.notify_waiters();
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
    H2 { conn: H2Conn, _stream: StreamGuard },
}

/// One stream in flight on an HTTP/2 connection; the last one to end starts the idle timer.
struct StreamGuard {
    shared: Arc<Shared>,
    host: SocketAddr,
    streams: Arc<AtomicUsize>,
    idle_since: Arc<Mutex<Instant>>,
}

impl StreamGuard {
    fn new(shared: &Arc<Shared>, host: SocketAddr, c: &H2Conn) -> Self {
        c.streams.fetch_add(1, Ordering::AcqRel);
        StreamGuard {
            shared: shared.clone(),
            host,
            streams: c.streams.clone(),
            idle_since: c.idle_since.clone(),
        }
    }
}

impl Drop for StreamGuard {
    fn drop(&mut self) {
        if self.streams.fetch_sub(1, Ordering::AcqRel) == 1 {
            *self.idle_since.lock_or_recover() = Instant::now();
            spawn_idle_reaper(&self.shared, self.host);
        }
    }
}

/// A connection lent to one request. Dropping it without [`Lease::release`] closes an
/// HTTP/1.1 connection (the response was not read to the end).
pub struct Lease {
    // Field order is drop order: the request slot goes before the connection, so a pending
    // request woken by either finds the slot free.
    request: RequestSlot,
    conn: Conn,
    shared: Arc<Shared>,
    host: SocketAddr,
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
            Conn::H2 { conn: c, .. } => {
                c.send.ready().await?;
                c.send.send_request(req).await
            }
        }
    }

    /// The response completed: an HTTP/1.1 connection goes back to the idle list unless it
    /// reached maxRequestsPerConnection.
    pub fn release(self) {
        let Lease {
            request,
            conn,
            shared,
            host,
        } = self;
        drop(request);
        if let Conn::H1(mut c) = conn {
            let max = shared.limits.max_requests_per_connection;
            if (max == 0 || c.served < max) && !c.send.is_closed() {
                c.since = Instant::now();
                shared.state().idle.entry(host).or_default().push(c);
                shared.notify.notify_waiters();
                spawn_idle_reaper(&shared, host);
            }
        }
    }
}

/// Makes sure one task closes `host`'s connections once they have been idle for
/// `idleTimeout`. The task sleeps until the earliest idle deadline, sweeps, and ends when
/// no idle connection to `host` is left; the next connection to go idle starts a new one.
fn spawn_idle_reaper(shared: &Arc<Shared>, host: SocketAddr) {
    let Ok(rt) = tokio::runtime::Handle::try_current() else {
        return; // shutting down: nothing left to reap for
    };
    if !shared.state().reaping.insert(host) {
        return; // the running reaper will see this connection
    }
    let timeout = shared.limits.idle_timeout;
    let weak: Weak<Shared> = Arc::downgrade(shared);
    rt.spawn(async move {
        let mut wait = timeout;
        loop {
            tokio::time::sleep(wait).await;
            let Some(shared) = weak.upgrade() else {
                return;
            };
            let next = reap_idle(&mut shared.state(), host, timeout, Instant::now());
            match next {
                Some(next) => wait = next,
                None => return,
            }
        }
    });
}

/// Closes `host`'s connections idle for `timeout` at `now`; returns how long until the
/// next one would be, or `None` (and stops reaping `host`) when none is idle.
fn reap_idle(
    st: &mut State,
    host: SocketAddr,
    timeout: Duration,
    now: Instant,
) -> Option<Duration> {
    let mut next: Option<Instant> = None;
    let mut soonest = |since: Instant| {
        let at = since + timeout;
        next = Some(next.map_or(at, |n| n.min(at)));
    };
    if let Some(list) = st.idle.get_mut(&host) {
        let before = list.len();
        list.retain(|c| now.duration_since(c.since) < timeout);
        if list.len() != before {
            debug!(%host, closed = before - list.len(), "pool: idle timeout");
        }
        list.iter().for_each(|c| soonest(c.since));
        if list.is_empty() {
            st.idle.remove(&host);
        }
    }
    let h2_idle_since = st
        .h2
        .get(&host)
        .filter(|c| c.streams.load(Ordering::Acquire) == 0)
        .map(|c| *c.idle_since.lock_or_recover());
    if let Some(since) = h2_idle_since {
        if now.duration_since(since) >= timeout {
            debug!(%host, "pool: HTTP/2 idle timeout");
            st.h2.remove(&host);
        } else {
            soonest(since);
        }
    }
    match next {
        Some(at) => Some(at.saturating_duration_since(now)),
        None => {
            st.reaping.remove(&host);
            None
        }
    }
}

/// Occupancy of a pool, for the admin endpoint.
#[derive(Debug, Clone, Default, PartialEq, Eq, serde::Serialize)]
pub struct PoolStats {
    pub connections: usize,
    pub idle_connections: usize,
    pub pending_requests: usize,
    pub active_requests: usize,
    pub active_retries: usize,
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

    /// Current occupancy.
    pub fn stats(&self) -> PoolStats {
        let sh = &self.shared;
        let idle = sh.state().idle.values().map(Vec::len).sum();
        PoolStats {
            connections: sh.connections.load(Ordering::Acquire),
            idle_connections: idle,
            pending_requests: sh.pending.load(Ordering::Acquire),
            active_requests: sh.active.load(Ordering::Acquire),
            active_retries: sh.retries.load(Ordering::Acquire),
        }
    }

    /// In-flight requests to one host (for LEAST_REQUEST).
    pub fn active_on(&self, host: &SocketAddr) -> usize {
        self.shared
            .state()
            .active_by_host
            .get(host)
            .copied()
            .unwrap_or(0)
    }

    /// Takes one of `maxRetries`; `None` when the retry budget is exhausted.
    pub fn try_retry(&self) -> Option<RetrySlot> {
        reserve(&self.shared.retries, self.shared.limits.max_retries)
            .then(|| RetrySlot(self.shared.clone()))
    }

    /// Gets a connection to `target`: a ready one, a new one within maxConnections, or waits
    /// as a pending request within http1MaxPendingRequests; http2MaxRequests is checked when
    /// the request gets its connection. Bound the wait with a timeout.
    pub async fn acquire(&self, target: &Target, proto: Proto) -> Result<Lease, PoolError> {
        let sh = &self.shared;
        let addr = target.addr;
        let mut pending: Option<PendingSlot<'_>> = None;
        loop {
            let notified = sh.notify.notified();
            tokio::pin!(notified);
            notified.as_mut().enable();
            if self.has_ready(addr, proto) {
                let request = RequestSlot::reserve(sh, addr)
                    .ok_or(PoolError::Overflow("http2MaxRequests"))?;
                if let Some(conn) = self.reuse(addr, proto) {
                    return Ok(self.lease(addr, conn, request));
                }
                // Another request took it meanwhile: look again.
                continue;
            }
            if reserve(&sh.connections, sh.limits.max_connections) {
                let slot = ConnSlot(sh.clone());
                drop(pending.take());
                let request = RequestSlot::reserve(sh, addr)
                    .ok_or(PoolError::Overflow("http2MaxRequests"))?;
                let conn = self.connect(target, proto, slot).await?;
                return Ok(self.lease(addr, conn, request));
            }
            if self.evict_idle_elsewhere(addr) {
                continue;
            }
            if pending.is_none() {
                if !reserve(&sh.pending, sh.limits.max_pending) {
                    return Err(PoolError::Overflow("http1MaxPendingRequests"));
                }
                pending = Some(PendingSlot(sh));
            }
            debug!(%addr, "pool: waiting for a connection");
            notified.await;
        }
    }

    fn lease(&self, host: SocketAddr, conn: Conn, request: RequestSlot) -> Lease {
        Lease {
            request,
            conn,
            shared: self.shared.clone(),
            host,
        }
    }

    /// Whether a connection to `addr` can take a request now.
    fn has_ready(&self, addr: SocketAddr, proto: Proto) -> bool {
        let idle_timeout = self.shared.limits.idle_timeout;
        let max = self.shared.limits.max_requests_per_connection as usize;
        let mut st = self.shared.state();
        match proto {
            Proto::Http1 => {
                let now = Instant::now();
                let Some(list) = st.idle.get_mut(&addr) else {
                    return false;
                };
                list.retain(|c| !c.send.is_closed() && now.duration_since(c.since) < idle_timeout);
                !list.is_empty()
            }
            Proto::Http2 => {
                let usable = st.h2.get(&addr).is_some_and(|c| {
                    !c.send.is_closed() && (max == 0 || c.served.load(Ordering::Acquire) < max)
                });
                if !usable {
                    st.h2.remove(&addr);
                }
                usable
            }
        }
    }

    fn reuse(&self, addr: SocketAddr, proto: Proto) -> Option<Conn> {
        let idle_timeout = self.shared.limits.idle_timeout;
        let max = self.shared.limits.max_requests_per_connection as usize;
        let mut st = self.shared.state();
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
                let guard = StreamGuard::new(&self.shared, addr, c);
                Some(Conn::H2 {
                    conn: c.clone(),
                    _stream: guard,
                })
            }
        }
    }

    /// Closes an idle connection to another host so a new one fits in maxConnections.
    fn evict_idle_elsewhere(&self, addr: SocketAddr) -> bool {
        let mut st = self.shared.state();
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
                let mut builder = http2::Builder::new(TokioExecutor::new());
                if let Some(k) = self.shared.limits.h2_keepalive {
                    builder
                        .timer(TokioTimer::new())
                        .keep_alive_interval(k.interval)
                        .keep_alive_timeout(k.timeout)
                        .keep_alive_while_idle(true);
                }
                let (send, conn) = builder
                    .handshake(io)
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
                    streams: Arc::new(AtomicUsize::new(0)),
                    idle_since: Arc::new(Mutex::new(Instant::now())),
                    _slot: Arc::new(slot),
                };
                self.shared.state().h2.insert(addr, c.clone());
                let guard = StreamGuard::new(&self.shared, addr, &c);
                Ok(Conn::H2 {
                    conn: c,
                    _stream: guard,
                })
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

#[cfg(test)]
mod tests {
    use super::*;
    use bytes::Bytes;
    use futures::future::BoxFuture;
    use http_body_util::{BodyExt, Full};
    use hyper::service::service_fn;
    use std::convert::Infallible;

    use crate::upstream::connector::BoxedIo;

    /// In-memory upstream: every request is answered 200 after `delay`; `hang` never
    /// completes the connect.
    #[derive(Clone)]
    struct Slow {
        delay: Duration,
        hang: bool,
        connects: Arc<AtomicUsize>,
    }

    impl Slow {
        fn new(delay: Duration) -> Self {
            Slow {
                delay,
                hang: false,
                connects: Arc::new(AtomicUsize::new(0)),
            }
        }
    }

    impl Connector for Slow {
        fn connect(&self, _: &Target) -> BoxFuture<'static, io::Result<BoxedIo>> {
            let s = self.clone();
            Box::pin(async move {
                if s.hang {
                    std::future::pending::<()>().await;
                }
                s.connects.fetch_add(1, Ordering::SeqCst);
                let (client, server) = tokio::io::duplex(16 * 1024);
                let delay = s.delay;
                tokio::spawn(async move {
                    let svc = service_fn(move |_req: hyper::Request<Incoming>| async move {
                        tokio::time::sleep(delay).await;
                        Ok::<_, Infallible>(hyper::Response::new(Full::new(Bytes::from("ok"))))
                    });
                    let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                        .serve_connection(TokioIo::new(server), svc)
                        .await;
                });
                Ok(Box::new(client) as BoxedIo)
            })
        }
    }

    fn target(port: u16) -> Target {
        Target {
            addr: SocketAddr::from(([127, 0, 0, 1], port)),
            identity: None,
        }
    }

    /// One request through the pool, read to the end; `Err` names the overflowed limit.
    async fn request(pool: ClusterPool, port: u16, proto: Proto) -> Result<(), String> {
        let mut lease = pool
            .acquire(&target(port), proto)
            .await
            .map_err(|e| match e {
                PoolError::Overflow(what) => what.to_string(),
                other => other.to_string(),
            })?;
        let req = http::Request::builder()
            .uri("http://upstream/")
            .body(crate::body::empty())
            .map_err(|e| e.to_string())?;
        let resp = lease.send(req).await.map_err(|e| e.to_string())?;
        resp.into_body()
            .collect()
            .await
            .map_err(|e| e.to_string())?;
        lease.release();
        Ok(())
    }

    fn seed_limits() -> PoolLimits {
        PoolLimits::from_pb(Some(&pb::ConnectionPool {
            max_connections: 50,
            http1_max_pending_requests: 30,
            http2_max_requests: 50,
            connect_timeout_ms: 5000,
            ..Default::default()
        }))
    }

    async fn burst(
        pool: &ClusterPool,
        n: usize,
        proto: Proto,
    ) -> Vec<(Result<(), String>, Duration)> {
        let start = Instant::now();
        let tasks: Vec<_> = (0..n)
            .map(|_| {
                let pool = pool.clone();
                tokio::spawn(async move {
                    let r = request(pool, 1, proto).await;
                    (r, start.elapsed())
                })
            })
            .collect();
        let mut out = Vec::new();
        for t in tasks {
            out.push(t.await.expect("request task"));
        }
        out
    }

    #[tokio::test(start_paused = true)]
    async fn seed_limits_admit_connections_plus_pending() {
        let up = Slow::new(Duration::from_secs(1));
        let pool = ClusterPool::new(seed_limits(), Arc::new(up.clone()));
        let out = burst(&pool, 120, Proto::Http1).await;
        let ok: Vec<_> = out.iter().filter(|(r, _)| r.is_ok()).collect();
        let overflow: Vec<_> = out
            .iter()
            .filter(|(r, _)| {
                r.as_ref().err().map(String::as_str) == Some("http1MaxPendingRequests")
            })
            .collect();
        assert_eq!((ok.len(), overflow.len()), (80, 40), "{out:?}");
        assert!(
            overflow.iter().all(|(_, t)| *t == Duration::ZERO),
            "overflow fails at once"
        );
        assert_eq!(
            ok.iter()
                .filter(|(_, t)| *t == Duration::from_secs(1))
                .count(),
            50
        );
        assert_eq!(
            ok.iter()
                .filter(|(_, t)| *t == Duration::from_secs(2))
                .count(),
            30
        );
        assert_eq!(
            up.connects.load(Ordering::SeqCst),
            50,
            "pending requests reuse connections"
        );
        assert_eq!(pool.stats().pending_requests, 0);
        assert_eq!(pool.stats().active_requests, 0);
        assert_eq!(pool.stats().connections, 50);
    }

    #[tokio::test(start_paused = true)]
    async fn max_requests_applies_to_every_protocol() {
        for proto in [Proto::Http1, Proto::Http2] {
            let limits = PoolLimits {
                max_requests: 2,
                ..PoolLimits::default()
            };
            let pool = ClusterPool::new(limits, Arc::new(Slow::new(Duration::from_secs(1))));
            let out = burst(&pool, 5, proto).await;
            let over = out
                .iter()
                .filter(|(r, _)| r.as_ref().err().map(String::as_str) == Some("http2MaxRequests"))
                .count();
            assert_eq!(over, 3, "{proto:?}: {out:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn http2_multiplexes_and_pending_waits_for_a_connection() {
        let up = Slow::new(Duration::from_secs(1));
        let limits = PoolLimits {
            max_connections: 1,
            max_pending: 1,
            ..PoolLimits::default()
        };
        let pool = ClusterPool::new(limits, Arc::new(up.clone()));
        let out = burst(&pool, 10, Proto::Http2).await;
        // The first request opens the one connection and waits for it; the other nine find
        // it ready and share it.
        assert!(out.iter().all(|(r, _)| r.is_ok()), "{out:?}");
        assert_eq!(up.connects.load(Ordering::SeqCst), 1);
    }

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_closes_connections_and_frees_their_slot() {
        let limits = PoolLimits {
            idle_timeout: Duration::from_secs(30),
            ..PoolLimits::default()
        };
        for proto in [Proto::Http1, Proto::Http2] {
            let pool = ClusterPool::new(limits.clone(), Arc::new(Slow::new(Duration::ZERO)));
            request(pool.clone(), 1, proto).await.unwrap();
            assert_eq!(pool.connections(), 1, "{proto:?}");
            tokio::time::sleep(Duration::from_secs(29)).await;
            assert_eq!(pool.connections(), 1, "{proto:?}: still within idleTimeout");
            tokio::time::sleep(Duration::from_secs(2)).await;
            assert_eq!(pool.connections(), 0, "{proto:?}: closed after idleTimeout");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn one_idle_reaper_per_host_however_many_requests() {
        // A reaper per released request would keep one sleeping task (for the whole
        // idleTimeout, 1 h by default) per request: memory growing with traffic.
        for proto in [Proto::Http1, Proto::Http2] {
            let pool = ClusterPool::new(PoolLimits::default(), Arc::new(Slow::new(Duration::ZERO)));
            let tasks_before = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            for _ in 0..200 {
                request(pool.clone(), 1, proto).await.unwrap();
            }
            let tasks = tokio::runtime::Handle::current()
                .metrics()
                .num_alive_tasks();
            assert!(
                tasks <= tasks_before + 5,
                "{proto:?}: {tasks} tasks alive after 200 requests (before: {tasks_before})"
            );
            assert_eq!(pool.shared.state().reaping.len(), 1, "{proto:?}");
            // Still reaped on time.
            tokio::time::sleep(Duration::from_secs(3601)).await;
            assert_eq!(pool.connections(), 0, "{proto:?}");
            assert!(pool.shared.state().reaping.is_empty(), "{proto:?}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn max_requests_per_connection_closes_after_n() {
        let up = Slow::new(Duration::ZERO);
        let limits = PoolLimits::from_pb(Some(&pb::ConnectionPool {
            max_requests_per_connection: 2,
            ..Default::default()
        }));
        let pool = ClusterPool::new(limits, Arc::new(up.clone()));
        for _ in 0..4 {
            request(pool.clone(), 1, Proto::Http1).await.unwrap();
        }
        assert_eq!(up.connects.load(Ordering::SeqCst), 2);
        assert_eq!(
            pool.connections(),
            0,
            "the second connection closed after 2 requests"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn connect_timeout() {
        let mut up = Slow::new(Duration::ZERO);
        up.hang = true;
        let limits = PoolLimits::from_pb(Some(&pb::ConnectionPool {
            connect_timeout_ms: 5000,
            ..Default::default()
        }));
        let pool = ClusterPool::new(limits, Arc::new(up));
        let start = Instant::now();
        let err = pool.acquire(&target(1), Proto::Http1).await.err();
        assert!(
            matches!(err, Some(PoolError::ConnectTimeout { .. })),
            "{err:?}"
        );
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        assert_eq!(pool.connections(), 0, "the failed connect frees its slot");
        assert_eq!(pool.stats().active_requests, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn retries_are_bounded_while_in_flight() {
        let limits = PoolLimits {
            max_retries: 2,
            ..PoolLimits::default()
        };
        let pool = ClusterPool::new(limits, Arc::new(Slow::new(Duration::ZERO)));
        let a = pool.try_retry();
        let b = pool.try_retry();
        assert!(a.is_some() && b.is_some());
        assert!(
            pool.try_retry().is_none(),
            "a third concurrent retry overflows"
        );
        assert_eq!(pool.stats().active_retries, 2);
        drop(a);
        assert!(
            pool.try_retry().is_some(),
            "a finished retry frees its slot"
        );
    }

    #[tokio::test(start_paused = true)]
    async fn pending_request_evicts_an_idle_connection_to_another_host() {
        let up = Slow::new(Duration::ZERO);
        let limits = PoolLimits {
            max_connections: 1,
            max_pending: 0,
            ..PoolLimits::default()
        };
        let pool = ClusterPool::new(limits, Arc::new(up.clone()));
        request(pool.clone(), 1, Proto::Http1).await.unwrap();
        request(pool.clone(), 2, Proto::Http1).await.unwrap();
        assert_eq!(up.connects.load(Ordering::SeqCst), 2);
        assert_eq!(pool.connections(), 1);
    }

    /// An HTTP/2 upstream that never answers PINGs: counts the PINGs it reads and tells
    /// when the client closed the connection.
    #[derive(Clone, Default)]
    struct Deaf {
        pings: Arc<AtomicUsize>,
        closed: Arc<Notify>,
    }

    impl Connector for Deaf {
        fn connect(&self, _: &Target) -> BoxFuture<'static, io::Result<BoxedIo>> {
            let me = self.clone();
            Box::pin(async move {
                use tokio::io::{AsyncReadExt, AsyncWriteExt};
                let (client, mut server) = tokio::io::duplex(64 * 1024);
                tokio::spawn(async move {
                    let mut preface = [0u8; 24];
                    if server.read_exact(&mut preface).await.is_err() {
                        return;
                    }
                    // Our SETTINGS (empty); the client's SETTINGS are acknowledged below.
                    let _ = server.write_all(&[0, 0, 0, 4, 0, 0, 0, 0, 0]).await;
                    let mut head = [0u8; 9];
                    while server.read_exact(&mut head).await.is_ok() {
                        let len = usize::from(head[0]) << 16
                            | usize::from(head[1]) << 8
                            | usize::from(head[2]);
                        let mut payload = vec![0u8; len];
                        if server.read_exact(&mut payload).await.is_err() {
                            break;
                        }
                        match (head[3], head[4]) {
                            (4, 0) => {
                                let _ = server.write_all(&[0, 0, 0, 4, 1, 0, 0, 0, 0]).await;
                            }
                            (6, 0) => {
                                me.pings.fetch_add(1, Ordering::SeqCst);
                            }
                            _ => {}
                        }
                    }
                    me.closed.notify_one();
                });
                Ok(Box::new(client) as BoxedIo)
            })
        }
    }

    #[tokio::test]
    async fn h2_keepalive_pings_and_closes_a_connection_that_does_not_answer() {
        let deaf = Deaf::default();
        let limits = PoolLimits::from_pb(Some(&pb::ConnectionPool {
            h2_keepalive_interval_ms: 50,
            h2_keepalive_timeout_ms: 100,
            ..Default::default()
        }));
        assert_eq!(
            limits.h2_keepalive,
            Some(H2Keepalive {
                interval: Duration::from_millis(50),
                timeout: Duration::from_millis(100),
            })
        );
        let pool = ClusterPool::new(limits, Arc::new(deaf.clone()));
        let lease = pool.acquire(&target(1), Proto::Http2).await.unwrap();
        lease.release();
        tokio::time::timeout(Duration::from_secs(5), deaf.closed.notified())
            .await
            .expect("the unanswered keepalive closes the connection");
        assert!(deaf.pings.load(Ordering::SeqCst) >= 1);

        // Without the setting, an idle connection sends no PING.
        let quiet = Deaf::default();
        let pool = ClusterPool::new(PoolLimits::default(), Arc::new(quiet.clone()));
        let lease = pool.acquire(&target(1), Proto::Http2).await.unwrap();
        lease.release();
        tokio::time::sleep(Duration::from_millis(300)).await;
        assert_eq!(quiet.pings.load(Ordering::SeqCst), 0);
    }
}

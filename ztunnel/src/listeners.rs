//! Listeners on the data-path threads: one per shard and address (shared with
//! SO_REUSEPORT), made in a [`Scope`] (the ztunnel's namespace or a pod's), each accepting
//! until its stop token or the ztunnel's stops it.

use std::net::SocketAddr;
use std::sync::Arc;

use meshwork_runtime::accept::accept;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::config::Listen;
use crate::proxy::Proxy;
use crate::scope::Scope;
use crate::sockets;
use crate::ztunnel::StartError;

/// One address's listeners, one per shard (in shard order), sharing the bound address.
pub(crate) struct ShardListeners {
    pub addr: SocketAddr,
    listeners: Vec<TcpListener>,
}

/// Binds `l` once per shard in `scope`: the first bind resolves a port 0, the others join
/// it with SO_REUSEPORT; each listener is registered with its shard's runtime.
pub(crate) fn bind_shards(
    what: &'static str,
    l: Listen,
    transparent: bool,
    reuse_port: bool,
    shards: &[Handle],
    scope: &Scope,
) -> Result<Option<ShardListeners>, StartError> {
    let Some(addr) = l.0 else { return Ok(None) };
    let err = |source| StartError::Bind { what, addr, source };
    let reuse_port = reuse_port || shards.len() > 1;
    let first = scope
        .listen_std(addr, transparent, reuse_port)
        .map_err(err)?;
    let bound = first.local_addr().map_err(err)?;
    let mut std_listeners = vec![first];
    for _ in 1..shards.len() {
        std_listeners.push(scope.listen_std(bound, transparent, true).map_err(err)?);
    }
    let mut listeners = Vec::with_capacity(shards.len());
    for (l, h) in std_listeners.into_iter().zip(shards) {
        let _in_shard = h.enter();
        listeners.push(TcpListener::from_std(l).map_err(err)?);
    }
    Ok(Some(ShardListeners {
        addr: bound,
        listeners,
    }))
}

/// Accepts on every shard's listener until `stop` (or the ztunnel's drain) fires;
/// connections are served on the shard that accepted them.
pub(crate) fn spawn_accept<F, Fut>(
    proxy: &Arc<Proxy>,
    shards: &[Handle],
    what: &'static str,
    ls: ShardListeners,
    stop: CancellationToken,
    handle: F,
) where
    F: Fn(Arc<Proxy>, TcpStream, SocketAddr) -> Fut + Clone + Send + 'static,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    for (listener, rt) in ls.listeners.into_iter().zip(shards) {
        let p = proxy.clone();
        let handle = handle.clone();
        let stop = stop.clone();
        rt.spawn(proxy.tracker.track_future(async move {
            loop {
                let (sock, peer) = tokio::select! {
                    c = accept(&listener, what) => c,
                    _ = p.stop_accept.cancelled() => return,
                    _ = stop.cancelled() => return,
                };
                if let Err(e) = sockets::tune(&sock) {
                    tracing::debug!(%peer, error = %e, "socket options not set");
                }
                p.tracker.spawn(handle(p.clone(), sock, peer));
            }
        }));
    }
}

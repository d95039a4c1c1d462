//! Listeners on the data-path threads: one per shard and address (shared with
//! SO_REUSEPORT), made in a [`Scope`] (the ztunnel's namespace or a pod's), each accepting
//! until its stop token or the ztunnel's stops it.

use std::net::SocketAddr;
use std::sync::Arc;

use meshwork_runtime::accept::accept;
use tokio::net::{TcpListener, TcpStream};
use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

use crate::args::Listen;
use crate::proxy::Proxy;
use crate::scope::Scope;
use crate::sockets;

/// A listener that could not be bound.
#[derive(Debug, thiserror::Error)]
#[error("binding {what} listener on {addr}: {source}")]
pub struct BindError {
    pub what: &'static str,
    pub addr: SocketAddr,
    #[source]
    pub source: std::io::Error,
}

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
) -> Result<Option<ShardListeners>, BindError> {
    let Some(addr) = l.0 else { return Ok(None) };
    let err = |source| BindError { what, addr, source };
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

/// One connection already in `listener`'s accept queue, without waiting.
fn accept_queued(listener: &TcpListener) -> Option<(TcpStream, SocketAddr)> {
    let (sock, addr) = socket2::SockRef::from(listener).accept().ok()?;
    sock.set_nonblocking(true).ok()?;
    let peer = addr.as_socket()?;
    let std: std::net::TcpStream = sock.into();
    Some((TcpStream::from_std(std).ok()?, peer))
}

fn serve<F, Fut>(p: &Arc<Proxy>, handle: &F, sock: TcpStream, peer: SocketAddr)
where
    F: Fn(Arc<Proxy>, TcpStream, SocketAddr) -> Fut,
    Fut: std::future::Future<Output = ()> + Send + 'static,
{
    if let Err(e) = sockets::tune(&sock) {
        tracing::debug!(%peer, error = %e, "socket options not set");
    }
    p.tracker.spawn(handle(p.clone(), sock, peer));
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
                    _ = p.stop_accept.cancelled() => break,
                    _ = stop.cancelled() => break,
                };
                serve(&p, &handle, sock, peer);
            }
            // Serve what the kernel already queued for this listener before it closes:
            // closing drops its accept queue, and in a pod's namespace no
            // `tcp_migrate_req` moves those connections to a successor's listener.
            // (Straight to accept(2): the runtime's readiness may not have seen them yet.)
            while let Some((sock, peer)) = accept_queued(&listener) {
                serve(&p, &handle, sock, peer);
            }
        }));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_already_queued_are_taken_without_waiting() {
        let l = sockets::listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = l.local_addr().unwrap();
        assert!(accept_queued(&l).is_none(), "nothing queued yet");
        // Completed handshakes wait in the kernel's queue: nobody has called accept.
        let a = std::net::TcpStream::connect(addr).unwrap();
        let b = std::net::TcpStream::connect(addr).unwrap();
        let mut peers: Vec<SocketAddr> = std::iter::from_fn(|| accept_queued(&l))
            .map(|(_, peer)| peer)
            .collect();
        peers.sort();
        let mut want = vec![a.local_addr().unwrap(), b.local_addr().unwrap()];
        want.sort();
        assert_eq!(peers, want);
    }
}

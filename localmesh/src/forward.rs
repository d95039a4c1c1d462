//! A TCP forwarder: a listener in this process's network namespace (loopback, for the
//! user's tools) whose every connection is joined to a [`Dial`] — an address here or one
//! reached from inside a pod's or node's namespace (the socket is created there, then
//! used like any other). Connections are bounded; dropping the forwarder stops it and
//! every connection it carries.

use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpListener;
use tokio::sync::Semaphore;
use tokio::task::{JoinHandle, JoinSet};

use crate::connect::Dial;

/// Connections one forwarder carries at once by default; more wait in the backlog.
pub const MAX_CONNECTIONS: usize = 64;

/// Why a forwarder could not start.
#[derive(Debug, thiserror::Error)]
pub enum ForwardError {
    #[error("forwarder to {dial}: listening on {listen}: {source}")]
    Listen {
        listen: SocketAddr,
        dial: String,
        source: std::io::Error,
    },
    #[error("forwarder to {dial}: listening on {listen} in netns {netns}: {detail}")]
    Netns {
        listen: SocketAddr,
        netns: String,
        dial: String,
        detail: String,
    },
}

/// A running forwarder; dropping it closes the listener and its connections.
pub struct Forwarder {
    addr: SocketAddr,
    dial: Dial,
    task: JoinHandle<()>,
}

impl Forwarder {
    /// Listens on `127.0.0.1:port` (0: any free port) and forwards each connection to
    /// `dial`, at most `max_connections` at a time. Loopback only, by construction: a
    /// forwarder reaches into pods past the mesh, so only this machine's users may use it.
    pub async fn start(
        port: u16,
        dial: Dial,
        max_connections: usize,
    ) -> Result<Forwarder, ForwardError> {
        let listen = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
        let err = |source| ForwardError::Listen {
            listen,
            dial: dial.to_string(),
            source,
        };
        let listener = TcpListener::bind(listen).await.map_err(err)?;
        let addr = listener.local_addr().map_err(err)?;
        let task = tokio::spawn(serve(listener, dial.clone(), max_connections.max(1)));
        Ok(Forwarder { addr, dial, task })
    }

    /// Like [`Forwarder::start`], but the listener is `127.0.0.1:port` of the named
    /// network namespace (the socket is created there and served from here): a process
    /// of that namespace, e.g. the control plane in the fabric, reaches `dial` through it.
    pub async fn start_in(
        netns: &str,
        port: u16,
        dial: Dial,
        max_connections: usize,
    ) -> Result<Forwarder, ForwardError> {
        let listen = SocketAddr::from((std::net::Ipv4Addr::LOCALHOST, port));
        let err = |detail: String| ForwardError::Netns {
            listen,
            netns: netns.to_string(),
            dial: dial.to_string(),
            detail,
        };
        let name = netns.to_string();
        let std = tokio::task::spawn_blocking(move || {
            meshwork_netlab::netns::in_netns(&name, move || {
                let l = std::net::TcpListener::bind(listen)?;
                l.set_nonblocking(true)?;
                Ok::<_, std::io::Error>(l)
            })
        })
        .await
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(e.to_string()))?
        .map_err(|e| err(e.to_string()))?;
        let listener = TcpListener::from_std(std).map_err(|e| err(e.to_string()))?;
        let addr = listener.local_addr().map_err(|e| err(e.to_string()))?;
        let task = tokio::spawn(serve(listener, dial.clone(), max_connections.max(1)));
        Ok(Forwarder { addr, dial, task })
    }

    /// Where the forwarder listens.
    pub fn addr(&self) -> SocketAddr {
        self.addr
    }

    pub fn dial(&self) -> &Dial {
        &self.dial
    }
}

impl Drop for Forwarder {
    fn drop(&mut self) {
        // Aborting the accept loop drops its JoinSet, which aborts every connection.
        self.task.abort();
    }
}

async fn serve(listener: TcpListener, dial: Dial, max: usize) {
    let permits = Arc::new(Semaphore::new(max));
    let mut conns = JoinSet::new();
    loop {
        let Ok(permit) = permits.clone().acquire_owned().await else {
            return;
        };
        let accepted = tokio::select! {
            a = listener.accept() => a,
            Some(_) = conns.join_next(), if !conns.is_empty() => {
                drop(permit);
                continue;
            }
        };
        let mut inbound = match accepted {
            Ok((s, _)) => s,
            // A transient accept error (EMFILE, a reset before accept): try again shortly.
            Err(_) => {
                tokio::time::sleep(std::time::Duration::from_millis(50)).await;
                continue;
            }
        };
        let dial = dial.clone();
        conns.spawn(async move {
            let _permit = permit;
            let _ = inbound.set_nodelay(true);
            match dial.connect().await {
                Ok(mut outbound) => {
                    let _ = outbound.set_nodelay(true);
                    let _ = tokio::io::copy_bidirectional(&mut inbound, &mut outbound).await;
                }
                Err(e) => crate::progress(&format!("forward: {e}")),
            }
        });
        // Reap the finished ones so the set stays small.
        while conns.try_join_next().is_some() {}
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};
    use tokio::net::TcpStream;

    /// An echo server that counts the connections open at once.
    async fn echo() -> (SocketAddr, Arc<std::sync::atomic::AtomicUsize>) {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let open = Arc::new(std::sync::atomic::AtomicUsize::new(0));
        let o = open.clone();
        tokio::spawn(async move {
            loop {
                let (mut s, _) = l.accept().await.unwrap();
                let o = o.clone();
                tokio::spawn(async move {
                    o.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
                    let mut buf = [0u8; 1024];
                    loop {
                        match s.read(&mut buf).await {
                            Ok(0) | Err(_) => break,
                            Ok(n) => {
                                if s.write_all(&buf[..n]).await.is_err() {
                                    break;
                                }
                            }
                        }
                    }
                    o.fetch_sub(1, std::sync::atomic::Ordering::SeqCst);
                });
            }
        });
        (addr, open)
    }

    async fn round_trip(s: &mut TcpStream, msg: &[u8]) -> Vec<u8> {
        s.write_all(msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        tokio::time::timeout(Duration::from_secs(5), s.read_exact(&mut got))
            .await
            .expect("echo in time")
            .unwrap();
        got
    }

    #[tokio::test]
    async fn forwards_both_ways_bounds_connections_and_stops_on_drop() {
        let (target, open) = echo().await;
        let f = Forwarder::start(0, Dial::Here(target), 2).await.unwrap();
        assert_eq!(f.dial(), &Dial::Here(target));
        assert!(f.addr().ip().is_loopback(), "{}", f.addr());
        let mut a = TcpStream::connect(f.addr()).await.unwrap();
        let mut b = TcpStream::connect(f.addr()).await.unwrap();
        assert_eq!(round_trip(&mut a, b"one").await, b"one");
        assert_eq!(round_trip(&mut b, b"two").await, b"two");
        // A third connection waits until one of the two closes.
        let mut c = TcpStream::connect(f.addr()).await.unwrap();
        c.write_all(b"three").await.unwrap();
        let mut buf = [0u8; 5];
        let early = tokio::time::timeout(Duration::from_millis(300), c.read_exact(&mut buf)).await;
        assert!(
            early.is_err(),
            "a third connection was served beyond the bound"
        );
        assert_eq!(open.load(std::sync::atomic::Ordering::SeqCst), 2);
        drop(a);
        tokio::time::timeout(Duration::from_secs(5), c.read_exact(&mut buf))
            .await
            .expect("served once a slot freed")
            .unwrap();
        assert_eq!(&buf, b"three");
        // Dropping the forwarder closes the listener and the connections it carries.
        let addr = f.addr();
        drop(f);
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), b.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        tokio::time::sleep(Duration::from_millis(50)).await;
        assert!(TcpStream::connect(addr).await.is_err(), "still listening");
    }

    #[tokio::test]
    async fn a_failed_dial_closes_the_client_and_a_busy_port_is_named() {
        let unused = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let gone = unused.local_addr().unwrap();
        drop(unused);
        let f = Forwarder::start(0, Dial::Here(gone), 4).await.unwrap();
        let mut s = TcpStream::connect(f.addr()).await.unwrap();
        let mut rest = Vec::new();
        let closed = tokio::time::timeout(Duration::from_secs(5), s.read_to_end(&mut rest)).await;
        assert!(matches!(closed, Ok(Ok(0)) | Ok(Err(_))), "{closed:?}");
        let e = Forwarder::start(f.addr().port(), Dial::Here(gone), 4)
            .await
            .err()
            .expect("the port is taken")
            .to_string();
        assert!(
            e.contains(&f.addr().to_string()) && e.contains(&gone.to_string()),
            "{e}"
        );
    }
}

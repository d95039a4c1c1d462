//! Where a pooled HBONE connection is dialed from. By default, a socket of the process's
//! own network namespace; an in-pod ztunnel dials from a socket made in the client pod's
//! namespace (so the connection leaves from the pod's own address and the CNI routes and
//! polices it as the pod's traffic). Connections are never shared between sources.

use std::fmt;
use std::hash::{Hash, Hasher};
use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use tokio::net::TcpSocket;

/// Makes the (unconnected) TCP socket a connection to `dst` is dialed from.
pub trait SocketFactory: Send + Sync {
    fn socket(&self, dst: SocketAddr) -> io::Result<TcpSocket>;
}

/// The source of pooled connections: part of [`crate::PoolKey`]. Two sources are the same
/// when their ids are (e.g. one per pod network namespace).
#[derive(Clone, Default)]
pub struct DialFrom {
    id: u64,
    factory: Option<Arc<dyn SocketFactory>>,
}

impl DialFrom {
    /// Sockets made by `factory`; `id` names the source (0 is the default source).
    pub fn new(id: u64, factory: Arc<dyn SocketFactory>) -> Self {
        DialFrom {
            id,
            factory: Some(factory),
        }
    }

    pub fn id(&self) -> u64 {
        self.id
    }

    /// A socket for a connection to `dst`.
    pub fn socket(&self, dst: SocketAddr) -> io::Result<TcpSocket> {
        match &self.factory {
            Some(f) => f.socket(dst),
            None if dst.is_ipv4() => TcpSocket::new_v4(),
            None => TcpSocket::new_v6(),
        }
    }
}

impl fmt::Debug for DialFrom {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("DialFrom").field("id", &self.id).finish()
    }
}

impl PartialEq for DialFrom {
    fn eq(&self, other: &Self) -> bool {
        self.id == other.id
    }
}

impl Eq for DialFrom {}

impl Hash for DialFrom {
    fn hash<H: Hasher>(&self, state: &mut H) {
        self.id.hash(state)
    }
}

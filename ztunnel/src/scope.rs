//! Where a connection's sockets are made: the ztunnel's own network namespace (node-mode
//! capture, loopback setups, SOCKS5) or an enrolled pod's (in-pod capture, `crate::inpod`).
//! In a pod's namespace every socket the ztunnel opens for that pod (listeners, HBONE
//! dials, passthrough, the leg to the app) is that pod's: it leaves from the pod's own
//! address, and it carries the bypass mark so the pod's capture leaves it alone.

use std::io;
use std::net::{IpAddr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meshwork_hbone::{DialFrom, SocketFactory};
use meshwork_model::pb::config::Workload;
use meshwork_runtime::netns::NetNs;
use socket2::{Domain, Protocol, Socket, Type};
use tokio::net::{TcpSocket, TcpStream};

use crate::state::State;

/// An enrolled pod, as the sockets made for it see it.
#[derive(Debug)]
pub struct PodScope {
    pub netns: NetNs,
    /// The pod's uid (or, when none is known, `namespace/name`).
    pub key: String,
    /// `namespace/name`.
    pub pod: String,
    /// The pod's own addresses: the only sources its outbound listener serves and the only
    /// destinations its inbound listeners serve.
    pub ips: Vec<IpAddr>,
    /// `SO_MARK` of every socket made for the pod (not captured by the pod's programs).
    pub bypass_mark: u32,
}

/// Where the sockets of a connection are made. Cheap to clone.
#[derive(Debug, Clone, Default)]
pub struct Scope(Option<Arc<PodScope>>);

impl PodScope {
    fn raw_socket(&self, domain: Domain, ty: Type, proto: Protocol) -> io::Result<Socket> {
        let sock = self
            .netns
            .run(|| Socket::new(domain, ty, Some(proto)))
            .map_err(io::Error::other)??;
        sock.set_mark(self.bypass_mark)?;
        Ok(sock)
    }
}

impl SocketFactory for PodScope {
    fn socket(&self, dst: SocketAddr) -> io::Result<TcpSocket> {
        let s = self.raw_socket(Domain::for_address(dst), Type::STREAM, Protocol::TCP)?;
        s.set_nonblocking(true)?;
        Ok(TcpSocket::from_std_stream(s.into()))
    }
}

impl Scope {
    /// The ztunnel's own namespace.
    pub fn node() -> Scope {
        Scope(None)
    }

    pub fn pod(pod: PodScope) -> Scope {
        Scope(Some(Arc::new(pod)))
    }

    pub fn pod_scope(&self) -> Option<&PodScope> {
        self.0.as_deref()
    }

    /// Whether `ip` is this scope's own: always in the node's namespace (the state decides
    /// there), else one of the pod's addresses.
    pub fn owns(&self, ip: IpAddr) -> bool {
        match &self.0 {
            None => true,
            Some(p) => p.ips.contains(&ip),
        }
    }

    /// The local workload owning `ip` as this scope sees it: in the node's namespace the
    /// state's workload with that address; in a pod's, the pod itself (found by name: a
    /// just-started pod's address may not be published yet) when `ip` is the pod's.
    pub fn local_workload<'s>(&self, st: &'s State, ip: IpAddr) -> Option<&'s Workload> {
        match &self.0 {
            None => st.local_workload_by_ip(ip),
            Some(p) if p.ips.contains(&ip) => st.workload_by_ref(&p.pod).filter(|w| st.is_local(w)),
            Some(_) => None,
        }
    }

    /// Where pooled HBONE connections for this scope are dialed from.
    pub fn dial_from(&self) -> DialFrom {
        match &self.0 {
            None => DialFrom::default(),
            Some(p) => DialFrom::new(p.netns.inode(), p.clone()),
        }
    }

    /// A TCP socket for a connection to `dst`.
    pub fn socket(&self, dst: SocketAddr) -> io::Result<TcpSocket> {
        match &self.0 {
            None if dst.is_ipv4() => TcpSocket::new_v4(),
            None => TcpSocket::new_v6(),
            Some(p) => p.socket(dst),
        }
    }

    /// An unregistered listening socket on `addr` (see [`crate::sockets::listen_std`]).
    pub fn listen_std(
        &self,
        addr: SocketAddr,
        transparent: bool,
        reuse_port: bool,
    ) -> io::Result<std::net::TcpListener> {
        let sock = match &self.0 {
            None => Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?,
            Some(p) => {
                let sock = p.raw_socket(Domain::for_address(addr), Type::STREAM, Protocol::TCP)?;
                // A pod's `[::]` listeners sit next to its `0.0.0.0` ones on the same
                // ports: IPv6 only, so IPv4 stays with the IPv4 sockets.
                if addr.is_ipv6() {
                    sock.set_only_v6(true)?;
                }
                sock
            }
        };
        crate::sockets::listen_on(sock, addr, transparent, reuse_port)
    }

    /// Connects to `dst` within `timeout` from a socket of this scope; with `source`, binds to
    /// that address first using IP_TRANSPARENT (so the pod sees the original client IP).
    pub async fn connect(
        &self,
        dst: SocketAddr,
        source: Option<IpAddr>,
        timeout: Duration,
    ) -> io::Result<TcpStream> {
        let fut = async {
            let sock = self.socket(dst)?;
            if let Some(src) = source.filter(|s| s.is_ipv4() == dst.is_ipv4()) {
                let s2 = socket2::SockRef::from(&sock);
                if src.is_ipv4() {
                    s2.set_ip_transparent_v4(true)?;
                } else {
                    s2.set_ip_transparent_v6(true)?;
                }
                sock.bind(SocketAddr::new(src, 0))?;
            }
            crate::sockets::tune(&sock)?;
            sock.connect(dst).await
        };
        match tokio::time::timeout(timeout, fut).await {
            Ok(r) => r,
            Err(_) => Err(io::Error::new(
                io::ErrorKind::TimedOut,
                format!("connect to {dst} timed out"),
            )),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn connections_to_pods_get_nodelay_and_keepalive() {
        let l = crate::sockets::listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let c = Scope::node()
            .connect(l.local_addr().unwrap(), None, Duration::from_secs(2))
            .await
            .unwrap();
        let r = socket2::SockRef::from(&c);
        assert!(r.tcp_nodelay().unwrap());
        assert!(r.keepalive().unwrap());
    }

    #[tokio::test]
    async fn a_refused_connection_is_an_error() {
        let e = Scope::node()
            .connect("127.0.0.1:1".parse().unwrap(), None, Duration::from_secs(2))
            .await;
        assert!(e.is_err());
    }
    use crate::state::tests::{snapshot, workload};

    fn pod(ip: &str) -> Scope {
        Scope::pod(PodScope {
            netns: NetNs::open("/proc/self/ns/net").unwrap(),
            key: "prod_client".into(),
            pod: "prod/client".into(),
            ips: vec![ip.parse().unwrap()],
            bypass_mark: 0x2000,
        })
    }

    #[test]
    fn a_pod_scope_serves_only_its_own_pod() {
        let mut starting = workload("prod", "client", "n1", "10.0.0.1");
        // Its address not published yet (kubelet reports it after the CNI ADD).
        starting.addresses.clear();
        let st = State::new(
            snapshot(
                vec![
                    starting,
                    workload("prod", "server", "n1", "10.0.0.2"),
                    workload("prod", "remote", "n2", "10.0.0.3"),
                ],
                vec![],
            ),
            "n1",
            15008,
        );
        let ip = |s: &str| s.parse::<IpAddr>().unwrap();
        let sc = pod("10.0.0.1");
        // The pod itself, found by name.
        assert_eq!(
            sc.local_workload(&st, ip("10.0.0.1")).unwrap().name,
            "client"
        );
        // Another local pod's address is not this listener's to serve.
        assert!(sc.local_workload(&st, ip("10.0.0.2")).is_none());
        assert!(!sc.owns(ip("10.0.0.2")));
        // The node's scope answers from the state, local workloads only.
        let node = Scope::node();
        assert_eq!(
            node.local_workload(&st, ip("10.0.0.2")).unwrap().name,
            "server"
        );
        assert!(node.local_workload(&st, ip("10.0.0.3")).is_none());
        assert_eq!(
            sc.dial_from().id(),
            NetNs::open("/proc/self/ns/net").unwrap().inode()
        );
        assert_eq!(node.dial_from().id(), 0);
    }
}

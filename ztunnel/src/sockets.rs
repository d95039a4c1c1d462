//! Socket-level helpers: original destination of captured connections, listeners, and the
//! options of every proxied socket. Connections are made by [`crate::scope::Scope::connect`].

use std::io;
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr};
use std::os::fd::AsRawFd;

use socket2::{Domain, Protocol, SockAddr, Socket, Type};
use tokio::net::{TcpListener, TcpStream};

pub use meshwork_runtime::socket::tune;

const SO_ORIGINAL_DST: libc::c_int = 80;
const IP6T_SO_ORIGINAL_DST: libc::c_int = 80;

/// The pre-NAT destination of a REDIRECTed connection (`SO_ORIGINAL_DST`).
pub fn original_dst(stream: &TcpStream) -> io::Result<SocketAddr> {
    let fd = stream.as_raw_fd();
    let local = stream.local_addr()?;
    // SAFETY: getsockopt writes at most `len` bytes into the properly sized, zeroed storage.
    unsafe {
        if local.is_ipv4() {
            let mut addr: libc::sockaddr_in = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::SOL_IP,
                SO_ORIGINAL_DST,
                &mut addr as *mut _ as *mut _,
                &mut len,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            let ip = Ipv4Addr::from(u32::from_be(addr.sin_addr.s_addr));
            Ok(SocketAddr::new(IpAddr::V4(ip), u16::from_be(addr.sin_port)))
        } else {
            let mut addr: libc::sockaddr_in6 = std::mem::zeroed();
            let mut len = std::mem::size_of::<libc::sockaddr_in6>() as libc::socklen_t;
            if libc::getsockopt(
                fd,
                libc::SOL_IPV6,
                IP6T_SO_ORIGINAL_DST,
                &mut addr as *mut _ as *mut _,
                &mut len,
            ) != 0
            {
                return Err(io::Error::last_os_error());
            }
            let ip = Ipv6Addr::from(addr.sin6_addr.s6_addr);
            Ok(SocketAddr::new(
                IpAddr::V6(ip),
                u16::from_be(addr.sin6_port),
            ))
        }
    }
}

/// Where a captured connection was going: the socket's local address when the listener
/// is transparent (TPROXY: local address differs from the bound one), else
/// `SO_ORIGINAL_DST` (REDIRECT). `None` when neither tells (a direct connection).
pub fn captured_dst(stream: &TcpStream, listener_addr: SocketAddr) -> Option<SocketAddr> {
    let local = stream.local_addr().ok()?;
    if local.port() != listener_addr.port()
        || (!listener_addr.ip().is_unspecified() && local.ip() != listener_addr.ip())
    {
        return Some(local);
    }
    match original_dst(stream) {
        Ok(dst) if dst != local => Some(dst),
        _ => None,
    }
}

/// Binds a listener; with `transparent`, sets IP_TRANSPARENT so TPROXY'd connections to
/// any address are accepted (needs CAP_NET_ADMIN; falls back to a plain listener).
pub fn listen(addr: SocketAddr, transparent: bool) -> io::Result<TcpListener> {
    listen_with(addr, transparent, false)
}

/// As [`listen`]; with `reuse_port`, sets SO_REUSEPORT so a new ztunnel can listen on the
/// same address while the old one drains (handover). With `net.ipv4.tcp_migrate_req=1`,
/// connections queued on the old listener when it closes move to the new one.
pub fn listen_with(
    addr: SocketAddr,
    transparent: bool,
    reuse_port: bool,
) -> io::Result<TcpListener> {
    TcpListener::from_std(listen_std(addr, transparent, reuse_port)?)
}

/// As [`listen_with`], not yet registered with a runtime (the caller picks which one).
pub fn listen_std(
    addr: SocketAddr,
    transparent: bool,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    let sock = Socket::new(Domain::for_address(addr), Type::STREAM, Some(Protocol::TCP))?;
    listen_on(sock, addr, transparent, reuse_port)
}

/// Makes `sock` (a fresh TCP socket, possibly of another namespace) listen on `addr`.
pub fn listen_on(
    sock: Socket,
    addr: SocketAddr,
    transparent: bool,
    reuse_port: bool,
) -> io::Result<std::net::TcpListener> {
    sock.set_reuse_address(true)?;
    if reuse_port {
        sock.set_reuse_port(true)?;
    }
    sock.set_nonblocking(true)?;
    if transparent {
        let r = if addr.is_ipv4() {
            sock.set_ip_transparent_v4(true)
        } else {
            sock.set_ip_transparent_v6(true)
        };
        if let Err(e) = r {
            tracing::debug!(%addr, error = %e, "IP_TRANSPARENT unavailable; plain listener");
        }
    }
    sock.bind(&SockAddr::from(addr))?;
    sock.listen(1024)?;
    Ok(sock.into())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn direct_connection_has_no_captured_destination() {
        let l = listen("127.0.0.1:0".parse().unwrap(), false).unwrap();
        let addr = l.local_addr().unwrap();
        let c = TcpStream::connect(addr).await.unwrap();
        let (s, _) = l.accept().await.unwrap();
        assert_eq!(captured_dst(&s, addr), None);
        drop(c);
        // Two listeners may share an address only when both ask for it.
        let a = listen_with("127.0.0.1:0".parse().unwrap(), false, true).unwrap();
        let shared = a.local_addr().unwrap();
        let b = listen_with(shared, false, true).unwrap();
        assert_eq!(b.local_addr().unwrap(), shared);
        assert!(listen(shared, false).is_err());
    }
}

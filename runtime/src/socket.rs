//! Options of every TCP socket a proxy carries traffic on.

use std::io;
use std::os::fd::AsFd;
use std::time::Duration;

/// TCP keepalive of every proxied socket: the first probe after this much silence…
pub const KEEPALIVE_IDLE: Duration = Duration::from_secs(180);
/// …then one probe per interval…
pub const KEEPALIVE_INTERVAL: Duration = Duration::from_secs(30);
/// …and the connection is dropped after this many unanswered probes: a peer that
/// vanished without a FIN or RST (node gone, pod network torn down) is noticed within
/// about 4.5 minutes instead of holding the connection, its tunnel stream and the far
/// side open forever.
pub const KEEPALIVE_PROBES: u32 = 3;

/// Options of every proxied TCP socket, accepted or connected: `TCP_NODELAY` (the proxy
/// forwards what it has; coalescing is the sender's business) and the keepalive above.
pub fn tune(sock: &impl AsFd) -> io::Result<()> {
    let s = socket2::SockRef::from(sock);
    s.set_tcp_nodelay(true)?;
    let ka = socket2::TcpKeepalive::new()
        .with_time(KEEPALIVE_IDLE)
        .with_interval(KEEPALIVE_INTERVAL)
        .with_retries(KEEPALIVE_PROBES);
    s.set_tcp_keepalive(&ka)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn nodelay_and_keepalive_as_documented() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = std::net::TcpStream::connect(l.local_addr().unwrap()).unwrap();
        tune(&c).unwrap();
        let r = socket2::SockRef::from(&c);
        assert!(r.tcp_nodelay().unwrap());
        assert!(r.keepalive().unwrap());
        assert_eq!(r.tcp_keepalive_time().unwrap(), KEEPALIVE_IDLE);
        assert_eq!(r.tcp_keepalive_interval().unwrap(), KEEPALIVE_INTERVAL);
        assert_eq!(r.tcp_keepalive_retries().unwrap(), KEEPALIVE_PROBES);
    }
}

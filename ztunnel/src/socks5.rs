//! SOCKS5 entry (RFC 1928, CONNECT only) for local development without traffic capture.
//!
//! It is off unless `--socks5-addr` names a loopback address (the ztunnel refuses to start
//! otherwise), and it relays to mesh destinations only (services and workloads of the
//! model; anything else is refused with "connection not allowed").
//!
//! Identity rule: the source workload is the one owning the client's address, else
//! `--local-workload`. The RFC 1929 username `<ns>/<name>` (password ignored) may name
//! another source — a claim nothing proves, so it is honoured only when the ztunnel
//! captures no traffic (`--redirect off`: a developer's machine, where every local process
//! is trusted) and only for workloads of this node; otherwise the CONNECT is refused.

use std::net::{Ipv4Addr, Ipv6Addr, SocketAddr};
use std::sync::Arc;

use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::outbound::{self, Entry, OutboundError};
use crate::proxy::Proxy;
use crate::scope::Scope;
use crate::state::Target;

#[derive(Debug, thiserror::Error)]
pub enum Socks5Error {
    #[error("SOCKS5: unsupported version {0:#x}")]
    Version(u8),
    #[error("SOCKS5: no acceptable authentication method offered")]
    NoMethod,
    #[error("SOCKS5: unsupported command {0:#x} (only CONNECT)")]
    Command(u8),
    #[error("SOCKS5: unsupported address type {0:#x}")]
    AddressType(u8),
    #[error("SOCKS5: hostname is not UTF-8")]
    Hostname,
    #[error("SOCKS5: {0}")]
    Io(#[from] std::io::Error),
}

const VERSION: u8 = 5;
const NO_AUTH: u8 = 0;
const USER_PASS: u8 = 2;

/// Reply codes.
const SUCCEEDED: u8 = 0;
const GENERAL_FAILURE: u8 = 1;
const NOT_ALLOWED: u8 = 2;
const HOST_UNREACHABLE: u8 = 4;
const REFUSED: u8 = 5;
const COMMAND_NOT_SUPPORTED: u8 = 7;
const ATYP_NOT_SUPPORTED: u8 = 8;

/// A parsed CONNECT request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Request {
    pub username: Option<String>,
    pub target: Target,
}

/// Runs the SOCKS5 handshake up to (not including) the reply.
pub async fn handshake<S: AsyncRead + AsyncWrite + Unpin>(
    s: &mut S,
) -> Result<Request, Socks5Error> {
    let mut head = [0u8; 2];
    s.read_exact(&mut head).await?;
    if head[0] != VERSION {
        return Err(Socks5Error::Version(head[0]));
    }
    let mut methods = vec![0u8; head[1] as usize];
    s.read_exact(&mut methods).await?;
    let mut username = None;
    if methods.contains(&USER_PASS) {
        s.write_all(&[VERSION, USER_PASS]).await?;
        let mut v = [0u8; 2];
        s.read_exact(&mut v).await?;
        let mut user = vec![0u8; v[1] as usize];
        s.read_exact(&mut user).await?;
        let mut plen = [0u8; 1];
        s.read_exact(&mut plen).await?;
        let mut pass = vec![0u8; plen[0] as usize];
        s.read_exact(&mut pass).await?;
        s.write_all(&[1, 0]).await?;
        username = Some(String::from_utf8_lossy(&user).into_owned());
    } else if methods.contains(&NO_AUTH) {
        s.write_all(&[VERSION, NO_AUTH]).await?;
    } else {
        s.write_all(&[VERSION, 0xff]).await?;
        return Err(Socks5Error::NoMethod);
    }
    let mut req = [0u8; 4];
    s.read_exact(&mut req).await?;
    if req[0] != VERSION {
        return Err(Socks5Error::Version(req[0]));
    }
    if req[1] != 1 {
        reply(s, COMMAND_NOT_SUPPORTED).await?;
        return Err(Socks5Error::Command(req[1]));
    }
    let target = match req[3] {
        1 => {
            let mut b = [0u8; 6];
            s.read_exact(&mut b).await?;
            let ip = Ipv4Addr::new(b[0], b[1], b[2], b[3]);
            Target::Addr(SocketAddr::new(ip.into(), u16::from_be_bytes([b[4], b[5]])))
        }
        4 => {
            let mut b = [0u8; 18];
            s.read_exact(&mut b).await?;
            let mut ip = [0u8; 16];
            ip.copy_from_slice(&b[..16]);
            Target::Addr(SocketAddr::new(
                Ipv6Addr::from(ip).into(),
                u16::from_be_bytes([b[16], b[17]]),
            ))
        }
        3 => {
            let mut len = [0u8; 1];
            s.read_exact(&mut len).await?;
            let mut host = vec![0u8; len[0] as usize];
            s.read_exact(&mut host).await?;
            let mut port = [0u8; 2];
            s.read_exact(&mut port).await?;
            let host = String::from_utf8(host).map_err(|_| Socks5Error::Hostname)?;
            let port = u16::from_be_bytes(port);
            match host.parse() {
                Ok(ip) => Target::Addr(SocketAddr::new(ip, port)),
                Err(_) => Target::Host(host, port),
            }
        }
        other => {
            reply(s, ATYP_NOT_SUPPORTED).await?;
            return Err(Socks5Error::AddressType(other));
        }
    };
    Ok(Request { username, target })
}

async fn reply<S: AsyncWrite + Unpin>(s: &mut S, code: u8) -> std::io::Result<()> {
    s.write_all(&[VERSION, code, 0, 1, 0, 0, 0, 0, 0, 0]).await
}

fn reply_code(e: &OutboundError) -> u8 {
    match e {
        OutboundError::NoSource { .. }
        | OutboundError::SourceNotLocal { .. }
        | OutboundError::UnknownSource { .. }
        | OutboundError::UsernameWithCapture { .. }
        | OutboundError::NotMesh { .. } => NOT_ALLOWED,
        OutboundError::Hbone(e) if matches!(**e, meshwork_hbone::ClientError::Refused { .. }) => {
            NOT_ALLOWED
        }
        OutboundError::Resolve { .. } | OutboundError::Route(_) => HOST_UNREACHABLE,
        OutboundError::Connect { .. } | OutboundError::Hbone(_) => REFUSED,
        OutboundError::Cert(_) => GENERAL_FAILURE,
    }
}

/// Serves one SOCKS5 client.
pub async fn handle(proxy: Arc<Proxy>, mut sock: TcpStream, peer: SocketAddr) {
    let req = match tokio::time::timeout(proxy.cfg.connect_timeout, handshake(&mut sock)).await {
        Ok(Ok(r)) => r,
        Ok(Err(e)) => {
            tracing::warn!(%peer, error = %e, "SOCKS5 handshake failed");
            return;
        }
        Err(_) => {
            tracing::warn!(%peer, "SOCKS5 handshake timed out");
            return;
        }
    };
    let entry = Entry::Socks5 {
        username: req.username.as_deref(),
    };
    match outbound::open(&proxy, peer, entry, req.target, &Scope::node()).await {
        Ok(opened) => {
            if reply(&mut sock, SUCCEEDED).await.is_ok() {
                outbound::run(&proxy, sock, opened).await;
            }
        }
        Err((e, rec)) => {
            let _ = reply(&mut sock, reply_code(&e)).await;
            outbound::log_failure(&proxy, &e, rec);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    async fn parse(input: Vec<u8>) -> (Result<Request, Socks5Error>, Vec<u8>) {
        let (mut client, mut server) = tokio::io::duplex(1024);
        client.write_all(&input).await.unwrap();
        client.shutdown().await.unwrap();
        let r = handshake(&mut server).await;
        drop(server);
        let mut out = Vec::new();
        client.read_to_end(&mut out).await.unwrap();
        (r, out)
    }

    #[tokio::test]
    async fn ipv4_ipv6_and_hostname() {
        let (r, out) = parse(vec![5, 1, 0, 5, 1, 0, 1, 10, 0, 0, 1, 0, 80]).await;
        assert_eq!(
            r.unwrap().target,
            Target::Addr("10.0.0.1:80".parse().unwrap())
        );
        assert_eq!(out, vec![5, 0]);
        let mut v6 = vec![5, 1, 0, 5, 1, 0, 4];
        v6.extend(Ipv6Addr::LOCALHOST.octets());
        v6.extend([0x1f, 0x90]);
        assert_eq!(
            parse(v6).await.0.unwrap().target,
            Target::Addr("[::1]:8080".parse().unwrap())
        );
        let mut host = vec![5, 1, 0, 5, 1, 0, 3, 3];
        host.extend(b"api");
        host.extend([0, 80]);
        assert_eq!(
            parse(host).await.0.unwrap().target,
            Target::Host("api".into(), 80)
        );
    }

    #[tokio::test]
    async fn username_names_the_source() {
        let mut input = vec![5, 2, 0, 2, 1, 9];
        input.extend(b"prod/app1");
        input.extend([1, b'x', 5, 1, 0, 1, 127, 0, 0, 1, 0, 80]);
        let (r, out) = parse(input).await;
        assert_eq!(r.unwrap().username.as_deref(), Some("prod/app1"));
        assert_eq!(out, vec![5, 2, 1, 0]);
    }

    #[tokio::test]
    async fn bad_requests_are_errors() {
        assert!(matches!(
            parse(vec![4, 1, 0]).await.0,
            Err(Socks5Error::Version(4))
        ));
        assert!(matches!(
            parse(vec![5, 1, 9]).await.0,
            Err(Socks5Error::NoMethod)
        ));
        let (r, out) = parse(vec![5, 1, 0, 5, 2, 0, 1, 1, 2, 3, 4, 0, 80]).await;
        assert!(matches!(r, Err(Socks5Error::Command(2))));
        assert_eq!(out[2..4], [5, COMMAND_NOT_SUPPORTED]);
        assert!(matches!(
            parse(vec![5, 1, 0, 5, 1, 0, 9]).await.0,
            Err(Socks5Error::AddressType(9))
        ));
        assert!(matches!(
            parse(vec![5, 1, 0, 5, 1]).await.0,
            Err(Socks5Error::Io(_))
        ));
    }
}

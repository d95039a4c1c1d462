//! The client a tunnel is for, carried on the CONNECT request as an RFC 7239 `forwarded`
//! header (`for="10.244.0.10:45678"`): the source ztunnel names the pod whose connection it
//! tunnels. Receivers act on it only when the tunnel's identity vouches for that address.

use std::net::{IpAddr, SocketAddr};

/// Header name.
pub const HEADER: &str = "forwarded";

/// The client named by the first `for=` of the first element; the port when given.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct ForwardedFor {
    pub ip: IpAddr,
    pub port: Option<u16>,
}

impl ForwardedFor {
    /// The client's socket address, with `fallback_port` when the header named none.
    pub fn addr_or(&self, fallback_port: u16) -> SocketAddr {
        SocketAddr::new(self.ip, self.port.unwrap_or(fallback_port))
    }
}

/// The header value naming `client` (quoted: RFC 7239 requires it for a port or IPv6).
pub fn header_value(client: SocketAddr) -> String {
    format!("for=\"{client}\"")
}

/// Parses the header of `headers`; None when absent, obfuscated (`unknown`, `_hidden`) or
/// not an address.
pub fn client(headers: &http::HeaderMap) -> Option<ForwardedFor> {
    let v = headers.get(HEADER)?.to_str().ok()?;
    let first = v.split(',').next()?;
    first.split(';').find_map(|kv| {
        let (k, v) = kv.trim().split_once('=')?;
        if !k.trim().eq_ignore_ascii_case("for") {
            return None;
        }
        parse_node(v.trim().trim_matches('"'))
    })
}

fn parse_node(v: &str) -> Option<ForwardedFor> {
    if let Ok(a) = v.parse::<SocketAddr>() {
        return Some(ForwardedFor {
            ip: a.ip(),
            port: Some(a.port()),
        });
    }
    let bare = v
        .strip_prefix('[')
        .and_then(|r| r.strip_suffix(']'))
        .unwrap_or(v);
    bare.parse().ok().map(|ip| ForwardedFor { ip, port: None })
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parse(v: &str) -> Option<ForwardedFor> {
        let mut h = http::HeaderMap::new();
        h.insert(HEADER, v.parse().unwrap());
        client(&h)
    }

    fn ff(ip: &str, port: Option<u16>) -> Option<ForwardedFor> {
        Some(ForwardedFor {
            ip: ip.parse().unwrap(),
            port,
        })
    }

    #[test]
    fn round_trip_with_port() {
        for a in ["10.1.2.3:45678", "[fd00::5]:80", "[::1]:1"] {
            let a: SocketAddr = a.parse().unwrap();
            let got = parse(&header_value(a)).unwrap();
            assert_eq!(got.addr_or(0), a);
        }
    }

    #[test]
    fn forms_other_senders_use() {
        assert_eq!(parse("for=10.1.2.3"), ff("10.1.2.3", None));
        assert_eq!(parse("for=\"[fd00::1]\""), ff("fd00::1", None));
        assert_eq!(
            parse("proto=https;For=\"10.0.0.9:4711\", for=1.1.1.1"),
            ff("10.0.0.9", Some(4711))
        );
        assert_eq!(parse(" for = 10.0.0.7 ;by=10.0.0.1"), ff("10.0.0.7", None));
        assert_eq!(parse("for=unknown"), None);
        assert_eq!(parse("for=_hidden"), None);
        assert_eq!(parse("by=10.0.0.1"), None);
        assert_eq!(client(&http::HeaderMap::new()), None);
        assert_eq!(
            ff("10.0.0.1", None).unwrap().addr_or(9),
            "10.0.0.1:9".parse().unwrap()
        );
    }
}

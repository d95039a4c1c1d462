//! IP blocks: a CIDR or a single address, IPv4 or IPv6.

use std::net::IpAddr;

use ipnet::IpNet;

pub fn parse_block(v: &str) -> Option<IpNet> {
    if let Ok(net) = v.parse::<IpNet>() {
        return Some(net.trunc());
    }
    v.parse::<IpAddr>().ok().map(IpNet::from)
}

pub fn any_contains(blocks: &[IpNet], ip: Option<IpAddr>) -> bool {
    let Some(ip) = ip else { return false };
    let ip = match ip {
        IpAddr::V6(v6) => v6.to_ipv4_mapped().map(IpAddr::V4).unwrap_or(ip),
        v4 => v4,
    };
    blocks.iter().any(|b| b.contains(&ip))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn blocks() {
        let b = vec![
            parse_block("10.0.0.0/8").unwrap(),
            parse_block("192.168.1.7").unwrap(),
            parse_block("fd00::/64").unwrap(),
            parse_block("10.1.2.3/16").unwrap(),
        ];
        let ip = |s: &str| Some(s.parse::<IpAddr>().unwrap());
        assert!(any_contains(&b, ip("10.9.9.9")));
        assert!(any_contains(&b, ip("192.168.1.7")));
        assert!(!any_contains(&b, ip("192.168.1.8")));
        assert!(any_contains(&b, ip("fd00::1")));
        assert!(!any_contains(&b, ip("fd01::1")));
        assert!(any_contains(&b, ip("::ffff:10.1.1.1")));
        assert!(!any_contains(&b, None));
        assert!(parse_block("10.0.0.0/33").is_none());
        assert!(parse_block("nope").is_none());
    }
}

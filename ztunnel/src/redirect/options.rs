//! Loader options from the ztunnel's flags, checked against its listeners: the programs
//! look the listeners up at 127.0.0.1 in the node namespace, so captured traffic only
//! finds listeners bound to 0.0.0.0 or 127.0.0.1 on the ports they are told.

use std::net::{IpAddr, Ipv4Addr, SocketAddr};

use meshwork_redirect::RedirectOptions;

use super::RedirectSetupError;
use crate::args::{Config, Listen};

fn reachable(addr: SocketAddr) -> bool {
    matches!(addr.ip(), IpAddr::V4(ip) if ip.is_unspecified() || ip == Ipv4Addr::LOCALHOST)
}

fn listener_port(flag: &'static str, l: Listen) -> Result<u16, RedirectSetupError> {
    let bad = |reason: String| RedirectSetupError::Flag { flag, reason };
    match l.0 {
        None => Err(bad("is off: the redirection needs this listener".into())),
        Some(a) if a.port() == 0 => Err(bad(format!(
            "{a}: needs a fixed port (the programs are told the port)"
        ))),
        Some(a) if !reachable(a) => Err(bad(format!(
            "{a}: must be bound to 0.0.0.0 or 127.0.0.1 (where the programs look it up)"
        ))),
        Some(a) => Ok(a.port()),
    }
}

/// The loader options of `cfg` (node, pin root, mark, table, listener ports).
pub fn redirect_options(cfg: &Config) -> Result<RedirectOptions, RedirectSetupError> {
    let mut o = RedirectOptions::new(cfg.node.clone());
    o.pin_root = cfg.redirect_pin_root.clone();
    o.mark = cfg.redirect_mark;
    o.table = cfg.redirect_table;
    o.outbound_port = listener_port("--outbound-addr", cfg.outbound_addr)?;
    o.inbound_port = listener_port("--inbound-plain-addr", cfg.inbound_plain_addr)?;
    o.hbone_port = cfg.hbone_port;
    if !cfg
        .hbone_addrs
        .iter()
        .any(|a| a.port() == cfg.hbone_port && reachable(*a))
    {
        return Err(RedirectSetupError::Flag {
            flag: "--hbone-addr",
            reason: format!(
                "none of {:?} is 0.0.0.0:{p} or 127.0.0.1:{p} (--hbone-port {p}), where the programs look up the HBONE listener",
                cfg.hbone_addrs,
                p = cfg.hbone_port
            ),
        });
    }
    if cfg.node.is_empty() || cfg.node.contains('/') {
        return Err(RedirectSetupError::Flag {
            flag: "--node",
            reason: format!(
                "{:?}: names the pin directory, must be non-empty without '/'",
                cfg.node
            ),
        });
    }
    if cfg.redirect_mark == 0 {
        return Err(RedirectSetupError::Flag {
            flag: "--redirect-mark",
            reason: "must not be 0".into(),
        });
    }
    Ok(o)
}

/// Parses a mark: `0x4d57` or decimal.
pub fn parse_mark(s: &str) -> Result<u32, String> {
    let r = match s.strip_prefix("0x").or_else(|| s.strip_prefix("0X")) {
        Some(hex) => u32::from_str_radix(hex, 16),
        None => s.parse(),
    };
    r.map_err(|_| format!("invalid mark {s:?}: expected e.g. 0x4d57 or 19799"))
}

#[cfg(test)]
mod tests {
    use clap::Parser;

    use super::*;

    fn cfg(extra: &[&str]) -> Config {
        let mut args = vec!["ztunnel", "--node", "n0", "--redirect", "ebpf"];
        args.extend_from_slice(extra);
        Config::parse_from(args)
    }

    #[test]
    fn defaults_match_the_listeners() {
        let o = redirect_options(&cfg(&[])).unwrap();
        assert_eq!(o.node, "n0");
        assert_eq!(
            (o.outbound_port, o.inbound_port, o.hbone_port),
            (15001, 15006, 15008)
        );
        assert_eq!(o.mark, 0x1000);
        assert_eq!(o.table, 19799);
        assert_eq!(o.pin_root, std::path::PathBuf::from("/sys/fs/bpf/meshwork"));
        let o = redirect_options(&cfg(&[
            "--outbound-addr",
            "127.0.0.1:16001",
            "--redirect-mark",
            "0x10",
            "--redirect-table",
            "7",
        ]))
        .unwrap();
        assert_eq!((o.outbound_port, o.mark, o.table), (16001, 0x10, 7));
    }

    #[test]
    fn listeners_the_programs_cannot_find_are_refused_naming_the_flag() {
        let e = redirect_options(&cfg(&["--outbound-addr", "off"])).unwrap_err();
        assert!(e.to_string().contains("--outbound-addr"), "{e}");
        let e = redirect_options(&cfg(&["--inbound-plain-addr", "10.0.0.1:15006"])).unwrap_err();
        assert!(e.to_string().contains("--inbound-plain-addr"), "{e}");
        let e = redirect_options(&cfg(&["--outbound-addr", "0.0.0.0:0"])).unwrap_err();
        assert!(e.to_string().contains("fixed port"), "{e}");
        let e = redirect_options(&cfg(&["--hbone-addr", "127.0.0.2:15008"])).unwrap_err();
        assert!(e.to_string().contains("--hbone-addr"), "{e}");
        let e = redirect_options(&cfg(&["--redirect-mark", "0"])).unwrap_err();
        assert!(e.to_string().contains("--redirect-mark"), "{e}");
    }

    #[test]
    fn marks() {
        assert_eq!(parse_mark("0x4d57"), Ok(0x4d57));
        assert_eq!(parse_mark("19799"), Ok(19799));
        assert!(parse_mark("0xzz").unwrap_err().contains("0xzz"));
    }
}

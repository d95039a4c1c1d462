//! The policy routing that makes captured packets (marked by the program) local input:
//! `ip rule add fwmark <mark> lookup <table>` and `ip route replace local 0.0.0.0/0 dev lo
//! table <table>` in the current network namespace. Uses iproute2's `ip`.
use std::process::Command;

use crate::{RedirectError, RedirectOptions};

fn ip(args: &[String]) -> Result<String, RedirectError> {
    let out = Command::new("ip")
        .args(args)
        .output()
        .map_err(|e| RedirectError::Routing {
            args: args.join(" "),
            reason: e.to_string(),
        })?;
    if !out.status.success() {
        return Err(RedirectError::Routing {
            args: args.join(" "),
            reason: String::from_utf8_lossy(&out.stderr).trim().to_string(),
        });
    }
    Ok(String::from_utf8_lossy(&out.stdout).into_owned())
}

fn rule_args(verb: &str, o: &RedirectOptions) -> Vec<String> {
    vec![
        "-4".into(),
        "rule".into(),
        verb.into(),
        "fwmark".into(),
        format!("{:#x}", o.mark),
        "lookup".into(),
        o.table.to_string(),
        "priority".into(),
        o.rule_priority.to_string(),
    ]
}

fn rule_present(o: &RedirectOptions) -> Result<bool, RedirectError> {
    let listing = ip(&["-4".into(), "rule".into(), "show".into()])?;
    let want_mark = format!("fwmark {:#x}", o.mark);
    let want_table = format!("lookup {}", o.table);
    Ok(listing.lines().any(|l| {
        l.starts_with(&format!("{}:", o.rule_priority))
            && l.contains(&want_mark)
            && l.contains(&want_table)
    }))
}

/// Installs the rule and the local route; idempotent.
pub fn install_local_routing(o: &RedirectOptions) -> Result<(), RedirectError> {
    o.validate()?;
    if !rule_present(o)? {
        ip(&rule_args("add", o))?;
    }
    ip(&[
        "-4".into(),
        "route".into(),
        "replace".into(),
        "local".into(),
        "0.0.0.0/0".into(),
        "dev".into(),
        "lo".into(),
        "table".into(),
        o.table.to_string(),
    ])?;
    Ok(())
}

/// Removes the rule and flushes the table; missing pieces are not an error.
pub fn remove_local_routing(o: &RedirectOptions) -> Result<(), RedirectError> {
    // Bounded: at most a few duplicate rules could exist.
    for _ in 0..8 {
        if !rule_present(o)? {
            break;
        }
        ip(&rule_args("del", o))?;
    }
    let _ = ip(&[
        "-4".into(),
        "route".into(),
        "flush".into(),
        "table".into(),
        o.table.to_string(),
    ]);
    Ok(())
}

/// The interface the current namespace routes `ip` through (`ip -4 -o route get`): for a
/// pod, its host-side veth.
pub fn route_interface(ip: std::net::Ipv4Addr) -> Result<String, RedirectError> {
    let out = self::ip(&[
        "-4".into(),
        "-o".into(),
        "route".into(),
        "get".into(),
        ip.to_string(),
    ])?;
    parse_route_dev(&out).ok_or_else(|| RedirectError::Routing {
        args: format!("-4 -o route get {ip}"),
        reason: format!("no device in {:?}", out.trim()),
    })
}

fn parse_route_dev(out: &str) -> Option<String> {
    let mut words = out.split_whitespace();
    // Bounded by the output's words.
    while let Some(w) = words.next() {
        if w == "dev" {
            return words.next().map(str::to_string);
        }
    }
    None
}

#[cfg(test)]
mod tests {
    #[test]
    fn device_is_read_from_route_get() {
        assert_eq!(
            super::parse_route_dev("10.244.0.10 dev vp0 src 10.244.0.1 uid 0 \\    cache"),
            Some("vp0".to_string())
        );
        assert_eq!(
            super::parse_route_dev("local 127.0.0.1 dev lo table local"),
            Some("lo".into())
        );
        assert_eq!(super::parse_route_dev("unreachable"), None);
    }

    use super::*;

    #[test]
    fn rule_arguments_name_mark_table_and_priority() {
        let o = RedirectOptions::new("n");
        assert_eq!(
            rule_args("add", &o).join(" "),
            "-4 rule add fwmark 0x1000 lookup 19799 priority 100"
        );
    }
}

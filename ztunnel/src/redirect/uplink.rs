//! The node's uplink: the interface of its IPv4 default route (`ip -4 -o route show
//! default`), unless `--redirect-uplink` names one.

use std::process::Command;

use super::RedirectSetupError;

/// The device of the first default route in `ip -4 -o route show default` output.
pub fn default_route_device(listing: &str) -> Option<String> {
    listing.lines().find_map(|line| {
        let mut words = line.split_whitespace();
        if words.next() != Some("default") {
            return None;
        }
        let mut words = line.split_whitespace();
        while let Some(w) = words.next() {
            if w == "dev" {
                return words.next().map(str::to_string);
            }
        }
        None
    })
}

/// The uplink of the current network namespace.
pub fn detect() -> Result<String, RedirectSetupError> {
    let err = |reason: String| RedirectSetupError::Uplink { reason };
    let out = Command::new("ip")
        .args(["-4", "-o", "route", "show", "default"])
        .output()
        .map_err(|e| err(format!("running `ip -4 -o route show default`: {e}")))?;
    if !out.status.success() {
        return Err(err(format!(
            "`ip -4 -o route show default`: {}",
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    default_route_device(&String::from_utf8_lossy(&out.stdout)).ok_or_else(|| {
        err("no IPv4 default route in this network namespace; pass --redirect-uplink".into())
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_the_default_route_device() {
        let l = "default via 10.250.0.1 dev eth0 proto static metric 100 \n";
        assert_eq!(default_route_device(l).as_deref(), Some("eth0"));
        let l = "default dev wg0 scope link\ndefault via 1.2.3.4 dev eth1\n";
        assert_eq!(default_route_device(l).as_deref(), Some("wg0"));
        assert_eq!(default_route_device(""), None);
        assert_eq!(default_route_device("10.0.0.0/8 dev eth0"), None);
        assert_eq!(default_route_device("default via 1.2.3.4"), None);
    }
}

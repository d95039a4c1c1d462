use std::net::Ipv4Addr;
use std::path::PathBuf;

use meshwork_ebpf_common::{
    PodConfig, RedirectConfig, DEFAULT_POD_BYPASS_MARK, DEFAULT_POD_CAPTURE_MARK,
};

use crate::RedirectError;

/// Where the programs are pinned and where captured traffic goes.
#[derive(Clone, Debug, PartialEq, Eq)]
pub struct RedirectOptions {
    /// Node name: pins live in `<pin_root>/<node>/`.
    pub node: String,
    /// Root of the pins, on a bpffs (default `/sys/fs/bpf/meshwork`).
    pub pin_root: PathBuf,
    /// Address the listeners are looked up at (default 127.0.0.1: finds listeners bound to
    /// 127.0.0.1 or 0.0.0.0 in the node network namespace).
    pub listener_addr: Ipv4Addr,
    /// ztunnel outbound listener (default 15001).
    pub outbound_port: u16,
    /// ztunnel plaintext inbound listener (default 15006).
    pub inbound_port: u16,
    /// ztunnel HBONE listener and HBONE destination port (default 15008).
    pub hbone_port: u16,
    /// skb mark of captured packets (default 0x1000: a bit no common CNI uses).
    pub mark: u32,
    /// Routing table holding `local 0.0.0.0/0 dev lo` (default 19799).
    pub table: u32,
    /// Priority of the `fwmark` rule (default 100); in-pod mode uses the same priority and
    /// `table` inside each pod's namespace.
    pub rule_priority: u32,
    /// In-pod mode: mark (bit mask) `mw_pod_egress` ORs into hairpinned packets; the pod
    /// namespace's rule is `fwmark m/m` (default 0x1000).
    pub pod_capture_mark: u32,
    /// In-pod mode: mark (bit mask) of the ztunnel's sockets in a pod (`SO_MARK`); packets
    /// carrying it are never captured (default 0x2000).
    pub pod_bypass_mark: u32,
}

impl RedirectOptions {
    /// Defaults for `node`.
    pub fn new(node: impl Into<String>) -> Self {
        Self {
            node: node.into(),
            pin_root: PathBuf::from("/sys/fs/bpf/meshwork"),
            listener_addr: Ipv4Addr::LOCALHOST,
            outbound_port: 15001,
            inbound_port: 15006,
            hbone_port: 15008,
            mark: meshwork_ebpf_common::DEFAULT_NODE_MARK,
            table: 19799,
            rule_priority: 100,
            pod_capture_mark: DEFAULT_POD_CAPTURE_MARK,
            pod_bypass_mark: DEFAULT_POD_BYPASS_MARK,
        }
    }

    /// Directory of this node's pins.
    pub fn pin_dir(&self) -> PathBuf {
        self.pin_root.join(&self.node)
    }

    pub(crate) fn validate(&self) -> Result<(), RedirectError> {
        let bad = |field, reason: &str| {
            Err(RedirectError::InvalidOption {
                field,
                reason: reason.to_string(),
            })
        };
        if self.node.is_empty() || self.node.contains('/') || self.node == "." || self.node == ".."
        {
            return bad("node", "must be a non-empty name without '/'");
        }
        if !self.pin_root.is_absolute() {
            return bad("pin_root", "must be an absolute path");
        }
        for (field, port) in [
            ("outbound_port", self.outbound_port),
            ("inbound_port", self.inbound_port),
            ("hbone_port", self.hbone_port),
        ] {
            if port == 0 {
                return bad(field, "must not be 0");
            }
        }
        if self.outbound_port == self.inbound_port || self.outbound_port == self.hbone_port {
            return bad(
                "outbound_port",
                "must differ from inbound_port and hbone_port",
            );
        }
        if self.inbound_port == self.hbone_port {
            return bad("inbound_port", "must differ from hbone_port");
        }
        if self.mark == 0 {
            return bad("mark", "must not be 0");
        }
        if self.pod_capture_mark == 0 {
            return bad("pod_capture_mark", "must not be 0");
        }
        if self.pod_bypass_mark == 0 {
            return bad("pod_bypass_mark", "must not be 0");
        }
        if self.pod_capture_mark & self.pod_bypass_mark != 0 {
            return bad("pod_bypass_mark", "must share no bit with pod_capture_mark");
        }
        if self.table == 0 || (253..=255).contains(&self.table) {
            return bad("table", "must not be 0 or a reserved table (253-255)");
        }
        Ok(())
    }

    /// The map value the programs read.
    pub(crate) fn config(&self) -> RedirectConfig {
        RedirectConfig {
            listener_addr: ip_key(self.listener_addr),
            outbound_port: self.outbound_port,
            inbound_port: self.inbound_port,
            hbone_port: self.hbone_port,
            enabled: 1,
            mark: self.mark,
        }
    }
}

impl RedirectOptions {
    /// The in-pod map value the programs read.
    pub(crate) fn pod_config(&self) -> PodConfig {
        PodConfig {
            capture_mark: self.pod_capture_mark,
            bypass_mark: self.pod_bypass_mark,
        }
    }
}

/// Map key of an address: its network-order bytes read as a native `u32`, exactly what the
/// program loads from the packet.
pub(crate) fn ip_key(ip: Ipv4Addr) -> u32 {
    u32::from_ne_bytes(ip.octets())
}

pub(crate) fn key_ip(key: u32) -> Ipv4Addr {
    Ipv4Addr::from(key.to_ne_bytes())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn key_round_trips_and_matches_packet_bytes() {
        let ip = Ipv4Addr::new(10, 244, 1, 7);
        let key = ip_key(ip);
        assert_eq!(key.to_ne_bytes(), [10, 244, 1, 7]);
        assert_eq!(key_ip(key), ip);
    }

    #[test]
    fn defaults_are_valid_and_pin_under_node() {
        let o = RedirectOptions::new("node-a");
        o.validate().unwrap();
        assert_eq!(o.pin_dir(), PathBuf::from("/sys/fs/bpf/meshwork/node-a"));
        let c = o.config();
        assert_eq!(c.outbound_port, 15001);
        assert_eq!(c.inbound_port, 15006);
        assert_eq!(c.hbone_port, 15008);
        assert_eq!(c.enabled, 1);
        assert_eq!(c.listener_addr.to_ne_bytes(), [127, 0, 0, 1]);
    }

    #[test]
    fn rejects_bad_options_naming_the_field() {
        let mut o = RedirectOptions::new("a/b");
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("node"), "{e}");
        o = RedirectOptions::new("n");
        o.inbound_port = o.hbone_port;
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("inbound_port"), "{e}");
        o = RedirectOptions::new("n");
        o.mark = 0;
        assert!(o.validate().unwrap_err().to_string().contains("mark"));
        o = RedirectOptions::new("n");
        o.pod_bypass_mark = o.pod_capture_mark | 0x1;
        let e = o.validate().unwrap_err().to_string();
        assert!(e.contains("pod_bypass_mark"), "{e}");
        o = RedirectOptions::new("n");
        o.pod_capture_mark = 0;
        assert!(o
            .validate()
            .unwrap_err()
            .to_string()
            .contains("pod_capture_mark"));
        o = RedirectOptions::new("n");
        o.table = 254;
        assert!(o.validate().unwrap_err().to_string().contains("table"));
        o = RedirectOptions::new("n");
        o.pin_root = PathBuf::from("rel");
        assert!(o.validate().unwrap_err().to_string().contains("pin_root"));
    }
}

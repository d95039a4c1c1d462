//! Types shared by the BPF programs (`meshwork-ebpf`, no_std) and the loader
//! (`meshwork-redirect`). Everything is `#[repr(C)]` and plain old data: both sides read
//! the same bytes from the same maps.
#![no_std]

/// Name of the hash map of enrolled pod IPv4 addresses (key: address in network byte
/// order as a `u32` read from the packet, value: [`PodEntry`]).
pub const MAP_ENROLLED: &str = "MW_ENROLLED";
/// Name of the single-entry array holding the [`RedirectConfig`].
pub const MAP_CONFIG: &str = "MW_CONFIG";
/// Name of the hash map of destination addresses never captured (the node's own
/// addresses): key address (network byte order), value unused `u8`.
pub const MAP_EXCLUDED: &str = "MW_EXCLUDED";
/// Name of the per-CPU counters array, indexed by the `STAT_*` constants.
pub const MAP_STATS: &str = "MW_STATS";
/// Name of the single-entry array holding the [`PodConfig`] of the in-pod programs.
pub const MAP_POD_CONFIG: &str = "MW_POD_CONFIG";

/// Name of the hash map of enrolled pod IPv6 addresses (in-pod mode): key the 16 address
/// bytes as in the packet ([`Ip6Key`]), value: [`PodEntry`]. A map of its own, so the IPv4
/// maps keep the layout pinned by older versions.
pub const MAP_ENROLLED6: &str = "MW_ENROLLED6";
/// Name of the hash map of IPv6 addresses never captured (the node's): key [`Ip6Key`],
/// value unused `u8`.
pub const MAP_EXCLUDED6: &str = "MW_EXCLUDED6";
/// Name of the per-CPU counters array of the IPv6 path, indexed by the `STAT6_*`
/// constants (the IPv6 SYNs themselves are counted in [`MAP_STATS`] with the IPv4 ones).
pub const MAP_STATS6: &str = "MW_STATS6";

/// Name of the hash map of enrolled pods' network namespaces (key: netns cookie, as
/// `bpf_get_netns_cookie` / `SO_NETNS_COOKIE` give it; value: the pod's owner tag).
pub const MAP_POD_NETNS: &str = "MW_POD_NETNS";
/// Name of the LRU map socket cookie → [`OrigDst`]: the destination an enrolled pod's
/// socket passed to `connect()`, recorded by `mw_pod_connect4` before any socket-LB
/// rewrote it.
pub const MAP_SOCK_ORIG: &str = "MW_SOCK_ORIG";
/// Name of the LRU map [`FlowKey`] → [`OrigDst`]: written by `mw_pod_egress` on a captured
/// SYN whose destination differs from what the app connected to; read (and deleted) by the
/// ztunnel for the connection it accepted.
pub const MAP_ORIG_DST: &str = "MW_ORIG_DST";

/// Name of the TC (TCX ingress) program attached to pod host-side veths and the uplink.
pub const PROG_TC_INGRESS: &str = "mw_tc_ingress";
/// Name of the TC (TCX egress) program: hairpins the node's own HBONE connections to a
/// local enrolled pod back into ingress, so the node's ztunnel receives them.
pub const PROG_TC_EGRESS: &str = "mw_tc_egress";

/// Name of the in-pod TCX egress program (on a pod's `eth0`, inside the pod's network
/// namespace): hairpins the pod's outbound TCP back into the same device's ingress with
/// the capture mark.
pub const PROG_POD_EGRESS: &str = "mw_pod_egress";
/// Name of the in-pod TCX ingress program: hands hairpinned outbound SYNs to the in-pod
/// outbound listener and inbound SYNs to the in-pod plaintext inbound listener.
pub const PROG_POD_INGRESS: &str = "mw_pod_ingress";

/// Name of the in-pod `cgroup/connect4` program: records the original destination of the
/// enrolled pods' TCP connects (attached below the root cgroup, so it runs before a
/// socket-LB attached at the root).
pub const PROG_POD_CONNECT4: &str = "mw_pod_connect4";

/// Default capture mark of the in-pod mode. Outside Cilium's identity (upper 16 bits) and
/// cluster-id (low byte) fields, its magic values in `0x0F00`, Calico's `0xffff0000` and
/// kube-proxy's `0x4000`/`0x8000`. No bit is free in every Cilium mode (IPsec keys use
/// `0xF000`, WireGuard `0x1E00`): in-pod ingress takes a packet as hairpinned only when the
/// frame is also addressed from the device to itself, and clears these bits otherwise.
pub const DEFAULT_POD_CAPTURE_MARK: u32 = 0x1000;
/// Default bypass mark of the in-pod mode (`SO_MARK` of the ztunnel's sockets in a pod).
pub const DEFAULT_POD_BYPASS_MARK: u32 = 0x2000;
/// Default mark of the node mode's captured packets (see [`DEFAULT_POD_CAPTURE_MARK`]).
pub const DEFAULT_NODE_MARK: u32 = 0x1000;

/// Maximum number of enrolled pods per node.
pub const MAX_ENROLLED: u32 = 16384;
/// Maximum number of excluded destinations.
pub const MAX_EXCLUDED: u32 = 1024;
/// Maximum number of enrolled pod network namespaces per node.
pub const MAX_POD_NETNS: u32 = 4096;
/// Size of the LRU maps of original destinations (connects in flight; captured
/// connections not yet accepted by the ztunnel).
pub const MAX_ORIG_DST: u32 = 65536;

/// Capture the pod's outbound TCP (to ztunnel's outbound listener).
pub const FLAG_OUTBOUND: u32 = 1;
/// Capture inbound TCP to the pod (15008 to HBONE, other ports to the plaintext listener).
pub const FLAG_INBOUND: u32 = 1 << 1;
/// Both directions: the normal state of an enrolled pod.
pub const FLAG_ALL: u32 = FLAG_OUTBOUND | FLAG_INBOUND;

/// Counter indexes in [`MAP_STATS`].
pub const STAT_OUTBOUND_SYN: u32 = 0;
pub const STAT_INBOUND_HBONE_SYN: u32 = 1;
pub const STAT_INBOUND_PLAIN_SYN: u32 = 2;
/// SYN dropped because the listener it should go to is absent (fail closed).
pub const STAT_NO_LISTENER_DROP: u32 = 3;
/// bpf_sk_assign failed: packet dropped.
pub const STAT_ASSIGN_FAILED: u32 = 4;
/// Non-SYN packets of captured flows steered to local delivery.
pub const STAT_MARKED: u32 = 5;
/// Node-originated packets to a local enrolled pod's HBONE port looped back to ingress.
pub const STAT_HAIRPIN: u32 = 6;
pub const STAT_COUNT: u32 = 7;

/// Counter indexes in [`MAP_STATS6`]: IPv6 packets of an enrolled pod (from it, or to it
/// and not from a node address) that the programs cannot parse (an extension header
/// before TCP, a fragment, ESP/AH): dropped, never passed uncaptured.
pub const STAT6_UNPARSED_DROP: u32 = 0;
/// IPv6 TCP leaving an enrolled pod from an address that is not enrolled (the ztunnel
/// does not know it), or a SYN arriving to one (not from a node address): dropped.
pub const STAT6_UNENROLLED_DROP: u32 = 1;
pub const STAT6_COUNT: u32 = 4;

/// Key of [`MAP_ENROLLED6`] / [`MAP_EXCLUDED6`]: an IPv6 address's 16 bytes, network order
/// (`Ipv6Addr::octets`).
pub type Ip6Key = [u8; 16];

/// Value of [`MAP_ENROLLED`].
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PodEntry {
    /// `FLAG_*` bits.
    pub flags: u32,
    /// Owner tag: 0 in node mode; in in-pod mode a 32-bit hash of the pod key that
    /// enrolled the address (lets `detach_pod` unenroll a pod's addresses after a restart).
    pub reserved: u32,
}

/// Value of [`MAP_CONFIG`] (index 0). Ports are host byte order; the address is network
/// byte order (as read from a packet).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct RedirectConfig {
    /// Address used to look up the listeners (127.0.0.1 finds listeners bound to it or
    /// to 0.0.0.0).
    pub listener_addr: u32,
    /// ztunnel outbound listener port (15001).
    pub outbound_port: u16,
    /// ztunnel inbound plaintext listener port (15006).
    pub inbound_port: u16,
    /// ztunnel HBONE listener port (15008), also the destination port that selects it.
    pub hbone_port: u16,
    /// 1 once userspace has written a configuration; programs pass everything before.
    pub enabled: u16,
    /// skb mark set on captured packets so that `ip rule fwmark` routes them locally.
    pub mark: u32,
}

/// Value of [`MAP_POD_CONFIG`] (index 0). Marks are bit masks: a packet carries a mark
/// when `skb->mark & m == m`.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct PodConfig {
    /// Set (OR-ed) by `mw_pod_egress` on hairpinned packets; the pod namespace's
    /// `ip rule fwmark m/m` makes them local.
    pub capture_mark: u32,
    /// `SO_MARK` of the ztunnel's sockets in the pod: never captured on egress.
    pub bypass_mark: u32,
}

/// An IPv4 destination as the app gave it: address and port in network byte order
/// (`addr` as read from a packet or `bpf_sock_addr.user_ip4`; `port` as the 16 bits of
/// `user_port` / the TCP header).
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct OrigDst {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

/// Key of [`MAP_ORIG_DST`]: a connection's 4-tuple as its SYN leaves the pod (and so as the
/// ztunnel's accepted socket sees it: `src` = its peer, `dst` = its local address).
/// Network byte order throughout.
#[repr(C)]
#[derive(Clone, Copy, Debug, PartialEq, Eq, Default)]
pub struct FlowKey {
    pub src_addr: u32,
    pub dst_addr: u32,
    pub src_port: u16,
    pub dst_port: u16,
}

#[cfg(feature = "user")]
mod user {
    // SAFETY: both are repr(C), Copy, contain only integers and have no padding.
    unsafe impl aya::Pod for super::PodEntry {}
    unsafe impl aya::Pod for super::RedirectConfig {}
    unsafe impl aya::Pod for super::PodConfig {}
    unsafe impl aya::Pod for super::OrigDst {}
    unsafe impl aya::Pod for super::FlowKey {}
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn layouts_have_no_padding() {
        assert_eq!(core::mem::size_of::<PodEntry>(), 8);
        assert_eq!(core::mem::size_of::<RedirectConfig>(), 16);
        assert_eq!(core::mem::size_of::<PodConfig>(), 8);
        assert_eq!(core::mem::size_of::<OrigDst>(), 8);
        assert_eq!(core::mem::size_of::<FlowKey>(), 12);
    }

    #[test]
    fn default_pod_marks_avoid_cni_and_kube_proxy_bits() {
        for m in [
            DEFAULT_POD_CAPTURE_MARK,
            DEFAULT_POD_BYPASS_MARK,
            DEFAULT_NODE_MARK,
        ] {
            assert_eq!(m & 0x0F00, 0, "Cilium magic");
            assert_eq!(m & 0x00FF, 0, "Cilium cluster id");
            assert_eq!(m & 0xffff_0000, 0, "Calico / Cilium identity");
            assert_eq!(m & 0xC000, 0, "kube-proxy");
            assert_ne!(m, 0);
        }
        assert_eq!(DEFAULT_POD_CAPTURE_MARK & DEFAULT_POD_BYPASS_MARK, 0);
    }

    #[test]
    fn flag_all_is_both_directions() {
        assert_eq!(FLAG_ALL & FLAG_OUTBOUND, FLAG_OUTBOUND);
        assert_eq!(FLAG_ALL & FLAG_INBOUND, FLAG_INBOUND);
        assert_ne!(FLAG_OUTBOUND, FLAG_INBOUND);
    }
}

//! Meshwork traffic redirection, TC (TCX) ingress on the node's pod-facing veths and uplink.
//!
//! For every IPv4 TCP packet entering the node network namespace:
//! * source is an enrolled pod (outbound capture): a SYN is assigned with `bpf_sk_assign`
//!   to ztunnel's IP_TRANSPARENT outbound listener (15001); the accepted socket's local
//!   address is the original destination.
//! * otherwise destination is an enrolled pod (inbound capture): a SYN to the HBONE port
//!   goes to ztunnel's HBONE listener (15008), any other port to its plaintext inbound
//!   listener (15006).
//! * captured packets get the configured skb mark so an `ip rule fwmark` routes them to a
//!   `local 0.0.0.0/0` table: they are delivered to the node's stack, where the normal
//!   socket lookup finds the established (transparent) socket for non-SYN packets.
//! * a SYN whose listener is missing is dropped (fail closed: the client retransmits and
//!   lands on the next ztunnel); a non-SYN of a flow with no socket is delivered locally
//!   and answered with a RST by the kernel: nothing of an enrolled pod's TCP is forwarded
//!   in the clear.
//! * everything else returns TCX_NEXT untouched, so later programs in the chain (a CNI's)
//!   see it.
//!
//! TC egress on the pod veths (`mw_tc_egress`): a packet the node itself sends to a local
//! enrolled pod's HBONE port (ztunnel reaching a same-node destination) would reach the
//! pod, where nothing listens on 15008; it is turned around (destination MAC := the veth's
//! own) and redirected into the veth's ingress, where `mw_tc_ingress` hands it to the
//! HBONE listener like any other inbound HBONE connection.
//!
//! In-pod mode (`mw_pod_egress`, `mw_pod_ingress`): TCX on a pod's own `eth0`, inside the
//! pod's network namespace, where the ztunnel has opened its listeners:
//! * egress: the enrolled pod's outbound TCP (not carrying the bypass mark of the ztunnel's
//!   own sockets, not to a node address) gets the capture mark and is redirected into the
//!   same device's ingress (destination MAC := the device's own);
//! * ingress: a packet with the capture mark is a hairpinned outbound one: its SYN is
//!   assigned to the in-pod outbound listener, the rest passes (the pod namespace's
//!   `fwmark` rule delivers it locally). An unmarked SYN to the enrolled pod (not from a
//!   node address, not to the HBONE port) is assigned to the in-pod plaintext inbound
//!   listener. A missing listener drops the SYN (fail closed).
//! * IPv6 (dual-stack pods, `MW_ENROLLED6` / `MW_EXCLUDED6`): the same, with the listeners
//!   looked up at `[::1]`. What the programs cannot parse (an extension header before the
//!   transport) and TCP from / SYNs to an address of the pod that is not enrolled are
//!   dropped and counted in `MW_STATS6`, never passed; multicast, ICMPv6, UDP pass.
//!
//! Original destination under a socket-LB (`mw_pod_connect4`, `cgroup/connect4` attached to
//! a cgroup below the root, e.g. `kubepods.slice`): a root-cgroup socket-LB (Cilium's
//! kube-proxy replacement) rewrites a service VIP to a backend inside `connect()`, before
//! any packet exists. cgroup-bpf runs a descendant cgroup's programs before its
//! ancestors', so this program sees the address the app asked for; for sockets of enrolled
//! pods' namespaces (`MW_POD_NETNS`, by netns cookie) it records it by socket cookie
//! (`MW_SOCK_ORIG`) and never changes it. `mw_pod_egress`, on a captured SYN, moves a
//! recorded destination that differs from the packet's into `MW_ORIG_DST`, keyed by the
//! 4-tuple the ztunnel's accepted socket will have.
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::{
        bpf_sock, bpf_sock_tuple, tcx_action_base::TCX_DROP, tcx_action_base::TCX_NEXT,
        tcx_action_base::TCX_PASS, BPF_F_CURRENT_NETNS, BPF_F_INGRESS, BPF_TCP_LISTEN,
    },
    helpers::{
        bpf_get_netns_cookie, bpf_get_socket_cookie, bpf_redirect, bpf_sk_assign, bpf_sk_release,
        bpf_skc_lookup_tcp,
    },
    macros::{cgroup_sock_addr, classifier, map},
    maps::{Array, HashMap, LruHashMap, PerCpuArray},
    programs::{SockAddrContext, TcContext},
    EbpfContext,
};
use meshwork_ebpf_common::{
    FlowKey, Ip6Key, OrigDst, PodConfig, PodEntry, RedirectConfig, FLAG_INBOUND, FLAG_OUTBOUND,
    MAX_ENROLLED, MAX_EXCLUDED, MAX_ORIG_DST, MAX_POD_NETNS, STAT6_COUNT, STAT6_UNENROLLED_DROP,
    STAT6_UNPARSED_DROP, STAT_ASSIGN_FAILED, STAT_COUNT, STAT_HAIRPIN, STAT_INBOUND_HBONE_SYN,
    STAT_INBOUND_PLAIN_SYN, STAT_MARKED, STAT_NO_LISTENER_DROP, STAT_OUTBOUND_SYN,
};

#[map]
static MW_ENROLLED: HashMap<u32, PodEntry> = HashMap::with_max_entries(MAX_ENROLLED, 0);

#[map]
static MW_EXCLUDED: HashMap<u32, u8> = HashMap::with_max_entries(MAX_EXCLUDED, 0);

#[map]
static MW_CONFIG: Array<RedirectConfig> = Array::with_max_entries(1, 0);

#[map]
static MW_POD_CONFIG: Array<PodConfig> = Array::with_max_entries(1, 0);

#[map]
static MW_STATS: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT_COUNT, 0);

#[map]
static MW_POD_NETNS: HashMap<u64, u32> = HashMap::with_max_entries(MAX_POD_NETNS, 0);

#[map]
static MW_SOCK_ORIG: LruHashMap<u64, OrigDst> = LruHashMap::with_max_entries(MAX_ORIG_DST, 0);

#[map]
static MW_ENROLLED6: HashMap<Ip6Key, PodEntry> = HashMap::with_max_entries(MAX_ENROLLED, 0);

#[map]
static MW_EXCLUDED6: HashMap<Ip6Key, u8> = HashMap::with_max_entries(MAX_EXCLUDED, 0);

#[map]
static MW_STATS6: PerCpuArray<u64> = PerCpuArray::with_max_entries(STAT6_COUNT, 0);

#[map]
static MW_ORIG_DST: LruHashMap<FlowKey, OrigDst> = LruHashMap::with_max_entries(MAX_ORIG_DST, 0);

const ETH_HDR_LEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;
const ETH_P_IPV6: u16 = 0x86DD;
const IPV6_HDR_LEN: usize = 40;
const IPPROTO_TCP: u8 = 6;
const TCP_FLAG_SYN: u8 = 0x02;
const TCP_FLAG_ACK: u8 = 0x10;
const AF_INET: u32 = 2;
const SOCK_STREAM: u32 = 1;

struct Flow {
    saddr: u32,
    daddr: u32,
    /// Host byte order.
    dport: u16,
    /// Network byte order, as in the packet.
    sport_be: u16,
    dport_be: u16,
    syn: bool,
}

#[classifier]
pub fn mw_tc_ingress(ctx: TcContext) -> i32 {
    match classify(&ctx) {
        Some(verdict) => verdict,
        None => TCX_NEXT,
    }
}

fn classify(ctx: &TcContext) -> Option<i32> {
    let cfg = MW_CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    let flow = parse(ctx)?;
    // SAFETY: plain lookups of POD values; the references are not kept across helper calls
    // that could free them.
    let src = unsafe { MW_ENROLLED.get(&flow.saddr) }.copied();
    if let Some(pod) = src {
        if pod.flags & FLAG_OUTBOUND != 0 {
            if unsafe { MW_EXCLUDED.get(&flow.daddr) }.is_some() {
                return None;
            }
            return Some(capture(
                ctx,
                cfg,
                &flow,
                cfg.outbound_port,
                STAT_OUTBOUND_SYN,
            ));
        }
    }
    let dst = unsafe { MW_ENROLLED.get(&flow.daddr) }.copied()?;
    if dst.flags & FLAG_INBOUND == 0 {
        return None;
    }
    if flow.dport == cfg.hbone_port {
        Some(capture(
            ctx,
            cfg,
            &flow,
            cfg.hbone_port,
            STAT_INBOUND_HBONE_SYN,
        ))
    } else {
        Some(capture(
            ctx,
            cfg,
            &flow,
            cfg.inbound_port,
            STAT_INBOUND_PLAIN_SYN,
        ))
    }
}

#[classifier]
pub fn mw_tc_egress(ctx: TcContext) -> i32 {
    match hairpin(&ctx) {
        Some(verdict) => verdict,
        None => TCX_NEXT,
    }
}

fn hairpin(ctx: &TcContext) -> Option<i32> {
    let cfg = MW_CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    let flow = parse(ctx)?;
    if flow.dport != cfg.hbone_port {
        return None;
    }
    let dst = unsafe { MW_ENROLLED.get(&flow.daddr) }.copied()?;
    if dst.flags & FLAG_INBOUND == 0 {
        return None;
    }
    // Addressed to the veth itself, so ingress treats it as PACKET_HOST.
    let src_mac: [u8; 6] = ctx.load(6).ok()?;
    ctx.store(0, &src_mac, 0).ok()?;
    // SAFETY: reading a field of the context's __sk_buff.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    count(STAT_HAIRPIN);
    // SAFETY: plain helper call; returns TC_ACT_REDIRECT (== TCX_REDIRECT) on success.
    Some(unsafe { bpf_redirect(ifindex, BPF_F_INGRESS as u64) } as i32)
}

#[classifier]
pub fn mw_pod_egress(ctx: TcContext) -> i32 {
    match pod_egress(&ctx) {
        Some(verdict) => verdict,
        None => TCX_NEXT,
    }
}

fn has_mark(mark: u32, bits: u32) -> bool {
    bits != 0 && mark & bits == bits
}

fn pod_egress(ctx: &TcContext) -> Option<i32> {
    let cfg = MW_CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    let pod_cfg = MW_POD_CONFIG.get(0)?;
    if pod_cfg.capture_mark == 0 {
        return None;
    }
    // SAFETY: reading fields of the context's __sk_buff.
    let mark = unsafe { (*ctx.skb.skb).mark };
    // The ztunnel's own sockets in this namespace: no loops.
    if has_mark(mark, pod_cfg.bypass_mark) {
        return None;
    }
    if is_ipv6(ctx) {
        return pod_egress6(ctx, pod_cfg, mark);
    }
    let flow = parse(ctx)?;
    let src = unsafe { MW_ENROLLED.get(&flow.saddr) }.copied()?;
    if src.flags & FLAG_OUTBOUND == 0 {
        return None;
    }
    // What the app connected to (socket-LB), taken on every SYN so nothing is left behind.
    let orig = if flow.syn { take_recorded(ctx) } else { None };
    // The node (kubelet, host-network pods) is reached directly, as in node mode; this
    // also keeps the app's replies to uncaptured probes on the wire.
    if unsafe { MW_EXCLUDED.get(&flow.daddr) }.is_some() {
        return None;
    }
    if let Some(orig) = orig {
        keep_original_destination(&flow, orig);
    }
    pod_hairpin(ctx, pod_cfg, mark)
}

/// Turns an outbound packet of the pod around into the same device's ingress, with the
/// capture mark.
fn pod_hairpin(ctx: &TcContext, pod_cfg: &PodConfig, mark: u32) -> Option<i32> {
    // Addressed to the device itself, so ingress treats it as PACKET_HOST.
    let src_mac: [u8; 6] = ctx.load(6).ok()?;
    ctx.store(0, &src_mac, 0).ok()?;
    ctx.set_mark(mark | pod_cfg.capture_mark);
    // SAFETY: reading a field of the context's __sk_buff.
    let ifindex = unsafe { (*ctx.skb.skb).ifindex };
    count(STAT_HAIRPIN);
    // SAFETY: plain helper call; returns TC_ACT_REDIRECT (== TCX_REDIRECT) on success.
    Some(unsafe { bpf_redirect(ifindex, BPF_F_INGRESS as u64) } as i32)
}

/// IPv6 egress of an enrolled pod: as IPv4 (hairpin with the capture mark), except that
/// nothing is recorded for a socket-LB (no `connect6` hook). A packet whose transport is
/// behind an extension header is dropped: it could be TCP leaving uncaptured.
fn pod_egress6(ctx: &TcContext, pod_cfg: &PodConfig, mark: u32) -> Option<i32> {
    let pkt = parse6(ctx)?;
    if unsafe { MW_EXCLUDED6.get(&pkt.daddr) }.is_some() {
        return None;
    }
    let Some(src) = unsafe { MW_ENROLLED6.get(&pkt.saddr) }.copied() else {
        // This program runs on enrolled pods only: TCP from an address of the pod that
        // was not enrolled (not known to the ztunnel) must not leave uncaptured.
        return match pkt.l4 {
            L4::Other => None,
            _ => {
                count6(STAT6_UNENROLLED_DROP);
                Some(TCX_DROP)
            }
        };
    };
    if src.flags & FLAG_OUTBOUND == 0 {
        return None;
    }
    match pkt.l4 {
        L4::Other => None,
        L4::Unparsed => {
            count6(STAT6_UNPARSED_DROP);
            Some(TCX_DROP)
        }
        L4::Tcp => pod_hairpin(ctx, pod_cfg, mark),
    }
}

/// What `mw_pod_connect4` recorded for the SYN's socket, removed from `MW_SOCK_ORIG`.
fn take_recorded(ctx: &TcContext) -> Option<OrigDst> {
    // SAFETY: helper call on the skb context; 0 when the skb has no socket.
    let cookie = unsafe { bpf_get_socket_cookie(ctx.skb.skb as *mut _) };
    if cookie == 0 {
        return None;
    }
    // SAFETY: a POD value copied out at once.
    let orig = (unsafe { MW_SOCK_ORIG.get(&cookie) }).copied()?;
    let _ = MW_SOCK_ORIG.remove(&cookie);
    Some(orig)
}

/// A captured SYN whose socket-LB changed what the app connected to: remember the original
/// for the connection's 4-tuple (the ztunnel reads it after accepting).
fn keep_original_destination(flow: &Flow, orig: OrigDst) {
    if orig.addr == flow.daddr && orig.port == flow.dport_be {
        return;
    }
    let key = FlowKey {
        src_addr: flow.saddr,
        dst_addr: flow.daddr,
        src_port: flow.sport_be,
        dst_port: flow.dport_be,
    };
    let _ = MW_ORIG_DST.insert(&key, &orig, 0);
}

#[cgroup_sock_addr(connect4)]
pub fn mw_pod_connect4(ctx: SockAddrContext) -> i32 {
    pod_connect4(&ctx);
    // Always allow: this program only records.
    1
}

fn pod_connect4(ctx: &SockAddrContext) {
    // SAFETY: reading fields of the context's bpf_sock_addr (`sk` is always a full socket).
    let (family, ty, proto, ip, port, mark) = unsafe {
        let sa = &*ctx.sock_addr;
        (
            sa.user_family,
            sa.type_,
            sa.protocol,
            sa.user_ip4,
            sa.user_port,
            (*sa.__bindgen_anon_1.sk).mark,
        )
    };
    if family != AF_INET || ty != SOCK_STREAM || proto != IPPROTO_TCP as u32 {
        return;
    }
    // The ztunnel's own sockets in the pod (bypass mark) are never captured.
    if let Some(pod_cfg) = MW_POD_CONFIG.get(0) {
        if has_mark(mark, pod_cfg.bypass_mark) {
            return;
        }
    }
    // SAFETY: helper calls on the sock_addr context.
    let netns = unsafe { bpf_get_netns_cookie(ctx.as_ptr()) };
    if unsafe { MW_POD_NETNS.get(&netns) }.is_none() {
        return;
    }
    let cookie = unsafe { bpf_get_socket_cookie(ctx.as_ptr()) };
    let orig = OrigDst {
        addr: ip,
        // The port is the low 16 bits of user_port, in network byte order.
        port: port as u16,
        _pad: 0,
    };
    let _ = MW_SOCK_ORIG.insert(&cookie, &orig, 0);
}

#[classifier]
pub fn mw_pod_ingress(ctx: TcContext) -> i32 {
    match pod_ingress(&ctx) {
        Some(verdict) => verdict,
        None => TCX_NEXT,
    }
}

fn pod_ingress(ctx: &TcContext) -> Option<i32> {
    let cfg = MW_CONFIG.get(0)?;
    if cfg.enabled == 0 {
        return None;
    }
    let pod_cfg = MW_POD_CONFIG.get(0)?;
    if pod_cfg.capture_mark == 0 {
        return None;
    }
    // SAFETY: reading a field of the context's __sk_buff.
    let mark = unsafe { (*ctx.skb.skb).mark };
    // Hairpinned by mw_pod_egress: the capture mark *and* the frame addressed from the
    // device to itself (pod_hairpin wrote dst := src). The mark alone does not tell: a CNI
    // that delivers with `bpf_redirect_peer` keeps its own mark into this namespace (the
    // kernel scrubs it only on a veth's xmit), and Cilium's layout uses bit 0x1000 too
    // (`MARK_MAGIC_WG_ENCRYPTED` 0x1E00, IPsec keys in 0xF000). A foreign mark overlapping
    // ours loses our bits, so neither this program nor the fwmark rule takes the packet
    // for one of the pod's own.
    let ours = pod_cfg.capture_mark | pod_cfg.bypass_mark;
    let hairpinned = has_mark(mark, pod_cfg.capture_mark) && from_itself(ctx);
    let mark = if !hairpinned && mark & ours != 0 {
        ctx.set_mark(mark & !ours);
        mark & !ours
    } else {
        mark
    };
    if is_ipv6(ctx) {
        return pod_ingress6(ctx, cfg, pod_cfg, mark);
    }
    let flow = parse(ctx)?;
    if has_mark(mark, pod_cfg.capture_mark) {
        // Hairpinned (above). The mark stays: the fwmark rule makes it local.
        if !flow.syn {
            count(STAT_MARKED);
            return Some(TCX_PASS);
        }
        return Some(
            match assign_listener(ctx, cfg.listener_addr, cfg.outbound_port) {
                Ok(()) => {
                    count(STAT_OUTBOUND_SYN);
                    TCX_PASS
                }
                Err(reason) => {
                    count(reason);
                    TCX_DROP
                }
            },
        );
    }
    let dst = unsafe { MW_ENROLLED.get(&flow.daddr) }.copied()?;
    if dst.flags & FLAG_INBOUND == 0 || !flow.syn || flow.dport == cfg.hbone_port {
        // Non-SYNs find their socket (the ztunnel's accepted one) by the normal lookup;
        // HBONE goes to the in-pod 15008 listener, which is local.
        return None;
    }
    // Node addresses (kubelet probes) reach the app directly.
    if unsafe { MW_EXCLUDED.get(&flow.saddr) }.is_some() {
        return None;
    }
    Some(
        match assign_listener(ctx, cfg.listener_addr, cfg.inbound_port) {
            Ok(()) => {
                count(STAT_INBOUND_PLAIN_SYN);
                TCX_PASS
            }
            Err(reason) => {
                count(reason);
                TCX_DROP
            }
        },
    )
}

/// Whether the frame's destination MAC is its source MAC (what `mw_pod_egress` writes on
/// a hairpinned packet; a frame from the peer carries the peer's source MAC).
fn from_itself(ctx: &TcContext) -> bool {
    match ctx.load::<[u8; 12]>(0) {
        Ok(macs) => macs[..6] == macs[6..],
        Err(_) => false,
    }
}

/// IPv6 ingress, as IPv4: a hairpinned (capture-marked) SYN goes to the outbound listener
/// at `[::1]`, an unmarked SYN to an enrolled address (not from a node address, not to
/// the HBONE port) to the plaintext inbound listener at `[::1]`; a packet to an enrolled
/// address that cannot be parsed (extension headers) is dropped unless it comes from a
/// node address.
fn pod_ingress6(
    ctx: &TcContext,
    cfg: &RedirectConfig,
    pod_cfg: &PodConfig,
    mark: u32,
) -> Option<i32> {
    let pkt = parse6(ctx)?;
    if has_mark(mark, pod_cfg.capture_mark) {
        // Only TCP is hairpinned by mw_pod_egress6.
        if pkt.l4 != L4::Tcp {
            return None;
        }
        if !pkt.syn {
            count(STAT_MARKED);
            return Some(TCX_PASS);
        }
        return Some(match assign_listener6(ctx, cfg.outbound_port) {
            Ok(()) => {
                count(STAT_OUTBOUND_SYN);
                TCX_PASS
            }
            Err(reason) => {
                count(reason);
                TCX_DROP
            }
        });
    }
    let Some(dst) = unsafe { MW_ENROLLED6.get(&pkt.daddr) }.copied() else {
        // A SYN to an address of the pod that was not enrolled: refused (unless from a
        // node address), it would reach the app around the mesh.
        return match pkt.l4 {
            L4::Tcp | L4::Unparsed
                if (pkt.l4 == L4::Unparsed || pkt.syn)
                    && unsafe { MW_EXCLUDED6.get(&pkt.saddr) }.is_none() =>
            {
                count6(STAT6_UNENROLLED_DROP);
                Some(TCX_DROP)
            }
            _ => None,
        };
    };
    if dst.flags & FLAG_INBOUND == 0 {
        return None;
    }
    match pkt.l4 {
        L4::Other => return None,
        L4::Unparsed => {
            if unsafe { MW_EXCLUDED6.get(&pkt.saddr) }.is_some() {
                return None;
            }
            count6(STAT6_UNPARSED_DROP);
            return Some(TCX_DROP);
        }
        L4::Tcp => {}
    }
    if !pkt.syn || pkt.dport == cfg.hbone_port {
        return None;
    }
    if unsafe { MW_EXCLUDED6.get(&pkt.saddr) }.is_some() {
        return None;
    }
    Some(match assign_listener6(ctx, cfg.inbound_port) {
        Ok(()) => {
            count(STAT_INBOUND_PLAIN_SYN);
            TCX_PASS
        }
        Err(reason) => {
            count(reason);
            TCX_DROP
        }
    })
}

/// IPv6 next-header values that are extension headers (or put the transport out of reach:
/// ESP, AH, fragments, experimental values). A packet of an enrolled pod with one of them
/// is refused.
fn is_ipv6_extension(next: u8) -> bool {
    matches!(
        next,
        0 | 43 | 44 | 50 | 51 | 60 | 135 | 139 | 140 | 253 | 254
    )
}

fn is_ipv6(ctx: &TcContext) -> bool {
    matches!(ctx.load::<u16>(12), Ok(p) if u16::from_be(p) == ETH_P_IPV6)
}

/// What follows the fixed IPv6 header (a plain integer: an enum with fields would leave
/// bytes the verifier sees uninitialized).
#[derive(Clone, Copy, PartialEq, Eq)]
#[repr(u8)]
enum L4 {
    /// TCP right after the fixed header.
    Tcp,
    /// Another transport (UDP, ICMPv6 — neighbour discovery must pass —, ...).
    Other,
    /// An extension header (or ESP/AH, a fragment) before the transport: the programs do
    /// not walk them, so they cannot tell whether it is TCP.
    Unparsed,
}

struct Pkt6 {
    saddr: Ip6Key,
    daddr: Ip6Key,
    l4: L4,
    /// TCP only: a SYN without ACK.
    syn: bool,
    /// TCP only: destination port, host byte order.
    dport: u16,
}

/// Ethernet + IPv6; `None` when it is not IPv6 or too short.
fn parse6(ctx: &TcContext) -> Option<Pkt6> {
    let ver: u8 = ctx.load(ETH_HDR_LEN).ok()?;
    if ver >> 4 != 6 {
        return None;
    }
    let next: u8 = ctx.load(ETH_HDR_LEN + 6).ok()?;
    let saddr: Ip6Key = ctx.load(ETH_HDR_LEN + 8).ok()?;
    let daddr: Ip6Key = ctx.load(ETH_HDR_LEN + 24).ok()?;
    let mut pkt = Pkt6 {
        saddr,
        daddr,
        l4: L4::Other,
        syn: false,
        dport: 0,
    };
    if daddr[0] == 0xff {
        // Multicast is never TCP: MLD reports and queries (a hop-by-hop header before
        // ICMPv6), neighbour discovery. Passed as they are.
        return Some(pkt);
    }
    if next == IPPROTO_TCP {
        let tcp = ETH_HDR_LEN + IPV6_HDR_LEN;
        match (ctx.load::<u16>(tcp + 2), ctx.load::<u8>(tcp + 13)) {
            (Ok(dport), Ok(flags)) => {
                pkt.l4 = L4::Tcp;
                pkt.syn = flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0;
                pkt.dport = u16::from_be(dport);
            }
            // A truncated TCP header: refuse it too.
            _ => pkt.l4 = L4::Unparsed,
        }
    } else if is_ipv6_extension(next) {
        pkt.l4 = L4::Unparsed;
    }
    Some(pkt)
}

/// As [`assign_listener`], IPv6: the listener is looked up at `[::1]:port` (found when
/// bound to `[::]`, IPv6-only or dual-stack, or to `[::1]`).
fn assign_listener6(ctx: &TcContext, port: u16) -> Result<(), u32> {
    // SAFETY: zeroed POD tuple; the union's ipv6 member is what we pass (size 36).
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    let mut lo = [0u32; 4];
    lo[3] = 1u32.to_be();
    tuple.__bindgen_anon_1.ipv6.daddr = lo;
    tuple.__bindgen_anon_1.ipv6.dport = port.to_be();
    let size = core::mem::size_of_val(unsafe { &tuple.__bindgen_anon_1.ipv6 }) as u32;
    assign_tuple(ctx, &mut tuple, size)
}

fn count6(index: u32) {
    bump(&MW_STATS6, index)
}

/// Ethernet + IPv4 + TCP; `None` for anything else (including non-first fragments).
fn parse(ctx: &TcContext) -> Option<Flow> {
    let proto: u16 = ctx.load(12).ok()?;
    if u16::from_be(proto) != ETH_P_IP {
        return None;
    }
    let ver_ihl: u8 = ctx.load(ETH_HDR_LEN).ok()?;
    if ver_ihl >> 4 != 4 {
        return None;
    }
    let ihl = ((ver_ihl & 0x0f) as usize) * 4;
    if ihl < 20 {
        return None;
    }
    let frag: u16 = ctx.load(ETH_HDR_LEN + 6).ok()?;
    if u16::from_be(frag) & 0x1fff != 0 {
        return None;
    }
    let l4proto: u8 = ctx.load(ETH_HDR_LEN + 9).ok()?;
    if l4proto != IPPROTO_TCP {
        return None;
    }
    let saddr: u32 = ctx.load(ETH_HDR_LEN + 12).ok()?;
    let daddr: u32 = ctx.load(ETH_HDR_LEN + 16).ok()?;
    let tcp = ETH_HDR_LEN + ihl;
    let sport: u16 = ctx.load(tcp).ok()?;
    let dport: u16 = ctx.load(tcp + 2).ok()?;
    let flags: u8 = ctx.load(tcp + 13).ok()?;
    Some(Flow {
        saddr,
        daddr,
        dport: u16::from_be(dport),
        sport_be: sport,
        dport_be: dport,
        syn: flags & TCP_FLAG_SYN != 0 && flags & TCP_FLAG_ACK == 0,
    })
}

fn capture(ctx: &TcContext, cfg: &RedirectConfig, flow: &Flow, port: u16, stat: u32) -> i32 {
    if flow.syn {
        match assign_listener(ctx, cfg.listener_addr, port) {
            Ok(()) => count(stat),
            Err(reason) => {
                count(reason);
                return TCX_DROP;
            }
        }
    } else {
        count(STAT_MARKED);
    }
    ctx.set_mark(cfg.mark);
    TCX_PASS
}

fn assign_listener(ctx: &TcContext, addr: u32, port: u16) -> Result<(), u32> {
    // SAFETY: zeroed POD tuple; the union's ipv4 member is what we pass (size 12).
    let mut tuple: bpf_sock_tuple = unsafe { core::mem::zeroed() };
    tuple.__bindgen_anon_1.ipv4.daddr = addr;
    tuple.__bindgen_anon_1.ipv4.dport = port.to_be();
    let size = core::mem::size_of_val(unsafe { &tuple.__bindgen_anon_1.ipv4 }) as u32;
    assign_tuple(ctx, &mut tuple, size)
}

/// Looks up the listener `tuple` names (the first `size` bytes) in the current namespace
/// and assigns it to the packet: `Err(stat)` when there is none or it cannot be assigned.
#[inline(always)]
fn assign_tuple(ctx: &TcContext, tuple: &mut bpf_sock_tuple, size: u32) -> Result<(), u32> {
    // SAFETY: helper call with a valid skb context and tuple; a non-null result holds a
    // reference we release below on every path.
    let sk: *mut bpf_sock = unsafe {
        bpf_skc_lookup_tcp(
            ctx.skb.skb as *mut _,
            tuple,
            size,
            BPF_F_CURRENT_NETNS as u64,
            0,
        )
    };
    if sk.is_null() {
        return Err(STAT_NO_LISTENER_DROP);
    }
    let result = if unsafe { (*sk).state } != BPF_TCP_LISTEN {
        Err(STAT_NO_LISTENER_DROP)
    } else if unsafe { bpf_sk_assign(ctx.skb.skb as *mut _, sk as *mut _, 0) } != 0 {
        Err(STAT_ASSIGN_FAILED)
    } else {
        Ok(())
    };
    unsafe { bpf_sk_release(sk as *mut _) };
    result
}

fn count(index: u32) {
    bump(&MW_STATS, index)
}

#[inline(always)]
fn bump(stats: &PerCpuArray<u64>, index: u32) {
    if let Some(counter) = stats.get_ptr_mut(index) {
        // SAFETY: per-CPU slot, no concurrent writer on this CPU.
        unsafe { *counter += 1 };
    }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

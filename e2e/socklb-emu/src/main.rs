//! Test-only emulation of a root-cgroup socket-LB (Cilium's kube-proxy replacement,
//! `bpf_sock.c`: `cil_sock4_connect` → `__sock4_xlate_fwd`): a `cgroup/connect4` program
//! that looks the destination the app passed to `connect()` up in a service map and, on a
//! hit, rewrites it in place to the service's backend (address and port). As in Cilium,
//! this happens before any packet exists, so nothing downstream (TC, netfilter, the
//! in-pod capture) ever sees the VIP. One backend per service (no selection, no reverse
//! translation for `getpeername`): enough to show what the rewrite does to a capture.
//!
//! Loaded by `meshwork_e2e::socklb::EmulatedSocketLb`, attached to a test-made cgroup that
//! stands in for the root. Never shipped: it lives outside the product's BPF object.
//!
//! The same object carries the emulated Cilium datapath of the `cilium-like` network flavour
//! (`meshwork_e2e::cilium_like`): TCX programs that deliver to local pods by a map lookup
//! (IP → lxc ifindex and MACs, as Cilium's `cilium_lxc` endpoint map) instead of host
//! routing, and that write Cilium-style marks on what they forward:
//!
//! * `test_cil_from_container` (TCX ingress of every `lxc…` veth, as `cil_from_container`):
//!   a packet from a pod to another local pod is rewritten to that pod's MACs, marked and
//!   redirected to the destination's lxc (`bpf_redirect`, legacy host routing) or straight
//!   into the destination pod's `eth0` (`bpf_redirect_peer`, BPF host routing) — the node's
//!   routing never sees it; anything else goes on to the node's stack (`TCX_NEXT`).
//! * `test_cil_from_host` (TCX egress of `cilium_host`, as `cil_from_host`): what the node's
//!   stack routed into the pod CIDR (`<cidr> via <router ip> dev cilium_host`) — replies from
//!   outside, VXLAN-decapsulated traffic, kube-proxy's DNATed connections — is rewritten,
//!   marked and `bpf_redirect`ed to the destination pod's lxc; an address of the CIDR that
//!   is no endpoint is dropped (Cilium: `DROP_UNROUTABLE`).
#![no_std]
#![no_main]

use aya_ebpf::{
    bindings::tcx_action_base::{TCX_DROP, TCX_NEXT},
    helpers::{bpf_redirect, bpf_redirect_peer},
    macros::{cgroup_sock_addr, classifier, map},
    maps::{Array, HashMap},
    programs::{SockAddrContext, TcContext},
};

/// Service frontend / backend: IPv4 address as in `user_ip4`, port in network byte order.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct Addr4 {
    pub addr: u32,
    pub port: u16,
    pub _pad: u16,
}

#[map]
static TEST_SOCKLB_SERVICES: HashMap<Addr4, Addr4> = HashMap::with_max_entries(256, 0);

const AF_INET: u32 = 2;
const IPPROTO_TCP: u32 = 6;
const SYS_PROCEED: i32 = 1;

#[cgroup_sock_addr(connect4)]
pub fn test_socklb_connect4(ctx: SockAddrContext) -> i32 {
    // SAFETY: reading and writing the context's user_ip4 / user_port, which connect4
    // programs may rewrite.
    unsafe {
        let sa = &mut *ctx.sock_addr;
        if sa.user_family != AF_INET || sa.protocol != IPPROTO_TCP {
            return SYS_PROCEED;
        }
        let key = Addr4 {
            addr: sa.user_ip4,
            port: sa.user_port as u16,
            _pad: 0,
        };
        if let Some(backend) = TEST_SOCKLB_SERVICES.get(&key) {
            let b = *backend;
            sa.user_ip4 = b.addr;
            sa.user_port = b.port as u32;
        }
    }
    SYS_PROCEED
}

/// A local endpoint of the emulated Cilium datapath (Cilium's `struct endpoint_info`,
/// reduced): the host-side veth, the pod's and the veth's MACs, its security identity.
#[repr(C)]
#[derive(Clone, Copy)]
pub struct CilEndpoint {
    pub ifindex: u32,
    pub identity: u32,
    pub mac: [u8; 6],
    pub node_mac: [u8; 6],
}

/// Local endpoints by IPv4 address (network byte order, as in the packet).
#[map]
static TEST_CIL_ENDPOINTS: HashMap<u32, CilEndpoint> = HashMap::with_max_entries(1024, 0);

/// Counters: [`STAT_FROM_CONTAINER`], [`STAT_FROM_HOST`], [`STAT_UNROUTABLE`].
#[map]
static TEST_CIL_STATS: Array<u64> = Array::with_max_entries(4, 0);

/// [0]: bits OR'ed into every mark the datapath writes (a test sets bits of Cilium's
/// layout beyond the identity magic, e.g. 0x1000 of `MARK_MAGIC_WG_ENCRYPTED` 0x1E00).
/// [1]: non-zero = BPF host routing (Cilium's `ENABLE_HOST_ROUTING`, with kube-proxy
/// replacement): local delivery by `bpf_redirect_peer`; zero (legacy host routing, what
/// Cilium runs beside kube-proxy): `bpf_redirect` to the lxc, as `redirect_ep` does.
#[map]
static TEST_CIL_CONFIG: Array<u32> = Array::with_max_entries(2, 0);

const STAT_FROM_CONTAINER: u32 = 0;
const STAT_FROM_HOST: u32 = 1;
const STAT_UNROUTABLE: u32 = 2;

/// Cilium's `MARK_MAGIC_IDENTITY` (0x0F00) with the source identity in the upper 16 bits,
/// as `set_identity_mark` writes it.
const MARK_MAGIC_IDENTITY: u32 = 0x0F00;

const ETH_HLEN: usize = 14;
const ETH_P_IP: u16 = 0x0800;

fn count(i: u32) {
    if let Some(c) = TEST_CIL_STATS.get_ptr_mut(i) {
        // SAFETY: a valid array slot; a racy increment is good enough for a test counter.
        unsafe { *c += 1 };
    }
}

/// The local endpoint a frame is addressed to (IPv4 only), with the source's identity.
fn local_endpoint(ctx: &TcContext) -> Option<(CilEndpoint, u32)> {
    let proto: u16 = ctx.load(12).ok()?;
    if u16::from_be(proto) != ETH_P_IP {
        return None;
    }
    let saddr: u32 = ctx.load(ETH_HLEN + 12).ok()?;
    let daddr: u32 = ctx.load(ETH_HLEN + 16).ok()?;
    // SAFETY: plain map lookups; the values are copied out.
    let ep = unsafe { TEST_CIL_ENDPOINTS.get(&daddr) }.copied()?;
    let src_identity = unsafe { TEST_CIL_ENDPOINTS.get(&saddr) }
        .map(|e| e.identity)
        .unwrap_or(2); // Cilium's reserved identity `world`.
    Some((ep, src_identity))
}

/// Rewrites the frame to the endpoint's MACs and writes the identity mark.
fn prepare(ctx: &TcContext, ep: &CilEndpoint, src_identity: u32) -> Option<()> {
    ctx.store(0, &ep.mac, 0).ok()?;
    ctx.store(6, &ep.node_mac, 0).ok()?;
    let extra = TEST_CIL_CONFIG.get(0).copied().unwrap_or(0);
    ctx.set_mark((src_identity << 16) | MARK_MAGIC_IDENTITY | extra);
    Some(())
}

#[classifier]
pub fn test_cil_from_container(ctx: TcContext) -> i32 {
    let Some((ep, src)) = local_endpoint(&ctx) else {
        return TCX_NEXT;
    };
    if prepare(&ctx, &ep, src).is_none() {
        return TCX_DROP;
    }
    count(STAT_FROM_CONTAINER);
    let host_routing = TEST_CIL_CONFIG.get(1).copied().unwrap_or(0) != 0;
    // SAFETY: plain helper calls; TC_ACT_REDIRECT on success.
    unsafe {
        if host_routing {
            bpf_redirect_peer(ep.ifindex, 0) as i32
        } else {
            bpf_redirect(ep.ifindex, 0) as i32
        }
    }
}

#[classifier]
pub fn test_cil_from_host(ctx: TcContext) -> i32 {
    let Some((ep, src)) = local_endpoint(&ctx) else {
        // Routed into the pod CIDR but no endpoint has the address.
        count(STAT_UNROUTABLE);
        return TCX_DROP;
    };
    if prepare(&ctx, &ep, src).is_none() {
        return TCX_DROP;
    }
    count(STAT_FROM_HOST);
    // SAFETY: plain helper call; TC_ACT_REDIRECT on success.
    unsafe { bpf_redirect(ep.ifindex, 0) as i32 }
}

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

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
#![no_std]
#![no_main]

use aya_ebpf::{macros::cgroup_sock_addr, macros::map, maps::HashMap, programs::SockAddrContext};

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

#[cfg(not(test))]
#[panic_handler]
fn panic(_info: &core::panic::PanicInfo) -> ! {
    loop {}
}

#[link_section = "license"]
#[no_mangle]
static LICENSE: [u8; 4] = *b"GPL\0";

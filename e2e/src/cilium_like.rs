//! The `cilium-like` network flavour: Cilium's default datapath shapes (tunnel mode,
//! `endpointRoutes.enabled=false`, kube-proxy for services) built from plain devices and a
//! test-only BPF emulation (`e2e/socklb-emu`, programs `test_cil_*`):
//!
//! * per node: the `cilium_host`/`cilium_net` veth pair (both `NOARP`), `cilium_host`
//!   holding the router IP (`10.244.<i>.1/32`); the pod CIDR is routed
//!   `<cidr> via <router> dev cilium_host src <router>`; no per-pod route.
//! * per pod: a veth `lxc<hash>` (no address, no route, `rp_filter` 0) / `eth0` in the pod
//!   with the pod's `/32`, `<router> dev eth0 scope link`, `default via <router>` and MTU
//!   1450 (VXLAN overhead), as cilium-cni sets it up. bpf_lxc answers the pod's ARP for the
//!   router; here a permanent neighbour entry (router → lxc MAC) stands in for it.
//! * delivery to local pods by BPF, never by host routing: `test_cil_from_container` on every
//!   lxc's TCX ingress (`bpf_redirect` to the destination lxc, as Cilium's `redirect_ep` does
//!   without BPF host routing — the case beside kube-proxy; `set_bpf_host_routing` switches
//!   to `bpf_redirect_peer` into the pod, as with kube-proxy replacement) and `test_cil_from_host`
//!   on `cilium_host`'s TCX egress (`bpf_redirect` to the lxc), both over an endpoint map
//!   (IP → lxc ifindex, MACs, identity) and writing Cilium's identity mark
//!   (`identity << 16 | 0x0F00`). Attached as Cilium's loader does: TCX links appended at
//!   the tail (`LinkOrder::last()`).
//! * between nodes: `cilium_vxlan` (VXLAN on UDP 8472, Cilium's default port, over `eth0`)
//!   with one fdb entry and one permanent neighbour per remote node, and each remote pod CIDR
//!   routed `via <remote router> dev cilium_vxlan onlink`. Cilium uses an external
//!   (`collect_md`) device and encapsulates in BPF with the tunnel map; the wire is the same
//!   (outer node → node UDP 8472, inner pod → pod), and this keeps the emulation's BPF to
//!   local delivery. Decapsulated packets go up the node's stack, which routes them to
//!   `cilium_host` (so kube-proxy's conntrack sees replies; Cilium's `bpf_overlay` delivers
//!   directly, but Cilium also does ClusterIP in `bpf_lxc`, which this emulation leaves to
//!   kube-proxy).
//! * services: kube-proxy's iptables chains in every node (Cilium without kube-proxy
//!   replacement), as on kind-ptp.
use std::net::Ipv4Addr;
use std::sync::Mutex;

use aya::maps::HashMap;
use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};

use crate::netns::{self, ip_in};
use crate::topology::{Node, Pod};
use crate::HarnessError;

/// Cilium's default VXLAN port (`tunnel-port`).
pub const VXLAN_PORT: u16 = 8472;
/// Pod MTU with VXLAN (1500 - 50), as Cilium sets it.
pub const POD_MTU: u16 = 1450;
/// Cilium's `MARK_MAGIC_IDENTITY`, written with the identity in the upper 16 bits.
pub const MARK_MAGIC_IDENTITY: u32 = 0x0F00;
/// First security identity given to the fixture's pods.
pub const FIRST_IDENTITY: u32 = 10_000;

const FROM_CONTAINER: &str = "test_cil_from_container";
const FROM_HOST: &str = "test_cil_from_host";
const ENDPOINTS: &str = "TEST_CIL_ENDPOINTS";
const STATS: &str = "TEST_CIL_STATS";
const CONFIG: &str = "TEST_CIL_CONFIG";

#[derive(Debug, thiserror::Error)]
pub enum CiliumLikeError {
    #[error("the emulated Cilium datapath was not built (AYA_BUILD_SKIP)")]
    NotBuilt,
    #[error("emulated Cilium datapath on {node}: {reason}")]
    Bpf { node: String, reason: String },
    #[error("{what} of {dev} in {netns}: not in `ip link` output {out:?}")]
    Link {
        what: &'static str,
        dev: String,
        netns: String,
        out: String,
    },
}

impl From<CiliumLikeError> for HarnessError {
    fn from(e: CiliumLikeError) -> Self {
        HarnessError::Command {
            command: "cilium-like datapath".into(),
            reason: e.to_string(),
        }
    }
}

/// An endpoint as the BPF map holds it (`CilEndpoint` of the emulation).
#[repr(C)]
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct CilEndpoint {
    pub ifindex: u32,
    pub identity: u32,
    pub mac: [u8; 6],
    pub node_mac: [u8; 6],
}

// SAFETY: repr(C), integers and byte arrays only, no padding (4 + 4 + 6 + 6).
unsafe impl aya::Pod for CilEndpoint {}

/// Counters of a node's emulated datapath.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct DatapathStats {
    /// Pod → local pod, delivered by `test_cil_from_container`.
    pub from_container: u64,
    /// Node stack → local pod, delivered by `test_cil_from_host`.
    pub from_host: u64,
    /// Routed into the pod CIDR with no endpoint (dropped).
    pub unroutable: u64,
}

/// The loaded programs of one node (their TCX links live as long as this).
struct NodeDatapath {
    netns: String,
    /// `None` only while a namespace thread attaches one of its programs.
    ebpf: Option<Ebpf>,
}

// SAFETY: Ebpf holds file descriptors and plain data; it is only used under the mutex.
unsafe impl Send for NodeDatapath {}

/// The emulated datapath of all nodes.
pub struct CiliumLike {
    nodes: Mutex<Vec<NodeDatapath>>,
}

/// Router IP of a node (`cilium_host`'s address): the pod CIDR's `.1`.
pub fn router_ip(node: &Node) -> Ipv4Addr {
    node.gateway
}

/// `cilium_vxlan`'s MAC on node `i` (fixed, so peers can hold a permanent neighbour).
pub fn vxlan_mac(index: usize) -> String {
    format!(
        "02:c1:1a:00:{:02x}:{:02x}",
        (index >> 8) & 0xff,
        index & 0xff
    )
}

/// `lxc` + 12 hex digits of a hash of the sandbox's name (cilium-cni names the host veth
/// after the container id the same way).
pub fn lxc_name(sandbox: &str) -> String {
    // FNV-1a, 64 bits.
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in sandbox.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    format!("lxc{:012x}", h & 0xffff_ffff_ffff)
}

/// `(ifindex, MAC)` of `dev` in `netns`, from `ip -o link show`.
fn link_info(netns: &str, dev: &str) -> Result<(u32, [u8; 6]), HarnessError> {
    let out = ip_in(netns, &["-o", "link", "show", "dev", dev])?;
    let text = String::from_utf8_lossy(&out.stdout).to_string();
    let err = |what| CiliumLikeError::Link {
        what,
        dev: dev.to_string(),
        netns: netns.to_string(),
        out: text.clone(),
    };
    let ifindex = text
        .split(':')
        .next()
        .and_then(|s| s.trim().parse().ok())
        .ok_or_else(|| err("ifindex"))?;
    let mac = text
        .split_whitespace()
        .skip_while(|w| *w != "link/ether")
        .nth(1)
        .and_then(parse_mac)
        .ok_or_else(|| err("MAC"))?;
    Ok((ifindex, mac))
}

fn parse_mac(s: &str) -> Option<[u8; 6]> {
    let mut mac = [0u8; 6];
    let mut parts = s.split(':');
    for b in mac.iter_mut() {
        *b = u8::from_str_radix(parts.next()?, 16).ok()?;
    }
    parts.next().is_none().then_some(mac)
}

fn bpf_err(node: &str) -> impl Fn(&dyn std::fmt::Display) -> CiliumLikeError + '_ {
    move |e| CiliumLikeError::Bpf {
        node: node.to_string(),
        reason: e.to_string(),
    }
}

/// Attaches `program` of `ebpf` to `dev` (resolved in `netns`) at the tail of TCX.
fn attach(
    ebpf: Ebpf,
    netns: &str,
    program: &'static str,
    dev: String,
    attach_type: TcAttachType,
) -> Result<Ebpf, HarnessError> {
    let node = netns.to_string();
    let r = netns::in_netns(netns, move || {
        let mut ebpf = ebpf;
        let err = bpf_err(&node);
        let r = (|| {
            let prog: &mut SchedClassifier = ebpf
                .program_mut(program)
                .ok_or_else(|| err(&program))?
                .try_into()
                .map_err(|e| err(&e))?;
            if prog.fd().is_err() {
                prog.load().map_err(|e| err(&e))?;
            }
            prog.attach_with_options(
                &dev,
                attach_type,
                TcAttachOptions::TcxOrder(LinkOrder::last()),
            )
            .map_err(|e| err(&format!("attaching {program} to {dev}: {e}")))?;
            Ok::<(), CiliumLikeError>(())
        })();
        SendEbpf(ebpf, r)
    })?;
    let SendEbpf(ebpf, res) = r;
    res?;
    Ok(ebpf)
}

/// An `Ebpf` crossing to and from a namespace thread.
struct SendEbpf(Ebpf, Result<(), CiliumLikeError>);
// SAFETY: see NodeDatapath.
unsafe impl Send for SendEbpf {}

impl CiliumLike {
    /// Per node: `cilium_host`/`cilium_net`, the pod CIDR route, `cilium_vxlan` towards
    /// every other node, a default route to the fabric's `.254`, and `test_cil_from_host`
    /// on `cilium_host`'s egress. The nodes' uplinks exist and are up.
    pub fn new(nodes: &[Node], object: &[u8]) -> Result<Self, HarnessError> {
        if object.is_empty() {
            return Err(CiliumLikeError::NotBuilt.into());
        }
        let mut datapaths = Vec::new();
        for n in nodes {
            let ns = n.netns.as_str();
            for key in ["all", "default"] {
                netns::sysctl_in(ns, &format!("net.ipv4.conf.{key}.rp_filter"), "0")?;
            }
            let router = router_ip(n).to_string();
            ip_in(
                ns,
                &[
                    "link",
                    "add",
                    "cilium_host",
                    "type",
                    "veth",
                    "peer",
                    "name",
                    "cilium_net",
                ],
            )?;
            for dev in ["cilium_host", "cilium_net"] {
                ip_in(ns, &["link", "set", dev, "arp", "off", "up"])?;
            }
            ip_in(
                ns,
                &["addr", "add", &format!("{router}/32"), "dev", "cilium_host"],
            )?;
            ip_in(
                ns,
                &[
                    "route",
                    "add",
                    &n.pod_cidr(),
                    "via",
                    &router,
                    "dev",
                    "cilium_host",
                    "src",
                    &router,
                ],
            )?;
            let local = n.ip.to_string();
            let port = VXLAN_PORT.to_string();
            ip_in(
                ns,
                &[
                    "link",
                    "add",
                    "cilium_vxlan",
                    "address",
                    &vxlan_mac(n.index),
                    "type",
                    "vxlan",
                    "id",
                    "2",
                    "dstport",
                    &port,
                    "local",
                    &local,
                    "dev",
                    &n.uplink,
                    "nolearning",
                ],
            )?;
            ip_in(ns, &["link", "set", "cilium_vxlan", "up"])?;
            for o in nodes.iter().filter(|o| o.index != n.index) {
                let mac = vxlan_mac(o.index);
                let peer = o.ip.to_string();
                netns::exec_in(
                    ns,
                    std::process::Command::new("bridge").args([
                        "fdb",
                        "append",
                        &mac,
                        "dev",
                        "cilium_vxlan",
                        "dst",
                        &peer,
                    ]),
                )
                .map_err(HarnessError::from)
                .and_then(|o| {
                    if o.status.success() {
                        Ok(())
                    } else {
                        Err(HarnessError::Command {
                            command: "bridge fdb append".into(),
                            reason: String::from_utf8_lossy(&o.stderr).to_string(),
                        })
                    }
                })?;
                let their_router = router_ip(o).to_string();
                ip_in(
                    ns,
                    &[
                        "neigh",
                        "add",
                        &their_router,
                        "lladdr",
                        &mac,
                        "dev",
                        "cilium_vxlan",
                        "nud",
                        "permanent",
                    ],
                )?;
                ip_in(
                    ns,
                    &[
                        "route",
                        "add",
                        &o.pod_cidr(),
                        "via",
                        &their_router,
                        "dev",
                        "cilium_vxlan",
                        "onlink",
                        "src",
                        &router,
                        "mtu",
                        &POD_MTU.to_string(),
                    ],
                )?;
            }
            let gw = Ipv4Addr::new(10, 250, 0, 254).to_string();
            ip_in(
                ns,
                &["route", "add", "default", "via", &gw, "dev", &n.uplink],
            )?;
            let ebpf = EbpfLoader::new()
                .load(object)
                .map_err(|e| bpf_err(ns)(&e))?;
            let ebpf = attach(
                ebpf,
                ns,
                FROM_HOST,
                "cilium_host".into(),
                TcAttachType::Egress,
            )?;
            datapaths.push(NodeDatapath {
                netns: n.netns.clone(),
                ebpf: Some(ebpf),
            });
        }
        Ok(Self {
            nodes: Mutex::new(datapaths),
        })
    }

    /// What cilium-cni ADD does for a pod whose namespace exists: the `lxc` veth pair, the
    /// pod's `/32`, link route and default route via the router, MTU 1450, the router's
    /// neighbour entry, then the endpoint (map entry, `test_cil_from_container` on the lxc).
    /// Returns the lxc's name.
    pub fn add_pod(&self, node: &Node, pod: &Pod, identity: u32) -> Result<String, HarnessError> {
        let (ns, pns) = (node.netns.as_str(), pod.netns.as_str());
        let lxc = lxc_name(pns);
        let mtu = POD_MTU.to_string();
        ip_in(
            ns,
            &[
                "link", "add", &lxc, "mtu", &mtu, "type", "veth", "peer", "name", "eth0", "mtu",
                &mtu, "netns", pns,
            ],
        )?;
        ip_in(ns, &["link", "set", &lxc, "up"])?;
        netns::sysctl_in(ns, &format!("net.ipv4.conf.{lxc}.rp_filter"), "0")?;
        let (lxc_ifindex, lxc_mac) = link_info(ns, &lxc)?;
        let router = router_ip(node).to_string();
        ip_in(pns, &["link", "set", "lo", "up"])?;
        ip_in(
            pns,
            &["addr", "add", &format!("{}/32", pod.ip), "dev", "eth0"],
        )?;
        ip_in(pns, &["link", "set", "eth0", "up"])?;
        ip_in(
            pns,
            &["route", "add", &router, "dev", "eth0", "scope", "link"],
        )?;
        ip_in(
            pns,
            &[
                "route", "add", "default", "via", &router, "dev", "eth0", "mtu", &mtu,
            ],
        )?;
        let lladdr = lxc_mac
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect::<Vec<_>>()
            .join(":");
        ip_in(
            pns,
            &[
                "neigh",
                "add",
                &router,
                "lladdr",
                &lladdr,
                "dev",
                "eth0",
                "nud",
                "permanent",
            ],
        )?;
        let (_, pod_mac) = link_info(pns, "eth0")?;
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let dp = nodes
            .iter_mut()
            .find(|d| d.netns == node.netns)
            .ok_or_else(|| HarnessError::Unknown {
                kind: "cilium-like node",
                name: node.name.clone(),
            })?;
        let err = bpf_err(ns);
        let mut ebpf = dp.ebpf.take().ok_or_else(|| err(&"programs lost"))?;
        {
            let mut map: HashMap<_, u32, CilEndpoint> =
                HashMap::try_from(ebpf.map_mut(ENDPOINTS).ok_or_else(|| err(&ENDPOINTS))?)
                    .map_err(|e| err(&e))?;
            let ep = CilEndpoint {
                ifindex: lxc_ifindex,
                identity,
                mac: pod_mac,
                node_mac: lxc_mac,
            };
            map.insert(u32::from_ne_bytes(pod.ip.octets()), ep, 0)
                .map_err(|e| err(&e))?;
        }
        dp.ebpf = Some(attach(
            ebpf,
            ns,
            FROM_CONTAINER,
            lxc.clone(),
            TcAttachType::Ingress,
        )?);
        Ok(lxc)
    }

    /// The counters of a node's emulated datapath.
    pub fn stats(&self, node: &Node) -> Result<DatapathStats, HarnessError> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        let dp = nodes
            .iter_mut()
            .find(|d| d.netns == node.netns)
            .ok_or_else(|| HarnessError::Unknown {
                kind: "cilium-like node",
                name: node.name.clone(),
            })?;
        let err = bpf_err(&node.netns);
        let ebpf = dp.ebpf.as_ref().ok_or_else(|| err(&"programs lost"))?;
        let arr: aya::maps::Array<_, u64> =
            aya::maps::Array::try_from(ebpf.map(STATS).ok_or_else(|| err(&STATS))?)
                .map_err(|e| err(&e))?;
        let get = |i| arr.get(&i, 0).map_err(|e| err(&e));
        Ok(DatapathStats {
            from_container: get(0)?,
            from_host: get(1)?,
            unroutable: get(2)?,
        })
    }

    /// ORs `bits` into every mark the datapath of every node writes from now on (0: the
    /// identity mark alone).
    pub fn set_extra_mark(&self, bits: u32) -> Result<(), HarnessError> {
        self.set_config(0, bits)
    }

    /// BPF host routing (Cilium with kube-proxy replacement): pod → local pod by
    /// `bpf_redirect_peer`, which keeps the mark into the destination pod. Off (the default,
    /// legacy host routing, what Cilium runs beside kube-proxy): `bpf_redirect` to the lxc,
    /// whose transmit scrubs the mark.
    pub fn set_bpf_host_routing(&self, on: bool) -> Result<(), HarnessError> {
        self.set_config(1, u32::from(on))
    }

    fn set_config(&self, index: u32, value: u32) -> Result<(), HarnessError> {
        let mut nodes = self.nodes.lock().unwrap_or_else(|p| p.into_inner());
        for dp in nodes.iter_mut() {
            let err = bpf_err(&dp.netns);
            let ebpf = dp.ebpf.as_mut().ok_or_else(|| err(&"programs lost"))?;
            let mut arr: aya::maps::Array<_, u32> =
                aya::maps::Array::try_from(ebpf.map_mut(CONFIG).ok_or_else(|| err(&CONFIG))?)
                    .map_err(|e| err(&e))?;
            arr.set(index, value, 0).map_err(|e| err(&e))?;
        }
        Ok(())
    }

    /// Names of the TCX programs on `dev` in `netns` (`ingress` or egress), in run order.
    pub fn tcx_programs(
        netns: &str,
        dev: &str,
        ingress: bool,
    ) -> Result<Vec<String>, HarnessError> {
        let dev = dev.to_string();
        let node = netns.to_string();
        netns::in_netns(netns, move || {
            let t = if ingress {
                TcAttachType::Ingress
            } else {
                TcAttachType::Egress
            };
            let (_, progs) = SchedClassifier::query_tcx(&dev, t).map_err(|e| bpf_err(&node)(&e))?;
            Ok(progs
                .iter()
                .map(|p| p.name_as_str().unwrap_or("?").to_string())
                .collect())
        })?
    }

    /// Detaches every program (the devices go with the namespaces).
    pub fn teardown(&self) {
        self.nodes.lock().unwrap_or_else(|p| p.into_inner()).clear();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn lxc_names_fit_ifnamsiz_and_differ() {
        let a = lxc_name("mw1r0-client");
        let b = lxc_name("mw1r0-orders-v1");
        assert_eq!(a.len(), 15);
        assert!(a.starts_with("lxc"));
        assert_ne!(a, b);
        assert_eq!(vxlan_mac(1), "02:c1:1a:00:00:01");
        assert_eq!(
            parse_mac("02:c1:1a:00:00:0a"),
            Some([2, 0xc1, 0x1a, 0, 0, 10])
        );
        assert_eq!(parse_mac("02:c1"), None);
    }
}

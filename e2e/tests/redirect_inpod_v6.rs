//! In-pod redirection of dual-stack pods (needs root, BPF, TCX): `mw_pod_egress` /
//! `mw_pod_ingress` on IPv6, with std listeners in the pod's namespace standing in for the
//! ztunnel (as in `redirect_inpod.rs`). One node, three pods; the test gives every pod a
//! ULA address on its veth pair (`fd00:0:0:<i>::2/64`, the node side `::1`, the node
//! forwarding IPv6), all inside the namespaces the cluster made.
//!
//! Checks: IPv6 outbound captured with the original destination (a v6 "VIP" and a pod),
//! the bypass mark and node addresses not captured; IPv6 inbound plaintext → 15006, 15008
//! direct, node sources direct, the transparent leg; no IPv6 listener (only the IPv4 ones)
//! → fail closed; extension headers and addresses the pod has but did not enroll → dropped and counted;
//! IPv4 captured alongside; detach removes the IPv6 rule and route.
use std::io::{BufRead, BufReader};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr, SocketAddr, TcpListener, TcpStream};
use std::os::fd::AsRawFd;
use std::path::Path;
use std::time::Duration;

use meshwork_e2e::netns::{ip_in, netns_path, sysctl_in};
use meshwork_e2e::probe::LineServer;
use meshwork_e2e::{Cluster, BPF_PIN_ROOT};
use meshwork_redirect::{
    ensure_bpffs, local_ipv4_addresses, local_ipv6_addresses, Redirect, RedirectOptions,
};
use meshwork_runtime::netns::NetNs;
use socket2::{Domain, Socket, Type};

const VIP6: Ipv6Addr = Ipv6Addr::new(0xfd00, 0x96, 0, 0, 0, 0, 0, 0x10);
const T: Duration = Duration::from_secs(2);
const SHORT: Duration = Duration::from_millis(800);
const KEY: &str = "uid-app6-0001";
const PODS: [&str; 3] = ["app", "peer", "server"];

/// `fd00:0:0:<i+1>::<host>`: pod `i`'s address (host 2) or its node-side gateway (host 1).
fn v6(i: usize, host: u16) -> Ipv6Addr {
    Ipv6Addr::new(0xfd00, 0, 0, i as u16 + 1, 0, 0, 0, host)
}

fn pod6(name: &str) -> Ipv6Addr {
    v6(PODS.iter().position(|p| *p == name).unwrap(), 2)
}

fn gw6(name: &str) -> Ipv6Addr {
    v6(PODS.iter().position(|p| *p == name).unwrap(), 1)
}

fn sa(ip: impl Into<IpAddr>, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn options(c: &Cluster) -> RedirectOptions {
    let mut o = RedirectOptions::new(c.bpf_node_name("n0").unwrap());
    o.pin_root = BPF_PIN_ROOT.into();
    o
}

/// One node, `app` (captured), `peer` and `server`, each with an IPv4 and an IPv6 address.
fn cluster() -> Cluster {
    let c = Cluster::builder()
        .nodes(1)
        .pod("app", 0)
        .pod("peer", 0)
        .pod("server", 0)
        .build()
        .unwrap();
    let node = c.node("n0").unwrap().netns.clone();
    sysctl_in(&node, "net.ipv6.conf.all.forwarding", "1").unwrap();
    for name in PODS {
        let p = c.pod(name).unwrap();
        let (gw, ip) = (gw6(name).to_string(), pod6(name).to_string());
        ip_in(
            &node,
            &[
                "-6",
                "addr",
                "add",
                &format!("{gw}/64"),
                "dev",
                &p.host_veth,
                "nodad",
            ],
        )
        .unwrap();
        ip_in(
            &p.netns,
            &[
                "-6",
                "addr",
                "add",
                &format!("{ip}/64"),
                "dev",
                "eth0",
                "nodad",
            ],
        )
        .unwrap();
        ip_in(&p.netns, &["-6", "route", "add", "default", "via", &gw]).unwrap();
    }
    // Neighbour discovery on fresh links can take the first SYN and its retransmit: warm
    // every path up (a connect to a closed port answered by a RST), before any program is
    // attached.
    for from in PODS {
        let ns = pod_ns(&c, from);
        for to in PODS.iter().filter(|t| **t != from) {
            let ok = (0..3).any(|_| {
                let r = dial(
                    &ns,
                    Dial::default(),
                    sa(pod6(to), 1),
                    Duration::from_secs(3),
                );
                matches!(r, Err(e) if e.kind() == std::io::ErrorKind::ConnectionRefused)
            });
            assert!(ok, "no IPv6 path {from} -> {to}");
        }
    }
    c
}

fn pod_ns(c: &Cluster, pod: &str) -> NetNs {
    NetNs::open(netns_path(&c.pod(pod).unwrap().netns)).unwrap()
}

/// Loads the programs, excludes the node's addresses (both families) and captures `app`
/// with its IPv4 and IPv6 addresses.
fn setup(c: &Cluster) -> (Redirect, NetNs) {
    ensure_bpffs(Path::new("/sys/fs/bpf")).unwrap();
    let mut r = Redirect::load(options(c)).unwrap();
    for ip in c.in_netns("n0", local_ipv4_addresses).unwrap().unwrap() {
        r.exclude_destination(ip).unwrap();
    }
    for ip in c.in_netns("n0", local_ipv6_addresses).unwrap().unwrap() {
        r.exclude_destination(ip).unwrap();
    }
    assert!(r.excluded_v6().unwrap().contains(&gw6("app")));
    let ns = pod_ns(c, "app");
    let ips = [
        IpAddr::V4(c.pod("app").unwrap().ip),
        IpAddr::V6(pod6("app")),
    ];
    r.attach_pod(&ns, KEY, "eth0", &ips).unwrap();
    // Idempotent.
    r.attach_pod(&ns, KEY, "eth0", &ips).unwrap();
    (r, ns)
}

/// A ztunnel-like listener in `ns`: IP(V6)_TRANSPARENT, SO_REUSEPORT, the bypass mark;
/// on `[::]` IPv6-only, or on `0.0.0.0`.
fn ztunnel_listener(ns: &NetNs, v6: bool, port: u16, mark: u32) -> TcpListener {
    ns.run(|| {
        let (domain, addr) = if v6 {
            (Domain::IPV6, sa(Ipv6Addr::UNSPECIFIED, port))
        } else {
            (Domain::IPV4, sa(Ipv4Addr::UNSPECIFIED, port))
        };
        let s = Socket::new(domain, Type::STREAM, None)?;
        if v6 {
            s.set_only_v6(true)?;
            s.set_ip_transparent_v6(true)?;
        } else {
            s.set_ip_transparent_v4(true)?;
        }
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_mark(mark)?;
        s.bind(&addr.into())?;
        s.listen(64)?;
        Ok::<TcpListener, std::io::Error>(s.into())
    })
    .unwrap()
    .unwrap()
}

/// A plain IPv6-only server on `[::]:port` in a pod or node namespace.
fn server6(c: &Cluster, target: &str, port: u16, tag: &str) -> LineServer {
    let l = c
        .in_netns(target, move || {
            let s = Socket::new(Domain::IPV6, Type::STREAM, None)?;
            s.set_only_v6(true)?;
            s.set_reuse_address(true)?;
            s.bind(&sa(Ipv6Addr::UNSPECIFIED, port).into())?;
            s.listen(64)?;
            Ok::<TcpListener, std::io::Error>(s.into())
        })
        .unwrap()
        .unwrap();
    LineServer::serve_listener(l, tag)
}

/// How a test socket is made before it connects.
#[derive(Clone, Copy, Default)]
struct Dial {
    mark: Option<u32>,
    bind: Option<SocketAddr>,
    /// IPV6_TRANSPARENT before binding (the ztunnel's leg to the app, from the client's
    /// address).
    transparent: bool,
    /// A destination options extension header (PadN) on every packet.
    dstopts: bool,
}

/// Connects from `ns` to `dst` and returns the line the server answered.
fn dial(ns: &NetNs, d: Dial, dst: SocketAddr, timeout: Duration) -> std::io::Result<String> {
    let s = ns
        .run(|| Socket::new(Domain::for_address(dst), Type::STREAM, None))
        .unwrap()?;
    if let Some(m) = d.mark {
        s.set_mark(m)?;
    }
    if d.transparent {
        s.set_ip_transparent_v6(true)?;
    }
    if let Some(b) = d.bind {
        s.bind(&b.into())?;
    }
    if d.dstopts {
        // ip6_dest: next header (the kernel's), length 0 (8 bytes), PadN of 4.
        let opt: [u8; 8] = [0, 0, 1, 4, 0, 0, 0, 0];
        // SAFETY: plain setsockopt with a valid buffer.
        let rc = unsafe {
            libc::setsockopt(
                s.as_raw_fd(),
                libc::IPPROTO_IPV6,
                libc::IPV6_DSTOPTS,
                opt.as_ptr() as *const libc::c_void,
                opt.len() as u32,
            )
        };
        if rc != 0 {
            return Err(std::io::Error::last_os_error());
        }
    }
    s.connect_timeout(&dst.into(), timeout)?;
    let stream: TcpStream = s.into();
    stream.set_read_timeout(Some(timeout))?;
    let mut l = String::new();
    BufReader::new(stream).read_line(&mut l)?;
    Ok(l.trim_end().to_string())
}

fn line(c: &Cluster, from: &str, dst: SocketAddr) -> String {
    dial(&pod_or_node_ns(c, from), Dial::default(), dst, T)
        .unwrap_or_else(|e| panic!("{from} -> {dst}: {e}"))
}

fn pod_or_node_ns(c: &Cluster, name: &str) -> NetNs {
    let path = match c.pod(name) {
        Ok(p) => p.netns.clone(),
        Err(_) => c.node(name).unwrap().netns.clone(),
    };
    NetNs::open(netns_path(&path)).unwrap()
}

#[test]
fn ipv6_outbound_is_captured_with_the_original_destination() {
    let c = cluster();
    let (r, ns) = setup(&c);
    let o = r.options().clone();
    let out6 = LineServer::serve_listener(
        ztunnel_listener(&ns, true, o.outbound_port, o.pod_bypass_mark),
        "outbound6",
    );
    let out4 = LineServer::serve_listener(
        ztunnel_listener(&ns, false, o.outbound_port, o.pod_bypass_mark),
        "outbound4",
    );
    let app = pod6("app");
    let server = pod6("server");
    let _srv6 = server6(&c, "server", 8080, "direct");
    let _srv4 = LineServer::plain(&c, "server", 8080, "direct4").unwrap();

    // To a v6 service address (no such host anywhere) and to a v6 pod: the in-pod
    // [::]:15001 listener, the original destination as the accepted socket's local address.
    let got = line(&c, "app", sa(VIP6, 80));
    assert!(
        got.starts_with(&format!("outbound6 [{VIP6}]:80 [{app}]:")),
        "{got}"
    );
    let got = line(&c, "app", sa(server, 8080));
    assert!(
        got.starts_with(&format!("outbound6 [{server}]:8080 [{app}]:")),
        "{got}"
    );
    assert_eq!(out6.accepted().len(), 2);

    // IPv4 of the same pod: the IPv4 listener, as before.
    let server4 = c.pod("server").unwrap().ip;
    let got = line(&c, "app", sa(server4, 8080));
    assert!(
        got.starts_with(&format!("outbound4 {server4}:8080 ")),
        "{got}"
    );
    assert_eq!(out4.accepted().len(), 1);

    // The ztunnel's own socket (bypass mark): straight to the server.
    let bypass = Dial {
        mark: Some(o.pod_bypass_mark | 0x1),
        ..Dial::default()
    };
    let got = dial(&ns, bypass, sa(server, 8080), T).unwrap();
    assert!(
        got.starts_with(&format!("direct [{server}]:8080 [{app}]:")),
        "{got}"
    );

    // A node address (v6): reached directly.
    let _node = server6(&c, "n0", 9000, "node");
    let got = line(&c, "app", sa(gw6("app"), 9000));
    assert!(got.starts_with("node "), "{got}");
    assert_eq!(out6.accepted().len(), 2);

    let stats = r.stats().unwrap();
    assert!(stats.outbound_syn >= 3, "{stats:?}");
    assert_eq!(stats.ipv6_unparsed_drop, 0, "{stats:?}");
    assert_eq!(stats.ipv6_unenrolled_drop, 0, "{stats:?}");
}

#[test]
fn ipv6_inbound_plaintext_hbone_and_node_sources() {
    let c = cluster();
    let (r, ns) = setup(&c);
    let o = r.options().clone();
    let inbound = LineServer::serve_listener(
        ztunnel_listener(&ns, true, o.inbound_port, o.pod_bypass_mark),
        "inbound",
    );
    let hbone = LineServer::serve_listener(
        ztunnel_listener(&ns, true, o.hbone_port, o.pod_bypass_mark),
        "hbone",
    );
    let app_srv = server6(&c, "app", 8080, "app");
    let (app, peer) = (pod6("app"), pod6("peer"));

    let got = line(&c, "peer", sa(app, 8080));
    assert!(
        got.starts_with(&format!("inbound [{app}]:8080 [{peer}]:")),
        "{got}"
    );
    let got = line(&c, "peer", sa(app, o.hbone_port));
    assert!(
        got.starts_with(&format!("hbone [{app}]:{} [{peer}]:", o.hbone_port)),
        "{got}"
    );
    // From the node (kubelet probe): the app itself.
    let got = line(&c, "n0", sa(app, 8080));
    assert!(got.starts_with(&format!("app [{app}]:8080 ")), "{got}");
    assert_eq!(inbound.accepted().len(), 1);
    assert_eq!(hbone.accepted().len(), 1);
    assert_eq!(app_srv.accepted().len(), 1);

    // The ztunnel's transparent leg to the app, from the client's address: the app's
    // SYN-ACK leaves through eth0 towards the client, is hairpinned with the capture mark
    // and delivered to the ztunnel's socket by the IPv6 mark route.
    let leg = Dial {
        mark: Some(o.pod_bypass_mark),
        bind: Some(sa(peer, 0)),
        transparent: true,
        ..Dial::default()
    };
    let got = dial(&ns, leg, sa(app, 8080), T).unwrap();
    assert!(
        got.starts_with(&format!("app [{app}]:8080 [{peer}]:")),
        "{got}"
    );
    assert_eq!(app_srv.accepted().len(), 2);
    assert_eq!(inbound.accepted().len(), 1);
    assert_eq!(r.stats().unwrap().inbound_plain_syn, 1);
}

#[test]
fn ipv6_fails_closed_without_ipv6_listeners() {
    let c = cluster();
    let (r, ns) = setup(&c);
    let o = r.options().clone();
    // The ztunnel of before dual-stack: IPv4 listeners only.
    let out4 = LineServer::serve_listener(
        ztunnel_listener(&ns, false, o.outbound_port, o.pod_bypass_mark),
        "outbound4",
    );
    let in4 = LineServer::serve_listener(
        ztunnel_listener(&ns, false, o.inbound_port, o.pod_bypass_mark),
        "inbound4",
    );
    let srv = server6(&c, "server", 8080, "direct");
    let _app = server6(&c, "app", 8080, "app");

    let res = dial(&ns, Dial::default(), sa(pod6("server"), 8080), SHORT);
    assert!(res.is_err(), "IPv6 outbound escaped the mesh: {res:?}");
    let res = dial(
        &pod_ns(&c, "peer"),
        Dial::default(),
        sa(pod6("app"), 8080),
        SHORT,
    );
    assert!(res.is_err(), "IPv6 inbound reached the app: {res:?}");
    assert!(srv.accepted().is_empty());
    assert!(out4.accepted().is_empty() && in4.accepted().is_empty());
    assert!(r.stats().unwrap().no_listener_drop >= 2);
}

#[test]
fn ipv6_extension_headers_and_unenrolled_addresses_are_dropped() {
    let c = cluster();
    let (r, ns) = setup(&c);
    let o = r.options().clone();
    let out6 = LineServer::serve_listener(
        ztunnel_listener(&ns, true, o.outbound_port, o.pod_bypass_mark),
        "outbound6",
    );
    let in6 = LineServer::serve_listener(
        ztunnel_listener(&ns, true, o.inbound_port, o.pod_bypass_mark),
        "inbound6",
    );
    let srv = server6(&c, "server", 8080, "direct");
    let app_srv = server6(&c, "app", 8080, "app");
    // Sanity: the options header itself is fine between two plain pods.
    let peer_ns = pod_ns(&c, "peer");
    let with_opts = Dial {
        dstopts: true,
        ..Dial::default()
    };
    let got = dial(&peer_ns, with_opts, sa(pod6("server"), 8080), T).unwrap();
    assert!(got.starts_with("direct "), "{got}");
    assert_eq!(srv.accepted().len(), 1);

    // Outbound with a destination options header: neither captured nor passed.
    let res = dial(&ns, with_opts, sa(pod6("server"), 8080), SHORT);
    assert!(res.is_err(), "outbound with an extension header: {res:?}");
    // Inbound with one: the app is not reached.
    let res = dial(&peer_ns, with_opts, sa(pod6("app"), 8080), SHORT);
    assert!(res.is_err(), "inbound with an extension header: {res:?}");
    assert_eq!(srv.accepted().len(), 1);
    assert!(app_srv.accepted().is_empty());
    assert!(out6.accepted().is_empty() && in6.accepted().is_empty());
    assert!(r.stats().unwrap().ipv6_unparsed_drop >= 2);

    // An address the pod has but the ztunnel did not enroll: not a way around the mesh.
    let extra = v6(0, 3);
    ip_in(
        &c.pod("app").unwrap().netns,
        &[
            "-6",
            "addr",
            "add",
            &format!("{extra}/64"),
            "dev",
            "eth0",
            "nodad",
        ],
    )
    .unwrap();
    let from_extra = Dial {
        bind: Some(sa(extra, 0)),
        ..Dial::default()
    };
    let res = dial(&ns, from_extra, sa(pod6("server"), 8080), SHORT);
    assert!(res.is_err(), "outbound from an unenrolled address: {res:?}");
    let res = dial(&peer_ns, Dial::default(), sa(extra, 8080), SHORT);
    assert!(res.is_err(), "inbound to an unenrolled address: {res:?}");
    assert_eq!(srv.accepted().len(), 1);
    assert!(app_srv.accepted().is_empty());
    assert!(r.stats().unwrap().ipv6_unenrolled_drop >= 2);
}

#[test]
fn ipv6_detach_removes_the_rule_and_route_and_leaves_the_pod_plain() {
    let c = cluster();
    let (mut r, ns) = setup(&c);
    let o = r.options().clone();
    let out6 = LineServer::serve_listener(
        ztunnel_listener(&ns, true, o.outbound_port, o.pod_bypass_mark),
        "outbound6",
    );
    let _srv = server6(&c, "server", 8080, "direct");
    let pod_netns = c.pod("app").unwrap().netns.clone();
    let rules =
        || String::from_utf8(ip_in(&pod_netns, &["-6", "rule", "show"]).unwrap().stdout).unwrap();
    let table = o.table.to_string();
    let routes = || {
        ip_in(&pod_netns, &["-6", "route", "show", "table", &table])
            .map(|o| String::from_utf8(o.stdout).unwrap())
            .unwrap_or_default()
    };
    assert!(
        rules().contains(&format!("lookup {}", o.table)),
        "{}",
        rules()
    );
    assert!(routes().contains("local default"), "{}", routes());
    let mut want = r.pod_addresses(KEY).unwrap();
    want.sort();
    assert_eq!(
        want,
        vec![
            IpAddr::V4(c.pod("app").unwrap().ip),
            IpAddr::V6(pod6("app"))
        ]
    );
    assert!(line(&c, "app", sa(pod6("server"), 8080)).starts_with("outbound6 "));

    // A restarted loader adopts the pod (IPv6 enrollment kept in the pinned map).
    drop(r);
    let mut r2 = Redirect::load(options(&c)).unwrap();
    assert!(r2
        .pod_addresses(KEY)
        .unwrap()
        .contains(&IpAddr::V6(pod6("app"))));
    assert!(line(&c, "app", sa(pod6("server"), 8080)).starts_with("outbound6 "));
    // Re-attached with the IPv4 address only: the IPv6 one is unenrolled (and then
    // dropped, as an address the ztunnel does not know).
    r2.attach_pod(&ns, KEY, "eth0", &[c.pod("app").unwrap().ip])
        .unwrap();
    assert!(!r2
        .pod_addresses(KEY)
        .unwrap()
        .contains(&IpAddr::V6(pod6("app"))));
    assert!(dial(&ns, Dial::default(), sa(pod6("server"), 8080), SHORT).is_err());
    r = r2;

    r.detach_pod(KEY, Some(&ns)).unwrap();
    let got = line(&c, "app", sa(pod6("server"), 8080));
    assert!(got.starts_with("direct "), "{got}");
    assert_eq!(out6.accepted().len(), 2);
    assert!(r.pod_addresses(KEY).unwrap().is_empty());
    assert!(
        !rules().contains(&format!("lookup {}", o.table)),
        "{}",
        rules()
    );
    assert!(routes().trim().is_empty(), "{}", routes());
    r.detach_pod(KEY, Some(&ns)).unwrap();
}

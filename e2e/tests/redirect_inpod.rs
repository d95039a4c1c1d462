//! In-pod redirection (needs root, BPF, TCX): `mw_pod_egress` / `mw_pod_ingress` on a
//! pod's own `eth0`, inside its namespace, with plain std listeners made in the pod's
//! namespace (`NetNs::run`) standing in for the ztunnel. Checks outbound capture with the
//! original destination, the bypass mark, inbound plaintext / HBONE / probes, fail closed,
//! the transparent inbound leg, attach with a read-only `/proc/sys`, reload adoption and
//! detach.
use std::io::{BufRead, BufReader};
use std::net::{Ipv4Addr, SocketAddr, TcpListener, TcpStream};
use std::path::Path;
use std::time::Duration;

use meshwork_e2e::netns::{ip_in, netns_path};
use meshwork_e2e::probe::{connect_line, LineServer};
use meshwork_e2e::{Cluster, BPF_PIN_ROOT};
use meshwork_redirect::{ensure_bpffs, local_ipv4_addresses, Redirect, RedirectOptions};
use meshwork_runtime::netns::NetNs;
use socket2::{Domain, Socket, Type};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const T: Duration = Duration::from_secs(2);
const KEY: &str = "uid-app-0001";

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn options(c: &Cluster) -> RedirectOptions {
    let mut o = RedirectOptions::new(c.bpf_node_name("n0").unwrap());
    o.pin_root = BPF_PIN_ROOT.into();
    o
}

/// Two nodes: `app` (captured) on n0, `peer` and `server` on n1.
fn cluster() -> Cluster {
    Cluster::builder()
        .nodes(2)
        .pod("app", 0)
        .pod("peer", 1)
        .pod("server", 1)
        .build()
        .unwrap()
}

fn pod_ns(c: &Cluster, pod: &str) -> NetNs {
    NetNs::open(netns_path(&c.pod(pod).unwrap().netns)).unwrap()
}

/// Loads the programs (from the test's own namespace: loading does not depend on it),
/// excludes the node's addresses, and captures `app` in its namespace.
fn setup(c: &Cluster) -> (Redirect, NetNs) {
    ensure_bpffs(Path::new("/sys/fs/bpf")).unwrap();
    let mut r = Redirect::load(options(c)).unwrap();
    for ip in c.in_netns("n0", local_ipv4_addresses).unwrap().unwrap() {
        r.exclude_destination(ip).unwrap();
    }
    let ns = pod_ns(c, "app");
    let app = c.pod("app").unwrap().ip;
    r.attach_pod(&ns, KEY, "eth0", &[app]).unwrap();
    // Idempotent.
    r.attach_pod(&ns, KEY, "eth0", &[app]).unwrap();
    (r, ns)
}

/// A listener on 0.0.0.0:port inside `ns`, as the ztunnel opens them: IP_TRANSPARENT,
/// SO_REUSEPORT, and the bypass mark.
fn ztunnel_listener(ns: &NetNs, port: u16, mark: u32) -> TcpListener {
    ns.run(|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.set_ip_transparent_v4(true)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_mark(mark)?;
        s.bind(&sa(Ipv4Addr::UNSPECIFIED, port).into())?;
        s.listen(64)?;
        Ok::<TcpListener, std::io::Error>(s.into())
    })
    .unwrap()
    .unwrap()
}

fn line(c: &Cluster, from: &str, dst: SocketAddr) -> String {
    connect_line(c, from, dst, T)
        .unwrap()
        .unwrap_or_else(|e| panic!("{from} -> {dst}: {e}"))
}

/// A socket made in `ns` with `mark` (and IP_TRANSPARENT bound to `bind` when given),
/// connected to `dst`; returns the line the server answered.
fn ztunnel_dial(
    ns: &NetNs,
    mark: u32,
    bind: Option<SocketAddr>,
    dst: SocketAddr,
) -> std::io::Result<String> {
    let s = ns
        .run(|| Socket::new(Domain::IPV4, Type::STREAM, None))
        .unwrap()?;
    s.set_mark(mark)?;
    if let Some(b) = bind {
        s.set_ip_transparent_v4(true)?;
        s.bind(&b.into())?;
    }
    s.connect_timeout(&dst.into(), T)?;
    let stream: TcpStream = s.into();
    stream.set_read_timeout(Some(T))?;
    let mut l = String::new();
    BufReader::new(stream).read_line(&mut l)?;
    Ok(l.trim_end().to_string())
}

fn read_in(ns: &NetNs, path: &str) -> String {
    ns.run(|| std::fs::read_to_string(path))
        .unwrap()
        .unwrap()
        .trim()
        .to_string()
}

#[test]
fn outbound_is_captured_in_the_pod_and_the_bypass_mark_is_not() {
    let c = cluster();
    let (r, ns) = setup(&c);
    let o = r.options().clone();
    let outbound = LineServer::serve_listener(
        ztunnel_listener(&ns, o.outbound_port, o.pod_bypass_mark),
        "outbound",
    );
    let app = c.pod("app").unwrap().ip;
    let server = c.pod("server").unwrap().ip;
    let _server = LineServer::plain(&c, "server", 8080, "direct").unwrap();

    // Enrolled pod → service VIP and → remote pod: the in-pod 15001 listener, with the
    // original destination as the accepted socket's local address.
    let got = line(&c, "app", sa(VIP, 80));
    assert!(
        got.starts_with(&format!("outbound {VIP}:80 {app}:")),
        "{got}"
    );
    let got = line(&c, "app", sa(server, 8080));
    assert!(
        got.starts_with(&format!("outbound {server}:8080 {app}:")),
        "{got}"
    );
    assert_eq!(outbound.accepted().len(), 2);

    // The ztunnel's own socket (bypass mark; other bits of the mark do not matter):
    // straight to the server, from the pod's own address.
    let got = ztunnel_dial(&ns, o.pod_bypass_mark | 0x1, None, sa(server, 8080)).unwrap();
    assert!(
        got.starts_with(&format!("direct {server}:8080 {app}:")),
        "{got}"
    );
    assert_eq!(outbound.accepted().len(), 2);

    // The node's addresses are reached directly.
    let gw = c.node("n0").unwrap().gateway;
    let _node = LineServer::plain(&c, "n0", 9000, "node").unwrap();
    let got = line(&c, "app", sa(gw, 9000));
    assert!(got.starts_with("node "), "{got}");
    assert_eq!(outbound.accepted().len(), 2);

    let stats = r.stats().unwrap();
    assert!(stats.outbound_syn >= 2, "{stats:?}");
    assert!(stats.hairpin >= 2, "{stats:?}");
    drop(r);
}

#[test]
fn inbound_plaintext_hbone_probes_and_the_transparent_leg() {
    let c = cluster();
    let (r, ns) = setup(&c);
    let o = r.options().clone();
    let inbound = LineServer::serve_listener(
        ztunnel_listener(&ns, o.inbound_port, o.pod_bypass_mark),
        "inbound",
    );
    let hbone = LineServer::serve_listener(
        ztunnel_listener(&ns, o.hbone_port, o.pod_bypass_mark),
        "hbone",
    );
    let app_srv = LineServer::plain(&c, "app", 8080, "app").unwrap();
    let app = c.pod("app").unwrap().ip;
    let peer = c.pod("peer").unwrap().ip;

    // From another namespace to the app's port: the in-pod 15006 listener, which sees
    // the original destination and the real client, and whose replies reach the client.
    let got = line(&c, "peer", sa(app, 8080));
    assert!(
        got.starts_with(&format!("inbound {app}:8080 {peer}:")),
        "{got}"
    );
    // To 15008: the in-pod HBONE listener directly.
    let got = line(&c, "peer", sa(app, o.hbone_port));
    assert!(
        got.starts_with(&format!("hbone {app}:{} {peer}:", o.hbone_port)),
        "{got}"
    );
    // From a node address (kubelet probe): the app itself.
    let got = line(&c, "n0", sa(app, 8080));
    assert!(got.starts_with(&format!("app {app}:8080 ")), "{got}");
    assert_eq!(inbound.accepted().len(), 1);
    assert_eq!(hbone.accepted().len(), 1);

    // The ztunnel's transparent upstream leg: bound to the remote client's address inside
    // the pod, to the app over lo. The app sees the real client; its SYN-ACK (out of eth0
    // towards the remote address) is captured and delivered to the ztunnel's socket.
    let got = ztunnel_dial(&ns, o.pod_bypass_mark, Some(sa(peer, 0)), sa(app, 8080)).unwrap();
    assert!(got.starts_with(&format!("app {app}:8080 {peer}:")), "{got}");
    assert_eq!(app_srv.accepted().len(), 2);
    assert_eq!(inbound.accepted().len(), 1);

    let stats = r.stats().unwrap();
    assert_eq!(stats.inbound_plain_syn, 1, "{stats:?}");
    assert!(stats.marked >= 1, "{stats:?}");
}

#[test]
fn fails_closed_without_in_pod_listeners() {
    let c = cluster();
    let (r, _ns) = setup(&c);
    let _app = LineServer::plain(&c, "app", 8080, "app").unwrap();
    let server = c.pod("server").unwrap().ip;
    let srv = LineServer::plain(&c, "server", 8080, "direct").unwrap();
    let app = c.pod("app").unwrap().ip;
    let short = Duration::from_millis(800);

    // Outbound with no 15001 listener in the pod: the SYN is dropped, nothing escapes.
    let res = connect_line(&c, "app", sa(server, 8080), short).unwrap();
    assert!(res.is_err(), "outbound escaped the mesh: {res:?}");
    assert!(srv.accepted().is_empty());
    // Inbound with no 15006 listener: the app is not reached in plaintext.
    let res = connect_line(&c, "peer", sa(app, 8080), short).unwrap();
    assert!(
        res.is_err(),
        "inbound reached the app around the mesh: {res:?}"
    );
    assert!(r.stats().unwrap().no_listener_drop >= 2);
}

/// Runs `f` on a thread with a private mount namespace where `/proc/sys` is read-only
/// (as kubelet mounts it in a non-privileged container).
fn with_read_only_proc_sys<T: Send>(f: impl FnOnce() -> T + Send) -> T {
    std::thread::scope(|s| {
        s.spawn(|| {
            // SAFETY: unshare/mount on this thread's own (new) mount namespace.
            unsafe {
                assert_eq!(libc::unshare(libc::CLONE_NEWNS), 0, "unshare");
                let root = c"/";
                let none = c"none";
                assert_eq!(
                    libc::mount(
                        none.as_ptr(),
                        root.as_ptr(),
                        std::ptr::null(),
                        libc::MS_REC | libc::MS_PRIVATE,
                        std::ptr::null(),
                    ),
                    0,
                    "make-rprivate"
                );
                let ps = c"/proc/sys";
                assert_eq!(
                    libc::mount(
                        ps.as_ptr(),
                        ps.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND,
                        std::ptr::null(),
                    ),
                    0,
                    "bind /proc/sys"
                );
                assert_eq!(
                    libc::mount(
                        std::ptr::null(),
                        ps.as_ptr(),
                        std::ptr::null(),
                        libc::MS_BIND | libc::MS_REMOUNT | libc::MS_RDONLY,
                        std::ptr::null(),
                    ),
                    0,
                    "remount /proc/sys read-only"
                );
            }
            f()
        })
        .join()
        .unwrap()
    })
}

#[test]
fn attach_sets_accept_local_with_a_read_only_proc_sys() {
    let c = cluster();
    ensure_bpffs(Path::new("/sys/fs/bpf")).unwrap();
    let mut r = Redirect::load(options(&c)).unwrap();
    let ns = pod_ns(&c, "app");
    let node_ns = NetNs::open(netns_path(&c.node("n0").unwrap().netns)).unwrap();
    let app = c.pod("app").unwrap().ip;
    let accept_local = "/proc/sys/net/ipv4/conf/eth0/accept_local";
    let vp_accept_local = format!(
        "/proc/sys/net/ipv4/conf/{}/accept_local",
        c.pod("app").unwrap().host_veth
    );
    assert_eq!(read_in(&ns, accept_local), "0");
    assert_eq!(read_in(&node_ns, &vp_accept_local), "0");
    let host_veth = c.pod("app").unwrap().host_veth.clone();
    with_read_only_proc_sys(|| {
        // The setup can really fail: a write is refused here.
        let e = ns
            .run(|| std::fs::write(accept_local, b"1"))
            .unwrap()
            .unwrap_err();
        assert_eq!(e.raw_os_error(), Some(libc::EROFS), "{e}");
        r.attach_pod(&ns, KEY, "eth0", &[app]).unwrap();
        // Node mode too (issue #15 item 1).
        node_ns.run(|| r.attach(&host_veth)).unwrap().unwrap();
        node_ns.run(|| r.detach(&host_veth)).unwrap().unwrap();
    });
    assert_eq!(read_in(&ns, accept_local), "1");
    assert_eq!(read_in(&node_ns, &vp_accept_local), "1");
    r.detach_pod(KEY, Some(&ns)).unwrap();
    assert_eq!(read_in(&ns, accept_local), "0");
}

#[test]
fn reload_adopts_pod_links_and_detach_leaves_the_pod_plain() {
    let c = cluster();
    let (r, ns) = setup(&c);
    let o = r.options().clone();
    let outbound = LineServer::serve_listener(
        ztunnel_listener(&ns, o.outbound_port, o.pod_bypass_mark),
        "outbound",
    );
    let app = c.pod("app").unwrap().ip;
    let server = c.pod("server").unwrap().ip;
    let _server = LineServer::plain(&c, "server", 8080, "direct").unwrap();
    let pod_netns = c.pod("app").unwrap().netns.clone();
    let rules =
        || String::from_utf8(ip_in(&pod_netns, &["-4", "rule", "show"]).unwrap().stdout).unwrap();
    assert!(
        rules().contains(&format!("lookup {}", o.table)),
        "{}",
        rules()
    );
    assert!(line(&c, "app", sa(server, 8080)).starts_with("outbound "));

    // "ztunnel restart": a new loader adopts the pinned pod links and keeps capturing.
    drop(r);
    let mut r = Redirect::load(options(&c)).unwrap();
    assert_eq!(r.pinned_pods().unwrap(), vec![KEY.to_string()]);
    assert_eq!(
        r.pod_addresses(KEY).unwrap(),
        vec![std::net::IpAddr::V4(app)]
    );
    assert!(line(&c, "app", sa(server, 8080)).starts_with("outbound "));
    assert_eq!(outbound.accepted().len(), 2);
    // What a restarted ztunnel does next: attach the pod again (same sandbox). The adopted
    // links already run this loader's programs there: nothing to attach, no `EEXIST`.
    r.attach_pod(&ns, KEY, "eth0", &[app]).unwrap();
    assert!(line(&c, "app", sa(server, 8080)).starts_with("outbound "));
    assert_eq!(outbound.accepted().len(), 3);

    // Detach knowing only the key and the namespace: links, enrollment, rule, route gone.
    r.detach_pod(KEY, Some(&ns)).unwrap();
    let got = line(&c, "app", sa(server, 8080));
    assert!(
        got.starts_with(&format!("direct {server}:8080 {app}:")),
        "{got}"
    );
    assert_eq!(outbound.accepted().len(), 3);
    assert!(r.pinned_pods().unwrap().is_empty());
    assert!(r.pod_addresses(KEY).unwrap().is_empty());
    assert!(!r.pods_pin_dir().join(KEY).exists());
    assert!(
        !rules().contains(&format!("lookup {}", o.table)),
        "{}",
        rules()
    );
    let routes = ip_in(
        &pod_netns,
        &["-4", "route", "show", "table", &o.table.to_string()],
    );
    assert!(
        routes.map(|o| o.stdout.is_empty()).unwrap_or(true),
        "route left in the pod's table"
    );
    // Detaching again: nothing left, not an error.
    r.detach_pod(KEY, Some(&ns)).unwrap();
    r.detach_pod(KEY, None).unwrap();
}

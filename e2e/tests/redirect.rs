//! The BPF redirection in a real mini-cluster (needs root, BPF, TCX): enrolled pods'
//! outbound TCP lands on the node's transparent outbound listener with the original
//! destination recovered; inbound 15008 / other ports land on the HBONE / plaintext
//! listeners; non-enrolled pods go straight through; enrollment changes apply live; with
//! no listener the redirect fails closed; a reload adopts the pins.
use std::io::{Read, Write};
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::time::{Duration, Instant};

use meshwork_e2e::probe::{connect_line, LineServer};
use meshwork_e2e::{Cluster, BPF_PIN_ROOT};
use meshwork_redirect::{ensure_bpffs, install_local_routing, Redirect, RedirectOptions};

const VIP: Ipv4Addr = Ipv4Addr::new(10, 96, 0, 10);
const T: Duration = Duration::from_secs(2);

fn options(cluster: &Cluster, node: &str) -> RedirectOptions {
    let mut o = RedirectOptions::new(cluster.bpf_node_name(node).unwrap());
    o.pin_root = BPF_PIN_ROOT.into();
    o
}

/// Loads the redirection into a node: routing, programs on the uplink and every pod veth,
/// node addresses excluded.
fn setup_node(cluster: &Cluster, node: &str) -> Redirect {
    ensure_bpffs(Path::new("/sys/fs/bpf")).unwrap();
    let opts = options(cluster, node);
    let mut ifaces = vec![cluster.node(node).unwrap().uplink.clone()];
    ifaces.extend(cluster.pods_on(node).iter().map(|p| p.host_veth.clone()));
    cluster
        .in_netns(node, move || {
            install_local_routing(&opts).unwrap();
            let mut r = Redirect::load(opts).unwrap();
            for i in &ifaces {
                r.attach(i).unwrap();
            }
            r.exclude_local_addresses().unwrap();
            r
        })
        .unwrap()
}

fn sa(ip: Ipv4Addr, port: u16) -> SocketAddr {
    SocketAddr::new(ip.into(), port)
}

fn line(cluster: &Cluster, from: &str, dst: SocketAddr) -> String {
    connect_line(cluster, from, dst, T)
        .unwrap()
        .unwrap_or_else(|e| panic!("{from} -> {dst}: {e}"))
}

#[test]
fn outbound_capture_recovers_original_destination_and_bypasses_non_enrolled() {
    let c = Cluster::builder()
        .nodes(2)
        .pod("client", 0)
        .pod("plain", 0)
        .pod("server", 1)
        .build()
        .unwrap();
    let mut r0 = setup_node(&c, "n0");
    let _r1 = setup_node(&c, "n1");
    let outbound = LineServer::transparent(&c, "n0", 15001, "captured").unwrap();
    let server_ip = c.pod("server").unwrap().ip;
    let _server = LineServer::plain(&c, "server", 8080, "direct").unwrap();
    let client = c.pod("client").unwrap().ip;
    r0.enroll(client).unwrap();

    // Enrolled pod → service VIP: captured, original destination recovered.
    let got = line(&c, "client", sa(VIP, 80));
    assert!(
        got.starts_with(&format!("captured {VIP}:80 {client}:")),
        "{got}"
    );
    // Enrolled pod → pod IP on another node: captured too.
    let got = line(&c, "client", sa(server_ip, 8080));
    assert!(
        got.starts_with(&format!("captured {server_ip}:8080 {client}:")),
        "{got}"
    );
    assert_eq!(outbound.accepted().len(), 2);

    // Non-enrolled pod: straight to the server.
    let got = line(&c, "plain", sa(server_ip, 8080));
    let plain = c.pod("plain").unwrap().ip;
    assert!(
        got.starts_with(&format!("direct {server_ip}:8080 {plain}:")),
        "{got}"
    );
    assert_eq!(outbound.accepted().len(), 2);

    // The node itself is never captured.
    let gw = c.node("n0").unwrap().gateway;
    let _node_srv = LineServer::plain(&c, "n0", 9000, "node").unwrap();
    let got = line(&c, "client", sa(gw, 9000));
    assert!(got.starts_with("node "), "{got}");

    let stats = r0.stats().unwrap();
    assert!(stats.outbound_syn >= 2, "{stats:?}");
}

#[test]
fn inbound_capture_splits_hbone_and_plaintext() {
    let c = Cluster::builder()
        .nodes(2)
        .pod("client", 0)
        .pod("neighbour", 1)
        .pod("server", 1)
        .build()
        .unwrap();
    let _r0 = setup_node(&c, "n0");
    // n1 is set up the way ztunnel would: uplink attached, pods attached as enrolled.
    let opts = options(&c, "n1");
    let server = c.pod("server").unwrap().ip;
    let neighbour_veth = c.pod("neighbour").unwrap().host_veth.clone();
    let mut r1 = c
        .in_netns("n1", move || {
            install_local_routing(&opts).unwrap();
            let mut r = Redirect::load(opts).unwrap();
            r.attach("eth0").unwrap();
            r.attach(&neighbour_veth).unwrap();
            r.exclude_local_addresses().unwrap();
            let iface = r.attach_and_enroll(server).unwrap();
            (r, iface)
        })
        .unwrap();
    assert_eq!(r1.1, c.pod("server").unwrap().host_veth);
    let r1 = &mut r1.0;
    let hbone = LineServer::transparent(&c, "n1", 15008, "hbone").unwrap();
    let inbound = LineServer::transparent(&c, "n1", 15006, "inbound").unwrap();

    // Cross node, arriving on the uplink.
    let got = line(&c, "client", sa(server, 15008));
    assert!(got.starts_with(&format!("hbone {server}:15008 ")), "{got}");
    let got = line(&c, "client", sa(server, 8080));
    assert!(got.starts_with(&format!("inbound {server}:8080 ")), "{got}");
    // Same node, arriving on the neighbour's veth.
    let got = line(&c, "neighbour", sa(server, 8080));
    assert!(got.starts_with(&format!("inbound {server}:8080 ")), "{got}");
    // The node itself (ztunnel reaching a same-node pod over HBONE): hairpinned from the
    // veth's egress back to ingress, onto the HBONE listener.
    let got = line(&c, "n1", sa(server, 15008));
    assert!(got.starts_with(&format!("hbone {server}:15008 ")), "{got}");
    // Other node-originated traffic to the pod is not captured (ztunnel's upstream leg).
    let _direct = LineServer::plain(&c, "server", 9090, "direct").unwrap();
    let got = line(&c, "n1", sa(server, 9090));
    assert!(got.starts_with(&format!("direct {server}:9090 ")), "{got}");
    assert_eq!(hbone.accepted().len(), 2);
    assert_eq!(inbound.accepted().len(), 2);
    let stats = r1.stats().unwrap();
    assert_eq!(stats.inbound_hbone_syn, 2, "{stats:?}");
    assert!(stats.hairpin >= 1, "{stats:?}");
    assert_eq!(stats.inbound_plain_syn, 2, "{stats:?}");
}

#[test]
fn enrollment_toggles_live_and_fails_closed_without_listener() {
    let c = Cluster::builder()
        .nodes(1)
        .pod("client", 0)
        .pod("server", 0)
        .build()
        .unwrap();
    let mut r = setup_node(&c, "n0");
    let client = c.pod("client").unwrap().ip;
    let server = c.pod("server").unwrap().ip;
    let _srv = LineServer::plain(&c, "server", 8080, "direct").unwrap();
    let dst = sa(server, 8080);

    // Not enrolled: direct.
    assert!(line(&c, "client", dst).starts_with("direct "));

    // Enrolled, no ztunnel listening: the SYN is dropped, nothing reaches the server.
    r.enroll(client).unwrap();
    let res = connect_line(&c, "client", dst, Duration::from_millis(800)).unwrap();
    assert!(res.is_err(), "connection escaped the mesh: {res:?}");
    assert!(r.stats().unwrap().no_listener_drop >= 1);

    // The listener appears: captured within a second.
    let outbound = LineServer::transparent(&c, "n0", 15001, "captured").unwrap();
    let start = Instant::now();
    let got = line(&c, "client", dst);
    assert!(
        got.starts_with(&format!("captured {dst} {client}:")),
        "{got}"
    );
    assert!(start.elapsed() < Duration::from_secs(1));

    // Unenrolled live: direct again; sync brings it back.
    r.unenroll(client).unwrap();
    assert!(line(&c, "client", dst).starts_with("direct "));
    r.sync([client]).unwrap();
    assert!(line(&c, "client", dst).starts_with("captured "));
    assert_eq!(r.enrolled().unwrap(), vec![client]);
    r.sync([]).unwrap();
    assert!(r.enrolled().unwrap().is_empty());
    assert!(line(&c, "client", dst).starts_with("direct "));
    assert_eq!(outbound.accepted().len(), 2);
}

#[test]
fn reload_adopts_pins_keeping_enrollment_and_established_connections() {
    let c = Cluster::builder()
        .nodes(1)
        .pod("client", 0)
        .pod("server", 0)
        .build()
        .unwrap();
    let mut r = setup_node(&c, "n0");
    let client = c.pod("client").unwrap().ip;
    let server = c.pod("server").unwrap().ip;
    let dst = sa(server, 8080);
    // A long-lived captured connection through a hand-made transparent listener.
    let listener = c
        .in_netns("n0", || {
            let s = socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None)?;
            s.set_ip_transparent_v4(true)?;
            s.set_reuse_address(true)?;
            s.bind(&sa(Ipv4Addr::UNSPECIFIED, 15001).into())?;
            s.listen(16)?;
            Ok::<std::net::TcpListener, std::io::Error>(s.into())
        })
        .unwrap()
        .unwrap();
    r.enroll(client).unwrap();
    let mut conn = c
        .in_netns("client", move || {
            std::net::TcpStream::connect_timeout(&dst, T)
        })
        .unwrap()
        .unwrap();
    let (mut proxied, _) = listener.accept().unwrap();
    assert_eq!(proxied.local_addr().unwrap(), dst);
    conn.set_read_timeout(Some(T)).unwrap();
    proxied.set_read_timeout(Some(T)).unwrap();

    // "ztunnel restart": the loader goes away, a new one loads from the pins.
    drop(r);
    let opts = options(&c, "n0");
    let r2 = c
        .in_netns("n0", move || Redirect::load(opts).unwrap())
        .unwrap();
    assert_eq!(r2.enrolled().unwrap(), vec![client]);
    let mut attached = r2.attached();
    attached.sort();
    assert_eq!(attached, vec!["eth0", "vp0", "vp1"]);

    // The established connection still flows both ways.
    let mut buf = [0u8; 5];
    conn.write_all(b"hello").unwrap();
    proxied.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"hello");
    proxied.write_all(b"world").unwrap();
    conn.read_exact(&mut buf).unwrap();
    assert_eq!(&buf, b"world");
    // New connections are still captured (the links were never detached).
    drop(c.in_netns("client", move || {
        std::net::TcpStream::connect_timeout(&dst, T)
    }));
    listener.set_nonblocking(false).unwrap();
    let (second, _) = listener.accept().unwrap();
    assert_eq!(second.local_addr().unwrap(), dst);
}

#[test]
fn sync_pods_attaches_enrolls_and_detaches_by_route() {
    let c = Cluster::builder()
        .nodes(1)
        .pod("client", 0)
        .pod("other", 0)
        .pod("server", 0)
        .build()
        .unwrap();
    let opts = options(&c, "n0");
    let mut r = c
        .in_netns("n0", move || {
            install_local_routing(&opts).unwrap();
            let mut r = Redirect::load(opts).unwrap();
            r.attach("eth0").unwrap();
            r.exclude_local_addresses().unwrap();
            r
        })
        .unwrap();
    let client = c.pod("client").unwrap().ip;
    let other = c.pod("other").unwrap().ip;
    let server = c.pod("server").unwrap().ip;
    let _srv = LineServer::plain(&c, "server", 8080, "direct").unwrap();
    let _outbound = LineServer::transparent(&c, "n0", 15001, "captured").unwrap();
    let dst = sa(server, 8080);

    // sync_pods runs `ip route get`: call it from the node namespace, like ztunnel.
    let (r2, ifaces) = c
        .in_netns("n0", move || {
            let ifaces = r.sync_pods([client, other]).unwrap();
            (r, ifaces)
        })
        .unwrap();
    r = r2;
    assert_eq!(ifaces.into_iter().collect::<Vec<_>>(), vec!["vp0", "vp1"]);
    assert!(line(&c, "client", dst).starts_with("captured "));
    assert!(line(&c, "other", dst).starts_with("captured "));

    let (r2, ifaces) = c
        .in_netns("n0", move || {
            let ifaces = r.sync_pods([other]).unwrap();
            (r, ifaces)
        })
        .unwrap();
    r = r2;
    assert_eq!(ifaces.into_iter().collect::<Vec<_>>(), vec!["vp1"]);
    assert_eq!(r.enrolled().unwrap(), vec![other]);
    let mut attached = r.attached();
    attached.sort();
    assert_eq!(attached, vec!["eth0", "vp1"]);
    assert!(line(&c, "client", dst).starts_with("direct "));
    assert!(line(&c, "other", dst).starts_with("captured "));
}

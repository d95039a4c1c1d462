//! The kind-ptp network flavour (root): pods set up by the real reference CNI plugins
//! (Debian's containernetworking-plugins in /usr/lib/cni), services as kube-proxy chains.
use std::collections::BTreeSet;
use std::net::{Ipv4Addr, SocketAddr};
use std::path::Path;
use std::process::Command;
use std::time::Duration;

use meshwork_e2e::kind_ptp::NETWORK_NAME;
use meshwork_e2e::netns::list_netns;
use meshwork_e2e::probe::{connect_line, LineServer};
use meshwork_e2e::{kube_proxy, Cluster, ClusterBuilderExt, ClusterExt, Network};

const WAIT: Duration = Duration::from_secs(3);

fn in_ns(c: &Cluster, target: &str, args: &[&str]) -> String {
    let out = c
        .exec_in(target, Command::new(args[0]).args(&args[1..]))
        .unwrap();
    String::from_utf8_lossy(&out.stdout).into_owned()
}

fn host_local_ips(dir: &Path) -> BTreeSet<String> {
    std::fs::read_dir(dir.join(NETWORK_NAME))
        .map(|d| {
            d.flatten()
                .map(|e| e.file_name().to_string_lossy().into_owned())
                .filter(|n| n.parse::<Ipv4Addr>().is_ok())
                .collect()
        })
        .unwrap_or_default()
}

#[test]
fn kind_ptp_pods_get_host_local_addresses_and_reach_each_other() {
    let c = Cluster::builder()
        .nodes(2)
        .pods_per_node(2)
        .network(Network::KindPtp)
        .build()
        .unwrap();
    let kind = c.cni().expect("kind-ptp has a CNI runtime");
    let v = kind.pod_network(0).unwrap().version(0).unwrap();
    assert!(v.supported_versions.iter().any(|s| s == "1.0.0"), "{v:?}");
    let leased = host_local_ips(kind.data_dir());
    for p in c.pods() {
        let node = c.node(&p.node).unwrap();
        // host-local's lease, inside the node's range, is what eth0 carries (ptp keeps the
        // range's /24), and its lease file names the container.
        assert_eq!(p.ip.octets()[..3], node.gateway.octets()[..3], "{p:?}");
        assert!(
            leased.contains(&p.ip.to_string()),
            "{p:?} not in {leased:?}"
        );
        let lease =
            std::fs::read_to_string(kind.data_dir().join(NETWORK_NAME).join(p.ip.to_string()))
                .unwrap();
        assert!(lease.contains(&p.netns), "{lease}");
        let addr = in_ns(
            &c,
            &p.name,
            &["ip", "-4", "-o", "addr", "show", "dev", "eth0"],
        );
        assert!(addr.contains(&format!("{}/24", p.ip)), "{}: {addr}", p.name);
        // loopback ran: lo is up.
        let lo = in_ns(&c, &p.name, &["ip", "-o", "link", "show", "lo"]);
        assert!(lo.contains(",UP"), "{}: {lo}", p.name);
        // ptp's host veth, with the pod's /32 route through it.
        let route = in_ns(
            &c,
            &p.node,
            &["ip", "-4", "-o", "route", "get", &p.ip.to_string()],
        );
        assert!(
            route.contains(&format!("dev {} ", p.host_veth)),
            "{}: {route}",
            p.name
        );
        kind.check_pod(&p.name).unwrap();
    }
    assert_eq!(leased.len(), c.pods().len(), "{leased:?}");

    let _srv0 = LineServer::plain(&c, "n0-p1", 8080, "p01").unwrap();
    let _srv1 = LineServer::plain(&c, "n1-p1", 8080, "p11").unwrap();
    for (from, to, tag) in [
        ("n0-p0", "n0-p1", "p01"),
        ("n0-p0", "n1-p1", "p11"),
        ("n1-p0", "n0-p1", "p01"),
    ] {
        let dst = SocketAddr::new(c.pod(to).unwrap().ip.into(), 8080);
        let line = connect_line(&c, from, dst, WAIT).unwrap().unwrap();
        // Pod to pod keeps the source address (no masquerade inside the cluster CIDR).
        let src = c.pod(from).unwrap().ip;
        assert!(
            line.starts_with(&format!("{tag} {dst} {src}:")),
            "{from} -> {to}: {line}"
        );
    }
}

#[test]
fn kind_ptp_service_vip_balances_over_kube_proxy_dnat_chains() {
    let vip = Ipv4Addr::new(10, 96, 0, 20);
    let empty = Ipv4Addr::new(10, 96, 0, 21);
    let c = Cluster::builder()
        .nodes(2)
        .pod("client", 0)
        .pod("web-a", 0)
        .pod("web-b", 1)
        .service("web", vip, 80, 8080, &["web-a", "web-b"])
        .service("empty", empty, 80, 8080, &[])
        .network(Network::KindPtp)
        .build()
        .unwrap();
    let _a = LineServer::plain(&c, "web-a", 8080, "a").unwrap();
    let _b = LineServer::plain(&c, "web-b", 8080, "b").unwrap();
    let client = c.pod("client").unwrap().ip;
    let mut seen = BTreeSet::new();
    // 24 connections: both endpoints are chosen unless p = 2 * 2^-24.
    for _ in 0..24 {
        let line = connect_line(&c, "client", SocketAddr::from((vip, 80)), WAIT)
            .unwrap()
            .unwrap();
        let mut f = line.split(' ');
        let (tag, local, peer) = (f.next().unwrap(), f.next().unwrap(), f.next().unwrap());
        // DNAT: the endpoint accepted on its own address; the client's address is kept.
        let backend = c
            .pod(if tag == "a" { "web-a" } else { "web-b" })
            .unwrap()
            .ip;
        assert_eq!(local, format!("{backend}:8080"), "{line}");
        assert!(peer.starts_with(&format!("{client}:")), "{line}");
        seen.insert(tag.to_string());
    }
    assert_eq!(seen.len(), 2, "one endpoint never chosen: {seen:?}");
    let rules = kube_proxy::save(&c.node("n0").unwrap().netns).unwrap();
    let svc_jumps: Vec<&str> = rules
        .lines()
        .filter(|l| l.contains("-A KUBE-SVC-") && l.contains("-j KUBE-SEP-"))
        .collect();
    assert_eq!(svc_jumps.len(), 2, "{rules}");
    assert!(svc_jumps[0].contains("--probability 0.5"), "{rules}");
    // Every KUBE-SEP DNAT rule counted packets: the VIP went through the chains.
    let dnat: Vec<&str> = rules.lines().filter(|l| l.contains("-j DNAT")).collect();
    assert_eq!(dnat.len(), 2, "{rules}");
    assert!(dnat.iter().all(|l| !l.starts_with("[0:0]")), "{dnat:?}");
    // A service without endpoints is refused at once (filter KUBE-SERVICES REJECT).
    let r = connect_line(&c, "client", SocketAddr::from((empty, 80)), WAIT).unwrap();
    let e = r.unwrap_err();
    assert_eq!(e.kind(), std::io::ErrorKind::ConnectionRefused, "{e}");
}

#[test]
fn kind_ptp_del_removes_interfaces_and_releases_ipam() {
    let c = Cluster::builder()
        .nodes(1)
        .pods_per_node(2)
        .network(Network::KindPtp)
        .build()
        .unwrap();
    let kind = c.cni().unwrap();
    let p = c.pod("n0-p1").unwrap().clone();
    assert!(host_local_ips(kind.data_dir()).contains(&p.ip.to_string()));
    kind.del_pod("n0-p1").unwrap();
    let links = in_ns(&c, "n0", &["ip", "-o", "link"]);
    assert!(!links.contains(&format!(": {}@", p.host_veth)), "{links}");
    let pod_links = in_ns(&c, "n0-p1", &["ip", "-o", "link"]);
    assert!(!pod_links.contains("eth0"), "{pod_links}");
    let routes = in_ns(&c, "n0", &["ip", "-4", "-o", "route"]);
    assert!(!routes.contains(&format!("{} ", p.ip)), "{routes}");
    let leased = host_local_ips(kind.data_dir());
    assert_eq!(
        leased,
        BTreeSet::from([c.pod("n0-p0").unwrap().ip.to_string()])
    );
    assert!(kind.check_pod("n0-p1").is_err());
    assert!(
        kind.del_pod("n0-p1").is_err(),
        "a second DEL of a gone sandbox"
    );

    // CHECK is the plugins' own: a pod whose address was removed fails it, naming ptp.
    c.exec_in(
        "n0-p0",
        Command::new("ip").args(["addr", "flush", "dev", "eth0"]),
    )
    .unwrap();
    let e = kind.check_pod("n0-p0").unwrap_err().to_string();
    assert!(e.starts_with("CNI plugin ptp CHECK: error "), "{e}");

    // A plugin's error result surfaces with its name and code, and the failed ADD is
    // rolled back (host-local's lease released by the DEL that follows).
    let net = kind.pod_network(0).unwrap();
    let e = net
        .add(
            "bad-sandbox",
            Path::new("/run/netns/meshwork-no-such-netns"),
            "eth0",
            "",
        )
        .unwrap_err()
        .to_string();
    assert!(e.starts_with("CNI plugin ptp ADD: error "), "{e}");
    assert!(e.contains("meshwork-no-such-netns"), "{e}");
    assert_eq!(host_local_ips(kind.data_dir()).len(), 1);
}

fn root_state() -> (BTreeSet<String>, String) {
    let links = Command::new("ip").args(["-o", "link"]).output().unwrap();
    let names = String::from_utf8_lossy(&links.stdout)
        .lines()
        .filter_map(|l| {
            l.split(": ")
                .nth(1)
                .map(|n| n.split('@').next().unwrap_or(n).to_string())
        })
        .collect();
    let rules = Command::new("iptables-save").output().unwrap();
    let rules = String::from_utf8_lossy(&rules.stdout)
        .lines()
        .filter(|l| !l.starts_with('#'))
        .collect::<Vec<_>>()
        .join("\n");
    (names, rules)
}

#[test]
fn kind_ptp_leaves_nothing_behind_even_after_a_panic() {
    let before = root_state();
    let run = std::thread::spawn(|| {
        let c = Cluster::builder()
            .nodes(2)
            .pods_per_node(1)
            .service("web", Ipv4Addr::new(10, 96, 0, 30), 80, 8080, &["n1-p0"])
            .network(Network::KindPtp)
            .build()
            .unwrap();
        let dir = c.cni().unwrap().data_dir().to_path_buf();
        let run = c.run_id().to_string();
        // Unwinding drops the cluster: the runtime's DEL, the namespaces, the state dir.
        std::panic::panic_any((run, dir));
    })
    .join()
    .unwrap_err();
    let (run, dir) = *run.downcast::<(String, std::path::PathBuf)>().unwrap();
    let left: Vec<_> = list_netns()
        .into_iter()
        .filter(|n| n.starts_with(&format!("{run}-")))
        .collect();
    assert!(left.is_empty(), "namespaces left: {left:?}");
    assert!(!dir.exists(), "host-local state left in {}", dir.display());
    assert_eq!(root_state(), before, "the host namespace changed");
}

//! In-pod capture under a root-cgroup socket-LB (needs root, BPF, TCX, cgroup v2).
//!
//! The test makes its own cgroup tree, `<cgroup2>/mw-test-…/kubepods.slice/pod-…`, and
//! attaches an emulation of Cilium's socket-LB (`e2e/socklb-emu`: `connect()` to the VIP
//! is rewritten to the backend) at the tree's top, standing in for the machine's root
//! cgroup (never touched). Clients are processes (`mw-cgroup-connect`) that join a pod's
//! cgroup and network namespace; a plain std listener in the pod stands in for the
//! ztunnel's 15001 listener, as in `redirect_inpod.rs`.
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener};
use std::path::{Path, PathBuf};

use meshwork_e2e::netns::netns_path;
use meshwork_e2e::probe::{Accepted, LineServer};
use meshwork_e2e::socklb::{connect_in_cgroup, ClientResult, EmulatedSocketLb, TestCgroup};
use meshwork_e2e::{Cluster, BPF_PIN_ROOT};
use meshwork_redirect::{ensure_bpffs, local_ipv4_addresses, teardown, Redirect, RedirectOptions};
use meshwork_runtime::netns::NetNs;
use socket2::{Domain, Socket, Type};

const VIP: SocketAddrV4 = SocketAddrV4::new(Ipv4Addr::new(10, 96, 0, 10), 80);
const BACKEND_PORT: u16 = 8080;
const KEY: &str = "uid-app-socklb";

fn client_bin() -> &'static Path {
    Path::new(env!("CARGO_BIN_EXE_mw-cgroup-connect"))
}

fn options(c: &Cluster) -> RedirectOptions {
    let mut o = RedirectOptions::new(c.bpf_node_name("n0").unwrap());
    o.pin_root = BPF_PIN_ROOT.into();
    o
}

/// Two nodes: `app` (captured) and `plain` (not in the mesh) on n0, `server` on n1.
fn cluster() -> Cluster {
    Cluster::builder()
        .nodes(2)
        .pod("app", 0)
        .pod("plain", 0)
        .pod("server", 1)
        .build()
        .unwrap()
}

fn netns_of(c: &Cluster, pod: &str) -> PathBuf {
    netns_path(&c.pod(pod).unwrap().netns)
}

fn ip_of(c: &Cluster, pod: &str) -> Ipv4Addr {
    c.pod(pod).unwrap().ip
}

/// A listener on 0.0.0.0:port inside `ns`, as the ztunnel opens them.
fn ztunnel_listener(ns: &NetNs, port: u16, mark: u32) -> TcpListener {
    ns.run(|| {
        let s = Socket::new(Domain::IPV4, Type::STREAM, None)?;
        s.set_ip_transparent_v4(true)?;
        s.set_reuse_address(true)?;
        s.set_reuse_port(true)?;
        s.set_mark(mark)?;
        s.bind(&SocketAddr::from((Ipv4Addr::UNSPECIFIED, port)).into())?;
        s.listen(64)?;
        Ok::<TcpListener, std::io::Error>(s.into())
    })
    .unwrap()
    .unwrap()
}

/// Fields drop in order: servers and the emulation first, the cgroups (their clients
/// have exited) and the cluster last.
struct Fixture {
    outbound: LineServer,
    _server: LineServer,
    _lb: EmulatedSocketLb,
    r: Redirect,
    /// `<top>/kubepods.slice`: where `mw_pod_connect4` goes.
    pods_cg: PathBuf,
    app_cg: PathBuf,
    plain_cg: PathBuf,
    cg: TestCgroup,
    c: Cluster,
}

impl Fixture {
    /// Cluster, cgroups, the emulated socket-LB (VIP → server:8080) at the test's top
    /// cgroup, the app's in-pod capture and a stand-in 15001 listener. `mw_pod_connect4`
    /// is not attached yet.
    fn new(tag: &str) -> Fixture {
        let c = cluster();
        ensure_bpffs(Path::new("/sys/fs/bpf")).unwrap();
        let mut r = Redirect::load(options(&c)).unwrap();
        for ip in c.in_netns("n0", local_ipv4_addresses).unwrap().unwrap() {
            r.exclude_destination(ip).unwrap();
        }
        let ns = NetNs::open(netns_of(&c, "app")).unwrap();
        r.attach_pod(&ns, KEY, "eth0", &[ip_of(&c, "app")]).unwrap();
        let o = r.options().clone();
        let outbound = LineServer::serve_listener(
            ztunnel_listener(&ns, o.outbound_port, o.pod_bypass_mark),
            "outbound",
        );
        let server = LineServer::plain(&c, "server", BACKEND_PORT, "direct").unwrap();
        let cg = TestCgroup::create(tag).unwrap();
        let pods_cg = cg.child("kubepods.slice").unwrap();
        let app_cg = cg.child("kubepods.slice/pod-app").unwrap();
        let plain_cg = cg.child("kubepods.slice/pod-plain").unwrap();
        let mut lb = EmulatedSocketLb::attach(cg.top()).unwrap();
        lb.add_service(VIP, SocketAddrV4::new(ip_of(&c, "server"), BACKEND_PORT))
            .unwrap();
        Fixture {
            c,
            r,
            cg,
            pods_cg,
            app_cg,
            plain_cg,
            outbound,
            _server: server,
            _lb: lb,
        }
    }

    fn backend(&self) -> SocketAddr {
        SocketAddr::from((ip_of(&self.c, "server"), BACKEND_PORT))
    }

    fn connect(&self, cgroup: &Path, pod: &str, dst: SocketAddrV4) -> ClientResult {
        connect_in_cgroup(client_bin(), cgroup, &netns_of(&self.c, pod), dst.into())
            .unwrap_or_else(|e| panic!("{pod} -> {dst}: {e}"))
    }

    /// The stand-in ztunnel's accepted connection of `client`.
    fn accepted_of(&self, client: &ClientResult) -> Accepted {
        self.outbound
            .accepted()
            .into_iter()
            .find(|a| a.peer == client.local)
            .unwrap_or_else(|| panic!("15001 did not accept {client:?}"))
    }

    fn original(&self, a: &Accepted) -> Option<SocketAddrV4> {
        let (SocketAddr::V4(peer), SocketAddr::V4(local)) = (a.peer, a.local) else {
            panic!("IPv6 {a:?}");
        };
        self.r.original_destination(peer, local)
    }
}

/// (a) The problem, and proof the emulation works: with only the socket-LB, the app's
/// connection to the VIP reaches the in-pod 15001 listener with the *backend* as its
/// destination; nothing recorded the VIP. (d) The app's socket is connected (to the
/// backend, as socket-LB semantics say) and served through the capture.
#[test]
fn a_root_socket_lb_hides_the_vip_from_the_capture() {
    let f = Fixture::new("hides");
    assert!(!f.r.pod_cgroup_attached());
    let app = ip_of(&f.c, "app");
    let got = f.connect(&f.app_cg, "app", VIP);
    assert_eq!(
        got.peer,
        f.backend(),
        "the emulated socket-LB did not rewrite"
    );
    assert_eq!(got.local.ip(), std::net::IpAddr::V4(app));
    assert!(
        got.line
            .starts_with(&format!("outbound {} {app}:", f.backend())),
        "{got:?}"
    );
    let a = f.accepted_of(&got);
    assert_eq!(a.local, f.backend());
    assert_eq!(f.original(&a), None);
}

/// (b) With `mw_pod_connect4` below the socket-LB (in `kubepods.slice`), the accepted
/// connection's original destination is the VIP, taken once; (d) the app is still
/// connected to the backend through the capture; (c) a pod that is not enrolled records
/// nothing, nor does the enrolled pod's process outside the pods' cgroup, nor a
/// connection the socket-LB did not rewrite. The link survives a reload (adopted), is
/// removed by `detach_pod_cgroup`, and by `teardown`.
#[test]
fn mw_pod_connect4_keeps_the_vip_under_a_root_socket_lb() {
    let mut f = Fixture::new("keeps");
    f.r.attach_pod_cgroup(&f.pods_cg).unwrap();
    assert!(f.r.pod_cgroup_attached());
    // Idempotent (replaces the link).
    f.r.attach_pod_cgroup(&f.pods_cg).unwrap();
    let app = ip_of(&f.c, "app");
    assert_eq!(f.r.pod_netns_cookies().unwrap().len(), 1);

    let got = f.connect(&f.app_cg, "app", VIP);
    assert_eq!(got.peer, f.backend());
    assert!(
        got.line
            .starts_with(&format!("outbound {} {app}:", f.backend())),
        "{got:?}"
    );
    let a = f.accepted_of(&got);
    assert_eq!(a.local, f.backend());
    assert_eq!(f.original(&a), Some(VIP));
    assert_eq!(
        f.original(&a),
        None,
        "the entry is taken by the first lookup"
    );
    assert_eq!(
        f.r.recorded_connects().unwrap(),
        0,
        "recorded connect left behind"
    );

    // A connection the socket-LB does not rewrite: nothing to remember.
    let backend = match f.backend() {
        SocketAddr::V4(b) => b,
        SocketAddr::V6(_) => unreachable!(),
    };
    let got = f.connect(&f.app_cg, "app", backend);
    assert_eq!(f.original(&f.accepted_of(&got)), None);
    assert_eq!(f.r.recorded_connects().unwrap(), 0);

    // (c) A pod not in the mesh, in the pods' cgroup: socket-LB'd straight to the backend
    // (not captured), and nothing recorded for it.
    let plain = ip_of(&f.c, "plain");
    let got = f.connect(&f.plain_cg, "plain", VIP);
    assert!(
        got.line
            .starts_with(&format!("direct {} {plain}:", f.backend())),
        "{got:?}"
    );
    assert_eq!(f.r.recorded_connects().unwrap(), 0);
    // The enrolled pod's namespace, but a process outside the cgroup the program is
    // attached to: captured with the backend, no original destination.
    let outside = f.cg.child("system.slice").unwrap();
    let got = f.connect(&outside, "app", VIP);
    assert_eq!(f.original(&f.accepted_of(&got)), None);

    // "ztunnel restart": the pinned link is adopted (the new program swapped in).
    let opts = f.r.options().clone();
    drop(std::mem::replace(
        &mut f.r,
        Redirect::load(opts.clone()).unwrap(),
    ));
    assert!(f.r.pod_cgroup_attached());
    let got = f.connect(&f.app_cg, "app", VIP);
    assert_eq!(f.original(&f.accepted_of(&got)), Some(VIP));

    // Detached: the VIP is lost again (and the pin is gone).
    f.r.detach_pod_cgroup().unwrap();
    assert!(!f.r.pod_cgroup_attached());
    let got = f.connect(&f.app_cg, "app", VIP);
    assert_eq!(f.original(&f.accepted_of(&got)), None);

    // Detaching the pod forgets its namespace.
    f.r.attach_pod_cgroup(&f.pods_cg).unwrap();
    f.r.detach_pod(KEY, None).unwrap();
    assert!(f.r.pod_netns_cookies().unwrap().is_empty());
    teardown(&opts).unwrap();
    assert!(!f.r.pod_cgroup_attached());
}

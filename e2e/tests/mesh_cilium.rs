//! The scenarios on the cilium-like flavour (`Network::CiliumLike`: `cilium_host`, `lxc`
//! veths without routes, local delivery by the emulated datapath's TCX programs, VXLAN
//! between nodes, kube-proxy chains; see `meshwork_e2e::cilium_like`), with the real
//! control plane, ztunnels and test app:
//!
//! * in-pod capture (`CaptureMode::InPod`): every shared scenario, plus the same-node
//!   capture check, HBONE from the client pod's own address (inside VXLAN on the wire), and
//!   that local deliveries really went through the emulated datapath.
//! * node capture (`CaptureMode::Node`): documents the breakage on a real Cilium node — the
//!   ztunnel attaches where `ip route get <pod>` points (`cilium_host`), while pod egress
//!   enters at the `lxc` veths: the client's requests are not captured and leave n0 in
//!   plaintext (inside VXLAN).
//!
//! e2e/README.md has the scenario × network matrix.
mod common;

use std::process::Command;
use std::time::Instant;

use common::mesh_suite::{self, record};
use meshwork_e2e::cilium_like::CiliumLike;
use meshwork_e2e::scenarios::{self, fixture};
use meshwork_e2e::target::MeshTarget;
use meshwork_e2e::{Binaries, CaptureMode, ClusterExt, NetnsMesh, Network};

const FLAVOUR: &str = "cilium-like + inpod";

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

#[test]
fn scenarios_on_cilium_like_inpod() {
    let started = Instant::now();
    let bins = Binaries::locate().expect("binaries");
    let mesh = NetnsMesh::start_with(bins, Network::CiliumLike, CaptureMode::InPod)
        .unwrap_or_else(|e| panic!("starting the mesh: {e}"));
    eprintln!("cilium-like + inpod: mesh up in {:?}", started.elapsed());
    let mut failures = mesh_suite::enrollment_failures(&mesh);
    record(
        &mut failures,
        FLAVOUR,
        "cilium_shapes",
        cilium_shapes(&mesh),
    );
    failures.extend(mesh_suite::run_scenarios(&mesh, FLAVOUR, &[]));
    let captured = mesh_suite::same_node_plaintext_is_captured(&mesh).map(|_| ());
    record(
        &mut failures,
        FLAVOUR,
        "same_node_plaintext_is_captured",
        captured,
    );
    record(
        &mut failures,
        FLAVOUR,
        "hbone_leaves_from_the_client_pod",
        mesh_suite::hbone_leaves_from_the_client_pod(&mesh),
    );
    record(
        &mut failures,
        FLAVOUR,
        "local_delivery_is_the_datapath_s",
        local_delivery_is_the_datapath_s(&mesh),
    );
    record(
        &mut failures,
        FLAVOUR,
        "cilium_mark_in_the_pod",
        cilium_mark_in_the_pod(&mesh),
    );
    record(
        &mut failures,
        FLAVOUR,
        "foreign_mark_overlapping_capture_mark",
        foreign_mark_overlapping_capture_mark(&mesh),
    );
    // Last: the mesh leaves n0.
    record(
        &mut failures,
        FLAVOUR,
        "uninstall_leaves_every_pod_working",
        mesh_suite::uninstall_leaves_every_pod_working(&mesh),
    );
    failures.extend(mesh_suite::teardown_failures(&mesh));
    eprintln!("cilium-like + inpod: done in {:?}", started.elapsed());
    mesh_suite::assert_no_failures(&failures);
}

fn ip_text(mesh: &NetnsMesh, target: &str, args: &[&str]) -> Result<String, String> {
    let out = mesh
        .cluster
        .exec_in(target, Command::new("ip").args(args))
        .map_err(s)?;
    Ok(String::from_utf8_lossy(&out.stdout).to_string())
}

/// The node and pod routing is Cilium's (endpointRoutes disabled): no route names an lxc,
/// the node routes a local pod via `cilium_host` and a remote one into `cilium_vxlan`, the
/// pod has a /32 and a default route via the router IP; the programs sit on TCX.
fn cilium_shapes(mesh: &NetnsMesh) -> Result<(), String> {
    let routes = ip_text(mesh, "n0", &["-4", "route"])?;
    if routes.contains("lxc") {
        return Err(format!("n0 has a route via an lxc:\n{routes}"));
    }
    let via = |pod: &str| -> Result<String, String> {
        let ip = mesh.cluster.pod(pod).map_err(s)?.ip.to_string();
        ip_text(mesh, "n0", &["-4", "-o", "route", "get", &ip])
    };
    let local = via("orders-v2")?;
    if !local.contains("dev cilium_host") {
        return Err(format!("n0 → orders-v2: {local}"));
    }
    let remote = via("orders-v1")?;
    if !remote.contains("dev cilium_vxlan") {
        return Err(format!("n0 → orders-v1: {remote}"));
    }
    let pod_routes = ip_text(mesh, "client", &["-4", "route"])?;
    if !pod_routes.contains("default via 10.244.0.1 dev eth0") {
        return Err(format!("client's routes:\n{pod_routes}"));
    }
    let lxc = &mesh.cluster.pod("client").map_err(s)?.host_veth;
    let n0 = mesh.cluster.node("n0").map_err(s)?.netns.clone();
    let on_lxc = CiliumLike::tcx_programs(&n0, lxc, true).map_err(s)?;
    let on_host = CiliumLike::tcx_programs(&n0, "cilium_host", false).map_err(s)?;
    // Program names are cut at 15 characters by the kernel.
    if on_lxc != ["test_cil_from_c"] || on_host != ["test_cil_from_h"] {
        return Err(format!(
            "TCX: {lxc} ingress {on_lxc:?}, cilium_host egress {on_host:?}"
        ));
    }
    Ok(())
}

/// Packets (HBONE from `client`) that arrive in `orders-v2`'s namespace carrying Cilium's
/// identity mark (`0x0F00` magic), counted by a mangle rule in the pod.
fn marked_arrivals(mesh: &NetnsMesh) -> Result<u64, String> {
    let ipt = |args: &[&str]| -> Result<String, String> {
        let out = mesh
            .cluster
            .exec_in("orders-v2", Command::new("iptables").args(args))
            .map_err(s)?;
        if !out.status.success() {
            return Err(format!(
                "iptables {args:?}: {}",
                String::from_utf8_lossy(&out.stderr)
            ));
        }
        Ok(String::from_utf8_lossy(&out.stdout).to_string())
    };
    let rule = ["PREROUTING", "-m", "mark", "--mark", "0xf00/0xf00"];
    ipt(&[&["-t", "mangle", "-A"][..], &rule[..]].concat())?;
    let url = mesh.service_url("orders-local", "/api/orders").map_err(s)?;
    let got = mesh.http_get("client", &url, &[], 2).map_err(s)?;
    let listing = ipt(&["-t", "mangle", "-L", "PREROUTING", "-v", "-x", "-n"])?;
    ipt(&[&["-t", "mangle", "-D"][..], &rule[..]].concat())?;
    if got.count(200) != 2 {
        return Err(format!("client → orders-local: {got:?}"));
    }
    listing
        .lines()
        .find(|l| l.contains("mark match"))
        .and_then(|l| l.split_whitespace().next()?.parse().ok())
        .ok_or_else(|| format!("no counter in {listing}"))
}

/// Whether the CNI's mark reaches the pod depends on how it delivers: `bpf_redirect` to the
/// lxc (legacy host routing, Cilium beside kube-proxy) goes through the veth's transmit,
/// which scrubs it; `bpf_redirect_peer` (BPF host routing, with kube-proxy replacement)
/// keeps it (docs/inpod.md said a mark never arrives from another namespace).
fn cilium_mark_in_the_pod(mesh: &NetnsMesh) -> Result<(), String> {
    let dp = mesh.cluster.cilium().ok_or("no cilium-like datapath")?;
    let legacy = marked_arrivals(mesh)?;
    dp.set_bpf_host_routing(true).map_err(s)?;
    let peer = marked_arrivals(mesh);
    dp.set_bpf_host_routing(false).map_err(s)?;
    let peer = peer?;
    eprintln!("orders-v2: marked arrivals: legacy host routing {legacy}, BPF host routing {peer}");
    if legacy != 0 || peer == 0 {
        return Err(format!(
            "packets with Cilium's mark in orders-v2: {legacy} with bpf_redirect (want 0), \
             {peer} with bpf_redirect_peer (want > 0)"
        ));
    }
    Ok(())
}

/// The CNI's marks carry bit 0x1000 — Meshwork's capture mark — as Cilium's layout can
/// (`MARK_MAGIC_WG_ENCRYPTED` 0x1E00, IPsec keys in 0xF000): the in-pod programs must not
/// take such a packet, delivered by `bpf_redirect_peer` with its mark, for one hairpinned
/// by the pod's own egress. Same-node and cross-node requests still succeed.
fn foreign_mark_overlapping_capture_mark(mesh: &NetnsMesh) -> Result<(), String> {
    let dp = mesh.cluster.cilium().ok_or("no cilium-like datapath")?;
    dp.set_extra_mark(0x1000).map_err(s)?;
    dp.set_bpf_host_routing(true).map_err(s)?;
    let r = (|| {
        let client = mesh.cluster.pod("client").map_err(s)?.ip.to_string();
        let url = mesh.service_url("orders-local", "/api/orders").map_err(s)?;
        let got = mesh.http_get("client", &url, &[], 3).map_err(s)?;
        if got.count(200) != 3 || got.clients.get(&client) != Some(&3) {
            return Err(format!(
                "orders-local with CNI mark bit 0x1000: expected 3 x 200 seen from {client}: {got:?}"
            ));
        }
        // Fresh plaintext connections (new SYNs, marked by the CNI): inbound, refused.
        let stat = |name| mesh.redirect_stat("n0", name).map_err(s);
        let (plain0, out0) = (stat("inbound_plain_syn")?, stat("outbound_syn")?);
        let url = mesh
            .pod_url("orders-v2", fixture::APP_PORT, "/api/orders")
            .map_err(s)?;
        let got = mesh.http_get("outsider", &url, &[], 2).map_err(s)?;
        let (plain1, out1) = (stat("inbound_plain_syn")?, stat("outbound_syn")?);
        if got.count(200) != 0 {
            return Err(format!(
                "plaintext outsider → orders-v2 with CNI mark bit 0x1000: {got:?}"
            ));
        }
        if plain1 < plain0 + 2 || out1 != out0 {
            return Err(format!(
                "outsider's SYNs with CNI mark bit 0x1000: inbound_plain_syn {plain0} → \
                 {plain1}, outbound_syn {out0} → {out1}: taken for orders-v2's own outbound"
            ));
        }
        Ok(())
    })();
    dp.set_extra_mark(0).map_err(s)?;
    dp.set_bpf_host_routing(false).map_err(s)?;
    r
}

/// Same-node pod → pod (client → orders-v2, HBONE to 15008) is delivered by the emulated
/// `cil_from_container` (lxc ingress, `bpf_redirect` to the destination lxc), cross-node by
/// `cil_from_host` after the VXLAN decapsulation: host routing never picks an lxc.
fn local_delivery_is_the_datapath_s(mesh: &NetnsMesh) -> Result<(), String> {
    let dp = mesh.cluster.cilium().ok_or("no cilium-like datapath")?;
    let (n0, n1) = (
        mesh.cluster.node("n0").map_err(s)?.clone(),
        mesh.cluster.node("n1").map_err(s)?.clone(),
    );
    let before = (dp.stats(&n0).map_err(s)?, dp.stats(&n1).map_err(s)?);
    let local = mesh.service_url("orders-local", "/api/orders").map_err(s)?;
    let remote = mesh
        .service_url("orders-remote", "/api/orders")
        .map_err(s)?;
    for url in [&local, &remote] {
        let got = mesh.http_get("client", url, &[], 2).map_err(s)?;
        if got.count(200) != 2 {
            return Err(format!("{url}: {got:?}"));
        }
    }
    let after = (dp.stats(&n0).map_err(s)?, dp.stats(&n1).map_err(s)?);
    if after.0.from_container <= before.0.from_container {
        return Err(format!(
            "n0: no same-node delivery by from-container ({:?} → {:?})",
            before.0, after.0
        ));
    }
    if after.1.from_host <= before.1.from_host {
        return Err(format!(
            "n1: no delivery by from-host after VXLAN ({:?} → {:?})",
            before.1, after.1
        ));
    }
    Ok(())
}

/// Node capture on the cilium-like flavour: the ztunnel comes up, but the client's
/// requests to a service are not captured (`outbound_syn` stays, the ztunnel opens no
/// connection for them) and their payload crosses n0's link in plaintext inside VXLAN, so
/// `mtls_on_the_wire` fails. This test passes when node capture *fails* here.
#[test]
fn node_capture_misses_pod_egress_on_cilium_like() {
    let started = Instant::now();
    let bins = Binaries::locate().expect("binaries");
    let mesh = NetnsMesh::start_with(bins, Network::CiliumLike, CaptureMode::Node)
        .unwrap_or_else(|e| panic!("starting the mesh: {e}"));
    let log = mesh.cluster.log_of("ztunnel-n0-0");
    let attached: Vec<&str> = log
        .lines()
        .filter(|l| l.contains("attached redirect programs"))
        .collect();
    eprintln!("n0's ztunnel: {attached:?}");
    let before = mesh.redirect_stat("n0", "outbound_syn").expect("stats");
    let url = mesh
        .service_url("orders-remote", "/api/orders/cilium-plain")
        .expect("url");
    let mut got = None;
    let cap = mesh
        .capture_node_link("n0", &mut || {
            got = Some(mesh.http_get("client", &url, &[], 3)?);
            Ok(())
        })
        .expect("capture");
    let got = got.unwrap_or_default();
    let after = mesh.redirect_stat("n0", "outbound_syn").expect("stats");
    // Answered (kube-proxy + the datapath carry it), but around the mesh.
    assert_eq!(got.count(200), 3, "requests through kube-proxy: {got:?}");
    assert_eq!(
        after, before,
        "n0's capture saw the client's SYNs: node capture works on cilium-like after all"
    );
    assert!(
        cap.payload_contains(b"cilium-plain"),
        "the request did not cross n0's link in plaintext: {} TCP segments",
        cap.tcp.len()
    );
    let plain: Vec<_> = cap.tcp_not_on_ports(&[fixture::HBONE_PORT]);
    assert!(!plain.is_empty());
    assert!(
        scenarios::mtls_on_the_wire(&mesh).is_err(),
        "mtls_on_the_wire passed with node capture on cilium-like"
    );
    drop(mesh);
    eprintln!(
        "cilium-like + node capture: done in {:?}",
        started.elapsed()
    );
}

/// The whole scenario list with node capture on cilium-like, for the README's matrix
/// (`cargo test --test mesh_cilium -- --ignored`): prints each outcome, asserts nothing.
#[test]
#[ignore = "records the node-capture column of the matrix; expected to fail scenarios"]
fn scenarios_on_cilium_like_node_capture_record() {
    let bins = Binaries::locate().expect("binaries");
    let mesh = NetnsMesh::start_with(bins, Network::CiliumLike, CaptureMode::Node)
        .unwrap_or_else(|e| panic!("starting the mesh: {e}"));
    let mut failures = mesh_suite::run_scenarios(&mesh, "cilium-like + node", &[]);
    let captured = mesh_suite::same_node_plaintext_is_captured(&mesh).map(|_| ());
    record(
        &mut failures,
        "cilium-like + node",
        "same_node_plaintext_is_captured",
        captured,
    );
    record(
        &mut failures,
        "cilium-like + node",
        "hbone_leaves_from_the_client_pod",
        mesh_suite::hbone_leaves_from_the_client_pod(&mesh),
    );
    eprintln!("{} failed:\n{}", failures.len(), failures.join("\n"));
}

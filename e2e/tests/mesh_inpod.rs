//! The scenarios on kind-ptp with in-pod capture (`ztunnel --redirect inpod`, docs/inpod.md):
//! the fixture's pods are older than the mesh (the ztunnels find them by scanning the
//! cluster's netns directory), then what only in-pod capture has: HBONE leaves from the
//! client pod's own address, a pod created through the full CNI chain (`meshwork-cni`
//! last) is captured from its first connection, a pod created while the ztunnel is down
//! waits (CNI error 11) instead of starting uncaptured, and a ztunnel restart fails closed.
//! e2e/README.md has the scenario × network matrix.
mod common;

use std::net::Ipv4Addr;
use std::path::Path;
use std::time::{Duration, Instant};

use common::mesh_suite::{self, record};
use meshwork_e2e::cni::CniError;
use meshwork_e2e::pcap::Capture;
use meshwork_e2e::scenarios::fixture;
use meshwork_e2e::target::MeshTarget;
use meshwork_e2e::{Binaries, CaptureMode, NetnsMesh, Network, PodSpec, Sandbox, BPF_PIN_ROOT};

const FLAVOUR: &str = "kind-ptp + inpod";
const ORDERS: &str = "orders-remote.production.svc.cluster.local";

type Check = Result<(), String>;
type InPodCheck = (&'static str, fn(&NetnsMesh) -> Check);

fn s<E: std::fmt::Display>(e: E) -> String {
    e.to_string()
}

#[test]
fn scenarios_on_kind_ptp_inpod() {
    let bins = Binaries::locate().expect("binaries");
    let mesh = NetnsMesh::start_with(bins, Network::KindPtp, CaptureMode::InPod)
        .unwrap_or_else(|e| panic!("starting the mesh: {e}"));
    let mut failures = mesh_suite::enrollment_failures(&mesh);
    failures.extend(mesh_suite::run_scenarios(&mesh, FLAVOUR, &[]));
    let checks: &[InPodCheck] = &[
        ("same_node_plaintext_is_captured", |m| {
            mesh_suite::same_node_plaintext_is_captured(m).map(|_| ())
        }),
        ("hbone_leaves_from_the_client_pod", |m| {
            mesh_suite::hbone_leaves_from_the_client_pod(m)
        }),
        (
            "pod_added_through_cni_is_captured",
            pod_added_through_cni_is_captured,
        ),
        (
            "dual_stack_pod_ipv6_is_captured",
            dual_stack_pod_ipv6_is_captured,
        ),
        (
            "pod_added_while_ztunnel_down_waits",
            pod_added_while_ztunnel_down_waits,
        ),
        ("ztunnel_restart_fails_closed", ztunnel_restart_fails_closed),
        // Last: the mesh leaves n0.
        (
            "uninstall_leaves_every_pod_working",
            mesh_suite::uninstall_leaves_every_pod_working,
        ),
    ];
    for (name, f) in checks {
        record(&mut failures, FLAVOUR, name, f(&mesh));
    }
    failures.extend(mesh_suite::teardown_failures(&mesh));
    mesh_suite::assert_no_failures(&failures);
}

fn ip_of(mesh: &NetnsMesh, pod: &str) -> Result<Ipv4Addr, String> {
    Ok(mesh.cluster.pod(pod).map_err(s)?.ip)
}

/// `istio_tcp_connections_opened_total{reporter="source",destination_service=<fqdn>}` of
/// `node`'s ztunnel.
fn opened_to(mesh: &NetnsMesh, node: &str, fqdn: &str) -> Result<u64, String> {
    let text = mesh.ztunnel_metrics(node).map_err(s)?;
    let service = format!("destination_service=\"{fqdn}\"");
    Ok(text
        .lines()
        .filter(|l| l.starts_with("istio_tcp_connections_opened_total{"))
        .filter(|l| l.contains("reporter=\"source\"") && l.contains(&service))
        .filter_map(|l| l.rsplit(' ').next()?.parse::<u64>().ok())
        .sum())
}

/// Segments to or from `ip` that are not HBONE (port 15008).
fn plain_segments_of(cap: &Capture, ip: Ipv4Addr) -> Vec<String> {
    cap.tcp
        .iter()
        .filter(|g| g.src == ip || g.dst == ip)
        .filter(|g| g.sport != fixture::HBONE_PORT && g.dport != fixture::HBONE_PORT)
        .map(|g| format!("{}:{} → {}:{}", g.src, g.sport, g.dst, g.dport))
        .collect()
}

fn spec(name: &str, app: &str, sa: &str) -> PodSpec {
    PodSpec {
        name: name.into(),
        namespace: "production".into(),
        node: "n0".into(),
        app: app.into(),
        version: "late".into(),
        service_account: sa.into(),
    }
}

/// The pins of a pod's in-pod capture (`<root>/<node>/pods/<namespace>_<name>`).
fn pod_pins(mesh: &NetnsMesh, sb: &Sandbox) -> Result<std::path::PathBuf, String> {
    let node = mesh.cluster.bpf_node_name(&sb.spec.node).map_err(s)?;
    Ok(Path::new(BPF_PIN_ROOT)
        .join(node)
        .join("pods")
        .join(format!("{}_{}", sb.spec.namespace, sb.spec.name)))
}

/// Bounded retries of a request until it is answered 200 (an app just started).
fn until_ok(
    mesh: &NetnsMesh,
    from: &str,
    url: &str,
) -> Result<meshwork_e2e::target::HttpSummary, String> {
    let deadline = Instant::now() + Duration::from_secs(10);
    loop {
        let got = mesh.http_get(from, url, &[], 1).map_err(s)?;
        if got.count(200) == 1 || Instant::now() > deadline {
            return Ok(got);
        }
        std::thread::sleep(Duration::from_millis(200));
    }
}

/// A pod created while the ztunnel runs, as Kubernetes does it: the scheduler writes
/// `nodeName` (the control plane publishes an address-less workload), the runtime runs
/// CNI ADD (ptp + host-local + portmap + meshwork-cni, which hands the namespace to n0's
/// ztunnel and returns once it is enrolled), kubelet reports the address, the app starts.
/// Its first connection goes through the mesh (HBONE only on the wire, the server sees
/// its address); plaintext to it is refused (STRICT: it is `app: payments`) while a mesh
/// client gets through; CNI DEL releases it (ztunnel forgets it, its pins are gone).
fn pod_added_through_cni_is_captured(mesh: &NetnsMesh) -> Check {
    let spec = spec("late", "payments", "payments");
    mesh.write_pod_yaml(&spec, None).map_err(s)?;
    let mut sb = mesh.sandbox(&spec).map_err(s)?;
    let r = (|| {
        let ip = sb.add().map_err(|e| format!("CNI ADD: {e}"))?;
        let pod = sb.pod_ref();
        match mesh.inpod_pod("n0", &pod).map_err(s)? {
            Some(p) if p["captured"] == true && p["ips"] == serde_json::json!([ip.to_string()]) => {
            }
            other => return Err(format!("after ADD, n0's /inpod has {pod} as {other:?}")),
        }
        let pins = pod_pins(mesh, &sb)?;
        if !pins.exists() {
            return Err(format!("after ADD, no capture pins at {}", pins.display()));
        }
        mesh.write_pod_yaml(&spec, Some(ip)).map_err(s)?;
        let app = mesh.start_app_in(&sb).map_err(s)?;
        // Its very first connection.
        let url = mesh
            .service_url("orders-remote", "/api/orders/late-first")
            .map_err(s)?;
        let mut first = None;
        let cap = mesh
            .capture_node_link("n0", &mut || {
                first = Some(mesh.http_get_from(&sb, &url, &[], 1)?);
                Ok(())
            })
            .map_err(s)?;
        let first = first.unwrap_or_default();
        if first.count(200) != 1 || first.clients.get(&ip.to_string()) != Some(&1) {
            return Err(format!(
                "first request from the new pod ({ip}): expected 200 seen from {ip}: {first:?}"
            ));
        }
        let plain = plain_segments_of(&cap, ip);
        if !plain.is_empty() || cap.payload_contains(b"late-first") {
            return Err(format!(
                "the new pod's first connection left in plaintext: {plain:?}"
            ));
        }
        if !cap
            .tcp
            .iter()
            .any(|g| g.src == ip && g.dport == fixture::HBONE_PORT)
        {
            return Err(format!("no HBONE from {ip} on n0's link"));
        }
        // Inbound: a mesh client gets through, plaintext is refused.
        let url = format!("http://{ip}:{}/", fixture::APP_PORT);
        let got = until_ok(mesh, "client", &url)?;
        if got.count(200) != 1 {
            return Err(format!("client → new pod: {got:?}"));
        }
        let got = mesh.http_get("outsider", &url, &[], 2).map_err(s)?;
        if got.count(200) != 0 {
            return Err(format!(
                "plaintext from outsider reached the new pod: {got:?}"
            ));
        }
        // DEL releases it.
        sb.del().map_err(|e| format!("CNI DEL: {e}"))?;
        mesh.wait_inpod("n0", &pod, None, Duration::from_secs(5))
            .map_err(s)?;
        if pins.exists() {
            return Err(format!("after DEL, pins left at {}", pins.display()));
        }
        let _ = mesh.cluster.kill(app);
        Ok(())
    })();
    drop(sb);
    mesh.remove_pod_yaml(&spec.name).map_err(s)?;
    r
}

/// A dual-stack pod (host-local also hands out an address of a ULA range of the test's
/// own): the ADD gives the ztunnel both addresses, it enrolls both and opens its `[::]`
/// listeners in the pod. The pod's IPv6 TCP to an address nobody has (no route beyond the
/// node) completes its handshake: the in-pod IPv6 outbound listener took it, it did not
/// leave the pod in the clear.
fn dual_stack_pod_ipv6_is_captured(mesh: &NetnsMesh) -> Check {
    let spec = spec("dual", "payments", "payments");
    mesh.write_pod_yaml(&spec, None).map_err(s)?;
    let mut sb = mesh.sandbox(&spec).map_err(s)?;
    sb.add_ipv6_range("fd00:10:244::/64");
    let r = (|| {
        let ip = sb.add().map_err(|e| format!("CNI ADD: {e}"))?;
        let pod = sb.pod_ref();
        let entry = mesh.inpod_pod("n0", &pod).map_err(s)?;
        let ips: Vec<std::net::IpAddr> = entry
            .as_ref()
            .and_then(|p| p["ips"].as_array())
            .map(|l| l.iter().filter_map(|v| v.as_str()?.parse().ok()).collect())
            .unwrap_or_default();
        let v6 = ips.iter().find(|a| a.is_ipv6()).copied();
        let captured = entry.as_ref().is_some_and(|p| p["captured"] == true);
        let Some(v6) = v6.filter(|_| captured && ips.contains(&ip.into())) else {
            return Err(format!(
                "after a dual-stack ADD, n0's /inpod has {pod} as {entry:?}"
            ));
        };
        let syn_before = mesh.inpod_status("n0").map_err(s)?["stats"]["outbound_syn"]
            .as_u64()
            .unwrap_or(0);
        let dst: std::net::SocketAddr = "[fd00:dead::1]:80".parse().expect("an address");
        let got = meshwork_e2e::netns::in_netns(&sb.netns, move || {
            std::net::TcpStream::connect_timeout(&dst, Duration::from_secs(3))
                .and_then(|c| c.local_addr())
        })
        .map_err(s)?;
        match got {
            Ok(local) if local.ip() == v6 => {}
            other => {
                return Err(format!(
                    "IPv6 connect from the dual-stack pod to {dst}: expected the in-pod listener to take it from {v6}, got {other:?}"
                ))
            }
        }
        let syn_after = mesh.inpod_status("n0").map_err(s)?["stats"]["outbound_syn"]
            .as_u64()
            .unwrap_or(0);
        if syn_after <= syn_before {
            return Err(format!(
                "outbound_syn did not move ({syn_before} → {syn_after})"
            ));
        }
        sb.del().map_err(|e| format!("CNI DEL: {e}"))?;
        mesh.wait_inpod("n0", &pod, None, Duration::from_secs(5))
            .map_err(s)?;
        Ok(())
    })();
    drop(sb);
    mesh.remove_pod_yaml(&spec.name).map_err(s)?;
    r
}

/// A pod created while its node's ztunnel is down does not start uncaptured: CNI ADD fails
/// with code 11 (try again later) and leaves no interface; once the ztunnel is back the
/// runtime's retry succeeds and the pod is captured (its requests are counted by n0's
/// ztunnel and seen from its own address).
fn pod_added_while_ztunnel_down_waits(mesh: &NetnsMesh) -> Check {
    let spec = spec("late-down", "late", "late");
    mesh.write_pod_yaml(&spec, None).map_err(s)?;
    let mut sb = mesh.sandbox(&spec).map_err(s)?;
    let r = (|| {
        mesh.stop_ztunnel("n0", libc::SIGTERM).map_err(s)?;
        let first = sb.add();
        let restarted = mesh.start_new_ztunnel("n0").map_err(s);
        match first {
            Err(CniError::Plugin {
                ref plugin,
                code: 11,
                ..
            }) if plugin == "meshwork-cni" => {}
            Err(e) => return Err(format!("ADD with the ztunnel down: want error 11, got {e}")),
            Ok(ip) => {
                return Err(format!(
                    "ADD with the ztunnel down succeeded ({ip}): the pod would start uncaptured"
                ))
            }
        }
        let links =
            meshwork_e2e::netns::in_netns(&sb.netns, meshwork_redirect::local_ipv4_addresses)
                .map_err(s)?
                .map_err(s)?;
        if links.iter().any(|ip| !ip.is_loopback()) {
            return Err(format!("failed ADD left addresses in the pod: {links:?}"));
        }
        restarted?;
        let ip = sb.add().map_err(|e| format!("retried ADD: {e}"))?;
        mesh.wait_inpod("n0", &sb.pod_ref(), Some(true), Duration::from_secs(2))
            .map_err(s)?;
        mesh.write_pod_yaml(&spec, Some(ip)).map_err(s)?;
        let before = opened_to(mesh, "n0", ORDERS)?;
        let url = mesh.service_url("orders-remote", "/").map_err(s)?;
        let got = mesh.http_get_from(&sb, &url, &[], 3).map_err(s)?;
        if got.count(200) != 3 || got.clients.get(&ip.to_string()) != Some(&3) {
            return Err(format!("requests from the retried pod ({ip}): {got:?}"));
        }
        if opened_to(mesh, "n0", ORDERS)? <= before {
            return Err("n0's ztunnel did not count the retried pod's connection".into());
        }
        sb.del().map_err(|e| format!("CNI DEL: {e}"))
    })();
    drop(sb);
    mesh.remove_pod_yaml(&spec.name).map_err(s)?;
    r
}

/// Stop, then start, n0's ztunnel (a crash or an upgrade without surge): the old process's
/// connections end with it; while no ztunnel runs the captured pods' SYNs are dropped by
/// their capture programs (counted `no_listener_drop`), nothing leaves n0 in plaintext
/// and plaintext inbound is not delivered; the new ztunnel re-opens the recorded pods and
/// its first connections are captured (counted by it).
fn ztunnel_restart_fails_closed(mesh: &NetnsMesh) -> Check {
    let client = ip_of(mesh, "client")?;
    let drops_before = mesh.redirect_stat("n0", "no_listener_drop").map_err(s)?;
    let url = mesh
        .service_url("orders-remote", "/api/orders")
        .map_err(s)?;
    let pod_url = mesh
        .pod_url("orders-v1", fixture::APP_PORT, "/api/orders")
        .map_err(s)?;
    let local_url = mesh
        .pod_url("orders-v2", fixture::APP_PORT, "/api/orders")
        .map_err(s)?;
    let mut down = Vec::new();
    let cap = mesh
        .capture_node_link("n0", &mut || {
            std::thread::scope(|sc| {
                // Open through the old ztunnel, answered after its drain deadline (2 s).
                let long = sc
                    .spawn(|| mesh.http_get("client", &url, &[("x-testapp-delay-ms", "5000")], 1));
                std::thread::sleep(Duration::from_millis(500));
                mesh.stop_ztunnel("n0", libc::SIGTERM)?;
                let long = long.join().map_err(|_| {
                    meshwork_e2e::target::ScenarioError::Target("request thread panicked".into())
                })??;
                down.push(("in-flight through the old ztunnel", long));
                down.push(("client → VIP", mesh.http_get("client", &url, &[], 1)?));
                down.push((
                    "client → orders-v1",
                    mesh.http_get("client", &pod_url, &[], 1)?,
                ));
                down.push((
                    "outsider → orders-v2",
                    mesh.http_get("outsider", &local_url, &[], 1)?,
                ));
                Ok(())
            })
        })
        .map_err(s)?;
    let pid = mesh.start_new_ztunnel("n0").map_err(s)?;
    for (what, got) in &down {
        if got.count(200) != 0 {
            return Err(format!("{what} answered while n0 had no ztunnel: {got:?}"));
        }
    }
    let plain = plain_segments_of(&cap, client);
    if !plain.is_empty() {
        return Err(format!(
            "client traffic left n0 outside HBONE around the restart: {plain:?}"
        ));
    }
    let log = mesh.cluster.log_of(&mesh.ztunnel_label("n0"));
    if !log.contains("re-opened a recorded pod") {
        return Err(format!("new ztunnel (pid {pid}) re-opened no recorded pod"));
    }
    let deadline = Instant::now() + Duration::from_secs(10);
    while !mesh
        .enrolled_on("n0")
        .map_err(s)?
        .contains(&client.to_string())
    {
        if Instant::now() > deadline {
            return Err("new ztunnel did not capture the client again".into());
        }
        std::thread::sleep(Duration::from_millis(100));
    }
    let drops = mesh.redirect_stat("n0", "no_listener_drop").map_err(s)?;
    if drops <= drops_before {
        return Err(format!(
            "no_listener_drop on n0 went {drops_before} → {drops}: no SYN was dropped while no ztunnel ran"
        ));
    }
    let before = opened_to(mesh, "n0", ORDERS)?;
    let got = mesh.http_get("client", &url, &[], 3).map_err(s)?;
    if got.count(200) != 3 {
        return Err(format!("after the restart: {got:?}"));
    }
    if opened_to(mesh, "n0", ORDERS)? <= before {
        return Err("the new ztunnel did not count the client's connections".into());
    }
    Ok(())
}

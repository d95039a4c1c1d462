//! The scenario run shared by the mesh tests of every network flavour (tests/mesh.rs,
//! tests/mesh_kind_ptp.rs): the scenario list, the enrollment check, the same-node capture
//! check, and the teardown check; failures are collected as `name: reason` lines.

use std::collections::BTreeSet;
use std::fmt::Display;
use std::net::Ipv4Addr;
use std::time::{Duration, Instant};

use meshwork_e2e::scenarios::{self, fixture};
use meshwork_e2e::target::{MeshTarget, ScenarioError};
use meshwork_e2e::{NetnsMesh, BPF_PIN_ROOT};

pub type Scenario = fn(&dyn MeshTarget) -> Result<(), ScenarioError>;

/// The scenarios, in the order they run. e2e/README.md has the scenario × network matrix.
pub const SCENARIOS: &[(&str, Scenario)] = &[
    (
        "cross_node_pod_to_service",
        scenarios::cross_node_pod_to_service,
    ),
    (
        "same_node_pod_to_service",
        scenarios::same_node_pod_to_service,
    ),
    ("mtls_on_the_wire", scenarios::mtls_on_the_wire),
    ("non_enrolled_bypasses", scenarios::non_enrolled_bypasses),
    (
        "strict_refuses_plaintext",
        scenarios::strict_refuses_plaintext,
    ),
    ("deny_all_default", scenarios::deny_all_default),
    (
        "enrollment_toggled_live",
        scenarios::enrollment_toggled_live,
    ),
    (
        "ztunnel_restart_under_load",
        scenarios::ztunnel_restart_under_load,
    ),
    (
        "service_vip_seen_by_ztunnel",
        scenarios::service_vip_seen_by_ztunnel,
    ),
];

/// Logs the outcome of check `name` on `flavour` and keeps a failure in `failures`.
pub fn record(
    failures: &mut Vec<String>,
    flavour: &str,
    name: &str,
    result: Result<(), impl Display>,
) {
    match result {
        Ok(()) => eprintln!("scenario {name} ({flavour}): ok"),
        Err(e) => {
            eprintln!("scenario {name} ({flavour}): FAILED {e}");
            failures.push(format!("{name}: {e}"));
        }
    }
}

/// Runs every scenario of [`SCENARIOS`] except those named in `skip`.
pub fn run_scenarios(mesh: &NetnsMesh, flavour: &str, skip: &[&str]) -> Vec<String> {
    let mut failures = Vec::new();
    for (name, f) in SCENARIOS.iter().filter(|(n, _)| !skip.contains(n)) {
        record(&mut failures, flavour, name, f(mesh));
    }
    failures
}

/// Each ztunnel enrolled exactly its node's pods of ambient namespaces, at the addresses
/// the pods really got (the harness plan's, or the CNI's IPAM's).
pub fn enrollment_failures(mesh: &NetnsMesh) -> Vec<String> {
    let mut failures = Vec::new();
    for node in ["n0", "n1"] {
        let want: BTreeSet<String> = fixture::PODS
            .iter()
            .filter(|p| mesh.cluster.pod(p.0).unwrap().node == node)
            .filter(|p| fixture::NAMESPACES.iter().any(|(ns, a)| *ns == p.1 && *a))
            .map(|p| mesh.cluster.pod(p.0).unwrap().ip.to_string())
            .collect();
        let got = mesh.enrolled_on(node).expect("ztunnel /redirect");
        if got != want {
            failures.push(format!("{node}: enrolled {got:?}, want {want:?}"));
        }
    }
    failures
}

/// Plaintext from a non-mesh pod to a captured pod on the same node meets ztunnel's
/// inbound listener (and deny-all-default refuses it) instead of reaching the pod around
/// it, as it does from another node. Ok: how long the three refused requests took.
pub fn same_node_plaintext_is_captured(mesh: &NetnsMesh) -> Result<Duration, String> {
    let stat = || {
        mesh.redirect_stat("n0", "inbound_plain_syn")
            .map_err(|e| e.to_string())
    };
    let before = stat()?;
    let url = mesh
        .pod_url("orders-v2", fixture::APP_PORT, "/api/orders")
        .map_err(|e| e.to_string())?;
    let started = Instant::now();
    let s = mesh
        .http_get("outsider", &url, &[], 3)
        .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    let after = stat()?;
    if s.count(200) != 0 {
        return Err(format!("plaintext reached the pod: {s:?}"));
    }
    if after < before + 3 {
        return Err(format!(
            "inbound_plain_syn on n0 went {before} → {after}: the SYNs were not captured"
        ));
    }
    Ok(took)
}

/// Stops the mesh with `ztunnel redirect-teardown`, which must leave no pins behind.
pub fn teardown_failures(mesh: &NetnsMesh) -> Vec<String> {
    mesh.stop_and_teardown().expect("teardown");
    let mut failures = Vec::new();
    for node in ["n0", "n1"] {
        let pins =
            std::path::Path::new(BPF_PIN_ROOT).join(mesh.cluster.bpf_node_name(node).unwrap());
        if pins.exists() {
            failures.push(format!("{node}: {} left after teardown", pins.display()));
        }
    }
    failures
}

pub fn assert_no_failures(failures: &[String]) {
    assert!(
        failures.is_empty(),
        "failed scenarios:\n{}",
        failures.join("\n")
    );
}

fn pod_ip(mesh: &NetnsMesh, pod: &str) -> Result<Ipv4Addr, String> {
    Ok(mesh.cluster.pod(pod).map_err(|e| e.to_string())?.ip)
}

/// In-pod HBONE is opened in the client pod's namespace: on the wire its TCP source is the
/// client pod's address, not the node's (node capture fails this: its tunnels leave from
/// `10.250.0.1`), and the destination is the server pod itself.
pub fn hbone_leaves_from_the_client_pod(mesh: &NetnsMesh) -> Result<(), String> {
    let (client, server) = (pod_ip(mesh, "client")?, pod_ip(mesh, "orders-v1")?);
    let url = mesh
        .service_url("orders-remote", "/api/orders")
        .map_err(|e| e.to_string())?;
    let mut summary = None;
    let cap = mesh
        .capture_node_link("n0", &mut || {
            summary = Some(mesh.http_get("client", &url, &[], 3)?);
            Ok(())
        })
        .map_err(|e| e.to_string())?;
    let got = summary.unwrap_or_default();
    if got.count(200) != 3 {
        return Err(format!("expected 3 x 200: {got:?}"));
    }
    let hbone: Vec<_> = cap
        .tcp
        .iter()
        .filter(|g| g.dport == fixture::HBONE_PORT)
        .collect();
    if hbone.is_empty() {
        return Err("no HBONE segment on n0's link".into());
    }
    let other: BTreeSet<String> = hbone
        .iter()
        .filter(|g| g.src != client || g.dst != server)
        .map(|g| format!("{} → {}", g.src, g.dst))
        .collect();
    if !other.is_empty() {
        return Err(format!(
            "HBONE not only {client} (client pod) → {server} (orders-v1): also {other:?}"
        ));
    }
    Ok(())
}

/// The node agent decided `uninstall` (its DaemonSet is gone): the stopping ztunnel
/// releases every pod of n0 — capture removed in each pod, the node's pins gone — and the
/// pods talk directly, as without the mesh. Before, the same request is refused (STRICT
/// plaintext from a pod outside the mesh, captured in the destination pod).
pub fn uninstall_leaves_every_pod_working(mesh: &NetnsMesh) -> Result<(), String> {
    let url = mesh
        .pod_url("orders-v2", fixture::APP_PORT, "/api/orders")
        .map_err(|e| e.to_string())?;
    let before = mesh
        .http_get("outsider", &url, &[], 1)
        .map_err(|e| e.to_string())?;
    if before.count(200) != 0 {
        return Err(format!(
            "outsider → orders-v2 answered while meshed: {before:?}"
        ));
    }
    std::fs::write(mesh.stop_decision_file("n0"), "uninstall").map_err(|e| e.to_string())?;
    mesh.stop_ztunnel("n0", libc::SIGTERM)
        .map_err(|e| e.to_string())?;
    let pins = std::path::Path::new(BPF_PIN_ROOT).join(
        mesh.cluster
            .bpf_node_name("n0")
            .map_err(|e| e.to_string())?,
    );
    if pins.exists() {
        return Err(format!("{} left after the uninstall", pins.display()));
    }
    for (from, what) in [("outsider", "outside the mesh"), ("client", "was enrolled")] {
        let got = mesh
            .http_get(from, &url, &[], 3)
            .map_err(|e| e.to_string())?;
        if got.count(200) != 3 {
            return Err(format!(
                "{from} ({what}) → orders-v2 after the uninstall: {got:?}"
            ));
        }
    }
    let log = mesh.cluster.log_of(&mesh.ztunnel_label("n0"));
    if !log.contains("in-pod capture released") {
        return Err("the ztunnel did not log the release".into());
    }
    Ok(())
}

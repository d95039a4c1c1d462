//! The scenarios on the kind-ptp flavour (pods set up by the reference CNI plugins,
//! addresses from host-local, services as kube-proxy chains) with the real control plane,
//! ztunnels and test app. Only the scenarios observed to pass on this flavour are here;
//! e2e/README.md has the scenario × network matrix and what does not hold yet.
use std::collections::BTreeSet;

use meshwork_e2e::scenarios::{self, fixture};
use meshwork_e2e::target::{MeshTarget, ScenarioError};
use meshwork_e2e::{Binaries, NetnsMesh, Network, BPF_PIN_ROOT};

type Scenario = fn(&dyn MeshTarget) -> Result<(), ScenarioError>;

#[test]
fn scenarios_on_kind_ptp() {
    let bins = Binaries::locate().expect("binaries");
    let mesh = NetnsMesh::start_on(bins, Network::KindPtp)
        .unwrap_or_else(|e| panic!("starting the mesh: {e}"));
    let all: &[(&str, Scenario)] = &[
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
        // Not here: service_vip_seen_by_ztunnel fails on kind-ptp (README matrix).
    ];
    let mut failures = Vec::new();
    // The pods' addresses are host-local's (not the harness plan's .10+), and each ztunnel
    // enrolled exactly its node's pods of ambient namespaces.
    for node in ["n0", "n1"] {
        let want: BTreeSet<String> = fixture::PODS
            .iter()
            .map(|p| mesh.cluster.pod(p.0).unwrap())
            .filter(|p| p.node == node)
            .filter(|p| {
                let ns = fixture::PODS.iter().find(|f| f.0 == p.name).unwrap().1;
                fixture::NAMESPACES.iter().any(|(n, a)| *n == ns && *a)
            })
            .map(|p| p.ip.to_string())
            .collect();
        let got = mesh.enrolled_on(node).expect("ztunnel /redirect");
        if got != want {
            failures.push(format!("{node}: enrolled {got:?}, want {want:?}"));
        }
    }
    for (name, f) in all {
        match f(&mesh) {
            Ok(()) => eprintln!("scenario {name} (kind-ptp): ok"),
            Err(e) => {
                eprintln!("scenario {name} (kind-ptp): FAILED {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    if let Err(e) = same_node_plaintext_is_captured(&mesh) {
        failures.push(format!("same_node_plaintext_is_captured: {e}"));
    }
    if let Err(e) = non_enrolled_reaches_vip_through_kube_proxy(&mesh) {
        failures.push(format!("non_enrolled_reaches_vip_through_kube_proxy: {e}"));
    }
    mesh.stop_and_teardown().expect("teardown");
    for node in ["n0", "n1"] {
        let pins =
            std::path::Path::new(BPF_PIN_ROOT).join(mesh.cluster.bpf_node_name(node).unwrap());
        if pins.exists() {
            failures.push(format!("{node}: {} left after teardown", pins.display()));
        }
    }
    assert!(
        failures.is_empty(),
        "failed scenarios:\n{}",
        failures.join("\n")
    );
}

/// As in tests/mesh.rs: plaintext from a non-mesh pod to a captured pod on the same node
/// meets ztunnel's inbound on ptp's host veth (and deny-all-default refuses it).
fn same_node_plaintext_is_captured(mesh: &NetnsMesh) -> Result<(), String> {
    let stat = || {
        mesh.redirect_stat("n0", "inbound_plain_syn")
            .map_err(|e| e.to_string())
    };
    let before = stat()?;
    let url = mesh
        .pod_url("orders-v2", fixture::APP_PORT, "/api/orders")
        .map_err(|e| e.to_string())?;
    let s = mesh
        .http_get("outsider", &url, &[], 3)
        .map_err(|e| e.to_string())?;
    let after = stat()?;
    if s.count(200) != 0 {
        return Err(format!("plaintext reached the pod: {s:?}"));
    }
    if after < before + 3 {
        return Err(format!("inbound_plain_syn on n0 went {before} → {after}"));
    }
    Ok(())
}

/// What only kind-ptp has: a pod outside the mesh reaches a service VIP, balanced by
/// kube-proxy's DNAT (on the bridge flavour a VIP exists only for captured pods).
fn non_enrolled_reaches_vip_through_kube_proxy(mesh: &NetnsMesh) -> Result<(), String> {
    let url = mesh.service_url("plain", "/").map_err(|e| e.to_string())?;
    let s = mesh
        .http_get("outsider", &url, &[], 3)
        .map_err(|e| e.to_string())?;
    if s.count(200) != 3 || s.pods.get("plain-server") != Some(&3) {
        return Err(format!("expected 3 x 200 from plain-server: {s:?}"));
    }
    Ok(())
}

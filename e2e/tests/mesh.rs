//! The scenarios on the namespace mini-cluster with the real control plane, ztunnels and
//! test app (binaries from the same cargo target directory, or $MESHWORK_BIN_DIR).
use std::collections::BTreeSet;

use meshwork_e2e::scenarios::{self, fixture};
use meshwork_e2e::target::ScenarioError;
use meshwork_e2e::{Binaries, NetnsMesh, BPF_PIN_ROOT};

type Scenario = fn(&dyn meshwork_e2e::target::MeshTarget) -> Result<(), ScenarioError>;

#[test]
fn scenarios_on_netns_mesh() {
    let bins = Binaries::locate().expect("binaries");
    let mesh = NetnsMesh::start(bins).unwrap_or_else(|e| panic!("starting the mesh: {e}"));
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
        (
            "service_vip_seen_by_ztunnel",
            scenarios::service_vip_seen_by_ztunnel,
        ),
    ];
    let mut failures = Vec::new();
    // Each ztunnel enrolled exactly its node's pods of ambient namespaces.
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
    for (name, f) in all {
        match f(&mesh) {
            Ok(()) => eprintln!("scenario {name}: ok"),
            Err(e) => {
                eprintln!("scenario {name}: FAILED {e}");
                failures.push(format!("{name}: {e}"));
            }
        }
    }
    // Same node: plaintext from a non-mesh pod to a captured pod meets ztunnel's inbound
    // listener (and deny-all-default refuses it at once) instead of reaching the pod
    // around it, as it does from another node.
    if let Err(e) = same_node_plaintext_is_captured(&mesh) {
        eprintln!("scenario same_node_plaintext_is_captured: FAILED {e}");
        failures.push(format!("same_node_plaintext_is_captured: {e}"));
    } else {
        eprintln!("scenario same_node_plaintext_is_captured: ok");
    }
    // `ztunnel redirect-teardown` leaves no pins behind.
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

fn same_node_plaintext_is_captured(mesh: &NetnsMesh) -> Result<(), String> {
    use meshwork_e2e::target::MeshTarget;
    let before = mesh
        .redirect_stat("n0", "inbound_plain_syn")
        .map_err(|e| e.to_string())?;
    let url = mesh
        .pod_url("orders-v2", fixture::APP_PORT, "/api/orders")
        .map_err(|e| e.to_string())?;
    let started = std::time::Instant::now();
    let s = mesh
        .http_get("outsider", &url, &[], 3)
        .map_err(|e| e.to_string())?;
    let took = started.elapsed();
    let after = mesh
        .redirect_stat("n0", "inbound_plain_syn")
        .map_err(|e| e.to_string())?;
    if s.count(200) != 0 {
        return Err(format!("plaintext reached the pod: {s:?}"));
    }
    if after < before + 3 {
        return Err(format!(
            "inbound_plain_syn on n0 went {before} → {after}: the SYNs were not captured"
        ));
    }
    if took > std::time::Duration::from_secs(5) {
        return Err(format!("refusal took {took:?}: connections hung"));
    }
    Ok(())
}

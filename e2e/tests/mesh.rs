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

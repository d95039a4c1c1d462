//! The scenarios on the kind-ptp flavour (pods set up by the reference CNI plugins,
//! addresses from host-local, services as kube-proxy chains) with the real control plane,
//! ztunnels and test app. Only the scenarios observed to pass on this flavour are here;
//! e2e/README.md has the scenario × network matrix and what does not hold yet.
mod common;

use common::mesh_suite::{self, record};
use meshwork_e2e::target::MeshTarget;
use meshwork_e2e::{Binaries, NetnsMesh, Network};

const FLAVOUR: &str = "kind-ptp";

/// Scenarios that fail on kind-ptp (README matrix).
const NOT_ON_KIND_PTP: &[&str] = &["service_vip_seen_by_ztunnel"];

#[test]
fn scenarios_on_kind_ptp() {
    let bins = Binaries::locate().expect("binaries");
    let mesh = NetnsMesh::start_on(bins, Network::KindPtp)
        .unwrap_or_else(|e| panic!("starting the mesh: {e}"));
    // The pods' addresses are host-local's (not the harness plan's .10+).
    let mut failures = mesh_suite::enrollment_failures(&mesh);
    failures.extend(mesh_suite::run_scenarios(&mesh, FLAVOUR, NOT_ON_KIND_PTP));
    // Captured on ptp's host veth.
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
        "non_enrolled_reaches_vip_through_kube_proxy",
        non_enrolled_reaches_vip_through_kube_proxy(&mesh),
    );
    failures.extend(mesh_suite::teardown_failures(&mesh));
    mesh_suite::assert_no_failures(&failures);
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

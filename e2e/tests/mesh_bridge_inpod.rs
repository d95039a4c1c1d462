//! The scenarios on the bridge mini-cluster with in-pod capture (`--redirect inpod`, the
//! chart's default): the same network as tests/mesh.rs, capture inside each pod's
//! namespace. Its own test binary: the mesh tests run one cluster at a time.
mod common;

use common::mesh_suite::{self, record};
use meshwork_e2e::{Binaries, CaptureMode, NetnsMesh, Network};

/// The same scenarios on the same bridge network with in-pod capture (the chart's default),
/// plus what only in-pod capture has: HBONE from the client pod's own address, and an
/// uninstall that leaves the pods working.
#[test]
fn scenarios_on_netns_mesh_inpod() {
    const FLAVOUR: &str = "bridge + inpod";
    let bins = Binaries::locate().expect("binaries");
    let mesh = NetnsMesh::start_with(bins, Network::Bridge, CaptureMode::InPod)
        .unwrap_or_else(|e| panic!("starting the mesh: {e}"));
    let mut failures = mesh_suite::enrollment_failures(&mesh);
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
        "uninstall_leaves_every_pod_working",
        mesh_suite::uninstall_leaves_every_pod_working(&mesh),
    );
    failures.extend(mesh_suite::teardown_failures(&mesh));
    mesh_suite::assert_no_failures(&failures);
}

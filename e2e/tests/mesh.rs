//! The scenarios on the namespace mini-cluster with the real control plane, ztunnels and
//! test app (binaries from the same cargo target directory, or $MESHWORK_BIN_DIR).
mod common;

use std::time::Duration;

use common::mesh_suite::{self, record};
use meshwork_e2e::{Binaries, NetnsMesh};

const FLAVOUR: &str = "bridge";

#[test]
fn scenarios_on_netns_mesh() {
    let bins = Binaries::locate().expect("binaries");
    let mesh = NetnsMesh::start(bins).unwrap_or_else(|e| panic!("starting the mesh: {e}"));
    let mut failures = mesh_suite::enrollment_failures(&mesh);
    failures.extend(mesh_suite::run_scenarios(&mesh, FLAVOUR, &[]));
    // Same node: the refusal is at once (deny-all-default), connections do not hang.
    let captured = mesh_suite::same_node_plaintext_is_captured(&mesh).and_then(|took| {
        if took > Duration::from_secs(5) {
            Err(format!("refusal took {took:?}: connections hung"))
        } else {
            Ok(())
        }
    });
    record(
        &mut failures,
        FLAVOUR,
        "same_node_plaintext_is_captured",
        captured,
    );
    failures.extend(mesh_suite::teardown_failures(&mesh));
    mesh_suite::assert_no_failures(&failures);
}

//! Meshwork end-to-end harness: scenarios written against [`MeshTarget`] (so a
//! Kubernetes target can reuse them) and run on the network-namespace mini-cluster of
//! `meshwork-netlab` with the fixture's pods ([`NetnsMesh`]), the other pod networks
//! (kind's ptp CNI, an emulated Cilium datapath: [`Network`]), packet captures, probes and
//! benchmarks.
pub mod bench;
pub mod cilium_like;
pub mod cni;
mod error;
pub mod floor;
pub mod kind_ptp;
pub mod kube_proxy;
mod manifests;
mod mesh;
mod network;
pub mod probe;

pub use error::{HarnessError, LabError};
pub use manifests::fixture_manifests;
pub use mesh::{NetnsMesh, PodSpec, Sandbox};
pub use network::{ClusterBuilderExt, ClusterExt, Network};
pub mod pcap;
pub mod scenarios;
pub mod socklb;
pub mod target;

// The mini-cluster and its mesh, from meshwork-netlab (re-exported under the names the
// scenarios and tests have always used).
pub use meshwork_netlab::{
    bin_dir, capability, cleanup_stale, locate_binary, names, netns, topology, Binaries,
    CaptureMode, Cluster, ClusterBuilder, Mesh, MeshConfig, Node, Pod, Service, WaypointSpec,
    BPF_PIN_ROOT, CONTROL_PLANE_ADMIN_PORT, CONTROL_PLANE_GRPC_PORT, CONTROL_PLANE_IP,
    WAYPOINT_ADMIN_PORT, WAYPOINT_METRICS_PORT, WAYPOINT_READINESS_PORT, ZTUNNEL_METRICS_PORT,
};

//! Meshwork end-to-end harness: a mini-cluster made of network namespaces (a fabric
//! bridge, nodes, pods behind veths), helpers to run processes inside it, and the
//! scenarios written against [`MeshTarget`] so a Kubernetes target can reuse them.
pub mod bench;
pub mod capability;
pub mod cilium_like;
mod cluster;
pub mod cni;
mod error;
pub mod floor;
pub mod kind_ptp;
pub mod kube_proxy;
mod manifests;
mod mesh;
pub mod names;
pub mod netns;
pub mod probe;
pub mod topology;

pub use cluster::{cleanup_stale, Cluster, ClusterBuilder, BPF_PIN_ROOT};
pub use error::HarnessError;
pub use manifests::fixture_manifests;
pub use mesh::{
    bin_dir, locate_binary, Binaries, CaptureMode, MeshConfig, NetnsMesh, PodSpec, Sandbox,
    WaypointSpec, CONTROL_PLANE_ADMIN_PORT, CONTROL_PLANE_GRPC_PORT, CONTROL_PLANE_IP,
    WAYPOINT_ADMIN_PORT, WAYPOINT_METRICS_PORT, WAYPOINT_READINESS_PORT, ZTUNNEL_METRICS_PORT,
};
pub use topology::{Network, Node, Pod, Service};
pub mod pcap;
pub mod scenarios;
pub mod socklb;
pub mod target;

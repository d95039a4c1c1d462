//! Meshwork's network lab: a mini-cluster made of network namespaces (a fabric bridge,
//! nodes, pods behind veths; [`Cluster`]), helpers to run processes inside it
//! ([`netns`]), the mesh booted in it with the real binaries ([`Mesh`]: control plane,
//! one ztunnel per node with the eBPF redirection, waypoints) and the probe telling
//! whether this host can run it ([`capability`]).
//!
//! Used by the local mesh (`meshwork demo`, `meshwork up`) and by the e2e harness, which
//! adds its scenarios and other pod networks ([`PodWiring`]) on top.
pub mod capability;
mod cluster;
mod error;
mod mesh;
pub mod names;
pub mod netns;
pub mod topology;

pub use cluster::{cleanup_stale, Cluster, ClusterBuilder, PodWiring, BPF_PIN_ROOT};
pub use error::LabError;
pub use mesh::{
    bin_dir, link_netns, locate_binary, wait_for, Binaries, CaptureMode, Mesh, MeshConfig,
    WaypointSpec, CONTROL_PLANE_ADMIN_PORT, CONTROL_PLANE_GRPC_PORT, CONTROL_PLANE_IP, HBONE_PORT,
    WAYPOINT_ADMIN_PORT, WAYPOINT_METRICS_PORT, WAYPOINT_READINESS_PORT, ZTUNNEL_METRICS_PORT,
};
pub use topology::{Node, Pod, Service};

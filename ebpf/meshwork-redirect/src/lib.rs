//! Userspace side of Meshwork's BPF traffic redirection.
//!
//! A node's ztunnel (running in the node's network namespace, with the host's bpffs
//! visible) calls [`Redirect::load`] once at start, [`Redirect::attach`] for the uplink and
//! every pod's host-side veth, and keeps the enrolled set current with
//! [`Redirect::enroll`] / [`Redirect::unenroll`] / [`Redirect::sync`]. Everything is pinned
//! under `<pin_root>/<node>/`, so a restarted ztunnel adopts the attached programs and the
//! enrolled set without detaching anything (see `ebpf/README.md`).
//!
//! In-pod mode (`docs/inpod.md`): [`Redirect::attach_pod`] attaches `mw_pod_egress` /
//! `mw_pod_ingress` to a pod's own interface inside its network namespace and enrolls its
//! addresses; [`Redirect::detach_pod`] undoes it; [`Redirect::pinned_pods`] lists the pods
//! whose links are pinned (adoption after a restart). Under a root-cgroup socket-LB,
//! [`Redirect::attach_pod_cgroup`] attaches `mw_pod_connect4` below the root and
//! [`Redirect::original_destination`] gives back the service address the app connected to.
mod addrs;
mod bpffs;
mod error;
mod netlink;
mod options;
mod pod;
mod redirect;
mod routing;
mod socklb;

pub use addrs::{interface_ipv4_addresses, local_ipv4_addresses, local_ipv6_addresses};
pub use bpffs::ensure_bpffs;
pub use error::RedirectError;
pub use meshwork_ebpf_common::{FLAG_ALL, FLAG_INBOUND, FLAG_OUTBOUND};
pub use netlink::NetlinkError;
pub use options::RedirectOptions;
pub use pod::{install_pod_routing, install_pod_routing6, remove_pod_routing};
pub use redirect::{teardown, Redirect, RedirectStats};
pub use routing::{install_local_routing, remove_local_routing, route_interface};
pub use socklb::{
    cgroup2_mount, default_pod_cgroup, socket_netns_cookie, OriginalDestinations, SockLbError,
};

/// The compiled BPF object (built by build.rs from `ebpf/meshwork-ebpf`).
pub(crate) static BPF_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/meshwork-ebpf"));

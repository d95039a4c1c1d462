//! `status.parents[]` of HTTPRoutes and GRPCRoutes attached to waypoint Gateways, written
//! back as Istio does (controller `istio.io/mesh-controller`, conditions `Accepted` and
//! `ResolvedRefs`), leader only.
//!
//! - [`parents`]: the entries for a route's Gateway parents, and the merge-patch body;
//! - [`tracker`]: routes, Gateways and Services seen, and what was written;
//! - [`writer`]: `GET` + `PATCH …/status`;
//! - [`run_route_status`]: the loop, fed by [`tee`].

pub mod parents;
pub mod tracker;
pub mod writer;

#[cfg(test)]
mod tests;

pub use parents::{route_status, Cluster, ParentStatus, RouteStatus, MESH_CONTROLLER};
pub use tracker::RouteTracker;
pub use writer::RouteStatusWriter;

use tokio::sync::{mpsc, watch};

use super::leader_writes;
use super::pseudo;
use super::status::TrackedWrites;
use crate::source::FileEvent;

/// Writes the route statuses of the batches received on `events` while `leader` is true.
/// Ends when `events` is closed.
pub async fn run_route_status(
    writer: RouteStatusWriter,
    events: mpsc::Receiver<Vec<FileEvent>>,
    leader: watch::Receiver<bool>,
) {
    let writes = TrackedWrites {
        writer,
        tracker: RouteTracker::default(),
        what: "route status",
    };
    leader_writes::run(writes, events, leader).await
}

/// Splits the source's batches: all go on, and the route, Gateway and Service events to
/// the route status task.
pub fn tee(
    source: mpsc::Receiver<Vec<FileEvent>>,
) -> (
    mpsc::Receiver<Vec<FileEvent>>,
    mpsc::Receiver<Vec<FileEvent>>,
) {
    leader_writes::tee(source, relevant)
}

fn relevant(e: &FileEvent) -> bool {
    matches!(
        pseudo::kind_of(e),
        Some("HTTPRoute" | "GRPCRoute" | "Gateway" | "Service")
    )
}

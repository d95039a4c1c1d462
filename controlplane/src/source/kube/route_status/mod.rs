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

use std::future::Future;
use std::pin::Pin;

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::leader_writes::{self, PendingWrites};
use super::pseudo;
use crate::source::FileEvent;

/// Writes the route statuses of the batches received on `events` while `leader` is true.
/// Ends when `events` is closed.
pub async fn run_route_status(
    writer: RouteStatusWriter,
    events: mpsc::Receiver<Vec<FileEvent>>,
    leader: watch::Receiver<bool>,
) {
    let writes = RouteWrites {
        writer,
        tracker: RouteTracker::default(),
    };
    leader_writes::run(writes, events, leader).await
}

struct RouteWrites {
    writer: RouteStatusWriter,
    tracker: RouteTracker,
}

impl PendingWrites for RouteWrites {
    fn observe(&mut self, batch: &[FileEvent]) {
        self.tracker.observe(batch);
    }

    fn reset_written(&mut self) {
        self.tracker.reset_written();
    }

    fn write_pending(&mut self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let mut ok = true;
            for (path, obj, status) in self.tracker.pending() {
                match self.writer.write(&obj, &status, Timestamp::now()).await {
                    Ok(()) => self.tracker.mark_written(path, status),
                    Err(e) => {
                        warn!(error = %e, "route status write failed; retrying");
                        ok = false;
                    }
                }
            }
            ok
        })
    }
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

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

use k8s_openapi::jiff::Timestamp;
use tokio::sync::{mpsc, watch};
use tracing::warn;

use super::pseudo;
use super::status::RETRY;
use crate::source::dir::FileEvent;

/// Writes the route statuses of the batches received on `events` while `leader` is true.
/// Ends when `events` is closed.
pub async fn run_route_status(
    writer: RouteStatusWriter,
    mut events: mpsc::Receiver<Vec<FileEvent>>,
    mut leader: watch::Receiver<bool>,
) {
    let mut tracker = RouteTracker::default();
    let mut retry_at: Option<tokio::time::Instant> = None;
    loop {
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = events.recv() => match batch {
                Some(b) => tracker.observe(&b),
                None => return,
            },
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
                if *leader.borrow() {
                    tracker.reset_written();
                }
            }
            _ = retry => retry_at = None,
        }
        if !*leader.borrow() {
            continue;
        }
        for (path, obj, status) in tracker.pending() {
            match writer.write(&obj, &status, Timestamp::now()).await {
                Ok(()) => tracker.mark_written(path, status),
                Err(e) => {
                    warn!(error = %e, "route status write failed; retrying");
                    retry_at = Some(tokio::time::Instant::now() + RETRY);
                }
            }
        }
    }
}

/// Splits the source's batches: all go on, and the route, Gateway and Service events to
/// the route status task.
pub fn tee(
    mut source: mpsc::Receiver<Vec<FileEvent>>,
) -> (
    mpsc::Receiver<Vec<FileEvent>>,
    mpsc::Receiver<Vec<FileEvent>>,
) {
    let (main_tx, main_rx) = mpsc::channel(16);
    let (status_tx, status_rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(batch) = source.recv().await {
            let mine: Vec<FileEvent> = batch.iter().filter(|e| relevant(e)).cloned().collect();
            if !mine.is_empty() && !status_tx.is_closed() {
                let _ = status_tx.send(mine).await;
            }
            if main_tx.send(batch).await.is_err() {
                return;
            }
        }
    });
    (main_rx, status_rx)
}

fn relevant(e: &FileEvent) -> bool {
    let p = match e {
        FileEvent::Changed(p, _) | FileEvent::Removed(p) => p,
    };
    matches!(
        pseudo::parse_path(p),
        Some(("HTTPRoute" | "GRPCRoute" | "Gateway" | "Service", _, _))
    )
}

//! The waypoint deployment controller: for every Gateway of class `istio-waypoint`, the
//! leader server-side-applies a ServiceAccount, Deployment and Service rendered from the
//! chart's template, owned by the Gateway, and writes the Gateway's `Accepted` and
//! `Programmed` conditions and `status.addresses` (the Service's cluster IP), like
//! istiod's deployment controller does for `istioctl waypoint apply`.
//!
//! - [`gateway`]: which Gateways are waypoints, and their validation;
//! - [`template`]: the `${NAME}`/`${NAMESPACE}` template from the chart's ConfigMap;
//! - [`api`]: server-side apply and the status patch;
//! - [`status`]: the status body;
//! - [`controller`]: what to reconcile, and the leader-only loop [`run_waypoints`].
//!
//! The controller reads the same watch batches as the engine ([`tee`]): Gateways, and the
//! template ConfigMap (watched in the root namespace like every ConfigMap).

pub mod api;
pub mod controller;
pub mod error;
pub mod gateway;
pub mod status;
pub mod template;

#[cfg(test)]
mod tests;

pub use api::{WaypointApi, FIELD_MANAGER};
pub use controller::{run_waypoints, Controller, RESYNC, RETRY};
pub use error::WaypointError;
pub use template::{Template, TemplateSource};

use tokio::sync::mpsc;

use super::pseudo;
use crate::source::dir::FileEvent;

/// Splits the source's batches: all go on, and the Gateway and ConfigMap events to the
/// waypoint controller.
pub fn tee(
    mut source: mpsc::Receiver<Vec<FileEvent>>,
) -> (
    mpsc::Receiver<Vec<FileEvent>>,
    mpsc::Receiver<Vec<FileEvent>>,
) {
    let (main_tx, main_rx) = mpsc::channel(16);
    let (wp_tx, wp_rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(batch) = source.recv().await {
            let mine: Vec<FileEvent> = batch.iter().filter(|e| relevant(e)).cloned().collect();
            if !mine.is_empty() {
                let _ = wp_tx.send(mine).await;
            }
            if main_tx.send(batch).await.is_err() {
                return;
            }
        }
    });
    (main_rx, wp_rx)
}

fn relevant(e: &FileEvent) -> bool {
    let p = match e {
        FileEvent::Changed(p, _) | FileEvent::Removed(p) => p,
    };
    matches!(pseudo::parse_path(p), Some(("Gateway" | "ConfigMap", _, _)))
}

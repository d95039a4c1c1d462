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
//! - [`controller`]: what to reconcile, and the leader-only loop [`run_waypoints`];
//! - [`class`]: the `istio-waypoint` GatewayClass (created when missing, `Accepted`).
//!
//! The controller reads the same watch batches as the engine ([`tee`]): Gateways, and the
//! template ConfigMap (watched in the root namespace like every ConfigMap).

pub mod api;
pub mod class;
pub mod controller;
pub mod error;
pub mod gateway;
pub mod status;
pub mod template;

#[cfg(test)]
mod tests;

pub use api::{WaypointApi, FIELD_MANAGER};
pub use class::run_class;
pub use controller::{run_waypoints, Controller, RESYNC, RETRY};
pub use error::WaypointError;
pub use template::{Template, TemplateSource};

use tokio::sync::mpsc;

use super::{leader_writes, pseudo};
use crate::source::FileEvent;

/// Splits the source's batches: all go on, and the Gateway and ConfigMap events to the
/// waypoint controller.
pub fn tee(
    source: mpsc::Receiver<Vec<FileEvent>>,
) -> (
    mpsc::Receiver<Vec<FileEvent>>,
    mpsc::Receiver<Vec<FileEvent>>,
) {
    leader_writes::tee(source, relevant)
}

fn relevant(e: &FileEvent) -> bool {
    matches!(pseudo::kind_of(e), Some("Gateway" | "ConfigMap"))
}

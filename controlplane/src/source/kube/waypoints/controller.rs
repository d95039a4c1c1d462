//! The reconciler: which waypoint Gateways need their objects applied and status written,
//! and the loop that does it while this replica leads.
//!
//! A Gateway is reconciled when its text or the template changed since its last
//! successful reconcile, and every Gateway again every [`RESYNC`] (an apply is idempotent;
//! this restores a waypoint Deployment or Service someone deleted or edited). A failed
//! apply or status write is retried every [`RETRY`]; the objects are never deleted here:
//! their owner reference lets Kubernetes' garbage collector delete them with the Gateway.

use std::collections::BTreeMap;
use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use k8s_openapi::jiff::Timestamp;
use serde_json::Value;
use tokio::sync::{mpsc, watch};
use tracing::{info, warn};

use super::api::WaypointApi;
use super::error::WaypointError;
use super::gateway::{observe, GatewayKey, Observed};
use super::status::{service_addresses, Cond, GatewayStatus};
use super::template::{Template, TemplateSource};
use crate::source::kube::leader_writes::{self, PendingWrites};
use crate::source::kube::pseudo;
use crate::source::FileEvent;

/// How long a failed reconcile waits before the next attempt.
pub use crate::source::kube::leader_writes::RETRY;
/// How often every waypoint is applied again.
pub const RESYNC: Duration = Duration::from_secs(300);

/// The template as last seen: absent, unusable (with why), or ready.
#[derive(Debug, Clone)]
enum TemplateState {
    Missing,
    Invalid(String),
    Ready(Template),
}

/// Desired state (Gateways, template) and what was reconciled.
#[derive(Debug)]
pub struct Controller {
    source: TemplateSource,
    template: TemplateState,
    /// Bumped on every template change, so every Gateway is reconciled again.
    template_generation: u64,
    gateways: BTreeMap<GatewayKey, (Observed, String)>,
    done: BTreeMap<GatewayKey, (String, u64)>,
}

impl Controller {
    pub fn new(source: TemplateSource) -> Self {
        Controller {
            source,
            template: TemplateState::Missing,
            template_generation: 0,
            gateways: BTreeMap::new(),
            done: BTreeMap::new(),
        }
    }

    fn template_path(&self) -> std::path::PathBuf {
        pseudo::path(
            "ConfigMap",
            Some(&self.source.namespace),
            &self.source.configmap,
        )
    }

    /// Takes a batch of source events into account.
    pub fn observe(&mut self, events: &[FileEvent]) {
        let template_path = self.template_path();
        for ev in events {
            match ev {
                FileEvent::Changed(path, text) if *path == template_path => {
                    self.template = self.read_template(text);
                    self.template_generation += 1;
                }
                FileEvent::Removed(path) if *path == template_path => {
                    self.template = TemplateState::Missing;
                    self.template_generation += 1;
                }
                FileEvent::Changed(path, text) => match observe(path, text) {
                    Some(o) => {
                        self.gateways.insert(o.gateway.key(), (o, text.clone()));
                    }
                    None => self.forget(path),
                },
                FileEvent::Removed(path) => self.forget(path),
            }
        }
    }

    fn forget(&mut self, path: &std::path::Path) {
        if let Some(("Gateway", Some(ns), name)) = pseudo::parse_path(path) {
            let key = (ns.to_string(), name.to_string());
            self.gateways.remove(&key);
            self.done.remove(&key);
        }
    }

    fn read_template(&self, configmap_json: &str) -> TemplateState {
        let v: Value = match serde_json::from_str(configmap_json) {
            Ok(v) => v,
            Err(e) => return TemplateState::Invalid(format!("{}: {e}", self.source.describe())),
        };
        let Some(text) = v["data"][&self.source.key].as_str() else {
            return TemplateState::Invalid(format!("{}: key not found", self.source.describe()));
        };
        match Template::parse(self.source.clone(), text) {
            Ok(t) => TemplateState::Ready(t),
            Err(e) => TemplateState::Invalid(e.to_string()),
        }
    }

    /// Gateways to reconcile, in key order.
    pub fn pending(&self) -> Vec<GatewayKey> {
        self.gateways
            .iter()
            .filter(|(k, (_, text))| {
                self.done.get(*k) != Some(&(text.clone(), self.template_generation))
            })
            .map(|(k, _)| k.clone())
            .collect()
    }

    /// Forget what was reconciled (leadership regained: another replica may have written).
    pub fn reset(&mut self) {
        self.done.clear();
    }

    /// Applies the waypoint of `key` and writes its status.
    pub async fn reconcile(
        &mut self,
        api: &WaypointApi,
        key: &GatewayKey,
        now: Timestamp,
    ) -> Result<(), WaypointError> {
        let Some((observed, text)) = self.gateways.get(key).cloned() else {
            return Ok(());
        };
        let gw = &observed.gateway;
        let status = |accepted: Cond, programmed: Cond, addresses| GatewayStatus {
            accepted,
            programmed,
            addresses,
            observed_generation: gw.generation,
        };
        let result = if let Some(r) = &observed.rejection {
            warn!(namespace = %gw.namespace, name = %gw.name, reason = r.reason, message = %r.message, "waypoint Gateway not accepted");
            let s = status(
                Cond::failed(r.reason, r.message.clone()),
                Cond::failed("Invalid", "the Gateway is not accepted"),
                vec![],
            );
            api.write_status(gw, &s, now).await
        } else {
            let accepted = Cond::ok("Accepted", "accepted by Meshwork");
            match &self.template {
                TemplateState::Missing => {
                    let msg = format!("waypoint template {} not found", self.source.describe());
                    warn!(namespace = %gw.namespace, name = %gw.name, "{msg}");
                    api.write_status(
                        gw,
                        &status(accepted, Cond::failed("Pending", msg), vec![]),
                        now,
                    )
                    .await
                }
                TemplateState::Invalid(msg) => {
                    warn!(namespace = %gw.namespace, name = %gw.name, "{msg}");
                    let s = status(accepted, Cond::failed("Invalid", msg.clone()), vec![]);
                    api.write_status(gw, &s, now).await
                }
                TemplateState::Ready(t) => match apply_all(api, t, gw).await {
                    Ok(addresses) => {
                        info!(namespace = %gw.namespace, name = %gw.name, "waypoint applied");
                        let programmed = Cond::ok(
                            "Programmed",
                            format!(
                                "waypoint Deployment and Service {}/{} applied",
                                gw.namespace, gw.name
                            ),
                        );
                        api.write_status(gw, &status(accepted, programmed, addresses), now)
                            .await
                    }
                    Err(e) => {
                        let s =
                            status(accepted, Cond::failed("NoResources", e.to_string()), vec![]);
                        if let Err(se) = api.write_status(gw, &s, now).await {
                            warn!(error = %se, "cannot report the failed apply");
                        }
                        return Err(e);
                    }
                },
            }
        };
        result?;
        self.done
            .insert(key.clone(), (text, self.template_generation));
        Ok(())
    }
}

/// Applies every rendered object; returns the Service's addresses.
async fn apply_all(
    api: &WaypointApi,
    t: &Template,
    gw: &super::gateway::WaypointGateway,
) -> Result<Vec<super::status::Address>, WaypointError> {
    let mut addresses = Vec::new();
    for obj in t.render(gw)? {
        let applied = api.apply(&obj).await?;
        if obj["kind"] == "Service" {
            let name = obj["metadata"]["name"].as_str().unwrap_or(&gw.name);
            addresses.extend(service_addresses(&applied, &gw.namespace, name));
        }
    }
    Ok(addresses)
}

/// The controller and its API as a leader-only writer: applied again on changes, on
/// leadership gains and every [`RESYNC`].
struct WaypointWrites {
    api: WaypointApi,
    controller: Controller,
}

impl PendingWrites for WaypointWrites {
    fn observe(&mut self, batch: &[FileEvent]) {
        self.controller.observe(batch);
    }

    fn reset_written(&mut self) {
        self.controller.reset();
    }

    fn write_pending(&mut self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>> {
        Box::pin(async move {
            let mut ok = true;
            for key in self.controller.pending() {
                let r = self
                    .controller
                    .reconcile(&self.api, &key, Timestamp::now())
                    .await;
                if let Err(e) = r {
                    warn!(error = %e, "waypoint reconcile failed; retrying");
                    ok = false;
                }
            }
            ok
        })
    }

    fn resync_every(&self) -> Option<Duration> {
        Some(RESYNC)
    }
}

/// Reconciles the waypoint Gateways of the batches received on `events` while `leader`
/// is true. Ends when `events` is closed.
pub async fn run_waypoints(
    api: WaypointApi,
    controller: Controller,
    events: mpsc::Receiver<Vec<FileEvent>>,
    leader: watch::Receiver<bool>,
) {
    leader_writes::run(WaypointWrites { api, controller }, events, leader).await
}

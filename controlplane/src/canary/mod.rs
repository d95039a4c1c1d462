//! The built-in canary controller: Flagger's `Canary` (flagger.app/v1beta1) run by the
//! control plane, for teams without Flagger. See `docs/canary.md`.
//!
//! Pipeline, one file each: [`spec`] (the stored Canary, its MetricTemplates and
//! Deployments → a [`spec::Plan`]) → [`machine`] (Flagger's phases, one step per
//! `analysis.interval`) → [`judge`] (each metric check through a [`judge::Judge`]:
//! [`prometheus`] or, with no Prometheus, [`scrape`] of the waypoints' own metrics) and
//! [`webhook`] (Flagger's payload) → [`act`] (the Services and VirtualService Flagger's
//! Istio provider would write, fed to the engine as a pseudo-file).
//!
//! [`Controller::run`] owns every [`machine::Rollout`]; [`Board`] is what the admin
//! endpoint shows (`/debug/canaries`) and where `meshwork rollout promote|abort` leave
//! their orders.

pub mod act;
pub mod http;
pub mod judge;
pub mod machine;
pub mod prometheus;
pub mod scrape;
pub mod spec;
pub mod status;
pub mod webhook;

use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};
use std::time::Duration;

use meshwork_runtime::sync::RwLockExt;
use serde::Serialize;
use tokio::sync::{watch, Notify};
use tokio::time::Instant;
use tracing::{info, warn};

use act::Router;
use judge::{CheckResult, Judge};
use machine::{Command, Env, Rollout, Routing};
use spec::Inputs;
use status::Status;
use webhook::Hooks;

/// One Canary as the admin endpoint shows it.
#[derive(Debug, Clone, Serialize, PartialEq)]
#[serde(rename_all = "camelCase")]
pub struct CanaryView {
    pub namespace: String,
    pub name: String,
    pub status: Status,
    /// Why the Canary cannot run (a missing Deployment or MetricTemplate), if so.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub error: Option<String>,
    pub routing: Option<Routing>,
    pub last_checks: Vec<CheckResult>,
    pub last_decision: String,
    /// Seconds until the next step.
    pub next_step_in_seconds: f64,
}

#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CommandError {
    #[error("canary {0} not found")]
    NotFound(String),
    #[error("canary {key} is {phase}: only a running analysis can be promoted or aborted")]
    NotRunning { key: String, phase: &'static str },
}

/// Shared between the controller, the admin endpoint and the CLI's orders.
#[derive(Default)]
pub struct Board {
    views: RwLock<BTreeMap<String, CanaryView>>,
    commands: RwLock<BTreeMap<String, Command>>,
    wake: Notify,
}

impl Board {
    pub fn list(&self) -> Vec<CanaryView> {
        self.views.read_or_recover().values().cloned().collect()
    }
    pub fn get(&self, namespace: &str, name: &str) -> Option<CanaryView> {
        self.views
            .read_or_recover()
            .get(&format!("{namespace}/{name}"))
            .cloned()
    }
    /// Orders a running canary to promote or abort at once.
    pub fn command(&self, namespace: &str, name: &str, c: Command) -> Result<(), CommandError> {
        let key = format!("{namespace}/{name}");
        let phase = self
            .views
            .read_or_recover()
            .get(&key)
            .map(|v| v.status.phase)
            .ok_or_else(|| CommandError::NotFound(key.clone()))?;
        if !matches!(
            phase,
            status::Phase::Progressing | status::Phase::WaitingPromotion
        ) {
            return Err(CommandError::NotRunning {
                key,
                phase: phase.as_str(),
            });
        }
        self.commands.write_or_recover().insert(key, c);
        self.wake.notify_one();
        Ok(())
    }
}

struct Entry {
    rollout: Rollout,
    due: Instant,
    applied: Option<Routing>,
    /// The status last handed to [`Router::status`].
    reported: Option<Status>,
}

pub struct Controller {
    pub judge: Arc<dyn Judge>,
    pub hooks: Arc<dyn Hooks>,
    pub router: Arc<dyn Router>,
    pub board: Arc<Board>,
    /// How often Canaries waiting for a dependency (a missing Deployment) are re-planned.
    pub retry: Duration,
}

impl Controller {
    /// Runs until `inputs`' sender is dropped.
    pub async fn run(self, mut inputs: watch::Receiver<Inputs>) {
        let mut entries: BTreeMap<String, Entry> = BTreeMap::new();
        loop {
            let current = inputs.borrow_and_update().clone();
            self.step_all(&current, &mut entries).await;
            let next = entries
                .values()
                .map(|e| e.due)
                .min()
                .unwrap_or_else(|| Instant::now() + self.retry)
                .min(Instant::now() + self.retry);
            tokio::select! {
                changed = inputs.changed() => {
                    if changed.is_err() {
                        return; // the engine is gone
                    }
                }
                _ = tokio::time::sleep_until(next) => {}
                _ = self.board.wake.notified() => {}
            }
        }
    }

    async fn step_all(&self, inputs: &Inputs, entries: &mut BTreeMap<String, Entry>) {
        if !self.router.active() {
            // Another replica runs the Canaries; when this one takes over, each starts
            // again from Initializing (the state is in memory).
            entries.clear();
            self.board.views.write_or_recover().clear();
            return;
        }
        let now = Instant::now();
        let mut seen = BTreeMap::new();
        for obj in &inputs.canaries {
            let key = obj.ns_name();
            seen.insert(key.clone(), ());
            let plan = match inputs.plan(obj) {
                Ok(p) => p,
                Err(e) => {
                    let mut views = self.board.views.write_or_recover();
                    let v = views.entry(key.clone()).or_insert_with(|| CanaryView {
                        namespace: obj.namespace.clone(),
                        name: obj.name.clone(),
                        status: Status::default(),
                        error: None,
                        routing: None,
                        last_checks: Vec::new(),
                        last_decision: String::new(),
                        next_step_in_seconds: 0.0,
                    });
                    if v.error.as_deref() != Some(&e.to_string()) {
                        warn!(canary = %key, error = %e, "canary cannot run");
                    }
                    v.error = Some(e.to_string());
                    continue;
                }
            };
            let entry = entries.entry(key.clone()).or_insert_with(|| Entry {
                rollout: Rollout::default(),
                due: now,
                applied: None,
                reported: None,
            });
            if let Some(c) = self.board.commands.write_or_recover().remove(&key) {
                entry.rollout.pending = Some(c);
                entry.due = now;
            }
            if entry.due <= now {
                let env = Env {
                    judge: self.judge.as_ref(),
                    hooks: self.hooks.as_ref(),
                };
                entry.rollout.advance(&plan, &env).await;
                entry.due = Instant::now() + plan.interval;
            }
            if entry.reported.as_ref() != Some(&entry.rollout.status) {
                self.router.status(
                    &plan.namespace,
                    &plan.name,
                    &entry.rollout.status,
                    &entry.rollout.last_decision,
                );
                entry.reported = Some(entry.rollout.status.clone());
            }
            let routing = entry.rollout.routing(&plan);
            if entry.applied.as_ref() != Some(&routing) {
                match self.router.apply(&plan, &routing) {
                    Ok(()) => {
                        info!(
                            canary = %key,
                            primary_weight = routing.primary_weight,
                            canary_weight = routing.canary_weight,
                            match_to_canary = routing.match_to_canary,
                            "canary routing applied"
                        );
                        entry.applied = Some(routing.clone());
                    }
                    Err(e) => warn!(canary = %key, error = %e, "cannot apply the canary routing"),
                }
            }
            let view = CanaryView {
                namespace: plan.namespace.clone(),
                name: plan.name.clone(),
                status: entry.rollout.status.clone(),
                error: None,
                routing: Some(routing),
                last_checks: entry.rollout.last_checks.clone(),
                last_decision: entry.rollout.last_decision.clone(),
                next_step_in_seconds: entry
                    .due
                    .saturating_duration_since(Instant::now())
                    .as_secs_f64(),
            };
            self.board.views.write_or_recover().insert(key, view);
        }
        let gone: Vec<String> = entries
            .keys()
            .filter(|k| !seen.contains_key(*k))
            .cloned()
            .collect();
        for key in gone {
            entries.remove(&key);
            if let Some((ns, name)) = key.split_once('/') {
                self.router.remove(ns, name);
            }
            info!(canary = %key, "canary removed: generated routing withdrawn");
        }
        self.board
            .views
            .write_or_recover()
            .retain(|k, _| seen.contains_key(k));
    }
}

#[cfg(test)]
mod tests;

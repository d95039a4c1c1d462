//! The state machine of one Canary, advanced once per analysis interval: Flagger's phases
//! (Initializing → Initialized → [Waiting] → Progressing → [WaitingPromotion] → Promoting
//! → Finalising → Succeeded, or Failed on rollback), its failed-check threshold and its
//! webhook types. Each call of [`Rollout::advance`] is one step; the traffic split it
//! wants is [`Rollout::routing`].

use std::collections::BTreeMap;

use meshwork_api::canary::HookType;
use tracing::{info, warn};

use super::judge::{judge_all, CheckResult, Judge};
use super::spec::{Plan, Steps};
use super::status::{Phase, Status};
use super::webhook::{Hooks, Payload};

/// An operator's order (`meshwork rollout promote|abort`), carried out at the next step.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Command {
    /// Skip the rest of the analysis and the confirm-promotion gate: promote now.
    Promote,
    /// Roll back now.
    Abort,
}

/// The traffic split a Canary wants.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Routing {
    pub primary_weight: u32,
    pub canary_weight: u32,
    /// A/B testing: requests matching `analysis.match` go to the canary.
    pub match_to_canary: bool,
    pub primary_selector: BTreeMap<String, String>,
    pub canary_selector: BTreeMap<String, String>,
}

/// What the state machine uses to judge and to call out.
pub struct Env<'a> {
    pub judge: &'a dyn Judge,
    pub hooks: &'a dyn Hooks,
}

/// One Canary's progress.
#[derive(Debug, Clone, Default)]
pub struct Rollout {
    pub status: Status,
    /// The primary's pods: fixed at initialization, the canary's at each promotion (the
    /// primary took the canary's version).
    pub promoted_selector: Option<BTreeMap<String, String>>,
    pub pending: Option<Command>,
    pre_rollout_done: bool,
    /// A/B testing: the match route is in place (the next step can judge).
    ab_routed: bool,
    pub last_checks: Vec<CheckResult>,
    /// The last step's decision, as logged.
    pub last_decision: String,
}

impl Rollout {
    pub fn routing(&self, plan: &Plan) -> Routing {
        let primary_selector = self
            .promoted_selector
            .clone()
            .unwrap_or_else(|| plan.primary_selector.clone());
        let w = self.status.canary_weight.min(100);
        Routing {
            primary_weight: 100 - w,
            canary_weight: w,
            match_to_canary: matches!(plan.steps, Steps::Iterations(_))
                && matches!(
                    self.status.phase,
                    Phase::Progressing | Phase::WaitingPromotion
                )
                && self.ab_routed,
            primary_selector,
            canary_selector: plan.canary_selector.clone(),
        }
    }

    fn payload(&self, plan: &Plan, t: HookType, metadata: &BTreeMap<String, String>) -> Payload {
        Payload {
            name: plan.name.clone(),
            namespace: plan.namespace.clone(),
            phase: self.status.phase.as_str().into(),
            checksum: self.status.last_applied_spec.clone(),
            type_: t.as_str().into(),
            metadata: metadata.clone(),
        }
    }

    /// Calls every hook of type `t`; the first failure, if any.
    async fn run_hooks(&self, plan: &Plan, env: &Env<'_>, t: HookType) -> Result<(), String> {
        for h in plan.hooks(t) {
            let payload = self.payload(plan, t, &h.metadata);
            env.hooks.call(h, &payload).await?;
        }
        Ok(())
    }

    /// Whether any `rollback` hook answers 2xx (roll back now).
    async fn rollback_requested(&self, plan: &Plan, env: &Env<'_>) -> Option<String> {
        for h in plan.hooks(HookType::Rollback) {
            let payload = self.payload(plan, HookType::Rollback, &h.metadata);
            if env.hooks.call(h, &payload).await.is_ok() {
                return Some(format!("rollback webhook {} answered", h.name));
            }
        }
        None
    }

    async fn transition(&mut self, plan: &Plan, env: &Env<'_>, phase: Phase, message: &str) {
        let changed = self.status.phase != phase;
        self.status.set_phase(phase, message);
        self.decide(plan, message);
        if changed {
            if let Err(e) = self.run_hooks(plan, env, HookType::Event).await {
                warn!(canary = %plan.key(), error = %e, "event webhook failed");
            }
        }
    }

    fn decide(&mut self, plan: &Plan, decision: &str) {
        self.last_decision = decision.to_string();
        info!(
            canary = %plan.key(),
            phase = self.status.phase.as_str(),
            weight = self.status.canary_weight,
            failed_checks = self.status.failed_checks,
            iterations = self.status.iterations,
            decision,
            "canary step"
        );
    }

    fn fail_check(&mut self, plan: &Plan, why: &str) {
        self.status.failed_checks += 1;
        let d = format!(
            "halt advancement: {why} (failed checks {}/{})",
            self.status.failed_checks, plan.threshold
        );
        self.decide(plan, &d);
    }

    /// One analysis step.
    pub async fn advance(&mut self, plan: &Plan, env: &Env<'_>) {
        if plan.suspend {
            self.decide(plan, "suspended (spec.suspend)");
            return;
        }
        match self.status.phase {
            Phase::Initializing => {
                // Without a `<target>-primary`, the target's version is the primary (as
                // Flagger's initialization); with one, that is the primary's version and a
                // different target is a new revision, analysed at the next step.
                let primary = plan.primary_revision.as_ref().unwrap_or(&plan.revision);
                self.status.last_applied_spec = primary.clone();
                self.status.last_promoted_spec = primary.clone();
                self.status.canary_weight = 0;
                self.promoted_selector = Some(plan.primary_selector.clone());
                let msg = "initialization done: all traffic to the primary";
                self.transition(plan, env, Phase::Initialized, msg).await;
            }
            Phase::Initialized | Phase::Succeeded | Phase::Failed | Phase::Waiting => {
                if plan.revision == self.status.last_applied_spec
                    && self.status.phase != Phase::Waiting
                {
                    return;
                }
                if let Err(e) = self.run_hooks(plan, env, HookType::ConfirmRollout).await {
                    let msg = format!("waiting for rollout confirmation: {e}");
                    self.transition(plan, env, Phase::Waiting, &msg).await;
                    return;
                }
                self.start(plan, env, "new revision detected, starting canary analysis")
                    .await;
            }
            Phase::Progressing | Phase::WaitingPromotion => self.analyse(plan, env).await,
            Phase::Promoting => {
                self.status.canary_weight = 0;
                self.status.last_promoted_spec = self.status.last_applied_spec.clone();
                let msg = "routing all traffic to the primary";
                self.transition(plan, env, Phase::Finalising, msg).await;
            }
            Phase::Finalising => {
                let msg = "canary analysis completed successfully, promotion finished";
                self.transition(plan, env, Phase::Succeeded, msg).await;
                if let Err(e) = self.run_hooks(plan, env, HookType::PostRollout).await {
                    warn!(canary = %plan.key(), error = %e, "post-rollout webhook failed");
                }
            }
        }
    }

    async fn start(&mut self, plan: &Plan, env: &Env<'_>, why: &str) {
        self.status.last_applied_spec = plan.revision.clone();
        self.status.canary_weight = 0;
        self.status.failed_checks = 0;
        self.status.iterations = 0;
        self.pre_rollout_done = false;
        self.ab_routed = false;
        self.last_checks.clear();
        self.transition(plan, env, Phase::Progressing, why).await;
    }

    async fn analyse(&mut self, plan: &Plan, env: &Env<'_>) {
        if plan.revision != self.status.last_applied_spec {
            self.start(plan, env, "new revision detected, restarting analysis")
                .await;
            return;
        }
        let command = self.pending.take();
        if command == Some(Command::Abort) {
            return self.rollback(plan, env, "aborted by the operator").await;
        }
        if self.status.failed_checks >= plan.threshold {
            let why = format!(
                "canary failed {} checks (threshold {}): rolling back",
                self.status.failed_checks, plan.threshold
            );
            return self.rollback(plan, env, &why).await;
        }
        if let Some(why) = self.rollback_requested(plan, env).await {
            return self.rollback(plan, env, &why).await;
        }
        if command == Some(Command::Promote) {
            return self.promote(plan, env, "promoted by the operator").await;
        }
        if self.status.phase == Phase::WaitingPromotion {
            return self.confirm_promotion(plan, env).await;
        }
        if plan.skip_analysis {
            return self
                .promote(plan, env, "analysis skipped (spec.skipAnalysis)")
                .await;
        }
        if !self.pre_rollout_done {
            if let Err(e) = self.run_hooks(plan, env, HookType::PreRollout).await {
                return self.fail_check(plan, &format!("pre-rollout: {e}"));
            }
            self.pre_rollout_done = true;
        }
        if let Err(e) = self.run_hooks(plan, env, HookType::Rollout).await {
            return self.fail_check(plan, &format!("rollout: {e}"));
        }
        let judged = self.status.canary_weight > 0 || self.ab_routed;
        if judged {
            self.last_checks = judge_all(env.judge, plan).await;
            for c in &self.last_checks {
                info!(
                    canary = %plan.key(),
                    weight = self.status.canary_weight,
                    metric = %c.metric,
                    value = c.value,
                    passed = c.passed,
                    error = c.error.as_deref().unwrap_or(""),
                    "canary check"
                );
            }
            if let Some(bad) = self.last_checks.iter().find(|c| !c.passed) {
                let why = match (&bad.error, bad.value) {
                    (Some(e), _) => e.clone(),
                    (None, Some(v)) => format!("{} {v:.3} outside its threshold range", bad.metric),
                    (None, None) => bad.metric.clone(),
                };
                return self.fail_check(plan, &why);
            }
        }
        match &plan.steps {
            Steps::Weights(_) => match plan.next_weight(self.status.canary_weight) {
                Some(next) => {
                    if let Err(e) = self
                        .run_hooks(plan, env, HookType::ConfirmTrafficIncrease)
                        .await
                    {
                        let d = format!("waiting for traffic increase confirmation: {e}");
                        return self.decide(plan, &d);
                    }
                    self.status.canary_weight = next;
                    self.decide(plan, &format!("advance canary weight {next}"));
                }
                None => self.confirm_promotion(plan, env).await,
            },
            Steps::Iterations(n) => {
                if !self.ab_routed {
                    self.ab_routed = true;
                    return self.decide(plan, "routing matching requests to the canary");
                }
                self.status.iterations += 1;
                if self.status.iterations < *n {
                    let d = format!("advance canary iteration {}/{n}", self.status.iterations);
                    return self.decide(plan, &d);
                }
                self.confirm_promotion(plan, env).await;
            }
        }
    }

    async fn confirm_promotion(&mut self, plan: &Plan, env: &Env<'_>) {
        match self.run_hooks(plan, env, HookType::ConfirmPromotion).await {
            Ok(()) => {
                self.promote(plan, env, "copying the canary's version to the primary")
                    .await
            }
            Err(e) => {
                let msg = format!("waiting for promotion confirmation: {e}");
                self.transition(plan, env, Phase::WaitingPromotion, &msg)
                    .await;
            }
        }
    }

    /// The primary takes the canary's version (its pods serve the primary), weights stay
    /// until the next step routes everything to the primary.
    async fn promote(&mut self, plan: &Plan, env: &Env<'_>, why: &str) {
        self.promoted_selector = Some(plan.canary_selector.clone());
        self.transition(plan, env, Phase::Promoting, why).await;
    }

    async fn rollback(&mut self, plan: &Plan, env: &Env<'_>, why: &str) {
        self.status.canary_weight = 0;
        self.status.iterations = 0;
        self.ab_routed = false;
        let msg = format!("{why}; all traffic back to the primary");
        self.transition(plan, env, Phase::Failed, &msg).await;
        if let Err(e) = self.run_hooks(plan, env, HookType::PostRollout).await {
            warn!(canary = %plan.key(), error = %e, "post-rollout webhook failed");
        }
    }
}

//! The Canary's `status`, shaped like Flagger's so tools reading one read the other.

use serde::Serialize;

/// Flagger's `CanaryPhase`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize, Default)]
pub enum Phase {
    #[default]
    Initializing,
    Initialized,
    /// A new revision waits for its `confirm-rollout` webhooks.
    Waiting,
    Progressing,
    WaitingPromotion,
    Promoting,
    Finalising,
    Succeeded,
    Failed,
}

impl Phase {
    pub fn as_str(&self) -> &'static str {
        match self {
            Phase::Initializing => "Initializing",
            Phase::Initialized => "Initialized",
            Phase::Waiting => "Waiting",
            Phase::Progressing => "Progressing",
            Phase::WaitingPromotion => "WaitingPromotion",
            Phase::Promoting => "Promoting",
            Phase::Finalising => "Finalising",
            Phase::Succeeded => "Succeeded",
            Phase::Failed => "Failed",
        }
    }
    /// Whether an analysis is under way (the canary may receive traffic).
    pub fn is_running(&self) -> bool {
        matches!(
            self,
            Phase::Progressing | Phase::WaitingPromotion | Phase::Promoting | Phase::Finalising
        )
    }
}

/// Flagger's `CanaryCondition` (type `Promoted`).
#[derive(Debug, Clone, PartialEq, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Condition {
    #[serde(rename = "type")]
    pub type_: String,
    /// `True`, `False` or `Unknown`.
    pub status: String,
    pub last_update_time: String,
    pub last_transition_time: String,
    pub reason: String,
    pub message: String,
}

/// Flagger's `CanaryStatus` (the fields Meshwork fills).
#[derive(Debug, Clone, PartialEq, Serialize, Default)]
#[serde(rename_all = "camelCase")]
pub struct Status {
    pub phase: Phase,
    pub failed_checks: u32,
    pub canary_weight: u32,
    pub iterations: u32,
    /// The canary revision the analysis is about (digest of the target's pod template).
    pub last_applied_spec: String,
    pub last_promoted_spec: String,
    pub last_transition_time: String,
    pub conditions: Vec<Condition>,
}

pub fn now_rfc3339() -> String {
    jiff::Timestamp::now()
        .round(jiff::Unit::Second)
        .map(|t| t.to_string())
        .unwrap_or_default()
}

impl Status {
    /// Moves to `phase` (timestamps and the `Promoted` condition follow).
    pub fn set_phase(&mut self, phase: Phase, message: &str) {
        let now = now_rfc3339();
        let changed = self.phase != phase;
        if changed {
            self.last_transition_time = now.clone();
        }
        self.phase = phase;
        let status = match phase {
            Phase::Succeeded | Phase::Initialized => "True",
            Phase::Failed => "False",
            _ => "Unknown",
        };
        let reason = phase.as_str().to_string();
        match self.conditions.iter_mut().find(|c| c.type_ == "Promoted") {
            Some(c) => {
                if c.status != status {
                    c.last_transition_time = now.clone();
                }
                c.status = status.into();
                c.reason = reason;
                c.message = message.into();
                c.last_update_time = now;
            }
            None => self.conditions.push(Condition {
                type_: "Promoted".into(),
                status: status.into(),
                last_update_time: now.clone(),
                last_transition_time: now,
                reason,
                message: message.into(),
            }),
        }
    }
}

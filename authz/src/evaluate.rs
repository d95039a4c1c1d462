//! Combining policies into a decision, with the policy and rule that decided.

use std::fmt;

use meshwork_model::pb::config as pb;

use crate::context::RequestContext;
use crate::rule::Policy;

/// A policy rule that matched.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct PolicyMatch {
    /// `<ns>/<name>`.
    pub policy: String,
    pub rule: usize,
    pub action: pb::Action,
}

/// How the decision was reached.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Outcome {
    /// No ALLOW policy applies and no DENY policy matched.
    AllowedNoPolicy,
    /// An ALLOW policy matched.
    Allowed,
    /// A DENY policy matched.
    Denied,
    /// ALLOW policies apply and none matched.
    DeniedNoAllowMatch,
    /// A CUSTOM policy matched: the decision belongs to the external provider, which Meshwork
    /// does not support. Callers must reject the request with a clear error.
    Custom { provider: String },
}

/// The result of evaluating the applicable policies for one request.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Decision {
    pub allowed: bool,
    /// `<ns>/<name>` of the policy that decided, if one did.
    pub policy: Option<String>,
    /// Index of the deciding rule in that policy.
    pub rule: Option<usize>,
    pub outcome: Outcome,
    /// Human-readable explanation.
    pub reason: String,
    /// AUDIT policies whose rules matched (log them; they never change the decision).
    pub audit: Vec<PolicyMatch>,
    /// Dry-run policies whose rules matched (what would have been enforced).
    pub dry_run: Vec<PolicyMatch>,
}

impl fmt::Display for Decision {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let verdict = if self.allowed { "allow" } else { "deny" };
        write!(f, "{verdict}: {}", self.reason)
    }
}

/// Evaluates compiled policies (already selected for the destination, see
/// [`crate::applicable`]) against a request.
pub fn evaluate<'a>(
    policies: impl IntoIterator<Item = &'a Policy>,
    ctx: &RequestContext,
) -> Decision {
    let mut custom = None;
    let mut deny = None;
    let mut allow = None;
    let mut have_allow = false;
    let mut audit = Vec::new();
    let mut dry_run = Vec::new();
    for p in policies {
        let hit = p.matching_rule(ctx);
        let record = |rule: usize| PolicyMatch {
            policy: p.key.clone(),
            rule,
            action: p.action,
        };
        if p.dry_run {
            if let Some((rule, _)) = hit {
                dry_run.push(record(rule));
            }
            continue;
        }
        match p.action {
            pb::Action::Audit => audit.extend(hit.map(|(rule, _)| record(rule))),
            pb::Action::Custom => {
                if let (Some((rule, _)), None) = (hit, &custom) {
                    custom = Some((p, rule));
                }
            }
            pb::Action::Deny => {
                if let (Some((rule, err)), None) = (hit, &deny) {
                    deny = Some((p, rule, err.map(ToString::to_string)));
                }
            }
            pb::Action::Allow => {
                have_allow = true;
                if let (Some((rule, _)), None) = (hit, &allow) {
                    allow = Some((p, rule));
                }
            }
        }
    }
    let decided = |allowed, p: &Policy, rule, outcome, reason| Decision {
        allowed,
        policy: Some(p.key.clone()),
        rule: Some(rule),
        outcome,
        reason,
        audit: Vec::new(),
        dry_run: Vec::new(),
    };
    let mut d = if let Some((p, rule)) = custom {
        let provider = if p.provider.is_empty() {
            "<unnamed>".to_string()
        } else {
            p.provider.clone()
        };
        let reason = format!(
            "CUSTOM policy {} rule {rule} matched: extension provider {provider:?} is not supported",
            p.key
        );
        decided(false, p, rule, Outcome::Custom { provider }, reason)
    } else if let Some((p, rule, err)) = deny {
        let reason = match err {
            None => format!("DENY policy {} rule {rule} matched", p.key),
            Some(e) => format!("DENY policy {} rule {rule} is invalid, denying: {e}", p.key),
        };
        decided(false, p, rule, Outcome::Denied, reason)
    } else if let Some((p, rule)) = allow {
        let reason = format!("ALLOW policy {} rule {rule} matched", p.key);
        decided(true, p, rule, Outcome::Allowed, reason)
    } else {
        let (allowed, outcome, reason) = if have_allow {
            (
                false,
                Outcome::DeniedNoAllowMatch,
                "no ALLOW policy matched".to_string(),
            )
        } else {
            (
                true,
                Outcome::AllowedNoPolicy,
                "no ALLOW policy applies and no DENY policy matched".to_string(),
            )
        };
        Decision {
            allowed,
            policy: None,
            rule: None,
            outcome,
            reason,
            audit: Vec::new(),
            dry_run: Vec::new(),
        }
    };
    d.audit = audit;
    d.dry_run = dry_run;
    d
}

/// Compiles and evaluates model policies in one step (for callers that do not cache compiled
/// policies, like the CLI).
pub fn evaluate_pb<'a>(
    policies: impl IntoIterator<Item = &'a pb::Authorization>,
    ctx: &RequestContext,
) -> Decision {
    let compiled: Vec<Policy> = policies.into_iter().map(Policy::compile).collect();
    evaluate(&compiled, ctx)
}

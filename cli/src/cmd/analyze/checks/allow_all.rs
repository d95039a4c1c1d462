//! ALLOW policies that allow everyone: a rule with no from/to/when matches every request
//! (plaintext included); a rule whose only condition is `principals: ["*"]` matches every
//! authenticated peer.

use meshwork_api::security::{AuthzAction, Rule, Source};
use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::AuthorizationPolicy) {
        let Spec::AuthorizationPolicy(p) = &s.object.spec else {
            continue;
        };
        if p.action != AuthzAction::Allow {
            continue;
        }
        for (i, rule) in p.rules.iter().enumerate() {
            let what = if is_empty(rule) {
                "matches every request, plaintext included"
            } else if any_principal_only(rule) {
                "only requires principals: [\"*\"], which matches every mTLS peer in the mesh"
            } else {
                continue;
            };
            out.push(Finding::new(
                Severity::Warning,
                "allow-everyone",
                Context::label(&s.object),
                Context::file_of(s),
                format!("spec.rules[{i}] {what}: this ALLOW policy allows everyone and makes its other rules pointless"),
                "list the allowed sources (principals or namespaces) and operations in the rule; to allow nothing use `spec: {}`",
            ));
        }
    }
    out
}

pub(super) fn is_empty(rule: &Rule) -> bool {
    rule.from
        .iter()
        .all(|f| f.source.as_ref().is_none_or(|s| *s == Source::default()))
        && rule.to.iter().all(|t| {
            t.operation
                .as_ref()
                .is_none_or(|o| *o == Default::default())
        })
        && rule.when.is_empty()
}

fn any_principal_only(rule: &Rule) -> bool {
    if !rule.to.is_empty() || !rule.when.is_empty() || rule.from.is_empty() {
        return false;
    }
    rule.from.iter().any(|f| {
        f.source.as_ref().is_some_and(|s| {
            s.principals.iter().any(|p| p == "*")
                && Source {
                    principals: Vec::new(),
                    ..s.clone()
                } == Source::default()
        })
    })
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_api::security::{Condition, RuleFrom};

    fn from(source: Source) -> Rule {
        Rule {
            from: vec![RuleFrom {
                source: Some(source),
            }],
            ..Default::default()
        }
    }

    #[test]
    fn empty_rule_matches_everything() {
        assert!(is_empty(&Rule::default()));
        assert!(is_empty(&from(Source::default())));
        let with_when = Rule {
            when: vec![Condition::default()],
            ..Default::default()
        };
        assert!(!is_empty(&with_when));
    }

    #[test]
    fn any_principal_only_when_nothing_else_constrains() {
        let star = Source {
            principals: vec!["*".into()],
            ..Default::default()
        };
        assert!(any_principal_only(&from(star.clone())));
        let narrowed = Source {
            namespaces: vec!["shop".into()],
            ..star
        };
        assert!(!any_principal_only(&from(narrowed)));
        let named = Source {
            principals: vec!["cluster.local/ns/a/sa/b".into()],
            ..Default::default()
        };
        assert!(!any_principal_only(&from(named)));
    }
}

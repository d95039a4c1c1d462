//! AuthorizationPolicy → `Authorization`, and the L4 view ztunnels enforce.

use meshwork_api::common::PolicyTargetReference;
use meshwork_api::security::{self, AuthorizationPolicy, AuthzAction};
use meshwork_api::Object;

use super::authz_source::source;
use meshwork_authz::rule_has_l7;
use meshwork_model::pb::config::{
    Action, Authorization, Condition, Enforcement, Operation, PolicyScope, Rule, TargetRef,
};

pub(crate) fn target_ref(t: &PolicyTargetReference, ns: &str) -> TargetRef {
    TargetRef {
        group: t.group.clone(),
        kind: t.kind.clone(),
        name: t.name.clone(),
        namespace: if t.namespace.is_empty() {
            ns.to_string()
        } else {
            t.namespace.clone()
        },
    }
}

fn operation(o: &security::Operation) -> Operation {
    Operation {
        hosts: o.hosts.clone(),
        not_hosts: o.not_hosts.clone(),
        ports: o.ports.clone(),
        not_ports: o.not_ports.clone(),
        methods: o.methods.clone(),
        not_methods: o.not_methods.clone(),
        paths: o.paths.clone(),
        not_paths: o.not_paths.clone(),
    }
}

fn rule(r: &security::Rule, ns: &str, action: AuthzAction) -> Rule {
    Rule {
        from: r
            .from
            .iter()
            .map(|f| {
                f.source
                    .as_ref()
                    .map(|s| source(s, ns, action))
                    .unwrap_or_default()
            })
            .collect(),
        to: r
            .to
            .iter()
            .map(|t| t.operation.as_ref().map(operation).unwrap_or_default())
            .collect(),
        when: r
            .when
            .iter()
            .map(|c| Condition {
                key: c.key.clone(),
                values: c.values.clone(),
                not_values: c.not_values.clone(),
            })
            .collect(),
    }
}

/// Translates one AuthorizationPolicy.
pub fn authorization(
    obj: &Object,
    ap: &AuthorizationPolicy,
    root_namespace: &str,
) -> Authorization {
    let refs = ap.all_target_refs();
    let scope = if !refs.is_empty() {
        PolicyScope::TargetRef
    } else if ap.selector.is_some() {
        PolicyScope::WorkloadSelector
    } else if obj.namespace == root_namespace {
        PolicyScope::Global
    } else {
        PolicyScope::Namespace
    };
    let action = match ap.action {
        AuthzAction::Allow => Action::Allow,
        AuthzAction::Deny => Action::Deny,
        AuthzAction::Audit => Action::Audit,
        AuthzAction::Custom => Action::Custom,
    };
    let rules: Vec<Rule> = ap
        .rules
        .iter()
        .map(|r| rule(r, &obj.namespace, ap.action))
        .collect();
    Authorization {
        name: obj.name.clone(),
        namespace: obj.namespace.clone(),
        scope: scope as i32,
        action: action as i32,
        has_l7: rules.iter().any(rule_has_l7),
        rules,
        enforcement: if scope == PolicyScope::TargetRef {
            Enforcement::EnforceWaypoint
        } else {
            Enforcement::EnforceZtunnel
        } as i32,
        selector: ap
            .selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .unwrap_or_default(),
        target_refs: refs.iter().map(|t| target_ref(t, &obj.namespace)).collect(),
        provider: ap
            .provider
            .as_ref()
            .map(|p| p.name.clone())
            .unwrap_or_default(),
        dry_run: obj
            .annotations
            .get("istio.io/dry-run")
            .and_then(|v| meshwork_api::security::parse_dry_run(v))
            .unwrap_or(false),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_authz::l4_view;
    use meshwork_model::pb::config::Source;

    fn op(methods: &[&str], ports: &[&str]) -> Operation {
        Operation {
            methods: methods.iter().map(|s| s.to_string()).collect(),
            ports: ports.iter().map(|s| s.to_string()).collect(),
            ..Default::default()
        }
    }

    fn policy(action: Action, rules: Vec<Rule>) -> Authorization {
        let has_l7 = rules.iter().any(rule_has_l7);
        Authorization {
            action: action as i32,
            rules,
            has_l7,
            ..Default::default()
        }
    }

    /// `istio.io/dry-run` is read as Istio reads it (Go's ParseBool), the same way validation
    /// accepts it: `True` or `1` is a dry run, not an enforced policy.
    #[test]
    fn dry_run_annotation_reads_every_spelling_istio_accepts() {
        for (value, dry) in [
            ("true", true),
            ("True", true),
            ("1", true),
            ("false", false),
            ("0", false),
        ] {
            let text = format!(
                "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: p\n  namespace: prod\n  annotations:\n    istio.io/dry-run: \"{value}\"\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        namespaces: [\"evil\"]\n"
            );
            let file =
                meshwork_api::parse::parse_file(std::path::Path::new("p.yaml"), &text, "prod");
            let obj = file
                .objects()
                .next()
                .unwrap_or_else(|| panic!("{value}: {:?}", file.errors().collect::<Vec<_>>()));
            let meshwork_api::Spec::AuthorizationPolicy(ap) = &obj.spec else {
                panic!("not an AuthorizationPolicy")
            };
            assert_eq!(
                authorization(obj, ap, "istio-system").dry_run,
                dry,
                "{value}"
            );
        }
    }

    #[test]
    fn allow_rules_with_l7_are_dropped() {
        let l4_rule = Rule {
            to: vec![op(&[], &["8080"])],
            ..Default::default()
        };
        let l7_rule = Rule {
            to: vec![op(&["GET"], &["8080"])],
            ..Default::default()
        };
        let a = policy(Action::Allow, vec![l4_rule.clone(), l7_rule]);
        assert!(a.has_l7);
        let v = l4_view(&a);
        assert_eq!(v.rules, vec![l4_rule]);
        assert!(!v.has_l7);
    }

    #[test]
    fn deny_rules_lose_l7_parts_and_fail_closed() {
        let rule = Rule {
            from: vec![Source {
                namespaces: vec!["bad".into()],
                request_principals: vec!["issuer/sub".into()],
                ..Default::default()
            }],
            to: vec![op(&["POST"], &["9090"])],
            when: vec![
                Condition {
                    key: "request.headers[x-a]".into(),
                    values: vec!["1".into()],
                    not_values: vec![],
                },
                Condition {
                    key: "source.ip".into(),
                    values: vec!["10.0.0.0/8".into()],
                    not_values: vec![],
                },
            ],
        };
        let v = l4_view(&policy(Action::Deny, vec![rule]));
        let r = &v.rules[0];
        assert_eq!(r.from[0].namespaces, ["bad"]);
        assert!(r.from[0].request_principals.is_empty());
        assert_eq!(r.to[0], op(&[], &["9090"]));
        assert_eq!(r.when.len(), 1);
        assert_eq!(r.when[0].key, "source.ip");
        // Only L7 in a DENY rule: the rule becomes match-all.
        let only_l7 = Rule {
            to: vec![op(&["GET"], &[])],
            ..Default::default()
        };
        let v = l4_view(&policy(Action::Deny, vec![only_l7]));
        assert_eq!(v.rules[0].to, vec![Operation::default()]);
    }
}

//! Fail closed when an AuthorizationPolicy cannot be loaded and has no last good version:
//! the policy's namespace gets a synthetic DENY-all policy, so its workloads refuse traffic
//! instead of running without the policy the operator meant to have (a restart or a bad
//! edit must never weaken policy). The synthetic policy goes away when the file is fixed.
//!
//! A document whose kind and namespace can still be read is attributed exactly. A document
//! too broken to parse (invalid YAML) is attributed by its text: a top-level
//! `kind: AuthorizationPolicy` line and an indented `namespace:` line (else the file's
//! default namespace). A policy in the root namespace thus denies mesh-wide, as the policy
//! itself would have applied mesh-wide.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshwork_api::security::{AuthorizationPolicy, AuthzAction, Rule};
use meshwork_api::validate::NameRule;
use meshwork_api::{ApiError, Kind, Object, ObjectKey, Spec};

/// Name of the synthetic policy; `~` cannot occur in a resource name, so it never collides
/// with a user's policy.
pub const DENY_ALL_NAME: &str = "meshwork~fail-closed";

/// Namespaces to deny, each with the errors that caused it (display form).
pub fn namespaces_to_deny(
    failed: &[(ApiError, Option<Arc<str>>)],
    default_namespace: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (err, text) in failed {
        let text = text.as_deref().unwrap_or("");
        let is_policy = err.kind == Kind::AuthorizationPolicy.as_str()
            || (err.kind.is_empty()
                && sniff_kind(text) == Some(Kind::AuthorizationPolicy.as_str()));
        if !is_policy {
            continue;
        }
        let ns = if !err.namespace.is_empty() {
            err.namespace.clone()
        } else {
            sniff_namespace(text).unwrap_or_else(|| default_namespace.to_string())
        };
        if NameRule::Dns1123Label.check(&ns).is_err() {
            continue; // no namespace of that name can hold workloads
        }
        out.entry(ns).or_default().push(err.to_string());
    }
    out
}

/// The synthetic DENY-all policy for `namespace`.
pub fn deny_all(namespace: &str) -> Object {
    Object {
        kind: Kind::AuthorizationPolicy,
        api_version: "security.istio.io/v1".into(),
        namespace: namespace.into(),
        name: DENY_ALL_NAME.into(),
        labels: Default::default(),
        annotations: Default::default(),
        creation_timestamp: None,
        uid: None,
        spec: Spec::AuthorizationPolicy(AuthorizationPolicy {
            action: AuthzAction::Deny,
            // One empty rule matches every request.
            rules: vec![Rule::default()],
            ..Default::default()
        }),
    }
}

pub fn key(namespace: &str) -> ObjectKey {
    ObjectKey::new(Kind::AuthorizationPolicy, namespace, DENY_ALL_NAME)
}

/// The `message` line reported for a denied namespace.
pub fn report(namespace: &str, causes: &[String]) -> String {
    format!(
        "namespace {namespace}: an AuthorizationPolicy failed to load and has no last valid version; every request to workloads in {namespace} is denied until it is fixed (fail closed) [{}]",
        causes.join("; ")
    )
}

/// Changes that move the synthetic policies from namespaces `old` to `new`.
pub fn diff(old: &BTreeSet<String>, new: &BTreeSet<String>) -> Vec<meshwork_api::Change> {
    let mut out = Vec::new();
    for ns in old.difference(new) {
        out.push(meshwork_api::Change::Delete(key(ns)));
    }
    for ns in new.difference(old) {
        out.push(meshwork_api::Change::Upsert(Arc::new(deny_all(ns))));
    }
    out
}

fn value_of<'a>(line: &'a str, field: &str) -> Option<&'a str> {
    let v = line.strip_prefix(field)?.strip_prefix(':')?;
    let v = v
        .split('#')
        .next()?
        .trim()
        .trim_matches(|c| c == '"' || c == '\'');
    (!v.is_empty()).then_some(v)
}

fn sniff_kind(text: &str) -> Option<&str> {
    text.lines().find_map(|l| value_of(l, "kind"))
}

fn sniff_namespace(text: &str) -> Option<String> {
    text.lines()
        .filter(|l| l.starts_with([' ', '\t']))
        .find_map(|l| value_of(l.trim_start(), "namespace"))
        .map(str::to_string)
}

#[cfg(test)]
mod tests {
    use super::*;

    fn err(kind: &str, ns: &str) -> ApiError {
        ApiError {
            file: "p.yaml".into(),
            document: 1,
            line: 1,
            kind: kind.into(),
            namespace: ns.into(),
            name: "x".into(),
            field: String::new(),
            message: "bad".into(),
        }
    }

    #[test]
    fn policies_are_attributed_by_kind_or_by_text() {
        let broken: Arc<str> =
            Arc::from("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: d\n  namespace: \"shop\"\nspec: [\n");
        let failed = vec![
            (err("AuthorizationPolicy", "prod"), None),
            (err("VirtualService", "other"), None),
            (err("", ""), Some(broken)),
            (
                err("", ""),
                Some(Arc::from("kind: AuthorizationPolicy\nspec: {")),
            ),
            (
                err("", ""),
                Some(Arc::from("kind: Service\n  namespace: no")),
            ),
        ];
        let got = namespaces_to_deny(&failed, "default");
        let keys: Vec<_> = got.keys().map(String::as_str).collect();
        assert_eq!(keys, ["default", "prod", "shop"]);
    }

    #[test]
    fn diff_adds_and_removes_deny_all() {
        let old: BTreeSet<String> = ["a".to_string(), "b".to_string()].into();
        let new: BTreeSet<String> = ["b".to_string(), "c".to_string()].into();
        let changes = diff(&old, &new);
        assert_eq!(changes.len(), 2);
        assert_eq!(changes[0], meshwork_api::Change::Delete(key("a")));
        match &changes[1] {
            meshwork_api::Change::Upsert(o) => {
                assert_eq!(o.key(), key("c"));
                let Spec::AuthorizationPolicy(p) = &o.spec else {
                    panic!()
                };
                assert_eq!(p.action, AuthzAction::Deny);
                assert_eq!(p.rules.len(), 1);
                assert!(p.selector.is_none());
            }
            other => panic!("{other:?}"),
        }
    }
}

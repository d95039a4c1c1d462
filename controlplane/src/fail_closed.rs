//! Fail closed when an AuthorizationPolicy cannot be loaded and has no last good version:
//! the policy's namespace gets a synthetic DENY-all policy, so its workloads refuse traffic
//! instead of running without the policy the operator meant to have (a restart or a bad
//! edit must never weaken policy). The synthetic policy goes away when the file is fixed.
//!
//! A PeerAuthentication in the same state makes its namespace require mTLS instead: a
//! synthetic namespace-wide STRICT PeerAuthentication of the same name, older than every
//! other (no creation time), so plaintext is refused as the broken policy may have meant.
//! Workload-level PeerAuthentications still decide for their workloads, as they would have.
//!
//! A document whose kind and namespace can still be read is attributed exactly. A document
//! too broken to parse (invalid YAML or JSON) is attributed by its text, whatever its
//! spelling (block or flow style, JSON, quoted keys): it is a policy when any `kind` key has
//! the value `AuthorizationPolicy`, and every namespace a `namespace` key names is denied
//! (else the file's default namespace). Denying one namespace too many while the file is
//! broken is the safe side. A policy in the root namespace thus denies mesh-wide, as the
//! policy itself would have applied mesh-wide.

use std::collections::{BTreeMap, BTreeSet};
use std::sync::Arc;

use meshwork_api::security::{
    AuthorizationPolicy, AuthzAction, MtlsMode, PeerAuthentication, PeerMtls, Rule,
};
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
    namespaces_failing(failed, Kind::AuthorizationPolicy, default_namespace)
}

/// Namespaces that must require mTLS because a PeerAuthentication of theirs failed to load,
/// each with the errors that caused it.
pub fn namespaces_to_require_mtls(
    failed: &[(ApiError, Option<Arc<str>>)],
    default_namespace: &str,
) -> BTreeMap<String, Vec<String>> {
    namespaces_failing(failed, Kind::PeerAuthentication, default_namespace)
}

fn namespaces_failing(
    failed: &[(ApiError, Option<Arc<str>>)],
    kind: Kind,
    default_namespace: &str,
) -> BTreeMap<String, Vec<String>> {
    let mut out: BTreeMap<String, Vec<String>> = BTreeMap::new();
    for (err, text) in failed {
        let text = text.as_deref().unwrap_or("");
        let policy = kind.as_str();
        let is_policy = err.kind == policy
            || (err.kind.is_empty() && values_of(text, "kind").contains(&policy));
        if !is_policy {
            continue;
        }
        let mut namespaces = if !err.namespace.is_empty() {
            vec![err.namespace.as_str()]
        } else {
            values_of(text, "namespace")
        };
        if namespaces.is_empty() {
            namespaces.push(default_namespace);
        }
        for ns in namespaces {
            if NameRule::Dns1123Label.check(ns).is_err() {
                continue; // no namespace of that name can hold workloads
            }
            let causes = out.entry(ns.to_string()).or_default();
            causes.push(err.to_string());
            causes.dedup();
        }
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

/// The synthetic namespace-wide STRICT PeerAuthentication for `namespace`.
pub fn strict_mtls(namespace: &str) -> Object {
    Object {
        kind: Kind::PeerAuthentication,
        api_version: "security.istio.io/v1".into(),
        namespace: namespace.into(),
        name: DENY_ALL_NAME.into(),
        labels: Default::default(),
        annotations: Default::default(),
        creation_timestamp: None,
        uid: None,
        spec: Spec::PeerAuthentication(PeerAuthentication {
            selector: None,
            mtls: Some(PeerMtls {
                mode: MtlsMode::Strict,
            }),
            port_level_mtls: Default::default(),
        }),
    }
}

pub fn mtls_key(namespace: &str) -> ObjectKey {
    ObjectKey::new(Kind::PeerAuthentication, namespace, DENY_ALL_NAME)
}

/// The `message` line reported for a namespace that requires mTLS because of a failure.
pub fn mtls_report(namespace: &str, causes: &[String]) -> String {
    format!(
        "namespace {namespace}: a PeerAuthentication failed to load and has no last valid version; workloads in {namespace} require mTLS (STRICT) until it is fixed (fail closed) [{}]",
        causes.join("; ")
    )
}

/// Changes that move the synthetic STRICT PeerAuthentications from `old` to `new`.
pub fn diff_mtls(old: &BTreeSet<String>, new: &BTreeSet<String>) -> Vec<meshwork_api::Change> {
    diff_namespaces(old, new, mtls_key, strict_mtls)
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
    diff_namespaces(old, new, key, deny_all)
}

/// Deletes (by `key_of`) the synthetic objects of namespaces only in `old`, then upserts
/// (built by `object_of`) those of namespaces only in `new`.
fn diff_namespaces(
    old: &BTreeSet<String>,
    new: &BTreeSet<String>,
    key_of: fn(&str) -> ObjectKey,
    object_of: fn(&str) -> Object,
) -> Vec<meshwork_api::Change> {
    let deletes = old
        .difference(new)
        .map(|ns| meshwork_api::Change::Delete(key_of(ns)));
    let upserts = new
        .difference(old)
        .map(|ns| meshwork_api::Change::Upsert(Arc::new(object_of(ns))));
    deletes.chain(upserts).collect()
}

/// The values of `key` wherever `text` writes it as a mapping key, in any spelling a YAML
/// or JSON document may use: `key: v`, `- key: v`, `{a: b, key: v}`, `"key": "v"`, `'key': v`.
/// A value is the run of name characters after the colon (and an opening quote).
fn values_of<'a>(text: &'a str, key: &str) -> Vec<&'a str> {
    let bytes = text.as_bytes();
    let mut out = Vec::new();
    let mut from = 0;
    while let Some(i) = text[from..].find(key) {
        let start = from + i;
        let end = start + key.len();
        from = end;
        let standalone = start == 0
            || matches!(
                bytes[start - 1],
                b' ' | b'\t' | b'\n' | b'\r' | b'"' | b'\'' | b'{' | b',' | b'-'
            );
        if !standalone {
            continue;
        }
        let rest = &text[end..];
        let rest = rest.strip_prefix(['"', '\'']).unwrap_or(rest);
        let Some(value) = rest.trim_start_matches([' ', '\t']).strip_prefix(':') else {
            continue;
        };
        let value = value.trim_start_matches([' ', '\t']);
        let value = value.strip_prefix(['"', '\'']).unwrap_or(value);
        let len = value
            .find(|c: char| !(c.is_ascii_alphanumeric() || c == '-' || c == '.'))
            .unwrap_or(value.len());
        if len > 0 {
            out.push(&value[..len]);
        }
    }
    out
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
    fn broken_policies_are_attributed_in_any_spelling() {
        let deny = |text: &str| -> Vec<String> {
            let failed = vec![(err("", ""), Some(Arc::from(text)))];
            namespaces_to_deny(&failed, "default").into_keys().collect()
        };
        for text in [
            r#"{"kind": "AuthorizationPolicy", "metadata": {"name": "d", "namespace": "shop"}, "spec": {"#,
            "kind: AuthorizationPolicy\nmetadata: {name: d, namespace: shop}\nspec: [\n",
            "\"kind\": 'AuthorizationPolicy'\n\"metadata\":\n  'namespace': \"shop\" # c\nspec: [\n",
            "metadata:\n  namespace: shop\nkind: AuthorizationPolicy\nspec: [\n",
        ] {
            assert_eq!(deny(text), ["shop"], "{text}");
        }
        // Every namespace named is denied; none named: the file's default namespace.
        assert_eq!(
            deny("kind: AuthorizationPolicy\nmetadata: {namespace: a}\nspec:\n  targetRefs: [{kind: Service, name: s, namespace: b}\n"),
            ["a", "b"]
        );
        assert_eq!(
            deny("{\"kind\":\"AuthorizationPolicy\",\"spec\":{"),
            ["default"]
        );
        // Look-alike keys are not the kind or the namespace.
        assert!(deny("kind: VirtualService\nx_kind: AuthorizationPolicy\nspec: [\n").is_empty());
        assert_eq!(
            deny("kind: AuthorizationPolicy\nspec:\n  rules: [{from: [{source: {namespaces: [x]}}]}, when: [{key: source.namespace, values: [y]}\n"),
            ["default"]
        );
    }

    #[test]
    fn broken_peer_authentications_require_mtls_in_their_namespace() {
        let failed = vec![
            (err("PeerAuthentication", "prod"), None),
            (err("AuthorizationPolicy", "other"), None),
            (
                err("", ""),
                Some(Arc::from(
                    "kind: PeerAuthentication\nmetadata: {namespace: shop}\nspec: {",
                )),
            ),
        ];
        let got: Vec<String> = namespaces_to_require_mtls(&failed, "default")
            .into_keys()
            .collect();
        assert_eq!(got, ["prod", "shop"]);
        let changes = diff_mtls(&BTreeSet::new(), &["prod".to_string()].into());
        let [meshwork_api::Change::Upsert(o)] = changes.as_slice() else {
            panic!("{changes:?}")
        };
        assert_eq!(o.key(), mtls_key("prod"));
        let Spec::PeerAuthentication(pa) = &o.spec else {
            panic!()
        };
        assert!(pa.selector.is_none());
        assert_eq!(pa.mtls.as_ref().map(|m| m.mode), Some(MtlsMode::Strict));
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

//! Bad input: each problem gets a named error and the rest of the config stays in force.

use std::path::Path;

use meshwork_api::{ApiError, Change, Kind, ObjectKey, Spec, Store};

const NS: &str = "production";

fn vs(name: &str, http: &str) -> String {
    format!(
        "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\nspec:\n  hosts: [order-service]\n  http:\n{http}"
    )
}

const GOOD_ROUTE: &str = "  - route:\n    - destination:\n        host: order-service\n";

fn svc(name: &str) -> String {
    format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\nspec:\n  ports:\n  - port: 80\n"
    )
}

fn only_error(store: &Store) -> ApiError {
    let errors = store.errors();
    assert_eq!(errors.len(), 1, "{errors:#?}");
    errors.into_iter().next().unwrap()
}

fn key(kind: Kind, name: &str) -> ObjectKey {
    ObjectKey::new(kind, NS, name)
}

/// Applies `bad` as a second document after a good Service and checks that the Service is
/// in force and the error names file, kind, ns/name and field.
fn check_bad_doc(bad: &str, kind: &str, name: &str, field: &str, message_part: &str) {
    let mut store = Store::new();
    let text = format!("{}---\n{bad}", svc("keep-me"));
    let changes = store.apply_file(Path::new("cfg/bad.yaml"), &text, NS);
    assert!(
        changes
            .iter()
            .any(|c| matches!(c, Change::Upsert(o) if o.name == "keep-me")),
        "valid document must apply: {changes:?}"
    );
    assert!(store.get(&key(Kind::Service, "keep-me")).is_some());
    let e = only_error(&store);
    assert_eq!(e.file, Path::new("cfg/bad.yaml"));
    assert_eq!(e.document, 2);
    assert_eq!(e.kind, kind, "{e}");
    if !name.is_empty() {
        assert_eq!((e.namespace.as_str(), e.name.as_str()), (NS, name), "{e}");
    }
    assert_eq!(e.field, field, "{e}");
    assert!(e.message.contains(message_part), "{e}");
    let line = e.to_string();
    assert!(line.starts_with("cfg/bad.yaml:"), "{line}");
    assert!(!line.contains('\n'), "{line}");
}

#[test]
fn malformed_yaml() {
    let mut store = Store::new();
    let text = format!("{}---\nkind: [unclosed\n  name: x\n", svc("keep-me"));
    store.apply_file(Path::new("cfg/bad.yaml"), &text, NS);
    assert!(store.get(&key(Kind::Service, "keep-me")).is_some());
    let e = only_error(&store);
    assert_eq!(e.document, 2);
    assert!(e.message.starts_with("invalid YAML"), "{e}");
    assert!(
        e.line >= 10,
        "line must point into the second document: {e}"
    );
}

#[test]
fn wrong_type() {
    let bad = vs(
        "vs",
        "  - route:\n    - destination:\n        host: a\n      weight: \"abc\"\n",
    );
    check_bad_doc(
        &bad,
        "VirtualService",
        "vs",
        "spec.http[0].route[0].weight",
        "invalid type",
    );
}

#[test]
fn unknown_kind_and_api_version() {
    check_bad_doc(
        "apiVersion: example.com/v1\nkind: Frobnicator\nmetadata:\n  name: f\n",
        "Frobnicator",
        "f",
        "kind",
        "unknown kind \"Frobnicator\"",
    );
    check_bad_doc(
        "apiVersion: networking.istio.io/v2\nkind: VirtualService\nmetadata:\n  name: v\n",
        "VirtualService",
        "v",
        "apiVersion",
        "unsupported apiVersion",
    );
}

#[test]
fn bad_regex_names_the_path() {
    let bad = vs(
        "order-service-vs",
        "  - match:\n    - headers:\n        x-canary:\n          exact: \"true\"\n    route:\n    - destination:\n        host: a\n  - match:\n    - headers:\n        x-user-id:\n          regex: \"^[0-9\"\n    route:\n    - destination:\n        host: a\n",
    );
    check_bad_doc(
        &bad,
        "VirtualService",
        "order-service-vs",
        "spec.http[1].match[0].headers.x-user-id.regex",
        "regex parse error",
    );
}

#[test]
fn weights_are_relative_but_not_all_zero() {
    // Istio normalises weights by their sum: 90/20 is valid.
    let mut store = Store::new();
    let relative = vs(
        "vs",
        "  - route:\n    - destination: {host: a, subset: v1}\n      weight: 90\n    - destination: {host: a, subset: v2}\n      weight: 20\n",
    );
    store.apply_file(Path::new("cfg/vs.yaml"), &relative, NS);
    assert!(store.errors().is_empty(), "{:#?}", store.errors());
    let bad = vs(
        "vs",
        "  - route:\n    - destination: {host: a, subset: v1}\n      weight: 0\n    - destination: {host: a, subset: v2}\n      weight: 0\n",
    );
    check_bad_doc(
        &bad,
        "VirtualService",
        "vs",
        "spec.http[0].route",
        "total destination weight is 0",
    );
}

#[test]
fn bad_duration() {
    let bad = vs("vs", &format!("{GOOD_ROUTE}    timeout: 10x\n"));
    check_bad_doc(
        &bad,
        "VirtualService",
        "vs",
        "spec.http[0].timeout",
        "unknown unit \"x\"",
    );
}

#[test]
fn authorization_policy_rules() {
    let base = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: ap\nspec:\n";
    check_bad_doc(
        &format!("{base}  action: CUSTOM\n  rules: [{{}}]\n"),
        "AuthorizationPolicy",
        "ap",
        "spec.provider",
        "requires a provider",
    );
    check_bad_doc(
        &format!("{base}  action: DENY\n  rules: [{{}}]\n  provider:\n    name: ext\n"),
        "AuthorizationPolicy",
        "ap",
        "spec.provider",
        "only allowed with action CUSTOM, not DENY",
    );
    check_bad_doc(
        &format!("{base}  selector:\n    matchLabels: {{app: a}}\n  targetRefs:\n  - kind: Gateway\n    group: gateway.networking.k8s.io\n    name: w\n"),
        "AuthorizationPolicy",
        "ap",
        "spec.targetRefs",
        "mutually exclusive",
    );
    check_bad_doc(
        &format!("{base}  action: NOPE\n"),
        "AuthorizationPolicy",
        "ap",
        "spec.action",
        "unknown variant",
    );
    check_bad_doc(
        &format!("{base}  action: DENY\n"),
        "AuthorizationPolicy",
        "ap",
        "spec.rules",
        "DENY without rules would never match",
    );
}

#[test]
fn peer_authentication_mode() {
    check_bad_doc(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: pa\nspec:\n  mtls:\n    mode: STRICTEST\n",
        "PeerAuthentication",
        "pa",
        "spec.mtls.mode",
        "unknown variant",
    );
    check_bad_doc(
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: pa\nspec:\n  selector:\n    matchLabels: {app: a}\n  portLevelMtls: {}\n",
        "PeerAuthentication",
        "pa",
        "spec.portLevelMtls",
        "at least one port",
    );
}

#[test]
fn percentages_are_bounded() {
    check_bad_doc(
        "apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: t\nspec:\n  tracing:\n  - randomSamplingPercentage: 150\n",
        "Telemetry",
        "t",
        "spec.tracing[0].randomSamplingPercentage",
        "between 0 and 100",
    );
}

#[test]
fn unknown_fields_are_warnings_not_errors() {
    let mut store = Store::new();
    let text = vs("vs", &format!("{GOOD_ROUTE}    timeoutt: 10s\n"));
    store.apply_file(Path::new("w.yaml"), &text, NS);
    assert!(store.errors().is_empty(), "{:?}", store.errors());
    assert!(store.get(&key(Kind::VirtualService, "vs")).is_some());
    let w = store.warnings();
    assert_eq!(w.len(), 1, "{w:?}");
    assert_eq!(w[0].field, "spec.http[0].timeoutt");
    assert!(w[0].to_string().contains("unknown field"), "{}", w[0]);
}

#[test]
fn duplicates_keep_the_first_and_name_both_files() {
    let mut store = Store::new();
    store.apply_file(Path::new("b.yaml"), &svc("dup"), NS);
    let changes = store.apply_file(Path::new("a.yaml"), &svc("dup"), NS);
    assert!(changes.is_empty(), "{changes:?}");
    let e = only_error(&store);
    assert_eq!(e.file, Path::new("a.yaml"));
    assert!(e.message.contains("duplicate"), "{e}");
    assert!(
        e.message.contains("b.yaml") && e.message.contains("a.yaml"),
        "{e}"
    );
    assert_eq!(
        store.get(&key(Kind::Service, "dup")).unwrap().file,
        Path::new("b.yaml")
    );
    // The first goes away: the duplicate takes over, no error left.
    // Same content, so nothing changes for consumers.
    let changes = store.remove_file(Path::new("b.yaml"));
    assert!(changes.is_empty(), "{changes:?}");
    assert!(store.errors().is_empty());
    assert_eq!(
        store.get(&key(Kind::Service, "dup")).unwrap().file,
        Path::new("a.yaml")
    );

    // Twice in one file.
    let mut store = Store::new();
    let text = format!("{}---\n{}", svc("dup"), svc("dup"));
    let changes = store.apply_file(Path::new("one.yaml"), &text, NS);
    assert_eq!(changes.len(), 1);
    let e = only_error(&store);
    assert_eq!(e.document, 2);
    assert!(e.message.contains("duplicate"), "{e}");
}

#[test]
fn invalid_edit_keeps_last_good_version_and_fix_clears_error() {
    let mut store = Store::new();
    let p = Path::new("vs.yaml");
    let good = vs("vs", &format!("{GOOD_ROUTE}    timeout: 5s\n"));
    assert_eq!(store.apply_file(p, &good, NS).len(), 1);
    let bad = vs("vs", &format!("{GOOD_ROUTE}    timeout: soon\n"));
    assert!(store.apply_file(p, &bad, NS).is_empty());
    let e = only_error(&store);
    assert!(
        e.message.contains("last valid version stays in force"),
        "{e}"
    );
    let Spec::VirtualService(spec) = &store
        .get(&key(Kind::VirtualService, "vs"))
        .unwrap()
        .object
        .spec
    else {
        panic!()
    };
    assert_eq!(spec.http[0].timeout.unwrap().as_millis(), 5000);
    // Totally unreadable YAML at the same position also keeps it.
    assert!(store.apply_file(p, "kind: [\n", NS).is_empty());
    assert!(store.get(&key(Kind::VirtualService, "vs")).is_some());
    // Fixing it applies the new version and clears the error.
    let fixed = vs("vs", &format!("{GOOD_ROUTE}    timeout: 7s\n"));
    assert_eq!(store.apply_file(p, &fixed, NS).len(), 1);
    assert!(store.errors().is_empty());
    // Unchanged re-apply: no change.
    assert!(store.apply_file(p, &fixed, NS).is_empty());
    // Removed from the file: deleted.
    let changes = store.apply_file(p, "", NS);
    assert_eq!(
        changes,
        vec![Change::Delete(key(Kind::VirtualService, "vs"))]
    );
}

#[test]
fn list_kind_is_expanded_and_namespace_defaulted() {
    let mut store = Store::new();
    let text = "apiVersion: v1\nkind: List\nitems:\n- apiVersion: v1\n  kind: Service\n  metadata: {name: a}\n- apiVersion: v1\n  kind: Service\n  metadata: {name: b, namespace: other}\n- apiVersion: v1\n  kind: Namespace\n  metadata: {name: other}\n";
    let changes = store.apply_file(Path::new("list.yaml"), text, NS);
    assert_eq!(changes.len(), 3, "{changes:?}");
    assert!(store.get(&key(Kind::Service, "a")).is_some());
    assert!(store
        .get(&ObjectKey::new(Kind::Service, "other", "b"))
        .is_some());
    assert!(store
        .get(&ObjectKey::new(Kind::Namespace, "", "other"))
        .is_some());
    assert!(store.errors().is_empty());
}

#[test]
fn names_and_namespaces_must_be_dns_1123() {
    let long = "a".repeat(254);
    let cases: [(&str, &str, &str); 6] = [
        ("evil\\0name", NS, "metadata.name"),
        ("admin\\u202Egnp", NS, "metadata.name"),
        ("Order-Service", NS, "metadata.name"),
        (&long, NS, "metadata.name"),
        ("ok", "prod\\u202Euction", "metadata.namespace"),
        ("ok", "Production", "metadata.namespace"),
    ];
    for (name, ns, field) in cases {
        let doc = format!(
            "apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: \"{name}\"\n  namespace: \"{ns}\"\nspec:\n  hosts: [order-service]\n"
        );
        let mut store = Store::new();
        store.apply_file(Path::new("cfg/names.yaml"), &doc, NS);
        assert!(store.is_empty(), "{name:?}/{ns:?} must not be stored");
        let e = only_error(&store);
        assert_eq!(e.field, field, "{e}");
        assert!(e.message.contains("DNS-1123"), "{e}");
        let line = e.to_string();
        assert!(
            !line.contains('\0') && !line.contains('\u{202e}'),
            "raw control/bidi character: {line:?}"
        );
        assert!(line.len() < 1200, "bounded: {line}");
    }
    // A Service name is a DNS-1035 label (starts with a letter), a Namespace a label.
    let mut store = Store::new();
    store.apply_file(Path::new("cfg/s.yaml"), &svc("1svc"), NS);
    assert!(only_error(&store).message.contains("DNS-1035"));
    let mut store = Store::new();
    let ns_doc = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: a.b\n";
    store.apply_file(Path::new("cfg/n.yaml"), ns_doc, NS);
    assert!(only_error(&store).message.contains("DNS-1123 label"));
}

#[test]
fn last_good_files_restore_the_objects_in_force() {
    let mut store = Store::new();
    let path = Path::new("cfg/routes.yaml");
    let good = format!("{}---\n{}", vs("a", GOOD_ROUTE), svc("b"));
    store.apply_file(path, &good, NS);
    // Document 1 becomes invalid YAML: its last good version stays, and is exported.
    let broken = format!("kind: VirtualService\nspec: [\n---\n{}", svc("b"));
    store.apply_file(path, &broken, NS);
    assert_eq!(store.len(), 2);
    let saved = store.last_good_files();
    assert_eq!(saved.len(), 1);

    // A new store seeded with the export, then given the broken file, keeps both objects.
    let mut restarted = Store::new();
    restarted.apply_file(path, &saved[path], NS);
    restarted.apply_file(path, &broken, NS);
    assert!(restarted.get(&key(Kind::VirtualService, "a")).is_some());
    assert!(restarted.get(&key(Kind::Service, "b")).is_some());
    assert!(restarted.failed_without_last_good().is_empty());
    assert!(only_error(&restarted)
        .message
        .ends_with("(last valid version stays in force)"));

    // Without the seed, the broken document has nothing in force.
    let mut cold = Store::new();
    cold.apply_file(path, &broken, NS);
    assert_eq!(cold.failed_without_last_good().len(), 1);
}

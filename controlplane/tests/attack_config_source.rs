//! Attacks on the control plane's config source, against the real binary: a restart while
//! a policy file is broken, a first start with a broken policy, a renamed VirtualService
//! taking over a host, symbolic link loops in the config directory, hostile names.

mod common;

use std::time::{Duration, Instant};

use common::{config_with_base, eventually, wait_for, write, ControlPlane};

const DENY: &str = r#"
apiVersion: security.istio.io/v1
kind: AuthorizationPolicy
metadata:
  name: deny-refund
  namespace: production
spec:
  action: DENY
  rules:
    - to:
        - operation:
            ports: ["9090"]
"#;

/// The same policy, saved half-edited: invalid YAML (an unclosed flow sequence).
fn deny_broken() -> String {
    let (head, _) = DENY.split_once("  rules:\n").unwrap();
    format!("{head}  rules: [\n    - to:\n")
}

const FAIL_CLOSED: &str = "meshwork~fail-closed";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_restart_with_broken_policy_file_keeps_the_deny() {
    let (config, ca) = config_with_base(&[("policy.yaml", DENY)]);
    let cp = ControlPlane::start(config.path(), ca.path());
    let z = cp.ztunnel(ca.path(), "node-a");
    wait_for(&z, "the DENY", |s| {
        s.authorization("production", "deny-refund").is_some()
    })
    .await;

    // Broken while running: the last good version stays (this already held).
    write(config.path(), "policy.yaml", &deny_broken());
    eventually("the parse error", || {
        cp.has_error(&["last valid version stays in force"])
    })
    .await;
    cp.kill();

    // Restarted while the file is still broken: the DENY must still be pushed.
    let cp = ControlPlane::start(config.path(), ca.path());
    let fresh = cp
        .synced_ztunnel(ca.path(), "node-a", "initial snapshot after restart")
        .await;
    let snap = fresh.snapshot();
    assert!(
        snap.authorization("production", "deny-refund").is_some(),
        "a restart with a broken policy file dropped the DENY: {:?}",
        snap.authorizations().map(|a| &a.name).collect::<Vec<_>>()
    );
    assert!(
        snap.authorization("production", FAIL_CLOSED).is_none(),
        "with a last good version there is nothing to fail closed for"
    );
    cp.assert_error(&["policy.yaml", "last valid version stays in force"]);

    // Fixed, then removed: the state follows the files.
    write(config.path(), "policy.yaml", DENY);
    std::fs::remove_file(config.path().join("policy.yaml")).unwrap();
    wait_for(&fresh, "the DENY removed with its file", |s| {
        s.authorization("production", "deny-refund").is_none()
    })
    .await;
    cp.kill();
    let cp = ControlPlane::start(config.path(), ca.path());
    let again = cp
        .synced_ztunnel(ca.path(), "node-a", "snapshot after second restart")
        .await;
    assert!(
        again
            .snapshot()
            .authorization("production", "deny-refund")
            .is_none(),
        "a deleted policy must not come back from the saved state"
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_first_start_with_invalid_policy_does_not_silently_allow() {
    let (config, ca) = config_with_base(&[("policy.yaml", &deny_broken())]);
    let cp = ControlPlane::start(config.path(), ca.path());
    let z = cp
        .synced_ztunnel(ca.path(), "node-a", "initial snapshot")
        .await;
    let snap = z.snapshot();
    let deny_all = snap.authorization("production", FAIL_CLOSED);
    assert!(
        deny_all.is_some(),
        "no policy in force for production although its AuthorizationPolicy failed to load: {:?}",
        snap.authorizations().map(|a| &a.name).collect::<Vec<_>>()
    );
    // Exactly what ztunnel/tests/attack_fail_closed.rs shows the ztunnel refusing: a
    // namespace-wide DENY, one empty rule (matches everything), enforced at the ztunnel.
    {
        use meshwork_model::pb::config::{Action, Enforcement, PolicyScope, Rule};
        let d = deny_all.unwrap();
        assert_eq!(
            (d.scope(), d.action(), d.enforcement(), d.has_l7),
            (
                PolicyScope::Namespace,
                Action::Deny,
                Enforcement::EnforceZtunnel,
                false
            )
        );
        assert_eq!(d.rules, vec![Rule::default()]);
        assert!(d.selector.is_empty() && d.target_refs.is_empty());
    }
    cp.assert_error(&["namespace production", "fail closed"]);

    // Fixed: the real policy replaces the deny-all.
    write(config.path(), "policy.yaml", DENY);
    wait_for(&z, "the real policy instead of deny-all", |s| {
        s.authorization("production", "deny-refund").is_some()
            && s.authorization("production", FAIL_CLOSED).is_none()
    })
    .await;
    let (errors, _) = cp.diagnostics();
    assert!(errors.is_empty(), "{errors:?}");
}

const ROUTING: &str = r#"
apiVersion: networking.istio.io/v1
kind: DestinationRule
metadata:
  name: reviews
spec:
  host: reviews
  subsets:
    - name: v1
      labels: {version: v1}
---
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: reviews
spec:
  hosts: [reviews]
  http:
    - route:
        - destination: {host: reviews, subset: v1}
"#;

/// Added later, named to sort first, routing everything to a subset nobody defines.
const SHADOW: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata:
  name: aaa-reviews
spec:
  hosts: [reviews]
  http:
    - route:
        - destination: {host: reviews, subset: v3}
"#;

/// Origins of the route config for the reviews host, in order.
fn route_origins(cp: &ControlPlane) -> Vec<String> {
    let v = cp.admin_json("/debug/model?prefix=route/production/reviews.");
    let text = v.to_string();
    let mut found: Vec<(usize, String)> = ["reviews", "aaa-reviews"]
        .iter()
        .filter_map(|n| {
            let needle = format!("\"VirtualService/production/{n}\"");
            text.find(&needle).map(|i| (i, n.to_string()))
        })
        .collect();
    found.sort();
    found.into_iter().map(|(_, n)| n).collect()
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_renamed_virtual_service_with_missing_subset_does_not_take_over_the_host() {
    let (config, ca) = config_with_base(&[("routing.yaml", ROUTING)]);
    let cp = ControlPlane::start(config.path(), ca.path());
    eventually("the reviews route", || route_origins(&cp) == ["reviews"]).await;

    // Added later, in a file and under a name that both sort first.
    write(config.path(), "00-shadow.yaml", SHADOW);
    eventually("both VirtualServices in the route", || {
        route_origins(&cp).len() == 2
    })
    .await;
    assert_eq!(
        route_origins(&cp),
        ["reviews", "aaa-reviews"],
        "the newer VirtualService must not be ordered first because of its name"
    );
    // The missing subset is reported by the running control plane.
    cp.assert_warning(&[
        "aaa-reviews",
        "spec.http[0].route[0]",
        "subset \"v3\"",
        "503",
    ]);

    // The order survives a restart (first-seen order is kept in the state directory).
    cp.kill();
    let cp = ControlPlane::start(config.path(), ca.path());
    eventually("route after restart", || route_origins(&cp).len() == 2).await;
    assert_eq!(route_origins(&cp), ["reviews", "aaa-reviews"]);
    // A creationTimestamp written into the file does not buy a place either.
    let backdated = SHADOW.replace(
        "  name: aaa-reviews\n",
        "  name: aaa-reviews\n  creationTimestamp: \"2001-01-01T00:00:00Z\"\n",
    );
    write(config.path(), "00-shadow.yaml", &backdated);
    tokio::time::sleep(Duration::from_millis(500)).await;
    assert_eq!(route_origins(&cp), ["reviews", "aaa-reviews"]);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_symlink_loops_in_config_dir_do_not_hang_the_control_plane() {
    let (config, ca) = config_with_base(&[("policy.yaml", DENY)]);
    std::os::unix::fs::symlink(".", config.path().join("loop-a")).unwrap();
    std::os::unix::fs::symlink(".", config.path().join("loop-b")).unwrap();
    let started = Instant::now();
    // Generous bound for a loaded machine; the unfixed scan never finishes.
    let cp = ControlPlane::start_within(config.path(), ca.path(), Duration::from_secs(60));
    let took = started.elapsed();
    let z = cp.ztunnel(ca.path(), "node-a");
    wait_for(&z, "the policy", |s| {
        s.authorization("production", "deny-refund").is_some()
    })
    .await;
    // Loaded once: no duplicate definitions through loop-a/, loop-b/loop-a/, ...
    let (errors, _) = cp.diagnostics();
    assert!(errors.is_empty(), "{errors:?}");
    // A later edit is still picked up.
    write(config.path(), "policy.yaml", &DENY.replace("9090", "9091"));
    wait_for(&z, "the edited policy", |s| {
        s.authorization("production", "deny-refund")
            .is_some_and(|a| format!("{a:?}").contains("9091"))
    })
    .await;
    eprintln!("start with two symlink loops took {took:?}");
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_hostile_names_are_refused_and_never_logged_raw() {
    let (config, ca) = config_with_base(&[]);
    let long = "a".repeat(254);
    let hostile = [
        ("evil\\0name", "production"),
        ("admin\\u202Egnp", "production"),
        ("Deny-Refund", "production"),
        (long.as_str(), "production"),
        ("ok-name", "prod\\u202Euction"),
        ("ok-name2", "PRODUCTION"),
    ];
    let docs: Vec<String> = hostile
        .iter()
        .map(|(name, ns)| {
            DENY.replace("name: deny-refund", &format!("name: \"{name}\""))
                .replace("namespace: production", &format!("namespace: \"{ns}\""))
        })
        .collect();
    write(config.path(), "hostile.yaml", &docs.join("---\n"));
    let cp = ControlPlane::start(config.path(), ca.path());
    let (errors, _) = cp.diagnostics();
    for field in ["metadata.name", "metadata.namespace"] {
        assert!(
            errors.iter().any(|e| e.contains(field)),
            "{field}: {errors:?}"
        );
    }
    let file = config.path().join("hostile.yaml").display().to_string();
    let hostile_errors: Vec<_> = errors.iter().filter(|e| e.starts_with(&file)).collect();
    assert_eq!(hostile_errors.len(), hostile.len(), "{errors:?}");
    for e in &hostile_errors {
        assert!(
            !e.contains('\0') && !e.contains('\u{202e}'),
            "raw control/bidi character in {e:?}"
        );
        assert!(e.contains("DNS-1123"), "{e}");
    }
    // Nothing of them is in the model.
    let model = cp.admin_json("/debug/model?prefix=authz/").to_string();
    assert!(
        !model.contains("evil") && !model.contains("Deny-Refund"),
        "{model}"
    );
}

/// The fail-closed attribution of a policy too broken to parse cannot be dodged by its
/// spelling: JSON (the directory source reads `.json` files), a flow-style `metadata`, quoted
/// keys. Each first start must deny the policy's own namespace, not let it run unprotected.
/// (The harness's default namespace is `production`, so these check that the document is
/// recognised as a policy; the namespace attribution of each spelling is unit-tested in
/// `fail_closed.rs`.)
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_broken_policy_spelled_as_json_or_flow_style_still_fails_closed() {
    let spellings = [
        (
            "policy.json",
            r#"{"apiVersion": "security.istio.io/v1", "kind": "AuthorizationPolicy", "metadata": {"name": "deny-refund", "namespace": "production"}, "spec": {"action": "DENY", "rules": [{"to": [{"operation": {"ports": ["9090"]}}]}]"#,
        ),
        (
            "policy.yaml",
            "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata: {name: deny-refund, namespace: production}\nspec:\n  action: DENY\n  rules: [\n    - to:\n",
        ),
        (
            "policy.yaml",
            "\"apiVersion\": security.istio.io/v1\n\"kind\": \"AuthorizationPolicy\"\n\"metadata\":\n  \"name\": deny-refund\n  \"namespace\": production\nspec:\n  action: DENY\n  rules: [\n    - to:\n",
        ),
    ];
    let mut open = Vec::new();
    for (file, text) in spellings {
        let (config, ca) = config_with_base(&[(file, text)]);
        let cp = ControlPlane::start(config.path(), ca.path());
        let z = cp.ztunnel(ca.path(), "node-a");
        wait_for(&z, "initial snapshot", |s| {
            s.workload("workload/production/reviews-v1").is_some()
        })
        .await;
        let snap = z.snapshot();
        if snap.authorization("production", FAIL_CLOSED).is_none() {
            open.push(format!(
                "{file} {:?}: policies in force {:?}, errors {:?}",
                text.lines().nth(1).unwrap_or(text),
                snap.authorizations()
                    .map(|a| format!("{}/{}", a.namespace, a.name))
                    .collect::<Vec<_>>(),
                cp.diagnostics().0
            ));
        }
        cp.kill();
    }
    assert!(
        open.is_empty(),
        "production ran without its policy: {open:#?}"
    );
}

/// The saved last good config can keep a policy in force that the files no longer hold, so
/// whoever may write the state directory may weaken policy at the next restart. A state
/// directory others may write (here: mode 0777, as a directory pre-created in a shared
/// place would be) must not be believed: with a broken DENY on disk, a planted "last good"
/// ALLOW-all for that file must not replace it, and the namespace fails closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_state_directory_writable_by_others_is_not_believed() {
    use std::os::unix::fs::PermissionsExt;
    let (config, ca) = config_with_base(&[("policy.yaml", &deny_broken())]);
    let state = ca.path().join("state");
    std::fs::create_dir(&state).unwrap();
    std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o777)).unwrap();
    let planted = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-refund\n  namespace: production\nspec:\n  action: ALLOW\n  rules:\n    - {}\n";
    let saved = serde_json::json!({
        "files": { config.path().join("policy.yaml").to_str().unwrap(): planted },
        "firstSeen": {},
    });
    std::fs::write(state.join("last-good.json"), saved.to_string()).unwrap();

    let cp = ControlPlane::start(config.path(), ca.path());
    let z = cp.ztunnel(ca.path(), "node-a");
    wait_for(&z, "initial snapshot", |s| {
        s.workload("workload/production/reviews-v1").is_some()
    })
    .await;
    let snap = z.snapshot();
    let planted_in_force = snap
        .authorization("production", "deny-refund")
        .map(|a| a.action());
    assert!(
        planted_in_force.is_none() && snap.authorization("production", FAIL_CLOSED).is_some(),
        "the planted last good version replaced the broken DENY ({planted_in_force:?}); policies: {:?}",
        snap.authorizations()
            .map(|a| format!("{}/{}", a.namespace, a.name))
            .collect::<Vec<_>>()
    );
    cp.kill();
}

/// A corrupted state file (truncated JSON, wrong types, a symbolic link) neither stops the
/// control plane nor weakens policy: it starts, says why it ignored the state, and a policy
/// that does not load fails closed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_corrupted_state_file_neither_crashes_nor_fails_open() {
    use std::os::unix::fs::PermissionsExt;
    let elsewhere = tempfile::tempdir().unwrap();
    let planted = elsewhere.path().join("planted.json");
    std::fs::write(&planted, r#"{"files": {}, "firstSeen": {}}"#).unwrap();
    for (what, content) in [
        (
            "truncated",
            Some(r#"{"files": {"/c/p.yaml": "kind: Authoriz"#),
        ),
        (
            "wrong types",
            Some(r#"{"files": [1, 2], "firstSeen": "x"}"#),
        ),
        (
            "extreme times",
            Some(
                r#"{"files": {}, "firstSeen": {"VirtualService/a/b": -9223372036854775808, "VirtualService/a/c": 9223372036854775807}}"#,
            ),
        ),
        ("symlink", None),
    ] {
        let (config, ca) = config_with_base(&[("policy.yaml", &deny_broken())]);
        let state = ca.path().join("state");
        std::fs::create_dir(&state).unwrap();
        std::fs::set_permissions(&state, std::fs::Permissions::from_mode(0o700)).unwrap();
        match content {
            Some(c) => std::fs::write(state.join("last-good.json"), c).unwrap(),
            None => std::os::unix::fs::symlink(&planted, state.join("last-good.json")).unwrap(),
        }
        let cp = ControlPlane::start(config.path(), ca.path());
        let z = cp.ztunnel(ca.path(), "node-a");
        wait_for(&z, "initial snapshot", |s| {
            s.workload("workload/production/reviews-v1").is_some()
        })
        .await;
        assert!(
            z.snapshot()
                .authorization("production", FAIL_CLOSED)
                .is_some(),
            "{what}: production is not failing closed"
        );
        cp.kill();
    }
}

/// A STRICT PeerAuthentication that does not load at a first start (no last good version)
/// must not leave its namespace accepting plaintext: as a broken AuthorizationPolicy
/// denies, a broken PeerAuthentication requires mTLS until it is fixed.
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_first_start_with_broken_strict_peer_authentication_keeps_mtls_required() {
    use meshwork_model::pb::config::MtlsMode;
    const STRICT_BROKEN: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\n  namespace: production\nspec:\n  mtls: {mode: STRICT\n";
    const STRICT: &str = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict\n  namespace: production\nspec:\n  mtls:\n    mode: STRICT\n";
    let (config, ca) = config_with_base(&[("mtls.yaml", STRICT_BROKEN)]);
    let cp = ControlPlane::start(config.path(), ca.path());
    let z = cp.ztunnel(ca.path(), "node-a");
    wait_for(&z, "initial snapshot", |s| {
        s.workload("workload/production/reviews-v1").is_some()
    })
    .await;
    let mode = z
        .snapshot()
        .workload("workload/production/reviews-v1")
        .map(|w| w.mtls_mode());
    assert_eq!(
        mode,
        Some(MtlsMode::Strict),
        "production accepts plaintext although its PeerAuthentication failed to load"
    );
    let (errors, _) = cp.diagnostics();
    assert!(
        errors
            .iter()
            .any(|e| e.contains("namespace production") && e.contains("mTLS")),
        "{errors:?}"
    );
    // Fixed: the real policy decides, the synthetic one is gone.
    write(config.path(), "mtls.yaml", STRICT);
    wait_for(&z, "the real PeerAuthentication decides", |s| {
        s.workload("workload/production/reviews-v1")
            .is_some_and(|w| {
                w.mtls_mode() == MtlsMode::Strict && w.mtls_source == "production/strict"
            })
    })
    .await;
    cp.kill();
}

/// Gateway API: a route attaches to a Gateway in another namespace only when that Gateway's
/// listener allows it (`allowedRoutes.namespaces.from` defaults to `Same`, and a waypoint's
/// Gateway keeps the default). A tenant's HTTPRoute naming another namespace's waypoint as
/// its parent must not become that waypoint's routing (it would send the other namespace's
/// traffic to the tenant's backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_route_in_another_namespace_cannot_attach_to_a_waypoint() {
    const GATEWAYS: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: tenant
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata:
  name: waypoint
  namespace: production
spec:
  gatewayClassName: istio-waypoint
  listeners:
    - name: mesh
      port: 15008
      protocol: HBONE
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: hijack
  namespace: tenant
spec:
  parentRefs:
    - kind: Gateway
      name: waypoint
      namespace: production
  rules:
    - backendRefs:
        - name: collector
          port: 80
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: own
  namespace: production
spec:
  parentRefs:
    - kind: Gateway
      name: waypoint
  rules:
    - matches:
        - path: {type: PathPrefix, value: /v2}
      backendRefs:
        - name: reviews
          port: 9080
"#;
    let (config, ca) = config_with_base(&[("gateways.yaml", GATEWAYS)]);
    let cp = ControlPlane::start(config.path(), ca.path());
    let model = || {
        cp.admin_json("/debug/model?prefix=route/production/gateway~waypoint")
            .to_string()
    };
    eventually("the waypoint's own route", || {
        model().contains("\"HTTPRoute/production/own\"")
    })
    .await;
    let text = model();
    assert!(
        !text.contains("HTTPRoute/tenant/hijack") && !text.contains("collector"),
        "another namespace's route attached to production's waypoint: {text}"
    );
    cp.kill();
}

/// GAMMA: an HTTPRoute whose Service parent is in another namespace is a consumer route,
/// for the route's own namespace's clients only. A tenant's route on production's Service
/// must not reroute production's other clients (here: a catch-all to the tenant's backend).
#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn attack_consumer_route_in_another_namespace_reroutes_only_its_own_clients() {
    const ROUTE: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: tenant
---
apiVersion: gateway.networking.k8s.io/v1
kind: HTTPRoute
metadata:
  name: consumer
  namespace: tenant
spec:
  parentRefs:
    - group: ""
      kind: Service
      name: reviews
      namespace: production
  rules:
    - backendRefs:
        - name: collector
          port: 80
"#;
    let (config, ca) = config_with_base(&[("route.yaml", ROUTE)]);
    let cp = ControlPlane::start(config.path(), ca.path());
    let model = || cp.admin_json("/debug/model?prefix=route/production/reviews.");
    eventually("the consumer route", || {
        model().to_string().contains("HTTPRoute/tenant/consumer")
    })
    .await;
    let v = model();
    let rules: Vec<&serde_json::Value> = v["resources"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["kind"]["route"]["http"].as_array().into_iter().flatten())
        .filter(|r| r["origin"] == "HTTPRoute/tenant/consumer")
        .collect();
    assert!(!rules.is_empty(), "{v}");
    for r in rules {
        let matches = r["matches"].as_array().unwrap();
        assert!(
            !matches.is_empty() && matches.iter().all(|m| m["sourceNamespace"] == "tenant"),
            "the tenant's route applies to every client of production/reviews: {r}"
        );
    }
    // The Service's other clients keep its default route (not a 404 for lack of a match).
    let last = v["resources"][0]["kind"]["route"]["http"]
        .as_array()
        .and_then(|h| h.last().cloned())
        .unwrap_or_default();
    assert_eq!(
        (&last["matches"], &last["route"][0]["destination"]["host"]),
        (
            &serde_json::json!([]),
            &serde_json::json!("reviews.production.svc.cluster.local")
        ),
        "{v}"
    );
    cp.kill();
}

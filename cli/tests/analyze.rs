//! `meshwork analyze`: each check on a fixture that triggers it and one that does not.

use std::path::PathBuf;
use std::process::{Command, Output};

use serde_json::Value;

fn fixture(name: &str) -> PathBuf {
    PathBuf::from(env!("CARGO_MANIFEST_DIR"))
        .join("tests/fixtures/analyze")
        .join(name)
}

fn run(args: &[&str]) -> Output {
    Command::new(env!("CARGO_BIN_EXE_meshwork"))
        .arg("analyze")
        .args(args)
        .output()
        .expect("run meshwork")
}

/// Runs `analyze --output json` on a fixture: (exit code, report).
fn analyze(name: &str) -> (i32, Value) {
    let dir = fixture(name);
    let out = run(&[
        dir.to_str().unwrap(),
        "-n",
        "production",
        "--output",
        "json",
    ]);
    let stdout = String::from_utf8_lossy(&out.stdout);
    let report: Value = serde_json::from_str(&stdout).unwrap_or_else(|e| {
        panic!(
            "{name}: not JSON ({e}): {stdout}\nstderr: {}",
            String::from_utf8_lossy(&out.stderr)
        )
    });
    (out.status.code().expect("exit code"), report)
}

/// The findings of one check: (severity, resource, message, fix).
fn of_check(report: &Value, check: &str) -> Vec<(String, String, String, String)> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .filter(|f| f["check"] == check)
        .map(|f| {
            let s = |k: &str| f[k].as_str().unwrap_or_default().to_string();
            assert!(!s("fix").is_empty(), "finding without a fix: {f}");
            assert!(!s("file").is_empty(), "finding without a file: {f}");
            (s("severity"), s("resource"), s("message"), s("fix"))
        })
        .collect()
}

fn checks(report: &Value) -> Vec<String> {
    report["findings"]
        .as_array()
        .expect("findings")
        .iter()
        .map(|f| f["check"].as_str().unwrap().to_string())
        .collect()
}

/// A clean fixture: exit 0 and no finding at all.
fn assert_clean(name: &str) {
    let (code, report) = analyze(name);
    assert_eq!(
        report["findings"],
        Value::Array(vec![]),
        "{name}: {report:#}"
    );
    assert_eq!(code, 0, "{name}");
}

#[test]
fn subset_without_destination_rule_is_an_error() {
    let (code, report) = analyze("subset_missing_dr");
    let f = of_check(&report, "subset-undefined");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "error");
    assert_eq!(f[0].1, "VirtualService shop/reviews");
    assert!(f[0].2.contains("subset \"v1\""), "{}", f[0].2);
    assert!(f[0].3.contains("DestinationRule"), "{}", f[0].3);
    assert_eq!(code, 1);
    assert_eq!(report["summary"]["errors"], 1);
}

#[test]
fn subset_matching_no_pod_is_a_warning() {
    let (code, report) = analyze("subset_no_pods");
    let f = of_check(&report, "subset-no-pods");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "warning");
    assert_eq!(f[0].1, "DestinationRule shop/reviews");
    assert!(
        f[0].2.contains("\"v2\"") && f[0].2.contains("version=v2"),
        "{}",
        f[0].2
    );
    assert_eq!(code, 0);
}

#[test]
fn defined_subsets_with_pods_and_a_service_are_clean() {
    assert_clean("subset_ok");
}

#[test]
fn virtual_service_and_destination_rule_in_different_namespaces() {
    let (_, report) = analyze("cross_ns");
    let f = of_check(&report, "cross-namespace-rules");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "warning");
    assert_eq!(f[0].1, "VirtualService frontend/reviews");
    assert!(f[0].2.contains("client's namespace"), "{}", f[0].2);
    assert!(checks(&report).iter().all(|c| c == "cross-namespace-rules"));
}

/// A DestinationRule in a namespace Istio never looks in: invisible, so the subset
/// the VirtualService names is undefined too.
#[test]
fn destination_rule_in_an_unrelated_namespace_is_not_visible() {
    let (code, report) = analyze("cross_ns_hidden");
    let cross = of_check(&report, "cross-namespace-rules");
    assert_eq!(cross.len(), 1, "{report:#}");
    assert!(
        cross[0].2.contains("will not see this one"),
        "{}",
        cross[0].2
    );
    assert!(cross[0].3.contains("the service's, shop"), "{}", cross[0].3);
    let undefined = of_check(&report, "subset-undefined");
    assert_eq!(undefined.len(), 1, "{report:#}");
    assert_eq!(undefined[0].0, "error");
    assert_eq!(code, 1);
}

/// Weights are relative, as in Istio (90/20 is valid); only a split whose weights are all
/// zero routes nowhere and is refused.
#[test]
fn weights_that_are_all_zero_are_the_stores_error() {
    let (code, report) = analyze("bad_weights");
    let f = of_check(&report, "invalid-resource");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "error");
    assert_eq!(f[0].1, "VirtualService shop/reviews");
    assert!(
        f[0].2.contains("total destination weight is 0"),
        "{}",
        f[0].2
    );
    assert_eq!(code, 1);
}

#[test]
fn virtual_service_host_without_service() {
    let (code, report) = analyze("host_no_service");
    let f = of_check(&report, "host-no-service");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "warning");
    assert_eq!(f[0].1, "VirtualService shop/ratings");
    assert!(f[0].2.contains("shop/ratings"), "{}", f[0].2);
    // Its route goes to the same missing service: Istio's IST0101, an error.
    let d = of_check(&report, "destination-host-not-found");
    assert_eq!(d.len(), 1, "{report:#}");
    assert_eq!(d[0].0, "error");
    assert!(
        d[0].2.starts_with("Referenced host not found: \"ratings\""),
        "{}",
        d[0].2
    );
    assert_eq!(code, 1);
}

#[test]
fn two_namespace_wide_peer_authentications_oldest_wins() {
    let (_, report) = analyze("peer_conflict_ns");
    let f = of_check(&report, "peer-authentication-conflict");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "warning");
    assert_eq!(f[0].1, "PeerAuthentication shop/permissive");
    assert!(f[0].2.contains("oldest, shop/strict"), "{}", f[0].2);
}

#[test]
fn two_peer_authentications_selecting_one_workload() {
    let (_, report) = analyze("peer_conflict_selector");
    let f = of_check(&report, "peer-authentication-conflict");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].1, "PeerAuthentication shop/by-version");
    assert!(f[0].2.contains("Pod shop/reviews-v1"), "{}", f[0].2);
    assert!(f[0].2.contains("shop/by-app"), "{}", f[0].2);
}

#[test]
fn one_namespace_wide_and_one_workload_peer_authentication_are_clean() {
    assert_clean("peer_ok");
}

#[test]
fn l7_allow_policy_without_waypoint_is_an_error() {
    let (code, report) = analyze("l7_no_waypoint");
    let f = of_check(&report, "l7-policy-without-waypoint");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "error");
    assert_eq!(f[0].1, "AuthorizationPolicy shop/payments");
    assert!(
        f[0].2.contains("Pod shop/payments-1") && f[0].2.contains("denied"),
        "{}",
        f[0].2
    );
    assert!(f[0].3.contains("istio.io/use-waypoint"), "{}", f[0].3);
    assert_eq!(code, 1);
}

/// A DENY with L7 parts and no waypoint: as Istio's ztunnel, the HTTP-only operation matches
/// nothing, so the rule denies less than written.
#[test]
fn l7_deny_policy_without_waypoint_is_a_warning() {
    let (code, report) = analyze("l7_deny_no_waypoint");
    let f = of_check(&report, "l7-policy-without-waypoint");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "warning");
    assert_eq!(f[0].1, "AuthorizationPolicy shop/no-delete");
    assert!(f[0].2.contains("deny less than written"), "{}", f[0].2);
    assert_eq!(code, 0);
}

/// With a waypoint the L7 rules are enforced (no `l7-policy-without-waypoint`), but a
/// selector policy behind a waypoint means something else under Istio: enforced by the
/// destination ztunnel against the waypoint's identity, without its HTTP rules.
#[test]
fn l7_allow_policy_with_waypoint_warns_only_about_istio_placement() {
    let (code, report) = analyze("l7_waypoint");
    assert_eq!(code, 0, "{report:#}");
    assert_eq!(
        checks(&report),
        ["selector-policy-behind-waypoint"],
        "{report:#}"
    );
    let f = of_check(&report, "selector-policy-behind-waypoint");
    assert_eq!(f[0].0, "warning");
    assert_eq!(f[0].1, "AuthorizationPolicy shop/payments");
    assert!(
        f[0].2.contains("Pod shop/payments-1")
            && f[0].2.contains("against the original client")
            && f[0].2.contains("without its HTTP rules"),
        "{}",
        f[0].2
    );
    assert!(f[0].3.contains("targetRefs"), "{}", f[0].3);
}

#[test]
fn allow_rules_matching_everyone() {
    let (code, report) = analyze("allow_all");
    let f = of_check(&report, "allow-everyone");
    let resources: Vec<&str> = f.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(
        resources,
        [
            "AuthorizationPolicy shop/allow-any",
            "AuthorizationPolicy shop/any-peer"
        ],
        "{report:#}"
    );
    assert!(f.iter().all(|x| x.0 == "warning"));
    assert!(f[0].2.contains("plaintext included"), "{}", f[0].2);
    assert!(f[1].2.contains("principals: [\"*\"]"), "{}", f[1].2);
    assert_eq!(code, 0);
}

#[test]
fn deny_without_allow_is_info() {
    let (code, report) = analyze("deny_only");
    let f = of_check(&report, "deny-without-default");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "info");
    assert_eq!(f[0].1, "AuthorizationPolicy shop/deny-other-ns");
    assert!(
        f[0].2
            .starts_with("DENY without a default allow/deny posture"),
        "{}",
        f[0].2
    );
    assert_eq!(code, 0);
}

#[test]
fn deny_with_an_allow_policy_is_clean() {
    assert_clean("deny_with_allow");
}

#[test]
fn deny_with_a_mesh_wide_deny_all_is_clean() {
    assert_clean("deny_with_deny_all");
}

#[test]
fn full_trace_sampling_is_a_warning() {
    let (_, report) = analyze("sampling_100");
    let f = of_check(&report, "full-trace-sampling");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "warning");
    assert_eq!(f[0].1, "Telemetry istio-system/tracing");
}

#[test]
fn system_namespace_in_ambient_is_a_warning() {
    let (_, report) = analyze("ambient_system");
    let f = of_check(&report, "system-namespace-ambient");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "warning");
    assert_eq!(f[0].1, "Namespace kube-system");
    assert_eq!(checks(&report), ["system-namespace-ambient"]);
}

#[test]
fn wasm_plugins_attached_to_no_waypoint_or_by_selector() {
    let (_, report) = analyze("wasm_plugin");
    let f = of_check(&report, "wasm-plugin-no-waypoint");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].1, "WasmPlugin shop/to-ingress");
    assert!(f[0].2.contains("not a waypoint"), "{}", f[0].2);
    let f = of_check(&report, "ineffective-selector");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "warning");
    assert_eq!(f[0].1, "WasmPlugin shop/by-selector");
    assert!(
        f[0].2.contains("Use the TargetRef field instead"),
        "{}",
        f[0].2
    );
    // failStrategy as Meshwork applies it on a trap: FAIL_CLOSE (here the default) and
    // FAIL_OPEN differ from Envoy, FAIL_RELOAD does not; a plugin running nowhere is left out.
    let mut f = of_check(&report, "wasm-plugin-fail-strategy");
    f.sort();
    assert_eq!(f.len(), 2, "{report:#}");
    assert_eq!(f[0].0, "warning");
    assert_eq!(f[0].1, "WasmPlugin shop/good");
    assert!(f[0].2.contains("FAIL_CLOSE (the default)"), "{}", f[0].2);
    assert!(
        f[0].2.contains("replaces the instance at once"),
        "{}",
        f[0].2
    );
    assert_eq!(f[1].1, "WasmPlugin shop/open");
    assert!(f[1].2.contains("FAIL_OPEN"), "{}", f[1].2);
    assert!(
        f[1].2.contains("lets that request itself pass"),
        "{}",
        f[1].2
    );
}

#[test]
fn unknown_fields_are_warnings() {
    let (code, report) = analyze("unknown_field");
    let f = of_check(&report, "unknown-field");
    assert_eq!(f.len(), 1, "{report:#}");
    assert_eq!(f[0].0, "warning");
    assert_eq!(f[0].1, "VirtualService shop/reviews");
    assert!(f[0].2.contains("spec.http[0].timeuot"), "{}", f[0].2);
    assert_eq!(code, 0);
}

/// The seed manifests alone: what is missing from them is reported. They route to
/// payment-service, which they do not define: Istio's IST0101 (an error, as
/// `istioctl analyze` on the files reports it), and its policy selects no workload (IST0127).
#[test]
fn seed_manifests_alone() {
    let (code, report) = analyze("seed_full/seed");
    assert_eq!(report["summary"]["errors"], 1, "{report:#}");
    assert_eq!(code, 1);
    let mut got: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .map(|f| {
            (
                f["check"].as_str().unwrap().into(),
                f["resource"].as_str().unwrap().into(),
            )
        })
        .collect();
    got.sort();
    let want = [
        (
            "authz-no-workloads",
            "AuthorizationPolicy production/payment-service-policy",
        ),
        (
            "deny-without-default",
            "AuthorizationPolicy production/deny-all-default",
        ),
        (
            "destination-host-not-found",
            "VirtualService production/payment-service-vs",
        ),
        (
            "host-no-service",
            "VirtualService production/payment-service-vs",
        ),
        (
            "subset-no-pods",
            "DestinationRule production/order-service-dr",
        ),
    ];
    let want: Vec<(String, String)> = want
        .iter()
        .map(|(a, b)| (a.to_string(), b.to_string()))
        .collect();
    assert_eq!(got, want);
}

/// The seed manifests with what they assume (ambient namespace with a waypoint, v1 and
/// v2 pods, payment-service): the open DENY posture for order-service remains, and the
/// selector policy of payment-service, behind the namespace waypoint, is placed differently
/// under Istio (`docs/istio-differences.md`).
#[test]
fn seed_manifests_in_their_cluster() {
    let (code, report) = analyze("seed_full");
    assert_eq!(code, 0, "{report:#}");
    let mut got = checks(&report);
    got.sort();
    assert_eq!(
        got,
        ["deny-without-default", "selector-policy-behind-waypoint"],
        "{report:#}"
    );
    let placed = of_check(&report, "selector-policy-behind-waypoint");
    assert_eq!(
        placed[0].1,
        "AuthorizationPolicy production/payment-service-policy"
    );
    let msg = of_check(&report, "deny-without-default")[0].2.clone();
    assert!(msg.contains("Pod production/order-service-v1-0"), "{msg}");
    assert!(!msg.contains("payment-service"), "{msg}");
    assert!(!msg.contains("waypoint"), "{msg}");
}

#[test]
fn human_output_one_line_per_finding_and_a_summary() {
    let dir = fixture("l7_no_waypoint");
    let out = run(&[dir.to_str().unwrap()]);
    assert_eq!(out.status.code(), Some(1));
    let stdout = String::from_utf8(out.stdout).unwrap();
    let lines: Vec<&str> = stdout.lines().collect();
    assert_eq!(lines.len(), 2, "{stdout}");
    assert!(
        lines[0].starts_with("ERROR    AuthorizationPolicy shop/payments  ALLOW policy"),
        "{stdout}"
    );
    assert!(lines[0].contains("(fix: "), "{stdout}");
    assert_eq!(
        lines[1],
        "3 object(s) analyzed: 1 error(s), 0 warning(s), 0 info"
    );
}

#[test]
fn yaml_output() {
    let dir = fixture("sampling_100");
    let out = run(&[dir.to_str().unwrap(), "-o", "yaml"]);
    assert_eq!(out.status.code(), Some(0));
    let v: serde_yaml_ng::Value = serde_yaml_ng::from_slice(&out.stdout).expect("yaml");
    assert_eq!(v["summary"]["warnings"], serde_yaml_ng::Value::from(1));
}

#[test]
fn missing_directory_is_exit_2_with_one_error_line() {
    let out = run(&["/nonexistent/meshwork-analyze"]);
    assert_eq!(out.status.code(), Some(2));
    let stderr = String::from_utf8(out.stderr).unwrap();
    assert_eq!(stderr.lines().count(), 1, "{stderr}");
    assert!(
        stderr.starts_with("error: /nonexistent/meshwork-analyze: not a directory"),
        "{stderr}"
    );
    assert!(out.stdout.is_empty());
}

/// Istio matches subsets against endpoint labels, which include the node's topology
/// labels; a zone subset is not "no pods".
#[test]
fn subset_by_node_topology_is_clean() {
    assert_clean("subset_topology");
}

/// A sidecar-injected namespace enforces L7 rules in the sidecar: no waypoint needed.
#[test]
fn l7_policy_on_sidecar_workloads_is_clean() {
    assert_clean("l7_sidecar");
}

/// IST0109: two mesh-bound VirtualServices for one host (short name and FQDN).
#[test]
fn conflicting_mesh_virtual_service_hosts() {
    let (code, report) = analyze("conflicting_hosts");
    let f = of_check(&report, "conflicting-mesh-hosts");
    let resources: Vec<&str> = f.iter().map(|x| x.1.as_str()).collect();
    assert_eq!(
        resources,
        [
            "VirtualService shop/reviews-a",
            "VirtualService shop/reviews-b"
        ],
        "{report:#}"
    );
    assert!(f.iter().all(|x| x.0 == "error"));
    assert!(
        f[0].2.contains("shop/reviews-a,shop/reviews-b")
            && f[0].2.contains("reviews.shop.svc.cluster.local"),
        "{}",
        f[0].2
    );
    let codes: Vec<&Value> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|x| x["check"] == "conflicting-mesh-hosts")
        .map(|x| &x["code"])
        .collect();
    assert!(codes.iter().all(|c| *c == "IST0109"), "{report:#}");
    assert_eq!(checks(&report).len(), 2, "{report:#}");
    assert_eq!(code, 1);
}

/// IST0109 on Istio's own analyzer testdata (istio/istio 86c9f01fd735,
/// `pkg/config/analysis/analyzers/testdata/`), with the messages `analyzers_test.go`
/// expects: every expected message found, no other.
#[test]
fn istio_testdata_conflicting_mesh_gateway_hosts() {
    for (dir, want) in [
        (
            "istio/virtualservice_conflictingmeshgatewayhosts",
            &[
                "VirtualService team3/ratings",
                "VirtualService team4/ratings",
                "VirtualService foo/ratings",
                "VirtualService bar/ratings",
                "VirtualService foo/productpage",
                "VirtualService foo/bogus-productpage",
                "VirtualService team2/ratings",
            ][..],
        ),
        (
            "istio/virtualservice_conflictingmeshgatewayhosts_with_exportto",
            &[
                "VirtualService foo/productpage",
                "VirtualService bar/productpage",
                "VirtualService foo/productpage-c",
                "VirtualService bar/productpage-c",
                "VirtualService foo/productpage-d",
                "VirtualService bar/productpage-d",
            ][..],
        ),
    ] {
        let (_, report) = analyze(dir);
        let mut got: Vec<String> = of_check(&report, "conflicting-mesh-hosts")
            .into_iter()
            .map(|f| f.1)
            .collect();
        got.sort();
        let mut want: Vec<String> = want.iter().map(|s| s.to_string()).collect();
        want.sort();
        assert_eq!(got, want, "{dir}: {report:#}");
    }
}

/// IST0101 for subsets on Istio's analyzer testdata (DestinationRuleAnalyzer): every
/// expected message found, no other.
#[test]
fn istio_testdata_virtual_service_destination_rules() {
    let (_, report) = analyze("istio/virtualservice_destinationrules");
    let mut got: Vec<String> = of_check(&report, "subset-undefined")
        .into_iter()
        .map(|f| f.1)
        .collect();
    got.sort();
    got.dedup();
    assert_eq!(
        got,
        [
            "VirtualService default/reviews-bogussubset",
            "VirtualService default/reviews-mirror-bogussubset"
        ],
        "{report:#}"
    );
}

/// Measures one of Istio's analyzers on its own testdata (copied unchanged under
/// `fixtures/analyze/istio/`): the `(code, resource)` messages `analyzers_test.go` expects
/// against what the Meshwork checks standing for that analyzer report. `missed` lists
/// expected messages Meshwork cannot report, each with the reason; the test fails on any
/// other difference (a miss not listed, a listed miss now found, a spurious message).
fn measure_istio_analyzer(
    dir: &str,
    checks: &[&str],
    expected: &[(&str, &str)],
    missed: &[(&str, &str, &str)],
) {
    let (_, report) = analyze(dir);
    let mut got: Vec<(String, String)> = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .filter(|f| checks.iter().any(|c| f["check"] == *c))
        .map(|f| {
            (
                f["code"].as_str().unwrap().to_string(),
                f["origin"].as_str().unwrap().to_string(),
            )
        })
        .collect();
    got.sort();
    let mut want: Vec<(String, String)> = expected
        .iter()
        .map(|(c, r)| (c.to_string(), r.to_string()))
        .collect();
    want.sort();
    // Multiset difference both ways.
    let mut spurious = got.clone();
    let mut not_found = Vec::new();
    for w in &want {
        match spurious.iter().position(|g| g == w) {
            Some(i) => {
                spurious.remove(i);
            }
            None => not_found.push(w.clone()),
        }
    }
    eprintln!(
        "{dir}: {} expected message(s), {} found, {} spurious",
        want.len(),
        want.len() - not_found.len(),
        spurious.len()
    );
    let mut listed: Vec<(String, String)> = missed
        .iter()
        .map(|(c, r, why)| {
            assert!(!why.is_empty());
            (c.to_string(), r.to_string())
        })
        .collect();
    listed.sort();
    not_found.sort();
    assert_eq!(
        not_found, listed,
        "{dir}: misses differ from the listed ones: {report:#}"
    );
    assert!(
        spurious.is_empty(),
        "{dir}: spurious {spurious:?}: {report:#}"
    );
}

/// IST0101 / IST0112 (DestinationHostAnalyzer) on Istio's testdata.
#[test]
fn istio_testdata_virtual_service_destination_hosts() {
    measure_istio_analyzer(
        "istio/virtualservice_destinationhosts",
        &["destination-host-not-found", "destination-port-required"],
        &[
            ("IST0101", "VirtualService default/reviews-bogushost"),
            ("IST0101", "VirtualService default/reviews-bogushost"),
            ("IST0101", "VirtualService default/reviews-bookinfo-other"),
            ("IST0101", "VirtualService default/reviews-mirror-bogushost"),
            ("IST0101", "VirtualService default/reviews-bogusport"),
            ("IST0112", "VirtualService default/reviews-2port-missing"),
            ("IST0101", "VirtualService istio-system/cross-namespace-details"),
            ("IST0101", "VirtualService hello/hello-export-to-bogus"),
        ],
        &[
            (
                "IST0101",
                "VirtualService default/reviews-bookinfo-other",
                "the host is declared by a ServiceEntry of another namespace; Meshwork does not implement ServiceEntry and does not check hosts outside the cluster domain",
            ),
            (
                "IST0101",
                "VirtualService default/reviews-bogushost",
                "a route without destination (`- {}`): Meshwork's store rejects the VirtualService (invalid-resource, empty host), so no analyzer sees it",
            ),
            (
                "IST0101",
                "VirtualService default/reviews-bogushost",
                "the same rejected VirtualService's second route (host reviews-bogus)",
            ),
        ],
    );
}

/// IST0127 / IST0101 (AuthorizationPoliciesAnalyzer) on Istio's testdata.
#[test]
fn istio_testdata_authorization_policies() {
    measure_istio_analyzer(
        "istio/authorizationpolicies",
        &["authz-no-workloads", "authz-namespace-not-found"],
        &[
            (
                "IST0127",
                "AuthorizationPolicy istio-system/meshwide-httpbin-v1",
            ),
            (
                "IST0127",
                "AuthorizationPolicy httpbin-empty/httpbin-empty-namespace-wide",
            ),
            ("IST0127", "AuthorizationPolicy httpbin/httpbin-nopods"),
            ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-ns"),
            ("IST0101", "AuthorizationPolicy httpbin/httpbin-bogus-ns"),
            (
                "IST0101",
                "AuthorizationPolicy httpbin/httpbin-bogus-not-ns",
            ),
            (
                "IST0101",
                "AuthorizationPolicy httpbin/httpbin-bogus-not-ns",
            ),
            ("IST0127", "AuthorizationPolicy test-ambient/no-workload"),
        ],
        &[],
    );
}

/// IST0101 / IST0159 (telemetry SelectorAnalyzer) and IST0160 (DefaultSelectorAnalyzer).
#[test]
fn istio_testdata_telemetry_selectors() {
    measure_istio_analyzer(
        "istio/telemetry_selector",
        &[
            "telemetry-selector-no-pods",
            "telemetry-conflicting-selectors",
        ],
        &[
            ("IST0101", "Telemetry default/maps-to-nonexistent"),
            ("IST0101", "Telemetry other/maps-to-different-ns"),
            ("IST0159", "Telemetry default/dupe-1"),
            ("IST0159", "Telemetry default/dupe-2"),
            ("IST0159", "Telemetry default/overlap-1"),
            ("IST0159", "Telemetry default/overlap-2"),
        ],
        &[],
    );
    measure_istio_analyzer(
        "istio/telemetry_default_selector",
        &["telemetry-several-without-selector"],
        &[
            ("IST0160", "Telemetry ns2/has-conflict-2"),
            ("IST0160", "Telemetry ns2/has-conflict-1"),
        ],
        &[],
    );
}

/// `-o json` carries istioctl's message fields.
#[test]
fn json_output_has_istioctl_message_fields() {
    let (_, report) = analyze("istio/virtualservice_destinationrules");
    let f = report["findings"]
        .as_array()
        .unwrap()
        .iter()
        .find(|f| f["code"] == "IST0101")
        .expect("an IST0101 finding");
    assert_eq!(f["level"], "Error");
    assert_eq!(f["origin"], f["resource"]);
    assert!(
        f["reference"].as_str().unwrap().ends_with("all.yaml"),
        "{f}"
    );
    assert_eq!(
        f["documentationUrl"],
        "https://istio.io/latest/docs/reference/config/analysis/ist0101/"
    );
    assert!(f["message"].as_str().is_some());
}

/// IST0166 (k8sgateway SelectorAnalyzer) on Istio's testdata.
#[test]
fn istio_testdata_k8s_gateway_selector() {
    measure_istio_analyzer(
        "istio/k8sgateway_selector",
        &["ineffective-selector"],
        &[
            ("IST0166", "RequestAuthentication default/ra-ineffective"),
            ("IST0166", "AuthorizationPolicy default/ap-ineffective"),
            ("IST0166", "WasmPlugin default/wasmplugin-ineffective"),
            ("IST0166", "Telemetry default/telemetry-ineffective"),
        ],
        &[(
            "IST0166",
            "RequestAuthentication default/ra-ineffective",
            "RequestAuthentication is a kind Meshwork does not implement",
        )],
    );
}

/// IST0128 / IST0129 (destinationrule CaCertificateAnalyzer) on Istio's 7 testdata files.
/// Their DestinationRules name no namespace (Istio prints `DestinationRule db-tls`);
/// `analyze` puts them in `-n production`.
#[test]
fn istio_testdata_destination_rule_ca_certificates() {
    for (dir, expected) in [
        (
            "destinationrule_simple_destination",
            &[("IST0128", "DestinationRule production/db-tls")][..],
        ),
        (
            "destinationrule_mutual_destination",
            &[("IST0128", "DestinationRule production/db-mtls")][..],
        ),
        (
            "destinationrule_simple_port",
            &[("IST0129", "DestinationRule production/db-tls")][..],
        ),
        (
            "destinationrule_simple_destination_credentialname",
            &[("IST0128", "DestinationRule production/db-tls")][..],
        ),
        (
            "destinationrule_simple_destination_credentialname_selector",
            &[][..],
        ),
        (
            "destinationrule_simple_port_credentialname",
            &[("IST0129", "DestinationRule production/db-tls")][..],
        ),
        (
            "destinationrule_simple_port_credentialname_selector",
            &[][..],
        ),
    ] {
        measure_istio_analyzer(
            &format!("istio/{dir}"),
            &["tls-no-server-verification"],
            expected,
            &[],
        );
    }
}

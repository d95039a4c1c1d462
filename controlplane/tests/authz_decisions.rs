//! Authorization decisions conformance: Istio's own test data, decided by Meshwork.
//!
//! The fixtures (`authz/tests/conformance/fixtures/<source>/*.json`, written by
//! `authz/tests/conformance/convert.py`, sources and license in the README there) hold
//! AuthorizationPolicies as a user applies them, the proxy that decides (Istio's ztunnel
//! or Envoy's network RBAC filter) and connections with Istio's decision. Each policy
//! takes the path it takes in a running mesh: `meshwork_api::parse_file` (typed parsing
//! and validation), the control plane's translation (`translate::authz::authorization`),
//! then `meshwork_authz` compiled for the matching [`Enforcer`].
//!
//! Prints one table (per source: requests, agree, false allow, false deny) and fails on
//! any disagreement not listed, with its reason, in `EXCEPTIONS.txt`, and on any listed
//! exception that no longer disagrees.
//!
//! `cargo test -p meshwork-controlplane --test authz_decisions -- --nocapture`

use std::collections::{BTreeMap, BTreeSet};
use std::path::{Path, PathBuf};

use meshwork_api::object::Spec;
use meshwork_authz::{evaluate, Claim, Enforcer, HttpAttributes, Policy, RequestContext};
use meshwork_controlplane::translate::authz::authorization;
use meshwork_controlplane::translate::Translator;
use meshwork_model::pb::config::{resource::Kind as ResKind, MtlsMode};
use serde::Deserialize;

#[derive(Deserialize)]
struct Fixture {
    origin: String,
    enforcer: String,
    policies: String,
    requests: Vec<Request>,
    /// For PeerAuthentication fixtures: the pod the workload policy selects.
    workload: Option<WorkloadSpec>,
}

#[derive(Deserialize)]
struct WorkloadSpec {
    namespace: String,
    labels: BTreeMap<String, String>,
}

#[derive(Deserialize)]
struct Request {
    principal: Option<String>,
    src: String,
    dst: String,
    port: u16,
    allowed: bool,
    http: Option<Http>,
}

#[derive(Deserialize)]
struct Http {
    method: String,
    path: String,
    host: String,
    headers: BTreeMap<String, String>,
    /// The validated JWT's payload (`iss`, `sub`, `aud`, `azp`, other claims).
    jwt: Option<serde_json::Value>,
}

fn claim(v: &serde_json::Value) -> Option<Claim> {
    match v {
        serde_json::Value::String(s) => Some(Claim::Values(vec![s.clone()])),
        serde_json::Value::Array(a) => Some(Claim::Values(
            a.iter()
                .filter_map(|x| x.as_str().map(String::from))
                .collect(),
        )),
        serde_json::Value::Object(o) => Some(Claim::Object(
            o.iter()
                .filter_map(|(k, v)| Some((k.clone(), claim(v)?)))
                .collect(),
        )),
        _ => None,
    }
}

impl Http {
    fn attributes(&self) -> HttpAttributes {
        let mut h = HttpAttributes {
            host: self.host.clone(),
            method: self.method.clone(),
            path: self.path.clone(),
            ..Default::default()
        };
        for (k, v) in &self.headers {
            h.headers.append(
                http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
                v.parse().unwrap(),
            );
        }
        if let Some(jwt) = &self.jwt {
            let s = |k: &str| jwt[k].as_str().map(String::from);
            h.request_principal = Some(format!(
                "{}/{}",
                s("iss").unwrap_or_default(),
                s("sub").unwrap_or_default()
            ));
            h.audiences = match claim(&jwt["aud"]) {
                Some(Claim::Values(v)) => v,
                _ => Vec::new(),
            };
            h.presenter = s("azp");
            if let Some(Claim::Object(c)) = claim(jwt) {
                h.claims = c;
            }
        }
        h
    }
}

impl Request {
    fn key(&self) -> String {
        let mut k = format!(
            "{} {} {} {}",
            self.principal.as_deref().unwrap_or("-"),
            self.src,
            self.dst,
            self.port
        );
        if let Some(h) = &self.http {
            k.push_str(&format!(" {} {} {}", h.method, h.host, h.path));
            for (n, v) in &h.headers {
                k.push_str(&format!(" {n}={v}"));
            }
            if let Some(j) = &h.jwt {
                k.push_str(&format!(" jwt={j}"));
            }
        }
        k
    }
}

fn dir() -> PathBuf {
    Path::new(env!("CARGO_MANIFEST_DIR")).join("../authz/tests/conformance")
}

/// `<source>/<fixture> <principal|-> <src> <dst> <port> | <reason>` per line.
fn exceptions() -> BTreeMap<String, String> {
    let text = std::fs::read_to_string(dir().join("EXCEPTIONS.txt")).unwrap();
    text.lines()
        .filter(|l| !l.trim().is_empty() && !l.starts_with('#'))
        .map(|l| {
            let (k, why) = l.split_once(" | ").expect("`<case> | <reason>`");
            assert!(!why.trim().is_empty(), "exception without a reason: {l}");
            (k.trim().to_string(), why.trim().to_string())
        })
        .collect()
}

fn fixtures() -> Vec<(String, String, Fixture)> {
    let mut out = Vec::new();
    let root = dir().join("fixtures");
    let mut sources: Vec<_> = std::fs::read_dir(&root)
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.is_dir())
        .collect();
    sources.sort();
    for s in sources {
        let source = s.file_name().unwrap().to_string_lossy().to_string();
        let mut files: Vec<_> = std::fs::read_dir(&s)
            .unwrap()
            .map(|e| e.unwrap().path())
            .filter(|p| p.extension().is_some_and(|x| x == "json"))
            .collect();
        files.sort();
        for f in files {
            let name = f.file_stem().unwrap().to_string_lossy().to_string();
            let fx: Fixture = serde_json::from_str(&std::fs::read_to_string(&f).unwrap())
                .unwrap_or_else(|e| panic!("{}: {e}", f.display()));
            out.push((source.clone(), name, fx));
        }
    }
    out
}

fn enforcer(name: &str, fx: &Fixture) -> Enforcer {
    match fx.enforcer.as_str() {
        "ztunnel" => Enforcer::Ztunnel,
        "envoy" => Enforcer::Envoy,
        other => panic!("{name}: unknown enforcer {other}"),
    }
}

fn context(r: &Request) -> RequestContext {
    RequestContext {
        source_principal: r.principal.clone(),
        source_ip: Some(r.src.parse().unwrap()),
        destination_ip: Some(r.dst.parse().unwrap()),
        destination_port: r.port,
        http: r.http.as_ref().map(Http::attributes),
        ..Default::default()
    }
}

/// The policies of a fixture as `enforcer` compiles them, or Meshwork's errors.
fn compile(name: &str, fx: &Fixture, enforcer: Enforcer) -> Result<Vec<Policy>, String> {
    let parsed = meshwork_api::parse_file(Path::new(name), &fx.policies, "default");
    let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
    if !errors.is_empty() {
        return Err(errors.join("; "));
    }
    Ok(parsed
        .objects()
        .filter_map(|o| match &o.spec {
            Spec::AuthorizationPolicy(ap) => Some(authorization(o, ap, "istio-system")),
            _ => None,
        })
        .map(|a| Policy::compile_for(&a, enforcer))
        .collect())
}

/// A PeerAuthentication fixture: the policies and an ambient pod they select, translated as
/// the control plane does; a plaintext connection passes unless the port's mTLS mode
/// (`Workload::mtls_mode_for_port`, what the ztunnel's plaintext inbound path checks) is
/// STRICT; HBONE always passes PeerAuthentication.
fn peer_authentication_decider(name: &str, fx: &Fixture) -> impl Fn(&Request) -> bool {
    let w = fx.workload.as_ref().expect("workload");
    let mut store = meshwork_api::Store::new();
    store.apply_file(Path::new(name), &fx.policies, "default");
    let mut labels: Vec<String> = w
        .labels
        .iter()
        .map(|(k, v)| format!("    {k}: {v:?}"))
        .collect();
    labels.push("    istio.io/dataplane-mode: ambient".into());
    let pod = format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: probe\n  namespace: {}\n  labels:\n{}\nspec:\n  containers:\n  - name: app\n    image: app\nstatus:\n  phase: Running\n  podIP: 10.99.0.2\n",
        w.namespace,
        labels.join("\n")
    );
    store.apply_file(Path::new("probe-pod.yaml"), &pod, "default");
    assert!(store.errors().is_empty(), "{name}: {:?}", store.errors());
    let mut t = Translator::new();
    t.set_mesh_file(None);
    t.apply_batch(&store.snapshot());
    let key = format!("workload/{}/probe", w.namespace);
    let workload = match t.resources().get(&key).and_then(|r| r.kind.clone()) {
        Some(ResKind::Workload(w)) => w,
        other => panic!("{name}: {key} not translated: {other:?}"),
    };
    move |r: &Request| {
        r.principal.is_some() || workload.mtls_mode_for_port(r.port) != MtlsMode::Strict
    }
}

#[derive(Default)]
struct Row {
    fixtures: usize,
    cases: usize,
    agree: usize,
    false_allow: usize,
    false_deny: usize,
    excepted: usize,
}

#[test]
fn istio_authorization_decisions() {
    let exceptions = exceptions();
    let mut used = BTreeSet::new();
    let mut rows: BTreeMap<String, Row> = BTreeMap::new();
    let mut unexplained = Vec::new();
    let why = std::env::var_os("MESHWORK_CONFORMANCE_WHY").is_some();
    for (source, name, fx) in fixtures() {
        let row = rows.entry(source.clone()).or_default();
        row.fixtures += 1;
        let peer_auth = (fx.enforcer == "ztunnel-peer-authentication")
            .then(|| peer_authentication_decider(&name, &fx));
        let policies = if peer_auth.is_some() {
            Ok(Vec::new())
        } else {
            compile(&name, &fx, enforcer(&name, &fx))
        };
        for r in &fx.requests {
            row.cases += 1;
            let (allowed, reason) = match &policies {
                Ok(_) if peer_auth.is_some() => {
                    let allowed = peer_auth.as_ref().unwrap()(r);
                    (
                        allowed,
                        format!("port mTLS mode decides: {}", verdict(allowed)),
                    )
                }
                Ok(p) => {
                    let d = evaluate(p, &context(r));
                    (d.allowed, d.reason)
                }
                // A policy Meshwork refuses is not enforced: count it as refusing the
                // connection (it cannot agree by accident).
                Err(e) => (!r.allowed, format!("policy refused: {e}")),
            };
            if allowed == r.allowed {
                row.agree += 1;
                continue;
            }
            if allowed {
                row.false_allow += 1;
            } else {
                row.false_deny += 1;
            }
            let key = format!("{source}/{name} {}", r.key());
            if exceptions.contains_key(&key) {
                row.excepted += 1;
                used.insert(key);
            } else {
                unexplained.push(format!(
                    "{key}: Istio {}, Meshwork {} ({reason}) [{}]",
                    verdict(r.allowed),
                    verdict(allowed),
                    fx.origin
                ));
            }
            if why {
                eprintln!("{source}/{name} {}: {reason}", r.key());
            }
        }
    }
    eprintln!(
        "| source | fixtures | requests | agree | false allow | false deny | listed exceptions |"
    );
    eprintln!("|---|---:|---:|---:|---:|---:|---:|");
    let mut all = Row::default();
    for (source, r) in &rows {
        print_row(source, r);
        all.fixtures += r.fixtures;
        all.cases += r.cases;
        all.agree += r.agree;
        all.false_allow += r.false_allow;
        all.false_deny += r.false_deny;
        all.excepted += r.excepted;
    }
    print_row("**all**", &all);
    let stale: Vec<&String> = exceptions.keys().filter(|k| !used.contains(*k)).collect();
    assert!(
        stale.is_empty(),
        "listed exceptions that agree now (remove them):\n{stale:#?}"
    );
    assert!(
        unexplained.is_empty(),
        "{} decisions differ from Istio's and are not in EXCEPTIONS.txt:\n{}",
        unexplained.len(),
        unexplained.join("\n")
    );
    assert!(all.cases > 1000, "fixtures missing");
}

fn verdict(allowed: bool) -> &'static str {
    if allowed {
        "allows"
    } else {
        "denies"
    }
}

fn print_row(source: &str, r: &Row) {
    eprintln!(
        "| {source} | {} | {} | {} ({:.1}%) | {} | {} | {} |",
        r.fixtures,
        r.cases,
        r.agree,
        100.0 * r.agree as f64 / r.cases.max(1) as f64,
        r.false_allow,
        r.false_deny,
        r.excepted
    );
}

/// The suite tells the two ways of deciding without HTTP apart: the ztunnel fixtures decided
/// with Envoy's TCP rules (what Meshwork's ztunnel enforced before issue #17, and what the
/// opt-in `meshwork.ztunnelPolicyFailClosed` enforces) disagree with Istio's ztunnel.
#[test]
fn ztunnel_fixtures_under_envoy_tcp_rules_disagree() {
    let (mut cases, mut agree) = (0, 0);
    for (_, name, fx) in fixtures() {
        if fx.enforcer != "ztunnel" {
            continue;
        }
        let policies = compile(&name, &fx, Enforcer::Envoy).expect("valid policies");
        for r in &fx.requests {
            cases += 1;
            agree += usize::from(evaluate(&policies, &context(r)).allowed == r.allowed);
        }
    }
    eprintln!(
        "ztunnel fixtures decided with Envoy's TCP rules: {agree}/{cases} agree ({:.1}%)",
        100.0 * agree as f64 / cases as f64
    );
    assert!(
        agree < cases,
        "the ztunnel fixtures do not tell the enforcers apart"
    );
}

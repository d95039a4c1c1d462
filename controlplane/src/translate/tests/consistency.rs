//! Incremental translation equals translation from scratch, after any change sequence.
//!
//! A deterministic pseudo-random walk upserts and deletes objects from a small universe
//! chosen so that dependencies cross (waypoints in another namespace, root-namespace
//! policies, mesh ConfigMaps, delegates). After every step the model rebuilt from the
//! emitted `ModelChange`s must equal `resources()`, and at the end both must equal a
//! fresh translator fed the final objects in one batch.

use std::collections::BTreeMap;
use std::path::Path;
use std::sync::Arc;

use meshwork_api::{parse_file, Change, Object, ObjectKey};

use super::super::Translator;

fn obj(yaml: &str) -> Arc<Object> {
    let parsed = parse_file(Path::new("u.yaml"), yaml, "app");
    let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
    assert!(errors.is_empty(), "{errors:?}");
    let first = parsed.objects().next().expect("one object").clone();
    Arc::new(first)
}

fn pod(name: &str, ns: &str, labels: &str, ip: &str) -> String {
    format!("apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  serviceAccountName: sa-{name}\n  containers:\n  - name: c\n    image: i\n    ports:\n    - {{name: http, containerPort: 8080}}\nstatus:\n  podIP: {ip}\n")
}

/// Each slot holds alternative versions of one object (by key); `None` = absent.
fn universe() -> Vec<Vec<Arc<Object>>> {
    let ns = |name: &str, labels: &str| {
        format!(
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {name}\n  labels: {{{labels}}}\n"
        )
    };
    let svc = |name: &str, ns: &str, sel: &str, labels: &str, tp: &str| {
        format!("apiVersion: v1\nkind: Service\nmetadata:\n  name: {name}\n  namespace: {ns}\n  labels: {{{labels}}}\nspec:\n  selector: {{{sel}}}\n  ports:\n  - {{port: 80, targetPort: {tp}}}\n")
    };
    let pa = |name: &str, ns: &str, sel: &str, mode: &str| {
        let sel = if sel.is_empty() {
            String::new()
        } else {
            format!("  selector:\n    matchLabels: {{{sel}}}\n")
        };
        format!("apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{sel}  mtls:\n    mode: {mode}\n")
    };
    let ap = |name: &str, ns: &str, sel: &str| {
        format!("apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n  selector:\n    matchLabels: {{{sel}}}\n  rules:\n  - to:\n    - operation:\n        paths: [/x]\n")
    };
    let tel = |name: &str, ns: &str, sel: &str| {
        let sel = if sel.is_empty() {
            String::new()
        } else {
            format!("  selector:\n    matchLabels: {{{sel}}}\n")
        };
        format!("apiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: {name}\n  namespace: {ns}\nspec:\n{sel}  tracing:\n  - randomSamplingPercentage: 3\n")
    };
    let cm = |td: &str, root: &str| {
        format!("apiVersion: v1\nkind: ConfigMap\nmetadata:\n  name: istio\n  namespace: istio-system\ndata:\n  mesh: |\n    trustDomain: {td}\n    rootNamespace: {root}\n    defaultProviders:\n      tracing: [p-{td}]\n")
    };
    let vs = |name: &str, host: &str, delegate: bool| {
        let http = if delegate {
            "  - delegate: {name: dlg, namespace: app}\n".to_string()
        } else {
            format!("  - route:\n    - destination: {{host: {host}}}\n")
        };
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: {name}\n  namespace: app\nspec:\n  hosts: [{host}]\n  http:\n{http}")
    };
    let dlg = |dest: &str| {
        format!("apiVersion: networking.istio.io/v1\nkind: VirtualService\nmetadata:\n  name: dlg\n  namespace: app\nspec:\n  http:\n  - route:\n    - destination: {{host: {dest}}}\n")
    };
    let dr = |host: &str, pending: u32| {
        format!("apiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr\n  namespace: app\nspec:\n  host: {host}\n  trafficPolicy:\n    connectionPool:\n      http: {{http1MaxPendingRequests: {pending}}}\n  subsets:\n  - name: v1\n    labels: {{version: v1}}\n")
    };
    let slots: Vec<Vec<String>> = vec![
        vec![ns("app", "istio.io/dataplane-mode: ambient, istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: infra"), ns("app", ""), ns("app", "istio.io/dataplane-mode: ambient")],
        vec![ns("infra", ""), ns("infra", "istio.io/dataplane-mode: ambient")],
        vec![pod("a", "app", "app: web, version: v1", "10.0.0.1"), pod("a", "app", "app: api", "10.0.0.1"), pod("a", "app", "app: web, istio.io/use-waypoint: none", "10.0.0.9")],
        vec![pod("b", "app", "app: web, version: v2", "10.0.0.2"), pod("b", "app", "app: web, version: v2, istio.io/dataplane-mode: none", "10.0.0.2")],
        vec![pod("c", "app", "app: api", "10.0.0.3")],
        vec![pod("wp-0", "infra", "gateway.networking.k8s.io/gateway-name: wp", "10.0.9.1"), pod("wp-0", "infra", "gateway.networking.k8s.io/gateway-name: wp", "10.0.9.2"), pod("wp-0", "infra", "gateway.networking.k8s.io/gateway-name: other", "10.0.9.2")],
        vec![pod("wp-1", "infra", "gateway.networking.k8s.io/gateway-name: wp", "10.0.9.3")],
        vec![pod("r", "istio-system", "app: root", "10.0.8.1")],
        vec![svc("web", "app", "app: web", "", "8080"), svc("web", "app", "app: web, version: v2", "istio.io/use-waypoint: wp2", "http"), svc("web", "app", "app: api", "", "9090")],
        vec![svc("api", "app", "app: api", "istio.io/use-waypoint: wp, istio.io/use-waypoint-namespace: infra", "http")],
        vec![pa("default", "istio-system", "", "STRICT"), pa("default", "istio-system", "", "UNSET"), pa("default", "istio-system", "app: root", "DISABLE")],
        vec![pa("ns", "app", "", "PERMISSIVE"), pa("ns", "app", "", "DISABLE")],
        vec![pa("web", "app", "app: web", "STRICT"), pa("web", "app", "version: v2", "UNSET")],
        vec![pa("default", "other-root", "", "DISABLE")],
        vec![ap("allow-web", "app", "app: web"), ap("allow-web", "app", "app: api")],
        vec![tel("mesh", "istio-system", ""), tel("mesh", "istio-system", "app: root")],
        vec![tel("web", "app", "app: web"), tel("web", "app", "")],
        vec![tel("mesh", "other-root", "")],
        vec![cm("cluster.local", "istio-system"), cm("example.org", "istio-system"), cm("cluster.local", "other-root")],
        vec![vs("root", "web", true), vs("root", "web", false), vs("root", "api", true)],
        vec![dlg("api"), dlg("web")],
        vec![dr("web", 10), dr("web", 20), dr("api", 30)],
    ];
    slots
        .into_iter()
        .map(|alts| alts.iter().map(|y| obj(y)).collect())
        .collect()
}

/// xorshift64*: deterministic, no dependency.
struct Rng(u64);
impl Rng {
    fn next(&mut self) -> u64 {
        self.0 ^= self.0 >> 12;
        self.0 ^= self.0 << 25;
        self.0 ^= self.0 >> 27;
        self.0.wrapping_mul(0x2545_f491_4f6c_dd1d)
    }
    fn below(&mut self, n: usize) -> usize {
        (self.next() % n as u64) as usize
    }
}

#[test]
fn incremental_equals_from_scratch() {
    let universe = universe();
    for seed in 1..=12u64 {
        let mut rng = Rng(seed.wrapping_mul(0x9e37_79b9_7f4a_7c15));
        let mut tr = Translator::new();
        let mut model = BTreeMap::new();
        for c in tr.set_mesh_file(None) {
            model.insert(c.key, c.resource.expect("mesh"));
        }
        let mut state: Vec<Option<usize>> = vec![None; universe.len()];
        for step in 0..150 {
            let slot = rng.below(universe.len());
            let alts = &universe[slot];
            let choice = rng.below(alts.len() + 1);
            let change = if choice == alts.len() {
                state[slot] = None;
                Change::Delete(alts[0].key())
            } else {
                state[slot] = Some(choice);
                Change::Upsert(Arc::clone(&alts[choice]))
            };
            for mc in tr.apply(&change) {
                match mc.resource {
                    Some(r) => model.insert(mc.key, r),
                    None => model.remove(&mc.key),
                };
            }
            assert_eq!(
                &model,
                tr.resources(),
                "seed {seed} step {step}: emitted changes diverge"
            );
            check_against_fresh(&universe, &state, &tr, seed, step);
        }
    }
}

fn check_against_fresh(
    universe: &[Vec<Arc<Object>>],
    state: &[Option<usize>],
    tr: &Translator,
    seed: u64,
    step: usize,
) {
    let final_objects: Vec<Change> = state
        .iter()
        .enumerate()
        .filter_map(|(slot, c)| c.map(|i| Change::Upsert(Arc::clone(&universe[slot][i]))))
        .collect();
    let mut fresh = Translator::new();
    fresh.set_mesh_file(None);
    fresh.apply_batch(&final_objects);
    if fresh.resources() != tr.resources() {
        let differing: Vec<&String> = tr
            .resources()
            .keys()
            .chain(fresh.resources().keys())
            .filter(|k| fresh.resources().get(*k) != tr.resources().get(*k))
            .collect();
        let keys: Vec<ObjectKey> = final_objects.iter().map(Change::key).collect();
        panic!(
            "seed {seed} step {step}: incremental != from scratch\ndiffering {differing:?}\nobjects {keys:?}"
        );
    }
}

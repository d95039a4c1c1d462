//! The demo's manifests: the five seed manifests exactly as the write-up has them, and the
//! cluster they run on (namespaces, services, the waypoint; the pods come from the plan).

use std::fmt::Write;
use std::path::Path;

use super::topology::{
    Placement, APP_PORT, CATALOG, FOREIGN_NAMESPACE, LEGACY_NAMESPACE, NAMESPACE, WAYPOINT,
};
use super::DemoError;

/// `(file name, content)` of the seed manifests, unchanged.
pub const SEED: [(&str, &str); 5] = [
    (
        "01-order-service.yaml",
        include_str!("../../../../examples/seed/01-order-service.yaml"),
    ),
    (
        "02-order-traffic.yaml",
        include_str!("../../../../examples/seed/02-order-traffic.yaml"),
    ),
    (
        "03-payment-resilience.yaml",
        include_str!("../../../../examples/seed/03-payment-resilience.yaml"),
    ),
    (
        "04-tracing.yaml",
        include_str!("../../../../examples/seed/04-tracing.yaml"),
    ),
    (
        "05-zero-trust.yaml",
        include_str!("../../../../examples/seed/05-zero-trust.yaml"),
    ),
];

/// Namespaces, the waypoint Gateway and the service the seed manifests leave out (the
/// local mesh library writes the pods, with the addresses they got).
pub fn topology_yaml(at: &Placement) -> String {
    let mut y = String::new();
    let _ = write!(
        y,
        "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {NAMESPACE}\n  labels:\n    istio.io/dataplane-mode: ambient\n    istio.io/use-waypoint: {WAYPOINT}\n---\n\
apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {FOREIGN_NAMESPACE}\n  labels:\n    istio.io/dataplane-mode: ambient\n---\n\
apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {LEGACY_NAMESPACE}\n---\n\
apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata:\n  name: {WAYPOINT}\n  namespace: {NAMESPACE}\n  labels:\n    istio.io/waypoint-for: service\n\
spec:\n  gatewayClassName: istio-waypoint\n  listeners:\n    - name: mesh\n      port: 15008\n      protocol: HBONE\n---\n\
apiVersion: v1\nkind: Service\nmetadata:\n  name: payment-service\n  namespace: {NAMESPACE}\n  labels:\n    app: payment-service\n\
spec:\n  clusterIP: {vip}\n  selector:\n    app: payment-service\n  ports:\n    - name: http\n      port: {APP_PORT}\n      targetPort: {APP_PORT}\n---\n",
        vip = at.payment_vip,
    );
    y
}

/// Pattern 6's file: the apex Service `catalog`, the primary Deployment (v1), the target
/// Deployment (`target_version`) and the Canary the control plane's built-in controller
/// runs. The pattern rewrites it to release v2, then v3, as `kubectl apply` would.
pub const CANARY_FILE: &str = "00-demo-canary.yaml";

/// One step of the canary analysis (short, so the pattern takes seconds).
pub const CANARY_INTERVAL_SECS: u64 = 1;
/// Failed checks before a rollback.
pub const CANARY_THRESHOLD: u32 = 2;
/// The canary's weights, step by step.
pub const CANARY_STEPS: [u32; 2] = [20, 50];
/// The checks' bounds: success rate (%) at least, p99 (ms) at most.
pub const CANARY_MIN_SUCCESS: f64 = 99.0;
pub const CANARY_MAX_P99_MS: f64 = 500.0;

fn deployment(name: &str, version: &str) -> String {
    format!(
        "apiVersion: apps/v1\nkind: Deployment\nmetadata:\n  name: {name}\n  namespace: {NAMESPACE}\n\
spec:\n  replicas: 1\n  selector:\n    matchLabels:\n      app: {CATALOG}\n      version: {version}\n  \
template:\n    metadata:\n      labels:\n        app: {CATALOG}\n        version: {version}\n    \
spec:\n      serviceAccountName: {CATALOG}\n      containers:\n        - name: {CATALOG}\n          image: registry.example.com/{CATALOG}:{version}\n          \
ports:\n            - containerPort: {APP_PORT}\n---\n"
    )
}

pub fn canary_yaml(target_version: &str) -> String {
    let steps = CANARY_STEPS
        .iter()
        .map(u32::to_string)
        .collect::<Vec<_>>()
        .join(", ");
    let mut y = format!(
        "apiVersion: v1\nkind: Service\nmetadata:\n  name: {CATALOG}\n  namespace: {NAMESPACE}\n  labels:\n    app: {CATALOG}\n\
spec:\n  selector:\n    app: {CATALOG}\n  ports:\n    - name: http\n      port: {APP_PORT}\n      targetPort: {APP_PORT}\n---\n"
    );
    y += &deployment(&format!("{CATALOG}-primary"), "v1");
    y += &deployment(CATALOG, target_version);
    let _ = write!(
        y,
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata:\n  name: {CATALOG}\n  namespace: {NAMESPACE}\n\
spec:\n  targetRef:\n    apiVersion: apps/v1\n    kind: Deployment\n    name: {CATALOG}\n  service:\n    port: {APP_PORT}\n  \
analysis:\n    interval: {CANARY_INTERVAL_SECS}s\n    threshold: {CANARY_THRESHOLD}\n    stepWeights: [{steps}]\n    metrics:\n      \
- name: request-success-rate\n        thresholdRange:\n          min: {CANARY_MIN_SUCCESS}\n        interval: 1m\n      \
- name: request-duration\n        thresholdRange:\n          max: {CANARY_MAX_P99_MS}\n        interval: 1m\n"
    );
    y
}

/// The YAML files (`*.yaml`, `*.yml`) of `dir`, sorted by name.
pub fn read_seed_dir(dir: &Path) -> Result<Vec<(String, String)>, DemoError> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |source| DemoError::Io {
            path,
            error: source,
        }
    };
    let mut files = Vec::new();
    for entry in std::fs::read_dir(dir).map_err(io(dir))? {
        let path = entry.map_err(io(dir))?.path();
        let is_yaml = path.extension().is_some_and(|e| e == "yaml" || e == "yml");
        if path.is_file() && is_yaml {
            let name = path
                .file_name()
                .map(|n| n.to_string_lossy().into_owned())
                .unwrap_or_default();
            files.push((name, std::fs::read_to_string(&path).map_err(io(&path))?));
        }
    }
    if files.is_empty() {
        return Err(DemoError::EmptySeedDir(dir.to_path_buf()));
    }
    files.sort();
    Ok(files)
}

/// `(file name, YAML)` of the demo cluster and the seed manifests (the embedded ones unless
/// `seed` is given).
pub fn files(at: &Placement, seed: Option<&[(String, String)]>) -> Vec<(String, String)> {
    let mut out = vec![
        ("00-demo-cluster.yaml".to_string(), topology_yaml(at)),
        (CANARY_FILE.to_string(), canary_yaml("v1")),
    ];
    match seed {
        Some(files) => out.extend(files.iter().cloned()),
        None => out.extend(SEED.iter().map(|(n, t)| (n.to_string(), t.to_string()))),
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn seed_manifests_are_verbatim_and_parse() {
        for (name, text) in SEED {
            assert!(text.contains("apiVersion"), "{name}");
            let parsed = meshwork_api::parse_file(Path::new(name), text, NAMESPACE);
            let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{name}: {errors:?}");
            assert!(parsed.objects().count() > 0, "{name}");
        }
    }

    /// The embedded list is the whole of `examples/seed/` (the repository's one copy).
    #[test]
    fn embedded_list_is_every_seed_manifest() {
        let dir = Path::new(env!("CARGO_MANIFEST_DIR")).join("../examples/seed");
        let files = read_seed_dir(&dir).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        let ours: Vec<&str> = SEED.iter().map(|(n, _)| *n).collect();
        assert_eq!(names, ours);
    }

    #[test]
    fn seed_dir_reads_yaml_files_in_order_and_rejects_empty_dirs() {
        let d = tempfile::tempdir().unwrap();
        std::fs::write(d.path().join("b.yml"), "b").unwrap();
        std::fs::write(d.path().join("a.yaml"), "a").unwrap();
        std::fs::write(d.path().join("README.md"), "no").unwrap();
        let files = read_seed_dir(d.path()).unwrap();
        let names: Vec<&str> = files.iter().map(|(n, _)| n.as_str()).collect();
        assert_eq!(names, ["a.yaml", "b.yml"]);
        let empty = tempfile::tempdir().unwrap();
        let e = read_seed_dir(empty.path()).unwrap_err();
        assert!(e.to_string().contains("no YAML"), "{e}");
        let e = read_seed_dir(&d.path().join("missing")).unwrap_err();
        assert!(e.to_string().contains("missing"), "{e}");
    }

    #[test]
    fn topology_has_the_namespaces_the_waypoint_and_payment_service() {
        let at = super::super::topology::tests::loopback_placement();
        let y = topology_yaml(&at);
        assert!(y.contains("clusterIP: 127.120.7.201\n"), "{y}");
        let names: Vec<String> = files(&at, None).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 2 + SEED.len());
        assert_eq!(names[1], CANARY_FILE);
        assert_eq!(names[0], "00-demo-cluster.yaml");
        assert!(y.contains("gatewayClassName: istio-waypoint"));
        assert!(y.contains("istio.io/use-waypoint: waypoint"));
        let parsed = meshwork_api::parse_file(Path::new("00-demo-cluster.yaml"), &y, NAMESPACE);
        let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(parsed.objects().count(), 5);
    }

    #[test]
    fn canary_file_parses_and_only_the_target_version_changes() {
        for v in ["v1", "v2", "v3"] {
            let y = canary_yaml(v);
            let parsed = meshwork_api::parse_file(Path::new(CANARY_FILE), &y, NAMESPACE);
            let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
            assert!(errors.is_empty(), "{v}: {errors:?}\n{y}");
            assert_eq!(parsed.objects().count(), 4, "{v}");
            assert!(y.contains(&format!("image: registry.example.com/catalog:{v}")));
        }
        let (a, b) = (canary_yaml("v2"), canary_yaml("v3"));
        let differ = a.lines().zip(b.lines()).filter(|(x, y)| x != y).count();
        assert_eq!(differ, 3, "selector, template label, image:\n{a}\n{b}");
        assert!(a.contains("stepWeights: [20, 50]"), "{a}");
        assert!(a.contains("interval: 1s"), "{a}");
    }
}

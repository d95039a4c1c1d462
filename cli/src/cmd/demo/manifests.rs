//! The demo's manifests: the five seed manifests exactly as the write-up has them, and the
//! cluster they run on (namespaces, pods as a kubelet reports them, services, the waypoint).

use std::fmt::Write;
use std::path::Path;

use super::topology::{
    Placement, Role, APP_PORT, FOREIGN_NAMESPACE, LEGACY_NAMESPACE, NAMESPACE, PODS, WAYPOINT,
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

/// Namespaces, the waypoint Gateway, pods and the services the seed manifests leave out.
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
    for p in &PODS {
        let labels = match p.role {
            Role::Waypoint => format!("    gateway.networking.k8s.io/gateway-name: {WAYPOINT}\n"),
            _ => format!("    app: {}\n    version: {}\n", p.app, p.version),
        };
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  uid: demo-{name}\n  labels:\n{labels}\
spec:\n  nodeName: {node}\n  serviceAccountName: {sa}\n  containers:\n    - name: app\n      image: meshwork-testapp\n      ports:\n        - containerPort: {APP_PORT}\n\
status:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n    - ip: {ip}\n  conditions:\n    - type: Ready\n      status: \"True\"\n---\n",
            name = p.name,
            ns = p.namespace,
            node = at.node_name(p),
            sa = p.service_account,
            ip = at.pod_ip(p),
        );
    }
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
    let mut out = vec![("00-demo-cluster.yaml".to_string(), topology_yaml(at))];
    match seed {
        Some(files) => out.extend(files.iter().cloned()),
        None => out.extend(SEED.iter().map(|(n, t)| (n.to_string(), t.to_string()))),
    }
    out
}

/// Writes [`files`] into `dir`.
pub fn write_all(
    dir: &Path,
    at: &Placement,
    seed: Option<&[(String, String)]>,
) -> Result<(), DemoError> {
    for (name, text) in files(at, seed) {
        let path = dir.join(&name);
        std::fs::write(&path, text).map_err(|source| DemoError::Io {
            path,
            error: source,
        })?;
    }
    Ok(())
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
    fn topology_has_every_pod_with_its_address() {
        let net = super::super::topology::Net { a: 150, b: 3 };
        let mut at = Placement::loopback(&net);
        at.pod_nodes.insert("waypoint-0", "mw1r0-n2".into());
        let y = topology_yaml(&at);
        for p in &PODS {
            assert!(y.contains(&format!("name: {}\n", p.name)), "{}", p.name);
            assert!(y.contains(&format!("podIP: {}\n", at.pod_ip(p))));
        }
        assert!(y.contains("nodeName: mw1r0-n2\n"), "{y}");
        assert!(y.contains("nodeName: node-a\n"), "{y}");
        let names: Vec<String> = files(&at, None).into_iter().map(|(n, _)| n).collect();
        assert_eq!(names.len(), 1 + SEED.len());
        assert_eq!(names[0], "00-demo-cluster.yaml");
        assert!(y.contains("gatewayClassName: istio-waypoint"));
        assert!(y.contains("istio.io/use-waypoint: waypoint"));
        let parsed = meshwork_api::parse_file(Path::new("00-demo-cluster.yaml"), &y, NAMESPACE);
        let errors: Vec<String> = parsed.errors().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        assert_eq!(parsed.objects().count(), 5 + PODS.len());
    }
}

//! A directory of ordinary Kubernetes manifests → the pods a cluster would run for it,
//! placed on nodes as a scheduler spreads them.
//!
//! Deployments and StatefulSets give `replicas` pods `<name>-<i>`, DaemonSets one pod
//! per node, Pods are taken as written; each gets its template's labels, annotations,
//! service account and container ports. A waypoint `Gateway` (`gatewayClassName:
//! istio-waypoint`) gets a waypoint pod `<gateway>-waypoint`. What runs in a pod: the
//! command of the annotation `meshwork.io/command` (run with `/bin/sh -c`), else the test
//! application on each container port (`app`/`version` labels name it), else nothing (a
//! client for `meshwork exec`). The image is ignored. Enrolment is the control plane's
//! business: the namespaces' and pods' `istio.io/dataplane-mode` labels are passed on.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use serde_yaml_ng::Value;

use crate::error::ManifestError;
use crate::plan::{Plan, PodPlan, Run};
use crate::Error;

/// The annotation naming a pod's command (instead of the test application).
pub const COMMAND_ANNOTATION: &str = "meshwork.io/command";
/// Waypoint Gateways' class.
pub const WAYPOINT_CLASS: &str = "istio-waypoint";
const MAX_REPLICAS: u64 = 50;

/// What a directory runs as.
#[derive(Debug, Clone)]
pub struct Derived {
    pub plan: Plan,
    /// `(file name, YAML)` of every manifest, for the control plane.
    pub files: Vec<(String, String)>,
    /// Every Service `(namespace, name)`.
    pub services: Vec<(String, String)>,
}

/// `*.yaml` / `*.yml` files under `dir` (recursively, dot-entries skipped), sorted.
pub fn yaml_files(dir: &Path) -> Result<Vec<PathBuf>, Error> {
    let io = |path: &Path| {
        let path = path.to_path_buf();
        move |error| Error::Io { path, error }
    };
    let mut out = Vec::new();
    let mut stack = vec![(dir.to_path_buf(), 0)];
    while let Some((d, depth)) = stack.pop() {
        for entry in std::fs::read_dir(&d).map_err(io(&d))? {
            let path = entry.map_err(io(&d))?.path();
            if path
                .file_name()
                .is_some_and(|n| n.to_string_lossy().starts_with('.'))
            {
                continue;
            }
            if path.is_dir() && depth < 8 {
                stack.push((path, depth + 1));
            } else if path.is_file() && path.extension().is_some_and(|e| e == "yaml" || e == "yml")
            {
                out.push(path);
            }
        }
    }
    if out.is_empty() {
        return Err(Error::EmptyDir(dir.to_path_buf()));
    }
    out.sort();
    Ok(out)
}

fn str_map(v: &Value) -> BTreeMap<String, String> {
    let mut out = BTreeMap::new();
    if let Value::Mapping(m) = v {
        for (k, v) in m {
            let k = k.as_str().map(str::to_string);
            let v = match v {
                Value::String(s) => Some(s.clone()),
                Value::Bool(b) => Some(b.to_string()),
                Value::Number(n) => Some(n.to_string()),
                _ => None,
            };
            if let (Some(k), Some(v)) = (k, v) {
                out.insert(k, v);
            }
        }
    }
    out
}

/// One workload read from a manifest, before placement.
struct Workload {
    file: String,
    kind: String,
    name: String,
    namespace: String,
    replicas: Replicas,
    labels: BTreeMap<String, String>,
    annotations: BTreeMap<String, String>,
    service_account: String,
    ports: Vec<u16>,
    /// `spec.nodeName` of the template: every pod on that node.
    node_name: Option<String>,
}

enum Replicas {
    Count(u64),
    PerNode,
    /// A Pod: its own name.
    Single,
}

/// Reads the pod template (`spec.template` of a workload, or a Pod itself).
fn template(w: &mut Workload, meta: &Value, spec: &Value) -> Result<(), Error> {
    w.labels = str_map(&meta["labels"]);
    w.annotations = str_map(&meta["annotations"]);
    if let Some(sa) = spec["serviceAccountName"].as_str() {
        w.service_account = sa.to_string();
    }
    w.node_name = spec["nodeName"].as_str().map(str::to_string);
    let containers = spec["containers"]
        .as_sequence()
        .cloned()
        .unwrap_or_default();
    for (i, c) in containers.iter().enumerate() {
        for (j, p) in c["ports"].as_sequence().into_iter().flatten().enumerate() {
            let port = p["containerPort"]
                .as_u64()
                .and_then(|n| u16::try_from(n).ok());
            match port {
                Some(port) if port > 0 => {
                    if !w.ports.contains(&port) {
                        w.ports.push(port)
                    }
                }
                _ => {
                    return Err(Error::Manifest(Box::new(ManifestError {
                        file: w.file.clone(),
                        kind: w.kind.clone(),
                        namespace: w.namespace.clone(),
                        name: w.name.clone(),
                        field: format!("containers[{i}].ports[{j}].containerPort"),
                        reason: "must be a port number (1-65535)".into(),
                    })))
                }
            }
        }
    }
    Ok(())
}

/// Reads `dir` and derives the pods, spread over `nodes` nodes named `node-<i>`.
pub fn derive(dir: &Path, nodes: usize, default_namespace: &str) -> Result<Derived, Error> {
    let mut files = Vec::new();
    for path in yaml_files(dir)? {
        let text = std::fs::read_to_string(&path).map_err(|error| Error::Io {
            path: path.clone(),
            error,
        })?;
        let rel = path.strip_prefix(dir).unwrap_or(&path);
        files.push((rel.to_string_lossy().replace('/', "__"), text));
    }
    derive_files(files, nodes, default_namespace)
}

/// `text` without its `Pod` documents (the mesh writes each pod itself, with the address
/// and node it got); other documents keep their text. `None` when there was no Pod.
pub fn without_pods(text: &str) -> Option<String> {
    let mut docs: Vec<String> = vec![String::new()];
    for line in text.split_inclusive('\n') {
        if line.trim_end() == "---" {
            docs.push(String::new());
        } else if let Some(d) = docs.last_mut() {
            d.push_str(line);
        }
    }
    let is_pod = |d: &str| {
        serde_yaml_ng::from_str::<Value>(d)
            .ok()
            .is_some_and(|v| v["kind"].as_str() == Some("Pod"))
    };
    if !docs.iter().any(|d| is_pod(d)) {
        return None;
    }
    let kept: Vec<&str> = docs
        .iter()
        .map(String::as_str)
        .filter(|d| !is_pod(d))
        .collect();
    Some(kept.join("---\n"))
}

/// [`derive`] over `(file name, YAML)`.
pub fn derive_files(
    files: Vec<(String, String)>,
    nodes: usize,
    default_namespace: &str,
) -> Result<Derived, Error> {
    let mut workloads = Vec::new();
    let mut waypoints = Vec::new();
    let mut services = Vec::new();
    for (file, text) in &files {
        for doc in serde_yaml_ng::Deserializer::from_str(text) {
            // Syntax errors are the control plane's to report (with file and line); a
            // document that does not parse runs nothing.
            let Ok(doc) = <Value as serde::Deserialize>::deserialize(doc) else {
                continue;
            };
            let kind = doc["kind"].as_str().unwrap_or_default().to_string();
            let meta = &doc["metadata"];
            let name = meta["name"].as_str().unwrap_or_default().to_string();
            let namespace = meta["namespace"]
                .as_str()
                .unwrap_or(default_namespace)
                .to_string();
            let mut w = Workload {
                file: file.clone(),
                kind: kind.clone(),
                name: name.clone(),
                namespace: namespace.clone(),
                replicas: Replicas::Single,
                labels: BTreeMap::new(),
                annotations: BTreeMap::new(),
                service_account: "default".into(),
                ports: Vec::new(),
                node_name: None,
            };
            let spec = &doc["spec"];
            match kind.as_str() {
                "Deployment" | "StatefulSet" | "DaemonSet" => {
                    w.replicas = match kind.as_str() {
                        "DaemonSet" => Replicas::PerNode,
                        _ => match &spec["replicas"] {
                            Value::Null => Replicas::Count(1),
                            v => match v.as_u64() {
                                Some(n) if n <= MAX_REPLICAS => Replicas::Count(n),
                                _ => {
                                    return Err(Error::Manifest(Box::new(ManifestError {
                                        file: file.clone(),
                                        kind,
                                        namespace,
                                        name,
                                        field: "spec.replicas".into(),
                                        reason: format!(
                                        "must be a count from 0 to {MAX_REPLICAS} on a local mesh"
                                    ),
                                    })))
                                }
                            },
                        },
                    };
                    let t = &spec["template"];
                    template(&mut w, &t["metadata"], &t["spec"])?;
                    workloads.push(w);
                }
                "Pod" => {
                    template(&mut w, meta, spec)?;
                    workloads.push(w);
                }
                "Gateway" if spec["gatewayClassName"].as_str() == Some(WAYPOINT_CLASS) => {
                    waypoints.push((namespace, name));
                }
                "Service" => services.push((namespace, name)),
                _ => {}
            }
        }
    }
    let node_names: Vec<String> = (0..nodes).map(|i| format!("node-{i}")).collect();
    let mut plan = Plan {
        nodes: node_names,
        pods: Vec::new(),
        default_namespace: default_namespace.to_string(),
    };
    // Spread: each pod goes to the node with the fewest pods of its workload, then the
    // fewest pods, then the lowest index.
    let mut load = vec![0usize; nodes.max(1)];
    for w in &workloads {
        let names: Vec<(String, Option<usize>)> = match w.replicas {
            Replicas::Count(n) => (0..n).map(|i| (format!("{}-{i}", w.name), None)).collect(),
            Replicas::PerNode => (0..nodes)
                .map(|i| (format!("{}-node-{i}", w.name), Some(i)))
                .collect(),
            Replicas::Single => vec![(w.name.clone(), None)],
        };
        let pinned = match &w.node_name {
            None => None,
            Some(n) => match plan.nodes.iter().position(|x| x == n) {
                Some(i) => Some(i),
                None => {
                    return Err(Error::Manifest(Box::new(ManifestError {
                        file: w.file.clone(),
                        kind: w.kind.clone(),
                        namespace: w.namespace.clone(),
                        name: w.name.clone(),
                        field: "spec.nodeName".into(),
                        reason: format!("no node {n} (the nodes are {})", plan.nodes.join(", ")),
                    })))
                }
            },
        };
        let mut mine = vec![0usize; nodes.max(1)];
        for (pod, fixed) in names {
            let fixed = fixed.or(pinned);
            let node = fixed.unwrap_or_else(|| {
                (0..nodes.max(1))
                    .min_by_key(|i| (mine[*i], load[*i], *i))
                    .unwrap_or(0)
            });
            mine[node] += 1;
            load[node] += 1;
            let run = match w.annotations.get(COMMAND_ANNOTATION) {
                Some(cmd) => Run::Command(vec!["/bin/sh".into(), "-c".into(), cmd.clone()]),
                None if w.ports.is_empty() => Run::Idle,
                None => Run::TestApp {
                    app: w
                        .labels
                        .get("app")
                        .cloned()
                        .unwrap_or_else(|| w.name.clone()),
                    version: w
                        .labels
                        .get("version")
                        .cloned()
                        .unwrap_or_else(|| "v1".into()),
                },
            };
            plan.pods.push(PodPlan {
                name: pod,
                namespace: w.namespace.clone(),
                node,
                service_account: w.service_account.clone(),
                labels: w.labels.clone(),
                annotations: w.annotations.clone(),
                workload: match w.replicas {
                    Replicas::Single => String::new(),
                    _ => w.name.clone(),
                },
                ports: w.ports.clone(),
                run,
                host: None,
            });
        }
    }
    for (ns, gw) in waypoints {
        plan.pods.push(PodPlan {
            name: format!("{gw}-waypoint"),
            namespace: ns,
            node: 0,
            service_account: gw.clone(),
            labels: [(
                "gateway.networking.k8s.io/gateway-name".to_string(),
                gw.clone(),
            )]
            .into(),
            annotations: BTreeMap::new(),
            workload: gw.clone(),
            ports: Vec::new(),
            run: Run::Waypoint { gateway: gw },
            host: None,
        });
    }
    plan.check()?;
    let files = files
        .into_iter()
        .map(|(name, text)| match without_pods(&text) {
            Some(rest) => (name, rest),
            None => (name, text),
        })
        .collect();
    Ok(Derived {
        plan,
        files,
        services,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const SHOP: &str = r#"
apiVersion: v1
kind: Namespace
metadata:
  name: shop
  labels:
    istio.io/dataplane-mode: ambient
---
apiVersion: apps/v1
kind: Deployment
metadata:
  name: cart
  namespace: shop
spec:
  replicas: 3
  selector:
    matchLabels: {app: cart}
  template:
    metadata:
      labels: {app: cart, version: v2}
    spec:
      serviceAccountName: cart
      containers:
        - name: cart
          image: example/cart
          ports: [{containerPort: 8080}, {containerPort: 9090}]
---
apiVersion: apps/v1
kind: StatefulSet
metadata: {name: db, namespace: shop}
spec:
  template:
    metadata:
      labels: {app: db}
      annotations: {meshwork.io/command: "sleep 1000"}
    spec:
      containers: [{name: db, image: x, ports: [{containerPort: 5432}]}]
---
apiVersion: v1
kind: Pod
metadata: {name: client, namespace: shop, labels: {app: client}}
spec:
  containers: [{name: c, image: curl}]
---
apiVersion: gateway.networking.k8s.io/v1
kind: Gateway
metadata: {name: waypoint, namespace: shop}
spec:
  gatewayClassName: istio-waypoint
  listeners: [{name: mesh, port: 15008, protocol: HBONE}]
---
apiVersion: v1
kind: Service
metadata: {name: cart, namespace: shop}
spec:
  selector: {app: cart}
  ports: [{port: 8080}]
"#;

    #[test]
    fn workloads_become_pods_spread_over_the_nodes() {
        let d = derive_files(vec![("shop.yaml".into(), SHOP.into())], 2, "default").unwrap();
        let names: Vec<&str> = d.plan.pods.iter().map(|p| p.name.as_str()).collect();
        assert_eq!(
            names,
            [
                "cart-0",
                "cart-1",
                "cart-2",
                "db-0",
                "client",
                "waypoint-waypoint"
            ]
        );
        let nodes: Vec<usize> = d.plan.pods.iter().map(|p| p.node).collect();
        // cart over both nodes, then db and client each on the emptier node.
        assert_eq!(&nodes[..5], [0, 1, 0, 1, 0]);
        let cart = d.plan.pod("cart-1").unwrap();
        assert_eq!(cart.service_account, "cart");
        assert_eq!(cart.ports, [8080, 9090]);
        assert_eq!(cart.labels["version"], "v2");
        assert_eq!(
            cart.run,
            Run::TestApp {
                app: "cart".into(),
                version: "v2".into()
            }
        );
        let db = d.plan.pod("db-0").unwrap();
        assert_eq!(
            db.run,
            Run::Command(vec!["/bin/sh".into(), "-c".into(), "sleep 1000".into()])
        );
        assert_eq!(d.plan.pod("client").unwrap().run, Run::Idle);
        let wp = d.plan.pod("waypoint-waypoint").unwrap();
        assert_eq!(
            wp.labels["gateway.networking.k8s.io/gateway-name"],
            "waypoint"
        );
        assert!(wp.is_waypoint());
        assert_eq!(d.services, [("shop".to_string(), "cart".to_string())]);
        assert_eq!(d.plan.nodes, ["node-0", "node-1"]);
    }

    #[test]
    fn the_users_pods_are_left_to_the_mesh_to_write() {
        let d = derive_files(vec![("shop.yaml".into(), SHOP.into())], 2, "default").unwrap();
        let text = &d.files[0].1;
        assert!(!text.contains("kind: Pod"), "{text}");
        assert!(
            text.contains("kind: Deployment") && text.contains("kind: Service"),
            "{text}"
        );
        assert!(d.plan.pod("client").is_some());
        assert_eq!(without_pods("kind: Service\n---\nkind: X\n"), None);
        assert_eq!(
            without_pods("kind: Pod\n---\nkind: Service\n").as_deref(),
            Some("kind: Service\n")
        );
    }

    #[test]
    fn bad_fields_are_named() {
        let y = "apiVersion: apps/v1\nkind: Deployment\nmetadata: {name: w, namespace: n}\nspec:\n  replicas: 1000\n";
        let e = derive_files(vec![("a.yaml".into(), y.into())], 1, "default")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("a.yaml") && e.contains("Deployment n/w") && e.contains("spec.replicas"),
            "{e}"
        );
        let y = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  containers: [{name: c, ports: [{containerPort: http}]}]\n";
        let e = derive_files(vec![("b.yaml".into(), y.into())], 1, "default")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("Pod default/p") && e.contains("containers[0].ports[0].containerPort"),
            "{e}"
        );
    }

    #[test]
    fn daemonsets_run_on_every_node_and_dirs_are_read_recursively() {
        let d = tempfile::tempdir().unwrap();
        std::fs::create_dir(d.path().join("sub")).unwrap();
        std::fs::write(
            d.path().join("sub/ds.yaml"),
            "apiVersion: apps/v1\nkind: DaemonSet\nmetadata: {name: agent}\nspec:\n  template:\n    metadata: {labels: {app: agent}}\n    spec: {containers: [{name: a}]}\n",
        )
        .unwrap();
        std::fs::write(d.path().join("README.md"), "no").unwrap();
        let got = derive(d.path(), 3, "default").unwrap();
        let pods: Vec<(&str, usize)> = got
            .plan
            .pods
            .iter()
            .map(|p| (p.name.as_str(), p.node))
            .collect();
        assert_eq!(
            pods,
            [
                ("agent-node-0", 0),
                ("agent-node-1", 1),
                ("agent-node-2", 2)
            ]
        );
        assert_eq!(got.files.len(), 1);
        assert_eq!(got.files[0].0, "sub__ds.yaml");
        let empty = tempfile::tempdir().unwrap();
        assert!(derive(empty.path(), 1, "default")
            .unwrap_err()
            .to_string()
            .contains("no YAML"));
    }

    #[test]
    fn node_names_pin_pods() {
        let y = "apiVersion: v1\nkind: Pod\nmetadata: {name: p}\nspec:\n  nodeName: node-1\n  containers: [{name: c}]\n";
        let d = derive_files(vec![("p.yaml".into(), y.into())], 2, "default").unwrap();
        assert_eq!(d.plan.pods[0].node, 1);
        let e = derive_files(vec![("p.yaml".into(), y.into())], 1, "default")
            .unwrap_err()
            .to_string();
        assert!(
            e.contains("spec.nodeName") && e.contains("no node node-1"),
            "{e}"
        );
    }
}

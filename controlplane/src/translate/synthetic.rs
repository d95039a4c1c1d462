//! A synthetic cluster for benchmarks and scale tests: namespaces (ambient), services,
//! pods that back them, and a mix of policies, as YAML or as typed objects.

use std::fmt::Write;
use std::path::Path;
use std::sync::Arc;

use meshwork_api::{parse_file, Object};

/// Namespaces used for a cluster of `pods` pods: one per 1,000 pods (at least one).
pub fn namespace_count(pods: usize) -> usize {
    pods.div_ceil(1000).max(1)
}

/// Multi-document YAML for a cluster with `pods` pods, `services` services and
/// `policies` policies (a rotation of selector AuthorizationPolicies, selector
/// PeerAuthentications, Telemetries and DestinationRules), plus one root-namespace
/// PeerAuthentication and one namespace-wide DENY policy per namespace.
///
/// Layout: namespace `ns-<n>` (ambient); service `svc-<j>` lives in `ns-<j % N>` and
/// selects `app: svc-<j>`; pod `pod-<k>` lives in `ns-<k % N>` and carries the `app` label
/// of one service of its namespace, `version: v1|v2`, node `node-<k % 50>`.
pub fn synthetic_cluster_yaml(pods: usize, services: usize, policies: usize) -> String {
    let n = namespace_count(pods);
    let mut y = String::with_capacity(pods * 700 + services * 300 + policies * 400);
    let _ = write!(
        y,
        "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: default\n  namespace: istio-system\nspec:\n  mtls:\n    mode: PERMISSIVE\n"
    );
    for ns in 0..n {
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: ns-{ns}\n  labels:\n    istio.io/dataplane-mode: ambient\n---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: deny-foreign\n  namespace: ns-{ns}\nspec:\n  action: DENY\n  rules:\n  - from:\n    - source:\n        notNamespaces: [ns-{ns}, istio-system]\n"
        );
    }
    for j in 0..services {
        let ns = j % n;
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Service\nmetadata:\n  name: svc-{j}\n  namespace: ns-{ns}\n  labels:\n    app: svc-{j}\nspec:\n  clusterIP: 172.20.{}.{}\n  selector:\n    app: svc-{j}\n  ports:\n  - name: http\n    port: 80\n    targetPort: http\n",
            (j >> 8) & 255,
            j & 255
        );
    }
    let services_in_ns = |ns: usize| (0..services).filter(move |j| j % n == ns);
    let per_ns: Vec<Vec<usize>> = (0..n).map(|ns| services_in_ns(ns).collect()).collect();
    for k in 0..pods {
        let ns = k % n;
        let app = match per_ns[ns].as_slice() {
            [] => format!("lonely-{k}"),
            list => format!("svc-{}", list[(k / n) % list.len()]),
        };
        let ip = k + 1;
        let _ = write!(
            y,
            "---\napiVersion: v1\nkind: Pod\nmetadata:\n  name: pod-{k}\n  namespace: ns-{ns}\n  labels:\n    app: {app}\n    version: v{}\nspec:\n  serviceAccountName: {app}\n  nodeName: node-{}\n  containers:\n  - name: app\n    image: example/app\n    ports:\n    - name: http\n      containerPort: 8080\nstatus:\n  phase: Running\n  podIP: 10.{}.{}.{}\n  conditions:\n  - type: Ready\n    status: \"True\"\n",
            1 + k % 2,
            k % 50,
            (ip >> 16) & 255,
            (ip >> 8) & 255,
            ip & 255
        );
    }
    for p in 0..policies {
        let j = if services == 0 { p } else { p % services };
        let ns = j % n;
        let _ = match p % 4 {
            0 => write!(
                y,
                "---\napiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\nmetadata:\n  name: allow-{p}\n  namespace: ns-{ns}\nspec:\n  selector:\n    matchLabels:\n      app: svc-{j}\n  action: ALLOW\n  rules:\n  - from:\n    - source:\n        principals: [cluster.local/ns/ns-{ns}/sa/svc-{}]\n    to:\n    - operation:\n        methods: [GET]\n        paths: [/api/*]\n",
                (j + n) % services.max(1)
            ),
            1 => write!(
                y,
                "---\napiVersion: security.istio.io/v1\nkind: PeerAuthentication\nmetadata:\n  name: strict-{p}\n  namespace: ns-{ns}\nspec:\n  selector:\n    matchLabels:\n      app: svc-{j}\n  mtls:\n    mode: STRICT\n"
            ),
            2 => write!(
                y,
                "---\napiVersion: telemetry.istio.io/v1\nkind: Telemetry\nmetadata:\n  name: tracing-{p}\n  namespace: ns-{ns}\nspec:\n  selector:\n    matchLabels:\n      app: svc-{j}\n  tracing:\n  - randomSamplingPercentage: 5\n"
            ),
            _ => write!(
                y,
                "---\napiVersion: networking.istio.io/v1\nkind: DestinationRule\nmetadata:\n  name: dr-{p}\n  namespace: ns-{ns}\nspec:\n  host: svc-{j}\n  trafficPolicy:\n    connectionPool:\n      tcp:\n        maxConnections: 100\n  subsets:\n  - name: v1\n    labels:\n      version: v1\n  - name: v2\n    labels:\n      version: v2\n"
            ),
        };
    }
    y
}

/// The same cluster as typed objects (parsed from [`synthetic_cluster_yaml`]).
pub fn synthetic_cluster(pods: usize, services: usize, policies: usize) -> Vec<Arc<Object>> {
    let yaml = synthetic_cluster_yaml(pods, services, policies);
    let parsed = parse_file(Path::new("synthetic.yaml"), &yaml, "default");
    parsed.objects().cloned().map(Arc::new).collect()
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_api::{Change, Store};

    #[test]
    fn small_cluster_is_valid_and_translates() {
        let yaml = synthetic_cluster_yaml(40, 8, 8);
        let mut store = Store::new();
        let changes = store.apply_file(Path::new("synthetic.yaml"), &yaml, "default");
        assert!(store.errors().is_empty(), "{:?}", store.errors());
        assert!(store.warnings().is_empty(), "{:?}", store.warnings());
        // 1 root PA + 1 ns + 1 deny + 8 services + 40 pods + 8 policies.
        assert_eq!(changes.len(), 1 + 2 + 8 + 40 + 8);
        assert_eq!(synthetic_cluster(40, 8, 8).len(), changes.len());

        let mut tr = super::super::Translator::new();
        tr.apply_batch(&changes);
        let res = tr.resources();
        let workloads = res.keys().filter(|k| k.starts_with("workload/")).count();
        assert_eq!(workloads, 40);
        let services = res.keys().filter(|k| k.starts_with("service/")).count();
        assert_eq!(services, 8);
        // Every pod backs exactly one service with the named target port resolved.
        for (k, r) in res.iter().filter(|(k, _)| k.starts_with("workload/")) {
            let Some(meshwork_model::pb::config::resource::Kind::Workload(w)) = &r.kind else {
                panic!("{k}")
            };
            assert!(w.captured, "{k}");
            assert_eq!(w.services.len(), 1, "{k}");
            assert_eq!(w.services[0].ports.get(&80), Some(&8080), "{k}");
        }
        // Deleting everything empties the model but for `mesh`.
        let deletes: Vec<Change> = changes.iter().map(|c| Change::Delete(c.key())).collect();
        tr.apply_batch(&deletes);
        assert_eq!(tr.resources().keys().collect::<Vec<_>>(), vec!["mesh"]);
    }
}

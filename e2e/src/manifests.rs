//! Kubernetes YAML describing a mini-cluster's pods and services for the control plane's
//! directory source (pods carry `spec.nodeName` and `status.podIP` as a kubelet would
//! report them).
use std::collections::BTreeSet;
use std::fmt::Write;

use crate::scenarios::fixture;
use crate::Cluster;

/// Namespaces, pods and services of the scenario fixture placed on `cluster`.
pub fn fixture_manifests(cluster: &Cluster) -> Result<String, crate::HarnessError> {
    fixture_manifests_with(cluster, &BTreeSet::new())
}

/// As [`fixture_manifests`], with the pods named in `opted_out` labelled
/// `istio.io/dataplane-mode: none` (taken out of the mesh, as `kubectl label` would).
pub fn fixture_manifests_with(
    cluster: &Cluster,
    opted_out: &BTreeSet<String>,
) -> Result<String, crate::HarnessError> {
    let mut y = String::new();
    for (ns, ambient) in fixture::NAMESPACES {
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: {ns}\n"
        );
        if *ambient {
            y.push_str("  labels:\n    istio.io/dataplane-mode: ambient\n");
        }
        y.push_str("---\n");
    }
    for (name, ns, _node, app, version, sa) in fixture::PODS {
        let pod = cluster.pod(name)?;
        let node = cluster.node(&pod.node)?;
        let opt_out = if opted_out.contains(*name) {
            "\n    istio.io/dataplane-mode: none"
        } else {
            ""
        };
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  namespace: {ns}\n  uid: uid-{name}\n  labels:\n    app: {app}\n    version: {version}{opt_out}\nspec:\n  nodeName: {nodename}\n  serviceAccountName: {sa}\n  containers:\n    - name: app\n      image: meshwork-testapp\n      ports:\n        - containerPort: {port}\nstatus:\n  phase: Running\n  podIP: {ip}\n  podIPs:\n    - ip: {ip}\n  hostIP: {host}\n  conditions:\n    - type: Ready\n      status: \"True\"\n---\n",
            nodename = node.netns,
            port = fixture::APP_PORT,
            ip = pod.ip,
            host = node.ip,
        );
    }
    for (svc, ns, vip, backends) in fixture::SERVICES {
        let Some((_, _, _, app, version, _)) = fixture::PODS
            .iter()
            .find(|p| Some(&p.0) == backends.first())
        else {
            continue;
        };
        let _ = write!(
            y,
            "apiVersion: v1\nkind: Service\nmetadata:\n  name: {svc}\n  namespace: {ns}\nspec:\n  clusterIP: {vip}\n  selector:\n    app: {app}\n    version: {version}\n  ports:\n    - name: http\n      port: {sp}\n      targetPort: {tp}\n      protocol: TCP\n---\n",
            sp = fixture::SERVICE_PORT,
            tp = fixture::APP_PORT,
        );
    }
    y.push_str(fixture::POLICIES);
    Ok(y)
}

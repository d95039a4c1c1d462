//! Which policies apply to a destination.

use std::collections::BTreeMap;

use meshwork_model::pb::config as pb;

/// What is being protected.
#[derive(Debug, Clone, Copy)]
pub enum PolicyTarget<'a> {
    /// A workload, enforced by ztunnel: GLOBAL policies of the root namespace, NAMESPACE
    /// policies of its namespace, and WORKLOAD_SELECTOR policies listed on the workload
    /// (`Workload.authorization_policies`) or whose selector matches its labels.
    Workload {
        namespace: &'a str,
        labels: &'a BTreeMap<String, String>,
        /// `<ns>/<name>` keys computed by the control plane.
        policies: &'a [String],
    },
    /// Traffic through a waypoint: TARGET_REF policies bound to the waypoint Gateway, to the
    /// `istio-waypoint` GatewayClass (root namespace), or to the destination Service.
    Waypoint {
        namespace: &'a str,
        name: &'a str,
        /// Destination Service `(namespace, name)`, if the request targets one.
        service: Option<(&'a str, &'a str)>,
        /// Meshwork extension: also apply the policies that select the destination's pods
        /// (GLOBAL, NAMESPACE, WORKLOAD_SELECTOR matching these labels in this namespace), so
        /// selector-bound L7 policies behave as with sidecars. `(namespace, pod labels)`,
        /// typically the Service's selector.
        pods: Option<(&'a str, &'a BTreeMap<String, String>)>,
    },
}

impl<'a> PolicyTarget<'a> {
    pub fn workload(w: &'a pb::Workload) -> Self {
        PolicyTarget::Workload {
            namespace: &w.namespace,
            labels: &w.labels,
            policies: &w.authorization_policies,
        }
    }
}

/// The policies of `all` that apply to `target`, in input order.
pub fn applicable<'p>(
    all: impl IntoIterator<Item = &'p pb::Authorization>,
    target: &PolicyTarget<'_>,
    root_namespace: &str,
) -> Vec<&'p pb::Authorization> {
    all.into_iter()
        .filter(|a| applies(a, target, root_namespace))
        .collect()
}

fn applies(a: &pb::Authorization, target: &PolicyTarget<'_>, root: &str) -> bool {
    match *target {
        PolicyTarget::Workload {
            namespace,
            labels,
            policies,
        } => match a.scope() {
            pb::PolicyScope::Global => a.namespace == root,
            pb::PolicyScope::Namespace => a.namespace == namespace,
            pb::PolicyScope::WorkloadSelector => {
                let key = format!("{}/{}", a.namespace, a.name);
                policies.contains(&key)
                    || ((a.namespace == namespace || a.namespace == root)
                        && !a.selector.is_empty()
                        && a.selector.iter().all(|(k, v)| labels.get(k) == Some(v)))
            }
            pb::PolicyScope::TargetRef => false,
        },
        PolicyTarget::Waypoint {
            namespace,
            name,
            service,
            pods,
        } => {
            if let Some((pod_ns, labels)) = pods {
                if a.scope() != pb::PolicyScope::TargetRef {
                    let as_workload = PolicyTarget::Workload {
                        namespace: pod_ns,
                        labels,
                        policies: &[],
                    };
                    return applies(a, &as_workload, root);
                }
            }
            a.scope() == pb::PolicyScope::TargetRef
                && a.target_refs.iter().any(|r| {
                    let ns = if r.namespace.is_empty() {
                        a.namespace.as_str()
                    } else {
                        r.namespace.as_str()
                    };
                    match r.kind.as_str() {
                        "Gateway" => ns == namespace && r.name == name,
                        "GatewayClass" => a.namespace == root && r.name == "istio-waypoint",
                        "Service" => service == Some((ns, r.name.as_str())),
                        _ => false,
                    }
                })
        }
    }
}

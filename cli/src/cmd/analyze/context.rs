//! What the checks look at: the validated store, the translated model and lookups over them.

use std::collections::BTreeMap;
use std::path::Path;

use meshwork_api::{Kind, Object, Spec, Store, StoredObject};
use meshwork_controlplane::translate::workload::{
    waypoint_ref, LABEL_DATAPLANE_MODE, LABEL_GATEWAY_NAME,
};
use meshwork_controlplane::translate::Translator;
use meshwork_model::pb::config::{resource::Kind as ResKind, Authorization, Workload};

use super::finding::resource_label;

/// Something that runs pods with these labels: a Pod, or the pod template of a
/// Deployment/StatefulSet/DaemonSet that has no matching Pod in the manifests.
#[derive(Debug, Clone)]
pub struct WorkloadRef {
    /// `Pod ns/name` or `Deployment ns/name`.
    pub label: String,
    pub namespace: String,
    pub labels: BTreeMap<String, String>,
    /// Pod name when this is a Pod.
    pub pod: Option<String>,
}

/// Everything the checks need, built once per run.
pub struct Context {
    pub store: Store,
    pub translator: Translator,
}

/// Suffix of in-cluster service host names.
pub const CLUSTER_DOMAIN: &str = "svc.cluster.local";
/// Namespaces that run the cluster and the mesh itself.
pub const SYSTEM_NAMESPACES: [&str; 4] = [
    "kube-system",
    "istio-system",
    "kube-public",
    "kube-node-lease",
];

impl Context {
    /// Translates the store into the mesh model.
    pub fn new(store: Store) -> Self {
        let mut translator = Translator::new();
        translator.set_mesh_file(None);
        translator.apply_batch(&store.snapshot());
        Context { store, translator }
    }

    /// Whether the mesh opts in to `meshwork.ztunnelPolicyFailClosed`.
    pub fn ztunnel_policy_fail_closed(&self) -> bool {
        self.translator.mesh().ztunnel_policy_fail_closed
    }

    /// The mesh root namespace (namespace-wide policies there apply everywhere).
    pub fn root_namespace(&self) -> &str {
        &self.translator.mesh().root_namespace
    }

    /// Objects of one kind, in key order.
    pub fn of_kind(&self, kind: Kind) -> impl Iterator<Item = &StoredObject> {
        self.store
            .objects()
            .filter(move |(k, _)| k.kind == kind)
            .map(|(_, s)| s)
    }

    /// `Kind ns/name` of an object.
    pub fn label(obj: &Object) -> String {
        resource_label(obj.kind.as_str(), &obj.namespace, &obj.name)
    }

    /// Labels of a Namespace object, if the manifests define it.
    pub fn namespace_labels(&self, ns: &str) -> Option<&BTreeMap<String, String>> {
        self.of_kind(Kind::Namespace)
            .find(|s| s.object.name == ns)
            .map(|s| &s.object.labels)
    }

    /// The Kubernetes Service `(ns, name)` a host refers to from namespace `ns`, when the
    /// host has the form of an in-cluster name: `name`, `name.ns`, `name.ns.svc` or
    /// `name.ns.svc.cluster.local`. `name.ns` only counts when `ns` is a known namespace.
    pub fn service_host(&self, host: &str, ns: &str) -> Option<(String, String)> {
        if host.contains('*') {
            return None;
        }
        let parts: Vec<&str> = host.split('.').collect();
        match parts.as_slice() {
            [name] => Some((ns.to_string(), name.to_string())),
            [name, sns] if self.namespace_known(sns) => Some((sns.to_string(), name.to_string())),
            [name, sns, "svc"] => Some((sns.to_string(), name.to_string())),
            [name, sns, rest @ ..] if rest.join(".") == CLUSTER_DOMAIN => {
                Some((sns.to_string(), name.to_string()))
            }
            _ => None,
        }
    }

    fn namespace_known(&self, ns: &str) -> bool {
        self.store.objects().any(|(k, _)| {
            (k.kind == Kind::Namespace && k.name == ns) || (k.namespace == ns && !ns.is_empty())
        })
    }

    /// The Service object `ns/name`, if defined.
    pub fn service(&self, ns: &str, name: &str) -> Option<&StoredObject> {
        self.of_kind(Kind::Service)
            .find(|s| s.object.namespace == ns && s.object.name == name)
    }

    /// Workloads of a namespace: Pods (waypoints excluded: they are the mesh's own), plus
    /// pod templates no Pod matches.
    pub fn workloads(&self, ns: &str) -> Vec<WorkloadRef> {
        let mut out: Vec<WorkloadRef> = self
            .of_kind(Kind::Pod)
            .filter(|s| s.object.namespace == ns)
            .filter(|s| !s.object.labels.contains_key(LABEL_GATEWAY_NAME))
            .map(|s| WorkloadRef {
                label: Self::label(&s.object),
                namespace: ns.to_string(),
                labels: s.object.labels.clone(),
                pod: Some(s.object.name.clone()),
            })
            .collect();
        let pods = out.clone();
        for kind in [Kind::Deployment, Kind::StatefulSet, Kind::DaemonSet] {
            for s in self.of_kind(kind).filter(|s| s.object.namespace == ns) {
                let Some(labels) = template_labels(&s.object) else {
                    continue;
                };
                let has_pod = pods
                    .iter()
                    .any(|p| labels.iter().all(|(k, v)| p.labels.get(k) == Some(v)));
                if !has_pod {
                    out.push(WorkloadRef {
                        label: Self::label(&s.object),
                        namespace: ns.to_string(),
                        labels,
                        pod: None,
                    });
                }
            }
        }
        out
    }

    /// Workloads of every namespace (for policies in the root namespace).
    pub fn all_workloads(&self) -> Vec<WorkloadRef> {
        let mut nss: Vec<String> = self
            .store
            .objects()
            .map(|(k, _)| k.namespace.clone())
            .filter(|n| !n.is_empty())
            .collect();
        nss.sort();
        nss.dedup();
        nss.iter().flat_map(|ns| self.workloads(ns)).collect()
    }

    /// Workloads a policy in `ns` with this selector applies to (no selector: the whole
    /// namespace, or the whole mesh in the root namespace).
    pub fn selected(
        &self,
        ns: &str,
        selector: Option<&BTreeMap<String, String>>,
    ) -> Vec<WorkloadRef> {
        let candidates = match selector {
            None if ns == self.root_namespace() => self.all_workloads(),
            _ => self.workloads(ns),
        };
        candidates
            .into_iter()
            .filter(|w| match selector {
                None => true,
                Some(sel) => sel.iter().all(|(k, v)| w.labels.get(k) == Some(v)),
            })
            .collect()
    }

    /// Whether a workload is served by a waypoint that exists: it (or its namespace) asks
    /// for one with `istio.io/use-waypoint`, and a Gateway or a pod labelled
    /// `gateway.networking.k8s.io/gateway-name` of that name exists in the manifests.
    /// A translated pod (one with an IP) answers from the model's `waypoint`.
    pub fn has_waypoint(&self, w: &WorkloadRef) -> bool {
        if let Some(m) = w
            .pod
            .as_ref()
            .and_then(|p| self.model_workload(&w.namespace, p))
        {
            return m.waypoint.is_some();
        }
        let Some((wns, wname)) =
            waypoint_ref(&w.labels, &w.namespace, self.namespace_labels(&w.namespace))
        else {
            return false;
        };
        self.store.objects().any(|(k, s)| {
            k.namespace == wns
                && match k.kind {
                    Kind::Gateway => k.name == wname,
                    Kind::Pod | Kind::Deployment => {
                        s.object.labels.get(LABEL_GATEWAY_NAME) == Some(&wname)
                            || template_labels(&s.object)
                                .is_some_and(|l| l.get(LABEL_GATEWAY_NAME) == Some(&wname))
                    }
                    _ => false,
                }
        })
    }

    /// Whether a workload runs an Istio sidecar (which enforces L7 policy itself): the pod
    /// (or template) asks for injection with `sidecar.istio.io/inject=true`, or its
    /// namespace is labelled `istio-injection=enabled` or `istio.io/rev` and the pod does
    /// not opt out with `sidecar.istio.io/inject=false`. As in Istio, injection wins over
    /// ambient enrollment.
    pub fn has_sidecar(&self, w: &WorkloadRef) -> bool {
        match w.labels.get("sidecar.istio.io/inject").map(String::as_str) {
            Some("true") => return true,
            Some("false") => return false,
            _ => {}
        }
        self.namespace_labels(&w.namespace).is_some_and(|l| {
            l.get("istio-injection").map(String::as_str) == Some("enabled")
                || l.contains_key("istio.io/rev")
        })
    }

    /// Whether the namespace is enrolled in ambient (`istio.io/dataplane-mode=ambient`).
    pub fn ambient(labels: &BTreeMap<String, String>) -> bool {
        labels.get(LABEL_DATAPLANE_MODE).map(String::as_str) == Some("ambient")
    }

    /// The translated authorization `ns/name`, if any.
    pub fn authorization(&self, ns: &str, name: &str) -> Option<&Authorization> {
        match self
            .translator
            .resources()
            .get(&format!("authz/{ns}/{name}"))?
            .kind
            .as_ref()?
        {
            ResKind::Authorization(a) => Some(a),
            _ => None,
        }
    }

    /// The translated workload of pod `ns/name` (pods with an IP only).
    pub fn model_workload(&self, ns: &str, name: &str) -> Option<&Workload> {
        match self
            .translator
            .resources()
            .get(&format!("workload/{ns}/{name}"))?
            .kind
            .as_ref()?
        {
            ResKind::Workload(w) => Some(w),
            _ => None,
        }
    }

    /// The file that defines an object.
    pub fn file_of(s: &StoredObject) -> Option<&Path> {
        Some(s.file.as_path())
    }
}

/// Pod template labels of a Deployment/StatefulSet/DaemonSet.
pub fn template_labels(obj: &Object) -> Option<BTreeMap<String, String>> {
    let tpl = match &obj.spec {
        Spec::Deployment(d) => &d.spec.as_ref()?.template,
        Spec::StatefulSet(d) => &d.spec.as_ref()?.template,
        Spec::DaemonSet(d) => &d.spec.as_ref()?.template,
        _ => return None,
    };
    tpl.metadata.as_ref()?.labels.clone()
}

/// Which of two conflicting policies wins, as the control plane decides: the oldest
/// (`creationTimestamp`; none counts as oldest), then namespace and name.
pub fn age_order(a: &Object, b: &Object) -> std::cmp::Ordering {
    a.creation_timestamp
        .cmp(&b.creation_timestamp)
        .then_with(|| a.namespace.cmp(&b.namespace))
        .then_with(|| a.name.cmp(&b.name))
}

#[cfg(test)]
mod tests {
    use super::*;

    fn ctx(yaml: &str) -> Context {
        let mut store = Store::new();
        store.apply_file("t.yaml".as_ref(), yaml, "default");
        assert!(store.errors().is_empty(), "{:?}", store.errors());
        Context::new(store)
    }

    const NS_AND_PODS: &str = "\
apiVersion: v1
kind: Namespace
metadata: {name: shop, labels: {istio.io/use-waypoint: wp}}
---
apiVersion: v1
kind: Pod
metadata: {name: a, namespace: shop, labels: {app: a}}
spec: {containers: [{name: c, image: i}]}
---
apiVersion: v1
kind: Pod
metadata: {name: wp-0, namespace: shop, labels: {gateway.networking.k8s.io/gateway-name: wp}}
spec: {containers: [{name: c, image: i}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: b, namespace: shop}
spec:
  selector: {matchLabels: {app: b}}
  template:
    metadata: {labels: {app: b}}
    spec: {containers: [{name: c, image: i}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: a, namespace: shop}
spec:
  selector: {matchLabels: {app: a}}
  template:
    metadata: {labels: {app: a}}
    spec: {containers: [{name: c, image: i}]}
";

    #[test]
    fn service_hosts_resolve_like_kubernetes_names() {
        let c = ctx(NS_AND_PODS);
        let sh = |h: &str| c.service_host(h, "default");
        assert_eq!(sh("r"), Some(("default".into(), "r".into())));
        assert_eq!(sh("r.shop"), Some(("shop".into(), "r".into())));
        assert_eq!(sh("r.other.svc"), Some(("other".into(), "r".into())));
        assert_eq!(sh("r.x.svc.cluster.local"), Some(("x".into(), "r".into())));
        assert_eq!(sh("example.com"), None, "unknown namespace: external host");
        assert_eq!(sh("*.shop.svc.cluster.local"), None);
        assert_eq!(sh("api.example.org"), None);
    }

    #[test]
    fn workloads_are_pods_and_unmatched_templates_without_waypoints() {
        let c = ctx(NS_AND_PODS);
        let mut got: Vec<String> = c.workloads("shop").into_iter().map(|w| w.label).collect();
        got.sort();
        assert_eq!(got, ["Deployment shop/b", "Pod shop/a"]);
    }

    #[test]
    fn waypoint_needs_the_label_and_an_existing_waypoint() {
        let c = ctx(NS_AND_PODS);
        let w = c.workloads("shop");
        assert!(w.iter().all(|w| c.has_waypoint(w)));
        let c = ctx(&NS_AND_PODS.replace("gateway-name: wp}", "gateway-name: other}"));
        assert!(c.workloads("shop").iter().all(|w| !c.has_waypoint(w)));
    }

    #[test]
    fn root_namespace_policies_select_every_namespace() {
        let c = ctx(NS_AND_PODS);
        assert_eq!(c.root_namespace(), "istio-system");
        assert_eq!(c.selected("istio-system", None).len(), 2);
        assert_eq!(c.selected("other", None).len(), 0);
        let sel: BTreeMap<String, String> = [("app".into(), "b".into())].into();
        assert_eq!(c.selected("shop", Some(&sel)).len(), 1);
    }
}

//! What the control plane keeps of each watched object: only the fields translation (and
//! the status writers) read, so that a 20k-pod cluster costs kilobytes, not the
//! megabytes of `managedFields`, container specs and probe timestamps per node.
//!
//! Derived from what `translate/` reads (`workload.rs`, `authz.rs`, `mod.rs`, `index.rs`):
//!
//! | kind | kept |
//! |---|---|
//! | every kind | `metadata.name/generateName/namespace/uid/labels/creationTimestamp/deletionTimestamp/generation`; no `managedFields`, `ownerReferences`, `finalizers`, `resourceVersion` |
//! | Pod | annotation `sidecar.istio.io/status`; `spec.nodeName/hostNetwork/serviceAccountName/serviceAccount`, `spec.containers[].name/ports`; `status.phase/podIP/podIPs`, `status.conditions[].type/status` |
//! | Service | `spec.clusterIP/clusterIPs/ports/selector` |
//! | Namespace, ServiceAccount | metadata only |
//! | EndpointSlice | `addressType` (required by the type) and metadata; translation does not read endpoints |
//! | ConfigMap | `data` (the mesh config, the waypoint template) |
//! | Istio, Gateway API | everything but `status` and the `kubectl.kubernetes.io/last-applied-configuration` annotation (their annotations, e.g. `istio.io/dry-run`, are read) |
//! | Deployment, Canary, MetricTemplate (only with the canary controller) | the same: the canary controller digests the whole pod template (a new revision) |
//!
//! The unit tests translate full objects and their pruned copies and compare the models.

use serde_json::{Map, Value};

const METADATA: &[&str] = &[
    "name",
    // A pod's: its controller's name, for Istio's workload name (`translate/workload.rs`).
    "generateName",
    "namespace",
    "uid",
    "labels",
    "annotations",
    "creationTimestamp",
    "deletionTimestamp",
    "generation",
];
const LAST_APPLIED: &str = "kubectl.kubernetes.io/last-applied-configuration";
const POD_ANNOTATIONS: &[&str] = &["sidecar.istio.io/status"];
const POD_SPEC: &[&str] = &[
    "nodeName",
    "hostNetwork",
    "serviceAccountName",
    "serviceAccount",
];
const POD_STATUS: &[&str] = &["phase", "podIP", "podIPs"];
const SERVICE_SPEC: &[&str] = &["clusterIP", "clusterIPs", "ports", "selector"];

fn keep(map: &Map<String, Value>, fields: &[&str]) -> Map<String, Value> {
    fields
        .iter()
        .filter_map(|f| map.get(*f).map(|v| (f.to_string(), v.clone())))
        .collect()
}

fn obj(v: Option<&Value>) -> Map<String, Value> {
    v.and_then(Value::as_object).cloned().unwrap_or_default()
}

/// Prunes `map`, an object of `kind` in group `group`, in place. `apiVersion` and `kind`
/// are left as they are.
pub fn prune(group: &str, kind: &str, map: &mut Map<String, Value>) {
    let mut meta = keep(&obj(map.get("metadata")), METADATA);
    let annotations = obj(meta.get("annotations"));
    let is_core = group.is_empty() || group == "discovery.k8s.io";
    let annotations: Map<String, Value> = if !is_core {
        annotations
            .into_iter()
            .filter(|(k, _)| k != LAST_APPLIED)
            .collect()
    } else if kind == "Pod" {
        keep(&annotations, POD_ANNOTATIONS)
    } else {
        Map::new()
    };
    meta.remove("annotations");
    if !annotations.is_empty() {
        meta.insert("annotations".into(), Value::Object(annotations));
    }
    if !is_core {
        map.remove("status");
        map.insert("metadata".into(), Value::Object(meta));
        return;
    }
    let mut out = Map::new();
    for f in ["apiVersion", "kind"] {
        if let Some(v) = map.remove(f) {
            out.insert(f.into(), v);
        }
    }
    out.insert("metadata".into(), Value::Object(meta));
    match kind {
        "Pod" => {
            let spec = obj(map.get("spec"));
            let mut s = keep(&spec, POD_SPEC);
            let containers: Vec<Value> = spec
                .get("containers")
                .and_then(Value::as_array)
                .into_iter()
                .flatten()
                .map(|c| Value::Object(keep(&obj(Some(c)), &["name", "ports"])))
                .collect();
            s.insert("containers".into(), Value::Array(containers));
            out.insert("spec".into(), Value::Object(s));
            if let Some(status) = map.get("status") {
                out.insert("status".into(), pod_status(status));
            }
        }
        "Service" => {
            let spec = keep(&obj(map.get("spec")), SERVICE_SPEC);
            out.insert("spec".into(), Value::Object(spec));
        }
        "EndpointSlice" => {
            if let Some(t) = map.get("addressType") {
                out.insert("addressType".into(), t.clone());
            }
            out.insert("endpoints".into(), Value::Array(Vec::new()));
        }
        "ConfigMap" => {
            if let Some(d) = map.get("data") {
                out.insert("data".into(), d.clone());
            }
        }
        _ => {}
    }
    *map = out;
}

fn pod_status(status: &Value) -> Value {
    let mut out = keep(&obj(Some(status)), POD_STATUS);
    if let Some(Value::Array(conds)) = status.get("conditions") {
        let kept = conds
            .iter()
            .map(|c| Value::Object(keep(&obj(Some(c)), &["type", "status"])))
            .collect();
        out.insert("conditions".into(), Value::Array(kept));
    }
    Value::Object(out)
}

#[cfg(test)]
mod tests;

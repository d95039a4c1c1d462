//! Kubernetes objects as pseudo-files of the validated store.
//!
//! Every watched object becomes one "file" named `k8s://<Kind>/<namespace>/<name>`
//! (`k8s://<Kind>/<name>` for cluster-scoped kinds) whose text is the object's JSON. JSON
//! is YAML, so [`meshwork_api::Store::apply_file`] parses it exactly like a manifest from
//! the directory source: one parsing, validation and translation path for both sources.
//!
//! The text is normalized so that it changes only when something the mesh reads changes:
//! - `apiVersion`/`kind` are set from the watched resource (list responses omit them);
//! - everything translation does not read is pruned (see [`prune`]): `resourceVersion`,
//!   `managedFields`, Istio and Gateway API `status` (the control plane writes it itself,
//!   and a status write must not look like a configuration change), pod container specs
//!   and probe timestamps (which would churn the text), ….

use std::path::{Path, PathBuf};

use ::kube::core::{ApiResource, DynamicObject};
use serde_json::{Map, Value};

use super::error::KubeSourceError;
use super::prune;
use crate::source::FileEvent;

/// Scheme prefix of pseudo-file paths.
pub const SCHEME: &str = "k8s://";

/// The pseudo-file path of an object.
pub fn path(kind: &str, namespace: Option<&str>, name: &str) -> PathBuf {
    match namespace.filter(|ns| !ns.is_empty()) {
        Some(ns) => PathBuf::from(format!("{SCHEME}{kind}/{ns}/{name}")),
        None => PathBuf::from(format!("{SCHEME}{kind}/{name}")),
    }
}

/// A pseudo-file path split back into (kind, namespace, name); `None` for other paths.
pub fn parse_path(p: &Path) -> Option<(&str, Option<&str>, &str)> {
    let rest = p.to_str()?.strip_prefix(SCHEME)?;
    let mut parts = rest.splitn(3, '/');
    let kind = parts.next()?;
    let a = parts.next()?;
    match parts.next() {
        Some(name) => Some((kind, Some(a), name)),
        None => Some((kind, None, a)),
    }
}

/// The kind of the object an event is about; `None` when its path is not a pseudo-file.
pub fn kind_of(e: &FileEvent) -> Option<&str> {
    parse_path(e.path()).map(|(kind, _, _)| kind)
}

/// The pseudo-file of `obj` watched as `ar`: its path and normalized JSON text.
pub fn render(ar: &ApiResource, obj: &DynamicObject) -> Result<(PathBuf, String), KubeSourceError> {
    let name = obj
        .metadata
        .name
        .as_deref()
        .filter(|n| !n.is_empty())
        .ok_or_else(|| KubeSourceError::MissingName {
            kind: ar.kind.clone(),
            namespace: obj.metadata.namespace.clone().unwrap_or_default(),
        })?;
    let path = path(&ar.kind, obj.metadata.namespace.as_deref(), name);
    let mut value = serde_json::to_value(obj).map_err(|e| KubeSourceError::Encode {
        object: path.display().to_string(),
        reason: e.to_string(),
    })?;
    let Value::Object(map) = &mut value else {
        return Err(KubeSourceError::Encode {
            object: path.display().to_string(),
            reason: "object is not a JSON map".into(),
        });
    };
    normalize(ar, map);
    let text = serde_json::to_string(&value).map_err(|e| KubeSourceError::Encode {
        object: path.display().to_string(),
        reason: e.to_string(),
    })?;
    Ok((path, text))
}

fn normalize(ar: &ApiResource, map: &mut Map<String, Value>) {
    map.insert("apiVersion".into(), Value::String(ar.api_version.clone()));
    map.insert("kind".into(), Value::String(ar.kind.clone()));
    prune::prune(&ar.group, &ar.kind, map);
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kube::resources::watched;
    use serde_json::json;

    fn obj(v: Value) -> DynamicObject {
        serde_json::from_value(v).unwrap()
    }

    #[test]
    fn paths_round_trip() {
        let p = path("VirtualService", Some("production"), "orders");
        assert_eq!(p, PathBuf::from("k8s://VirtualService/production/orders"));
        assert_eq!(
            parse_path(&p),
            Some(("VirtualService", Some("production"), "orders"))
        );
        let n = path("Namespace", None, "production");
        assert_eq!(n, PathBuf::from("k8s://Namespace/production"));
        assert_eq!(parse_path(&n), Some(("Namespace", None, "production")));
        assert_eq!(parse_path(Path::new("/etc/x.yaml")), None);
    }

    #[test]
    fn events_name_their_kind() {
        let changed = FileEvent::Changed(path("Gateway", Some("prod"), "wp"), "{}".into());
        assert_eq!(kind_of(&changed), Some("Gateway"));
        let removed = FileEvent::Removed(path("Namespace", None, "prod"));
        assert_eq!(kind_of(&removed), Some("Namespace"));
        assert_eq!(kind_of(&FileEvent::Removed("/etc/x.yaml".into())), None);
    }

    #[test]
    fn istio_objects_lose_status_and_bookkeeping() {
        let ar = watched("VirtualService").unwrap().preferred();
        let o = obj(json!({
            "metadata": {"name": "orders", "namespace": "production", "resourceVersion": "7",
                         "generation": 2, "managedFields": [{"manager": "kubectl"}]},
            "spec": {"hosts": ["orders"]},
            "status": {"conditions": [{"type": "Accepted"}]}
        }));
        let (p, text) = render(&ar, &o).unwrap();
        assert_eq!(p, PathBuf::from("k8s://VirtualService/production/orders"));
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(v["apiVersion"], "networking.istio.io/v1");
        assert_eq!(v["kind"], "VirtualService");
        assert_eq!(v["metadata"]["generation"], 2);
        assert!(v["metadata"].get("resourceVersion").is_none());
        assert!(v["metadata"].get("managedFields").is_none());
        assert!(v.get("status").is_none());
        assert_eq!(v["spec"]["hosts"][0], "orders");
    }

    #[test]
    fn pod_status_keeps_what_translation_reads() {
        let ar = watched("Pod").unwrap().preferred();
        let o = obj(json!({
            "metadata": {"name": "p", "namespace": "ns"},
            "spec": {"nodeName": "n1", "containers": []},
            "status": {"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                       "hostIP": "172.18.0.2", "startTime": "2026-01-01T00:00:00Z",
                       "conditions": [{"type": "Ready", "status": "True",
                                       "lastProbeTime": null,
                                       "lastTransitionTime": "2026-01-01T00:00:00Z"}],
                       "containerStatuses": [{"name": "c", "restartCount": 3}]}
        }));
        let (_, text) = render(&ar, &o).unwrap();
        let v: Value = serde_json::from_str(&text).unwrap();
        assert_eq!(
            v["status"],
            json!({"phase": "Running", "podIP": "10.0.0.1", "podIPs": [{"ip": "10.0.0.1"}],
                   "conditions": [{"type": "Ready", "status": "True"}]})
        );
    }

    #[test]
    fn nameless_object_is_a_named_error() {
        let ar = watched("Service").unwrap().preferred();
        let err = render(&ar, &obj(json!({"metadata": {"namespace": "ns"}}))).unwrap_err();
        assert!(err.to_string().contains("Service"), "{err}");
        assert!(err.to_string().contains("ns"), "{err}");
    }
}

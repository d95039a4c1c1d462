//! The waypoint template: YAML documents (ServiceAccount, Deployment, Service) with the
//! placeholders `${NAME}` (the Gateway's name) and `${NAMESPACE}` (its namespace), kept by
//! the chart in a ConfigMap of the root namespace (`meshwork-waypoint-template`, key
//! `waypoint.yaml`). [`Template::render`] fills them in for one Gateway, forces the
//! namespace and adds the owner reference that lets garbage collection delete the
//! objects with the Gateway.

use ::kube::core::ApiResource;
use serde::Deserialize;
use serde_json::{json, Value};

use super::error::WaypointError;
use super::gateway::WaypointGateway;

/// Where the template is read from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TemplateSource {
    pub namespace: String,
    pub configmap: String,
    pub key: String,
}

impl TemplateSource {
    /// The chart's ConfigMap in `root_namespace`.
    pub fn chart_default(root_namespace: &str) -> Self {
        TemplateSource {
            namespace: root_namespace.to_string(),
            configmap: "meshwork-waypoint-template".into(),
            key: "waypoint.yaml".into(),
        }
    }

    /// `<namespace>/<name>` for messages.
    pub fn describe(&self) -> String {
        format!(
            "ConfigMap {}/{} key {:?}",
            self.namespace, self.configmap, self.key
        )
    }
}

/// The kinds a template may hold (the control plane's RBAC allows exactly these).
const KINDS: &[(&str, &str, &str, &str)] = &[
    ("v1", "ServiceAccount", "", "serviceaccounts"),
    ("apps/v1", "Deployment", "apps", "deployments"),
    ("v1", "Service", "", "services"),
];

/// The API resource of a rendered object.
pub fn api_resource(api_version: &str, kind: &str) -> Option<ApiResource> {
    KINDS
        .iter()
        .find(|(v, k, _, _)| *v == api_version && *k == kind)
        .map(|(v, k, group, plural)| ApiResource {
            group: group.to_string(),
            version: v.rsplit('/').next().unwrap_or(v).to_string(),
            api_version: v.to_string(),
            kind: k.to_string(),
            plural: plural.to_string(),
        })
}

/// A parsed template.
#[derive(Debug, Clone, PartialEq)]
pub struct Template {
    source: TemplateSource,
    text: String,
}

impl Template {
    /// Checks the template (with placeholders filled by sample values) and keeps its text.
    pub fn parse(source: TemplateSource, text: &str) -> Result<Template, WaypointError> {
        let t = Template {
            source,
            text: text.to_string(),
        };
        t.documents("sample", "sample")?;
        Ok(t)
    }

    pub fn source(&self) -> &TemplateSource {
        &self.source
    }

    fn error(&self, reason: String) -> WaypointError {
        WaypointError::Template {
            source_name: self.source.describe(),
            reason,
        }
    }

    fn documents(&self, namespace: &str, name: &str) -> Result<Vec<Value>, WaypointError> {
        let text = self
            .text
            .replace("${NAMESPACE}", namespace)
            .replace("${NAME}", name);
        let mut out = Vec::new();
        for (i, doc) in serde_yaml_ng::Deserializer::from_str(&text).enumerate() {
            let v = Value::deserialize(doc)
                .map_err(|e| self.error(format!("document {}: {e}", i + 1)))?;
            if v.is_null() {
                continue;
            }
            let api_version = v["apiVersion"].as_str().unwrap_or_default();
            let kind = v["kind"].as_str().unwrap_or_default();
            if api_resource(api_version, kind).is_none() {
                return Err(self.error(format!(
                    "document {}: {kind:?} at {api_version:?} is not allowed (want v1 ServiceAccount, apps/v1 Deployment or v1 Service)",
                    i + 1
                )));
            }
            if v["metadata"]["name"].as_str().is_none_or(str::is_empty) {
                return Err(self.error(format!("document {}: {kind} has no metadata.name", i + 1)));
            }
            out.push(v);
        }
        if out.is_empty() {
            return Err(self.error("no documents".into()));
        }
        Ok(out)
    }

    /// The objects of `gw`'s waypoint, owned by `gw`, in template order.
    pub fn render(&self, gw: &WaypointGateway) -> Result<Vec<Value>, WaypointError> {
        let owner = json!({
            "apiVersion": gw.api_version,
            "kind": "Gateway",
            "name": gw.name,
            "uid": gw.uid,
            "controller": true,
        });
        let mut docs = self.documents(&gw.namespace, &gw.name)?;
        for d in &mut docs {
            let meta = d["metadata"]
                .as_object_mut()
                .ok_or_else(|| self.error("metadata is not a map".into()))?;
            meta.insert("namespace".into(), json!(gw.namespace));
            meta.insert("ownerReferences".into(), json!([owner.clone()]));
        }
        Ok(docs)
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const TEXT: &str = "\
apiVersion: v1
kind: ServiceAccount
metadata: {name: \"${NAME}\", namespace: \"${NAMESPACE}\"}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: \"${NAME}\"}
spec:
  template:
    spec:
      containers:
        - name: waypoint
          args: [\"--gateway=${NAMESPACE}/${NAME}\"]
---
apiVersion: v1
kind: Service
metadata: {name: \"${NAME}\"}
";

    fn gw() -> WaypointGateway {
        WaypointGateway {
            namespace: "production".into(),
            name: "waypoint".into(),
            api_version: "gateway.networking.k8s.io/v1".into(),
            uid: "u-1".into(),
            generation: Some(1),
        }
    }

    fn src() -> TemplateSource {
        TemplateSource::chart_default("istio-system")
    }

    #[test]
    fn render_fills_placeholders_namespace_and_owner() {
        let t = Template::parse(src(), TEXT).unwrap();
        let docs = t.render(&gw()).unwrap();
        assert_eq!(docs.len(), 3);
        for d in &docs {
            assert_eq!(d["metadata"]["name"], "waypoint");
            assert_eq!(d["metadata"]["namespace"], "production");
            assert_eq!(
                d["metadata"]["ownerReferences"],
                json!([{"apiVersion": "gateway.networking.k8s.io/v1", "kind": "Gateway",
                        "name": "waypoint", "uid": "u-1", "controller": true}])
            );
        }
        assert_eq!(
            docs[1]["spec"]["template"]["spec"]["containers"][0]["args"][0],
            "--gateway=production/waypoint"
        );
    }

    #[test]
    fn bad_templates_name_the_configmap_and_document() {
        let e = Template::parse(src(), "apiVersion: v1\nkind: Secret\nmetadata: {name: x}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("istio-system/meshwork-waypoint-template"), "{e}");
        assert!(e.contains("document 1") && e.contains("Secret"), "{e}");
        let e = Template::parse(src(), "kind: [unclosed")
            .unwrap_err()
            .to_string();
        assert!(e.contains("document 1"), "{e}");
        let e = Template::parse(src(), "").unwrap_err().to_string();
        assert!(e.contains("no documents"), "{e}");
        let e = Template::parse(src(), "apiVersion: v1\nkind: Service\nmetadata: {}\n")
            .unwrap_err()
            .to_string();
        assert!(e.contains("metadata.name"), "{e}");
    }

    #[test]
    fn api_resources_of_the_allowed_kinds() {
        let d = api_resource("apps/v1", "Deployment").unwrap();
        assert_eq!((d.group.as_str(), d.version.as_str()), ("apps", "v1"));
        assert_eq!(api_resource("v1", "Service").unwrap().plural, "services");
        assert!(api_resource("v1", "Secret").is_none());
    }
}

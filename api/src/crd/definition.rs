//! Assembles `apiextensions.k8s.io/v1` CustomResourceDefinitions from [`CrdKind`]s.

use schemars::generate::SchemaSettings;
use serde_json::{json, Value};

use super::kinds::{CrdKind, ISTIO_KINDS};
use super::structural::make_structural;
use super::CrdError;

/// The structural schema of `kind`'s spec, derived from its Rust type.
pub fn spec_schema(kind: &CrdKind) -> Result<Value, CrdError> {
    let mut generator = SchemaSettings::draft2020_12()
        .with(|s| s.inline_subschemas = true)
        .into_generator();
    let root = (kind.spec_schema)(&mut generator);
    let what = format!("{}.spec", kind.kind);
    let mut schema = make_structural(root.to_value(), &what)?;
    if let Value::Object(obj) = &mut schema {
        obj.insert("description".into(), kind.spec_description.into());
    }
    Ok(schema)
}

/// The `openAPIV3Schema` of a `kind` object: `spec` typed (optional, as in Istio: an
/// AuthorizationPolicy without one allows nothing), `status` free-form (Meshwork writes
/// Istio-style conditions there) but for `status.conditions`, a list map keyed by `type`:
/// server-side apply then merges each writer's conditions instead of replacing the list.
pub fn object_schema(kind: &CrdKind) -> Result<Value, CrdError> {
    Ok(json!({
        "type": "object",
        "properties": {
            "apiVersion": {"type": "string"},
            "kind": {"type": "string"},
            "metadata": {"type": "object"},
            "spec": spec_schema(kind)?,
            "status": status_schema(),
        },
    }))
}

fn status_schema() -> Value {
    json!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
        "properties": {
            "conditions": {
                "type": "array",
                "x-kubernetes-list-type": "map",
                "x-kubernetes-list-map-keys": ["type"],
                "items": {
                    "type": "object",
                    "required": ["type"],
                    "x-kubernetes-preserve-unknown-fields": true,
                    "properties": {
                        "type": {"type": "string"},
                        "status": {"type": "string"},
                        "reason": {"type": "string"},
                        "message": {"type": "string"},
                        "lastTransitionTime": {"type": "string", "format": "date-time"},
                        "observedGeneration": {"type": "integer", "format": "int64"},
                    },
                },
            },
        },
    })
}

/// The CustomResourceDefinition of `kind`: every served version with the same schema,
/// Istio's storage version, the status subresource, short names and printer columns.
pub fn crd(kind: &CrdKind) -> Result<Value, CrdError> {
    let schema = object_schema(kind)?;
    let columns: Vec<Value> = kind
        .columns
        .iter()
        .map(|c| {
            json!({
                "name": c.name,
                "type": c.type_,
                "jsonPath": c.json_path,
                "description": c.description,
            })
        })
        .collect();
    let versions: Vec<Value> = kind
        .versions()
        .into_iter()
        .map(|v| {
            json!({
                "name": v,
                "served": true,
                "storage": v == kind.storage_version,
                "subresources": {"status": {}},
                "additionalPrinterColumns": columns,
                "schema": {"openAPIV3Schema": schema},
            })
        })
        .collect();
    let singular = kind.kind.as_str().to_ascii_lowercase();
    Ok(json!({
        "apiVersion": "apiextensions.k8s.io/v1",
        "kind": "CustomResourceDefinition",
        "metadata": {
            "name": kind.crd_name(),
            "annotations": {"helm.sh/resource-policy": "keep"},
            "labels": {"app.kubernetes.io/part-of": "meshwork"},
        },
        "spec": {
            "group": kind.group,
            "names": {
                "kind": kind.kind.as_str(),
                "listKind": format!("{}List", kind.kind),
                "plural": kind.plural,
                "singular": singular,
                "shortNames": kind.short_names,
                "categories": ["istio-io", kind.category],
            },
            "scope": "Namespaced",
            "versions": versions,
        },
    }))
}

/// The CRDs of every Istio kind Meshwork reads.
pub fn istio_crds() -> Result<Vec<Value>, CrdError> {
    ISTIO_KINDS.iter().map(crd).collect()
}

#[cfg(test)]
mod tests {
    use crate::crd::check::violations;
    use crate::crd::kinds::crd_kind;
    use crate::Kind;

    use super::*;

    #[test]
    fn every_crd_serves_every_api_version_with_one_storage_version() {
        let crds = istio_crds().unwrap();
        assert_eq!(crds.len(), ISTIO_KINDS.len());
        for (crd, kind) in crds.iter().zip(ISTIO_KINDS) {
            let versions = crd["spec"]["versions"].as_array().unwrap();
            let names: Vec<String> = versions
                .iter()
                .map(|v| format!("{}/{}", kind.group, v["name"].as_str().unwrap()))
                .collect();
            assert_eq!(names, kind.kind.api_versions(), "{}", kind.kind);
            let storage: Vec<&str> = versions
                .iter()
                .filter(|v| v["storage"] == true)
                .map(|v| v["name"].as_str().unwrap())
                .collect();
            assert_eq!(storage, [kind.storage_version], "{}", kind.kind);
            for v in versions {
                assert!(v["served"] == true && v["subresources"]["status"].is_object());
                let schema = &v["schema"]["openAPIV3Schema"];
                assert!(violations(schema).is_empty(), "{:?}", violations(schema));
                assert!(!schema.to_string().contains("$ref"));
            }
        }
    }

    #[test]
    fn istio_names_and_columns() {
        let dr = crd(crd_kind(Kind::DestinationRule).unwrap()).unwrap();
        assert_eq!(
            dr["metadata"]["name"],
            "destinationrules.networking.istio.io"
        );
        assert_eq!(
            dr["metadata"]["annotations"]["helm.sh/resource-policy"],
            "keep"
        );
        assert_eq!(dr["spec"]["names"]["shortNames"], json!(["dr"]));
        assert_eq!(dr["spec"]["names"]["listKind"], "DestinationRuleList");
        assert_eq!(
            dr["spec"]["names"]["categories"],
            json!(["istio-io", "networking-istio-io"])
        );
        let columns = &dr["spec"]["versions"][0]["additionalPrinterColumns"];
        assert_eq!(columns[0]["jsonPath"], ".spec.host");
        assert_eq!(columns[1]["name"], "Age");
    }

    #[test]
    fn spec_schemas_follow_the_serde_types() {
        let ap = spec_schema(crd_kind(Kind::AuthorizationPolicy).unwrap()).unwrap();
        assert_eq!(
            ap["properties"]["action"]["enum"],
            json!(["ALLOW", "DENY", "AUDIT", "CUSTOM"])
        );
        let ports = &ap["properties"]["rules"]["items"]["properties"]["to"]["items"]["properties"]
            ["operation"]["properties"]["ports"];
        assert_eq!(
            ports,
            &json!({"type": "array", "items": {"type": "string"}})
        );
        let vs = spec_schema(crd_kind(Kind::VirtualService).unwrap()).unwrap();
        let http = &vs["properties"]["http"]["items"]["properties"];
        assert_eq!(http["timeout"]["type"], "string");
        assert!(http["timeout"]["pattern"].is_string());
        // `match` is renamed in serde; the schema uses the wire name.
        let uri = &http["match"]["items"]["properties"]["uri"];
        assert_eq!(uri["oneOf"].as_array().unwrap().len(), 4);
        let dr = spec_schema(crd_kind(Kind::DestinationRule).unwrap()).unwrap();
        let tunnel = &dr["properties"]["trafficPolicy"]["properties"]["tunnel"];
        assert_eq!(
            tunnel,
            &json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        );
        let od = &dr["properties"]["trafficPolicy"]["properties"]["outlierDetection"];
        assert!(od["properties"]["consecutive5xxErrors"].is_object());
    }
}

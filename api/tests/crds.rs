//! The generated CRDs accept every Istio document of the seed manifests, reject bad ones
//! with the offending field named, and match the chart's committed copy.
//!
//! Validation mirrors what the API server does with a structural schema and `kubectl
//! apply` (strict field validation, the default): fields the schema does not know are
//! errors. The validator emulates that by closing every object that does not preserve
//! unknown fields.

use std::path::{Path, PathBuf};

use meshwork_api::crd::{chart_template, crd_kind, istio_crds, object_schema, ISTIO_KINDS};
use meshwork_api::Kind;
use serde_json::Value;
use serde_yaml_ng::Value as Yaml;

fn seed_dir() -> PathBuf {
    let dir = Path::new(concat!(env!("CARGO_MANIFEST_DIR"), "/../examples/seed"));
    assert!(
        dir.is_dir(),
        "seed manifests not found at {}",
        dir.display()
    );
    dir.to_path_buf()
}

/// YAML as `kubectl` sends it: JSON, map keys as strings (`8080:` becomes `"8080"`).
fn to_json(v: &Yaml) -> Value {
    match v {
        Yaml::Null => Value::Null,
        Yaml::Bool(b) => Value::Bool(*b),
        Yaml::Number(n) => serde_json::to_value(n).unwrap(),
        Yaml::String(s) => Value::String(s.clone()),
        Yaml::Sequence(items) => Value::Array(items.iter().map(to_json).collect()),
        Yaml::Mapping(m) => Value::Object(
            m.iter()
                .map(|(k, v)| {
                    let key = match k {
                        Yaml::String(s) => s.clone(),
                        other => serde_yaml_ng::to_string(other).unwrap().trim().to_string(),
                    };
                    (key, to_json(v))
                })
                .collect(),
        ),
        Yaml::Tagged(t) => to_json(&t.value),
    }
}

/// Strict field validation: objects with declared properties accept no others.
fn close_objects(schema: &mut Value) {
    let Some(obj) = schema.as_object_mut() else {
        return;
    };
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    if obj.contains_key("properties") && !preserve {
        obj.insert("additionalProperties".into(), Value::Bool(false));
    }
    for (key, child) in obj.iter_mut() {
        match key.as_str() {
            "properties" => child
                .as_object_mut()
                .into_iter()
                .flat_map(|m| m.values_mut())
                .for_each(close_objects),
            "items" | "additionalProperties" => close_objects(child),
            _ => {}
        }
    }
}

/// The CRD's schema for `apiVersion`/`kind` of `doc` (`None` for kinds without a CRD).
fn schema_for(doc: &Value) -> Option<Value> {
    let kind = Kind::from_kind_str(doc["kind"].as_str()?)?;
    let crd_kind = crd_kind(kind)?;
    let (group, version) = doc["apiVersion"].as_str()?.split_once('/')?;
    assert_eq!(group, crd_kind.group);
    assert!(
        crd_kind.versions().contains(&version),
        "{kind}: version {version} not served"
    );
    let mut schema = object_schema(crd_kind).unwrap();
    close_objects(&mut schema);
    Some(schema)
}

/// Validation errors as `<field path>: <message>`; `None` for kinds without a CRD.
fn validate(doc: &Value) -> Option<Vec<String>> {
    let schema = schema_for(doc)?;
    let validator = jsonschema::validator_for(&schema).unwrap();
    Some(
        validator
            .iter_errors(doc)
            .map(|e| format!("{}: {e}", e.instance_path()))
            .collect(),
    )
}

fn documents(text: &str) -> Vec<Value> {
    serde_yaml_ng::Deserializer::from_str(text)
        .map(|d| to_json(&serde::Deserialize::deserialize(d).unwrap()))
        .filter(|v| !v.is_null())
        .collect()
}

#[test]
fn seed_manifests_validate_against_their_crds() {
    let mut files: Vec<_> = std::fs::read_dir(seed_dir())
        .unwrap()
        .map(|e| e.unwrap().path())
        .filter(|p| p.extension().is_some_and(|e| e == "yaml"))
        .collect();
    files.sort();
    let mut kinds_seen = std::collections::BTreeSet::new();
    let mut validated = 0;
    for file in &files {
        for doc in documents(&std::fs::read_to_string(file).unwrap()) {
            let Some(errors) = validate(&doc) else {
                continue;
            };
            let name = format!(
                "{}: {} {}",
                file.display(),
                doc["kind"],
                doc["metadata"]["name"]
            );
            assert!(errors.is_empty(), "{name}: {errors:#?}");
            kinds_seen.insert(doc["kind"].as_str().unwrap().to_string());
            validated += 1;
        }
    }
    assert!(validated >= 9, "only {validated} Istio documents validated");
    // The seed has no Wasm plugin: a WasmPlugin as Istio documents it stands in for one.
    let wasm: Value = serde_yaml_ng::from_str(
        r#"
apiVersion: extensions.istio.io/v1alpha1
kind: WasmPlugin
metadata: {name: auth, namespace: shop}
spec:
  targetRefs: [{kind: Gateway, group: gateway.networking.k8s.io, name: waypoint}]
  url: oci://ghcr.io/example/auth:v1
  sha256: 0b5ff3a8bd4e6f2a0c7b1f9f3c1d8e0d2f9d1a7e6f5b4c3a2d1e0f9a8b7c6d5e
  imagePullPolicy: IfNotPresent
  phase: AUTHN
  priority: 10
  failStrategy: FAIL_OPEN
  pluginConfig: {header: x-api-key, keys: [a, b]}
  match: [{mode: SERVER, ports: [{number: 8080}]}]
  vmConfig: {env: [{name: POD_NAME, valueFrom: HOST}, {name: LEVEL, value: debug}]}
"#,
    )
    .unwrap();
    let errors = validate(&wasm).expect("WasmPlugin has a CRD");
    assert!(errors.is_empty(), "WasmPlugin: {errors:#?}");
    kinds_seen.insert("WasmPlugin".to_string());
    let all: std::collections::BTreeSet<String> = ISTIO_KINDS
        .iter()
        .map(|k| k.kind.as_str().to_string())
        .collect();
    assert_eq!(kinds_seen, all, "every CRD is exercised by a seed manifest");
}

const GOOD_VS: &str = r#"
apiVersion: networking.istio.io/v1
kind: VirtualService
metadata: {name: orders, namespace: production}
spec:
  hosts: [order-service]
  http:
  - match:
    - headers:
        x-user-id: {regex: ".*[02468]$"}
    timeout: 10s
    retries: {attempts: 3, perTryTimeout: 3s, retryOn: "5xx,reset"}
    route:
    - destination: {host: order-service, subset: v2, port: {number: 8080}}
      weight: 100
"#;

fn errors_of(yaml: &str) -> Vec<String> {
    validate(&documents(yaml).remove(0)).unwrap()
}

#[test]
fn a_valid_document_has_no_errors() {
    assert_eq!(errors_of(GOOD_VS), Vec::<String>::new());
}

#[test]
fn a_policy_without_spec_is_valid_as_in_istio() {
    let ap = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
              metadata: {name: allow-nothing}\n";
    assert_eq!(errors_of(ap), Vec::<String>::new());
}

#[test]
fn unknown_field_is_rejected_with_its_name() {
    let errors = errors_of(&GOOD_VS.replace("timeout: 10s", "timeoutt: 10s"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("/spec/http/0: "), "{errors:?}");
    assert!(errors[0].contains("'timeoutt'"), "{errors:?}");
}

#[test]
fn wrong_type_is_rejected_with_its_path() {
    let errors = errors_of(&GOOD_VS.replace("attempts: 3", "attempts: three"));
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(
        errors[0].starts_with("/spec/http/0/retries/attempts: "),
        "{errors:?}"
    );
    assert!(
        errors[0].contains("\"three\" is not of type \"integer\""),
        "{errors:?}"
    );
    let errors = errors_of(&GOOD_VS.replace("timeout: 10s", "timeout: 10"));
    assert!(
        errors[0].starts_with("/spec/http/0/timeout: "),
        "{errors:?}"
    );
    let errors = errors_of(&GOOD_VS.replace("timeout: 10s", "timeout: 10 seconds"));
    assert!(
        errors[0].starts_with("/spec/http/0/timeout: "),
        "{errors:?}"
    );
    assert!(errors[0].contains("does not match"), "{errors:?}");
}

#[test]
fn bad_enum_value_is_rejected_with_its_path() {
    let pa = "apiVersion: security.istio.io/v1beta1\nkind: PeerAuthentication\n\
              metadata: {name: default}\nspec:\n  mtls: {mode: STRICTER}\n";
    let errors = errors_of(pa);
    assert_eq!(errors.len(), 1, "{errors:?}");
    assert!(errors[0].starts_with("/spec/mtls/mode: "), "{errors:?}");
    assert!(errors[0].contains("STRICTER"), "{errors:?}");
    let ap = "apiVersion: security.istio.io/v1\nkind: AuthorizationPolicy\n\
              metadata: {name: a}\nspec:\n  action: REJECT\n";
    let errors = errors_of(ap);
    assert!(errors[0].starts_with("/spec/action: "), "{errors:?}");
}

#[test]
fn port_keys_and_exclusive_matches_follow_istio() {
    let pa = "apiVersion: security.istio.io/v1\nkind: PeerAuthentication\n\
              metadata: {name: p}\nspec:\n  portLevelMtls:\n    8080: {mode: DISABLE}\n";
    assert_eq!(errors_of(pa), Vec::<String>::new());
    let both = GOOD_VS.replace(r#"{regex: ".*[02468]$"}"#, "{exact: a, prefix: b}");
    let errors = errors_of(&both);
    assert!(
        errors
            .iter()
            .any(|e| e.starts_with("/spec/http/0/match/0/headers/x-user-id: ")),
        "{errors:?}"
    );
}

#[test]
fn istio_fields_meshwork_ignores_are_accepted_and_warned_about() {
    let dr = "apiVersion: networking.istio.io/v1\nkind: DestinationRule\n\
              metadata: {name: d, namespace: production}\nspec:\n  host: a\n  trafficPolicy:\n    \
              retryBudget: {percent: 20}\n    tls: {mode: SIMPLE, caCrl: /etc/crl.pem}\n";
    assert_eq!(errors_of(dr), Vec::<String>::new());
    let parsed = meshwork_api::parse_file(Path::new("dr.yaml"), dr, "default");
    assert_eq!(parsed.errors().count(), 0);
    let warned: Vec<&str> = parsed.warnings().map(|w| w.field.as_str()).collect();
    assert_eq!(
        warned,
        [
            "spec.trafficPolicy.retryBudget",
            "spec.trafficPolicy.tls.caCrl"
        ]
    );
}

#[test]
fn chart_crds_match_the_generator() {
    let path = Path::new(concat!(
        env!("CARGO_MANIFEST_DIR"),
        "/../charts/meshwork/templates/crds.yaml"
    ));
    let committed = std::fs::read_to_string(path).unwrap_or_default();
    let generated = chart_template(&istio_crds().unwrap()).unwrap();
    assert!(
        committed == generated,
        "{} is out of date; regenerate it with\n  cargo run -q -p meshwork-controlplane \
         --bin controlplane -- crds --output chart > charts/meshwork/templates/crds.yaml",
        path.display()
    );
}

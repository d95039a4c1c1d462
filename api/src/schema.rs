//! JSON Schema support for the Istio types (derived with `schemars`): the few types with
//! hand-written serde impls, and helpers named in `#[schemars(...)]` field attributes.
//!
//! The derived schemas describe what the serde types accept, plus the `istio_only_*` fields:
//! parts of Istio's API the types do not model (ignored with a warning when parsing) that a
//! CRD must still accept. [`crate::crd`] turns them into Kubernetes structural schemas.

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};
use serde_json::{json, Map, Value};

use crate::duration::Duration;

/// Pattern of the duration strings [`Duration`] parses: one or more `<number><unit>` pairs
/// (`10s`, `1.5s`, `100ms`, `1h30m`).
pub const DURATION_PATTERN: &str = r"^\+?(([0-9]+\.?[0-9]*|\.[0-9]+)(ns|us|µs|ms|s|m|h))+$";

impl JsonSchema for Duration {
    fn schema_name() -> Cow<'static, str> {
        "Duration".into()
    }

    fn inline_schema() -> bool {
        true
    }

    fn json_schema(_: &mut SchemaGenerator) -> Schema {
        json_schema!({
            "type": "string",
            "description": "Duration such as \"10s\", \"1.5s\", \"100ms\" or \"1h30m\".",
            "pattern": DURATION_PATTERN,
        })
    }
}

/// Schema of an optional field as its value's own schema, without schemars' `null`
/// alternative (an `anyOf` a structural CRD schema may not carry): the field is optional by
/// being left out of `required`.
pub fn optional<T: schemars::JsonSchema>(
    generator: &mut schemars::SchemaGenerator,
) -> schemars::Schema {
    T::json_schema(generator)
}

/// Schema of a field kept in its raw YAML form ([`crate::networking::Raw`]): any object,
/// unknown fields preserved.
pub fn raw_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
}

/// Adds to a struct's schema fields of Istio's API that Meshwork does not interpret. The
/// parser ignores them with a warning; the CRDs must still accept (and store) them, or an
/// Istio manifest that sets one would not apply unchanged.
fn istio_only(schema: &mut Schema, fields: &[(&str, Value)]) {
    let Some(props) = schema
        .ensure_object()
        .entry("properties")
        .or_insert_with(|| Value::Object(Map::new()))
        .as_object_mut()
    else {
        return;
    };
    for (name, field) in fields {
        props
            .entry(name.to_string())
            .or_insert_with(|| field.clone());
    }
}

fn string() -> Value {
    json!({"type": "string"})
}

fn boolean() -> Value {
    json!({"type": "boolean"})
}

/// An object Meshwork keeps as written.
fn object() -> Value {
    json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
}

/// `HTTPRoute.mirror_percent` (Istio's legacy snake_case spelling of `mirrorPercent`).
pub fn istio_only_http_route(s: &mut Schema) {
    let uint32 = json!({"type": "integer", "minimum": 0, "maximum": u32::MAX});
    istio_only(s, &[("mirror_percent", uint32)]);
}

pub fn istio_only_http_retry(s: &mut Schema) {
    istio_only(s, &[("retryIgnorePreviousHosts", boolean())]);
}

pub fn istio_only_l4_match(s: &mut Schema) {
    istio_only(s, &[("sourceSubnet", string())]);
}

pub fn istio_only_traffic_policy(s: &mut Schema) {
    istio_only(s, &[("retryBudget", object())]);
}

pub fn istio_only_outlier_detection(s: &mut Schema) {
    let codes =
        json!({"type": "array", "items": {"type": "integer", "minimum": 100, "maximum": 599}});
    istio_only(s, &[("outlierDetectionHttpErrorCodes", codes)]);
}

pub fn istio_only_client_tls(s: &mut Schema) {
    istio_only(s, &[("caCrl", string())]);
}

pub fn istio_only_tracing(s: &mut Schema) {
    istio_only(
        s,
        &[
            ("disableContextPropagation", boolean()),
            ("enableIstioTags", boolean()),
        ],
    );
}

pub fn istio_only_custom_tag(s: &mut Schema) {
    istio_only(s, &[("formatter", object())]);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn duration_pattern_matches_what_the_parser_accepts() {
        let re = regex::Regex::new(DURATION_PATTERN).unwrap();
        for ok in [
            "10s", "1.5s", "100ms", "1m", "1h30m", "0.001s", "+3s", "5us", "1.s",
        ] {
            assert!(re.is_match(ok), "{ok}");
            assert!(ok.parse::<Duration>().is_ok(), "{ok}");
        }
        for bad in ["10", "10x", "-1s", "", "s", "1..2s", "1 s"] {
            assert!(!re.is_match(bad), "{bad}");
            assert!(bad.parse::<Duration>().is_err(), "{bad}");
        }
    }

    #[test]
    fn istio_only_fields_extend_the_derived_properties() {
        let schema = schemars::schema_for!(crate::security::Source);
        let props = schema.get("properties").unwrap();
        assert!(props.get("principals").is_some());
        assert_eq!(props["trustDomains"]["items"], json!({"type": "string"}));
        let tls = schemars::schema_for!(crate::networking::ClientTlsSettings);
        assert_eq!(tls.get("properties").unwrap()["caCrl"], string());
    }

    #[test]
    fn duration_schema_is_a_string() {
        let schema = schemars::schema_for!(Duration);
        assert_eq!(schema.get("type"), Some(&serde_json::json!("string")));
    }
}

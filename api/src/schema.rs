//! JSON Schema support for the Istio types (derived with `schemars`): the few types with
//! hand-written serde impls, and helpers named in `#[schemars(...)]` field attributes.
//!
//! The derived schemas describe exactly what the serde types accept; the control plane turns
//! them into Kubernetes structural schemas for its CRDs (`controlplane crds`).

use std::borrow::Cow;

use schemars::{json_schema, JsonSchema, Schema, SchemaGenerator};

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

/// Schema of a field kept in its raw YAML form ([`crate::networking::Raw`]): any object,
/// unknown fields preserved.
pub fn raw_object(_: &mut SchemaGenerator) -> Schema {
    json_schema!({
        "type": "object",
        "x-kubernetes-preserve-unknown-fields": true,
    })
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
    fn duration_schema_is_a_string() {
        let schema = schemars::schema_for!(Duration);
        assert_eq!(schema.get("type"), Some(&serde_json::json!("string")));
    }
}

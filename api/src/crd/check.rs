//! Checks a schema against the Kubernetes structural-schema rules.
//!
//! Kubernetes (`apiextensions.k8s.io/v1`) accepts only structural schemas: no `$ref` or
//! `definitions`, a `type` on every node (unless it is `x-kubernetes-int-or-string` or
//! `x-kubernetes-preserve-unknown-fields`), `allOf`/`anyOf`/`oneOf`/`not` only as pure
//! value validations (no types, descriptions or defaults inside them), `properties` and
//! `additionalProperties` not together, and only the OpenAPI keywords the API server knows.
//! [`violations`] lists every rule a schema breaks, naming the field.

use serde_json::Value;

/// Keywords of `JSONSchemaProps` that Kubernetes accepts in a structural schema.
const ALLOWED_KEYWORDS: &[&str] = &[
    "description",
    "type",
    "format",
    "maximum",
    "minimum",
    "exclusiveMaximum",
    "exclusiveMinimum",
    "maxLength",
    "minLength",
    "pattern",
    "maxItems",
    "minItems",
    "multipleOf",
    "enum",
    "maxProperties",
    "minProperties",
    "required",
    "items",
    "allOf",
    "oneOf",
    "anyOf",
    "not",
    "properties",
    "additionalProperties",
    "nullable",
    "example",
    "externalDocs",
    "x-kubernetes-preserve-unknown-fields",
    "x-kubernetes-int-or-string",
    "x-kubernetes-embedded-resource",
    "x-kubernetes-list-type",
    "x-kubernetes-list-map-keys",
    "x-kubernetes-map-type",
    "x-kubernetes-validations",
];

/// Keywords allowed inside `allOf`/`anyOf`/`oneOf`/`not` (value validations only).
pub(crate) const JUNCTOR_KEYWORDS: &[&str] = &[
    "required",
    "not",
    "anyOf",
    "allOf",
    "oneOf",
    "enum",
    "pattern",
    "minimum",
    "maximum",
    "minLength",
    "maxLength",
    "minItems",
    "maxItems",
];

pub(crate) fn display_path(path: &str) -> String {
    if path.is_empty() {
        "<root>".to_string()
    } else {
        path.to_string()
    }
}

pub(crate) fn join(path: &str, name: &str) -> String {
    if path.is_empty() {
        name.to_string()
    } else {
        format!("{path}.{name}")
    }
}

pub(crate) fn check_junctor_member(m: &Value) -> Result<(), String> {
    let Some(obj) = m.as_object() else {
        return Err(format!("`{m}` is not a value validation"));
    };
    for (k, v) in obj {
        if !JUNCTOR_KEYWORDS.contains(&k.as_str()) {
            return Err(format!(
                "\"{k}\" is not allowed inside allOf/anyOf/oneOf/not"
            ));
        }
        match (k.as_str(), v) {
            ("not", inner) => check_junctor_member(inner)?,
            ("anyOf" | "allOf" | "oneOf", Value::Array(inner)) => {
                inner.iter().try_for_each(check_junctor_member)?
            }
            _ => {}
        }
    }
    Ok(())
}
/// One reason the API server would reject a schema.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Violation {
    /// Dotted field path (`http[].route[].weight`), `<root>` for the root.
    pub path: String,
    pub problem: String,
}

/// Every structural-schema rule `schema` breaks (empty when it is structural).
pub fn violations(schema: &Value) -> Vec<Violation> {
    let mut out = Vec::new();
    check_node(schema, "", &mut out);
    out
}

fn check_node(node: &Value, path: &str, out: &mut Vec<Violation>) {
    let mut push = |problem: String| {
        out.push(Violation {
            path: display_path(path),
            problem,
        })
    };
    let Some(obj) = node.as_object() else {
        push(format!("schema `{node}` is not an object"));
        return;
    };
    for key in obj.keys() {
        if !ALLOWED_KEYWORDS.contains(&key.as_str()) {
            push(format!("keyword \"{key}\" is not allowed"));
        }
    }
    let preserve = obj.get("x-kubernetes-preserve-unknown-fields") == Some(&Value::Bool(true));
    let int_or_string = obj.get("x-kubernetes-int-or-string") == Some(&Value::Bool(true));
    match obj.get("type") {
        Some(Value::String(t))
            if ["object", "array", "string", "integer", "number", "boolean"]
                .contains(&t.as_str()) =>
        {
            if int_or_string {
                push("x-kubernetes-int-or-string nodes must not set a type".into());
            }
        }
        Some(other) => push(format!("type {other} is not a single OpenAPI type")),
        None if preserve || int_or_string => {}
        None => push("node has no type".into()),
    }
    if obj.contains_key("properties") && obj.contains_key("additionalProperties") {
        push("properties and additionalProperties are mutually exclusive".into());
    }
    if let Some(Value::Object(props)) = obj.get("properties") {
        for (name, prop) in props {
            check_node(prop, &join(path, name), out);
        }
    }
    if let Some(items) = obj.get("items") {
        check_node(items, &format!("{path}[]"), out);
    }
    match obj.get("additionalProperties") {
        Some(Value::Object(_)) => {
            check_node(&obj["additionalProperties"], &join(path, "*"), out);
        }
        Some(other) => out.push(Violation {
            path: display_path(path),
            problem: format!("additionalProperties must be a schema, not {other}"),
        }),
        None => {}
    }
    for junctor in ["allOf", "anyOf", "oneOf"] {
        if let Some(members) = obj.get(junctor) {
            let ok = match members {
                Value::Array(ms) => {
                    let int_or_string_any = junctor == "anyOf" && int_or_string;
                    ms.iter().all(|m| {
                        int_or_string_any
                            && matches!(
                                m.get("type").and_then(Value::as_str),
                                Some("integer" | "string")
                            )
                            && m.as_object().is_some_and(|o| o.len() == 1)
                            || check_junctor_member(m).is_ok()
                    })
                }
                _ => false,
            };
            if !ok {
                out.push(Violation {
                    path: display_path(path),
                    problem: format!("{junctor} holds more than value validations"),
                });
            }
        }
    }
    if let Some(not) = obj.get("not") {
        if let Err(problem) = check_junctor_member(not) {
            out.push(Violation {
                path: display_path(path),
                problem,
            });
        }
    }
}
#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    #[test]
    fn violations_name_the_field() {
        let bad = json!({"type": "object", "properties": {
            "spec": {"type": "object", "properties": {
                "x": {"$ref": "#/definitions/X"},
                "y": {"type": "object", "properties": {}, "additionalProperties": {"type": "string"}},
                "z": {"type": ["string", "null"]},
            }},
        }});
        let v = violations(&bad);
        let paths: Vec<(&str, &str)> = v
            .iter()
            .map(|v| (v.path.as_str(), v.problem.as_str()))
            .collect();
        assert!(
            paths.contains(&("spec.x", "keyword \"$ref\" is not allowed")),
            "{paths:?}"
        );
        assert!(paths.contains(&("spec.x", "node has no type")), "{paths:?}");
        assert!(
            paths
                .iter()
                .any(|(p, m)| *p == "spec.y" && m.contains("mutually exclusive")),
            "{paths:?}"
        );
        assert!(
            paths
                .iter()
                .any(|(p, m)| *p == "spec.z" && m.contains("single")),
            "{paths:?}"
        );
        assert!(violations(
            &json!({"type": "object", "x-kubernetes-preserve-unknown-fields": true})
        )
        .is_empty());
    }
}

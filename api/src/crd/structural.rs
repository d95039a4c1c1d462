//! Rewrites a `schemars` JSON Schema into a Kubernetes *structural* schema (the rules are
//! in [`super::check`]).
//!
//! [`make_structural`] inlines references and turns the shapes `schemars` emits for
//! `Option<T>` (`type: [T, null]`, `anyOf: [T, {type: null}]`) and for unit enums with
//! documented variants (`oneOf` of `const`s) into their structural forms, keeps pure value
//! validations (`oneOf` of `required` sets, as Istio uses for exclusive fields) and drops
//! `format`s the API server does not know. Defaults are dropped: the API server would write
//! them into stored objects, which Istio's CRDs never do; so are descriptions (the Rust doc
//! comments they come from address Rust readers). The result must pass
//! [`super::check::violations`], or generation fails naming the field.

use serde_json::{Map, Value};

use super::check::{check_junctor_member, display_path, join, violations};
use super::CrdError;

/// `format` values the API server understands; others (e.g. `uint32`) are dropped.
const KNOWN_FORMATS: &[&str] = &[
    "int32",
    "int64",
    "float",
    "double",
    "byte",
    "date",
    "date-time",
    "password",
];

/// Keywords `schemars` emits that have no place in a CRD schema.
const DROPPED_KEYWORDS: &[&str] = &[
    "$schema",
    "$id",
    "$comment",
    "title",
    // Doc comments of the Rust types are written for Rust readers, not `kubectl explain`.
    "description",
    "default",
    "examples",
    "deprecated",
    "readOnly",
    "writeOnly",
    "propertyNames",
];

/// `$ref` chains deeper than this are treated as recursive types, which a structural
/// schema cannot express.
const MAX_DEPTH: usize = 64;

/// Turns a root schema from `schemars` into a structural schema. `what` names the schema
/// in errors (e.g. `VirtualService.spec`).
pub fn make_structural(root: Value, what: &str) -> Result<Value, CrdError> {
    let Value::Object(mut root) = root else {
        return Err(not_structural(what, "", "the root schema is not an object"));
    };
    let mut defs = Map::new();
    for key in ["$defs", "definitions"] {
        if let Some(Value::Object(d)) = root.remove(key) {
            defs.extend(d);
        }
    }
    let ctx = Ctx { defs: &defs, what };
    let out = ctx.rewrite(Value::Object(root), "", 0)?;
    let problems = violations(&out);
    match problems.into_iter().next() {
        Some(p) => Err(CrdError::NotStructural {
            schema: what.to_string(),
            path: p.path,
            problem: p.problem,
        }),
        None => Ok(out),
    }
}

fn not_structural(what: &str, path: &str, problem: impl Into<String>) -> CrdError {
    CrdError::NotStructural {
        schema: what.to_string(),
        path: display_path(path),
        problem: problem.into(),
    }
}

struct Ctx<'a> {
    defs: &'a Map<String, Value>,
    what: &'a str,
}

impl Ctx<'_> {
    fn rewrite(&self, node: Value, path: &str, depth: usize) -> Result<Value, CrdError> {
        if depth > MAX_DEPTH {
            return Err(not_structural(
                self.what,
                path,
                "schema references nest too deep (recursive type?)",
            ));
        }
        let Value::Object(mut node) = node else {
            return Err(not_structural(
                self.what,
                path,
                format!("schema is `{node}`, not an object with a type"),
            ));
        };
        if let Some(reference) = node.remove("$ref") {
            let target = self.resolve(&reference, path)?;
            // Keywords beside `$ref` (e.g. a field's description) win over the target's.
            let mut merged = target;
            merged.extend(node);
            return self.rewrite(Value::Object(merged), path, depth + 1);
        }
        for key in DROPPED_KEYWORDS {
            node.remove(*key);
        }
        if let Some(c) = node.remove("const") {
            node.insert("enum".into(), Value::Array(vec![c]));
        }
        self.simplify_type(&mut node, path)?;
        self.simplify_format(&mut node);
        for junctor in ["anyOf", "oneOf"] {
            if let Some(Value::Array(members)) = node.remove(junctor) {
                self.simplify_union(&mut node, junctor, members, path, depth)?;
            }
        }
        if let Some(Value::Object(props)) = node.remove("properties") {
            let mut out = Map::new();
            for (name, prop) in props {
                let p = join(path, &name);
                out.insert(name, self.rewrite(prop, &p, depth + 1)?);
            }
            node.insert("properties".into(), Value::Object(out));
        }
        if let Some(items) = node.remove("items") {
            let p = format!("{path}[]");
            node.insert("items".into(), self.rewrite(items, &p, depth + 1)?);
        }
        match node.remove("additionalProperties") {
            Some(Value::Bool(true)) => {
                node.insert("x-kubernetes-preserve-unknown-fields".into(), true.into());
            }
            Some(Value::Bool(false)) | None => {}
            Some(additional) => {
                let p = join(path, "*");
                node.insert(
                    "additionalProperties".into(),
                    self.rewrite(additional, &p, depth + 1)?,
                );
            }
        }
        Ok(Value::Object(node))
    }

    fn resolve(&self, reference: &Value, path: &str) -> Result<Map<String, Value>, CrdError> {
        let name = reference
            .as_str()
            .and_then(|r| {
                r.strip_prefix("#/$defs/")
                    .or_else(|| r.strip_prefix("#/definitions/"))
            })
            .ok_or_else(|| {
                not_structural(self.what, path, format!("unsupported $ref {reference}"))
            })?;
        match self.defs.get(name) {
            Some(Value::Object(target)) => Ok(target.clone()),
            _ => Err(not_structural(
                self.what,
                path,
                format!("$ref to unknown definition \"{name}\""),
            )),
        }
    }

    /// `type: [T, "null"]` → `type: T`.
    fn simplify_type(&self, node: &mut Map<String, Value>, path: &str) -> Result<(), CrdError> {
        let Some(Value::Array(types)) = node.get("type") else {
            return Ok(());
        };
        let types: Vec<&str> = types
            .iter()
            .filter_map(Value::as_str)
            .filter(|t| *t != "null")
            .collect();
        match types.as_slice() {
            [single] => {
                let single = single.to_string();
                node.insert("type".into(), single.into());
                Ok(())
            }
            _ => Err(not_structural(
                self.what,
                path,
                format!("a node must have exactly one type, not {types:?}"),
            )),
        }
    }

    /// Drops formats the API server does not know, keeping their range as min/max.
    fn simplify_format(&self, node: &mut Map<String, Value>) {
        let Some(format) = node
            .get("format")
            .and_then(Value::as_str)
            .map(str::to_string)
        else {
            return;
        };
        let format = format.as_str();
        if KNOWN_FORMATS.contains(&format) {
            return;
        }
        let max = match format {
            "uint8" => Some(u64::from(u8::MAX)),
            "uint16" => Some(u64::from(u16::MAX)),
            "uint32" => Some(u64::from(u32::MAX)),
            _ => None,
        };
        if let Some(max) = max {
            node.entry("maximum").or_insert(max.into());
        }
        if format.starts_with("uint") {
            node.entry("minimum").or_insert(0.into());
        }
        node.remove("format");
    }

    fn simplify_union(
        &self,
        node: &mut Map<String, Value>,
        junctor: &str,
        members: Vec<Value>,
        path: &str,
        depth: usize,
    ) -> Result<(), CrdError> {
        let members: Vec<Value> = members.into_iter().filter(|m| !is_null_type(m)).collect();
        // Option<T>: the one remaining member is the schema; the node's own keywords
        // (description) win.
        if let [only] = members.as_slice() {
            if only.get("$ref").is_some() || only.get("type").is_some() {
                let resolved = self.rewrite(only.clone(), path, depth + 1)?;
                if let Value::Object(resolved) = resolved {
                    for (k, v) in resolved {
                        node.entry(k).or_insert(v);
                    }
                }
                return Ok(());
            }
        }
        // Unit enum with documented variants: a union of constants.
        if !members.is_empty() && members.iter().all(is_constant) {
            let mut values = Vec::new();
            let mut ty = None;
            for m in &members {
                if let Some(t) = m.get("type") {
                    ty = Some(t.clone());
                }
                match (m.get("const"), m.get("enum")) {
                    (Some(c), _) => values.push(c.clone()),
                    (None, Some(Value::Array(e))) => values.extend(e.iter().cloned()),
                    _ => {}
                }
            }
            let ty = ty.unwrap_or_else(|| json_type_of(&values).into());
            node.entry("type").or_insert(ty);
            node.insert("enum".into(), Value::Array(values));
            return Ok(());
        }
        // An integer-or-string field.
        let types: Vec<&str> = members
            .iter()
            .filter_map(|m| m.get("type").and_then(Value::as_str))
            .collect();
        if members.len() == 2 && types.contains(&"integer") && types.contains(&"string") {
            node.remove("type");
            node.insert("x-kubernetes-int-or-string".into(), true.into());
            node.insert(
                "anyOf".into(),
                serde_json::json!([{"type": "integer"}, {"type": "string"}]),
            );
            return Ok(());
        }
        // Otherwise it must be a pure value validation (e.g. "at most one of").
        for (i, m) in members.iter().enumerate() {
            check_junctor_member(m).map_err(|problem| {
                not_structural(self.what, &format!("{path}.{junctor}[{i}]"), problem)
            })?;
        }
        node.insert(junctor.into(), Value::Array(members));
        Ok(())
    }
}

fn is_null_type(v: &Value) -> bool {
    v.get("type").and_then(Value::as_str) == Some("null")
        || v.get("const").is_some_and(Value::is_null)
}

fn is_constant(v: &Value) -> bool {
    let Some(obj) = v.as_object() else {
        return false;
    };
    (obj.contains_key("const") || obj.contains_key("enum"))
        && obj
            .keys()
            .all(|k| matches!(k.as_str(), "const" | "enum" | "type" | "description"))
}

fn json_type_of(values: &[Value]) -> &'static str {
    if values.iter().all(Value::is_string) {
        "string"
    } else if values.iter().all(Value::is_i64) {
        "integer"
    } else {
        "number"
    }
}

#[cfg(test)]
mod tests {
    use serde_json::json;

    use super::*;

    fn structural(v: Value) -> Value {
        make_structural(v, "Test.spec").unwrap()
    }

    #[test]
    fn refs_are_inlined_and_option_null_is_dropped() {
        let out = structural(json!({
            "$schema": "https://json-schema.org/draft/2020-12/schema",
            "title": "Spec",
            "type": "object",
            "properties": {
                "a": {"anyOf": [{"$ref": "#/$defs/Inner"}, {"type": "null"}], "maxProperties": 3},
                "b": {"type": ["string", "null"], "default": null},
                "c": {"type": "integer", "format": "uint32", "minimum": 0},
            },
            "$defs": {"Inner": {"type": "object", "description": "inner", "maxProperties": 9,
                "properties": {"x": {"type": "boolean"}}}},
        }));
        assert_eq!(
            out,
            json!({
                "type": "object",
                "properties": {
                    "a": {"type": "object", "maxProperties": 3,
                          "properties": {"x": {"type": "boolean"}}},
                    "b": {"type": "string"},
                    "c": {"type": "integer", "minimum": 0, "maximum": 4294967295u64},
                },
            })
        );
    }

    #[test]
    fn documented_unit_enums_become_string_enums() {
        let out = structural(json!({"oneOf": [
            {"const": "UNSET", "type": "string", "description": "Inherit."},
            {"enum": ["DISABLE", "STRICT"], "type": "string"},
        ]}));
        assert_eq!(
            out,
            json!({"type": "string", "enum": ["UNSET", "DISABLE", "STRICT"]})
        );
    }

    #[test]
    fn integer_or_string_unions_use_the_kubernetes_marker() {
        let out = structural(json!({"anyOf": [{"type": "integer"}, {"type": "string"}]}));
        assert_eq!(out["x-kubernetes-int-or-string"], json!(true));
        assert!(out.get("type").is_none());
        assert!(violations(&out).is_empty(), "{:?}", violations(&out));
    }

    #[test]
    fn exclusive_field_validations_are_kept() {
        let one_of = json!([
            {"not": {"anyOf": [{"required": ["exact"]}, {"required": ["prefix"]}]}},
            {"required": ["exact"]},
            {"required": ["prefix"]},
        ]);
        let out = structural(json!({"type": "object", "oneOf": one_of.clone(),
            "properties": {"exact": {"type": "string"}, "prefix": {"type": "string"}}}));
        assert_eq!(out["oneOf"], one_of);
    }

    #[test]
    fn untyped_nodes_unknown_refs_and_recursion_are_errors() {
        let e = make_structural(
            json!({"type": "object", "properties": {"free": {}}}),
            "Test.spec",
        )
        .unwrap_err();
        assert_eq!(
            e.to_string(),
            "schema Test.spec is not structural at free: node has no type"
        );
        let e = make_structural(json!({"$ref": "#/$defs/Missing"}), "Test.spec").unwrap_err();
        assert!(
            e.to_string().contains("unknown definition \"Missing\""),
            "{e}"
        );
        let recursive = json!({
            "$ref": "#/$defs/Node",
            "$defs": {"Node": {"type": "object", "properties": {"next": {"$ref": "#/$defs/Node"}}}},
        });
        let e = make_structural(recursive, "Test.spec").unwrap_err();
        assert!(e.to_string().contains("recursive"), "{e}");
        let e = make_structural(
            json!({"type": "object", "anyOf": [{"type": "object", "properties": {}}, {"type": "string"}]}),
            "Test.spec",
        )
        .unwrap_err();
        assert!(e.to_string().contains("not allowed inside"), "{e}");
    }
}

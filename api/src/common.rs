//! Small types shared by several Istio kinds.

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

/// A regular expression (RE2 syntax as Istio documents it) that is known to compile.
///
/// Deserializing fails with `regex parse error: ...` when the pattern does not compile, so
/// the error carries the exact field path of the offending pattern.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash, Default, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct RegexString(pub String);

impl RegexString {
    pub fn as_str(&self) -> &str {
        &self.0
    }
}

/// Largest compiled regex accepted, in bytes: the waypoint's limit for the patterns it
/// compiles, so the control plane never publishes a pattern every waypoint would refuse
/// (a refused route makes the waypoint NACK the whole snapshot).
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// Compiles `pattern` within [`REGEX_SIZE_LIMIT`] (alone, and anchored as the waypoint
/// matches it), turning the multi-line `regex` error into one line.
pub fn check_regex(pattern: &str) -> Result<(), String> {
    let compile = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
    };
    compile(pattern)
        .and_then(|_| compile(&format!("^(?:{pattern})$")))
        .map(|_| ())
        .map_err(|e| {
            let text = e.to_string();
            let detail = text
                .lines()
                .rev()
                .find(|l| l.trim_start().starts_with("error:"))
                .map(|l| l.trim().trim_start_matches("error:").trim().to_string())
                .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "));
            format!("regex parse error: \"{pattern}\": {detail}")
        })
}

impl<'de> Deserialize<'de> for RegexString {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = RegexString;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a regular expression string")
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<RegexString, E> {
                check_regex(v).map_err(E::custom)?;
                Ok(RegexString(v.to_string()))
            }
        }
        d.deserialize_str(V)
    }
}

/// Istio `StringMatch`: exactly one of exact / prefix / regex.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(extend("oneOf" = [
    {"not": {"anyOf": [{"required": ["exact"]}, {"required": ["prefix"]}, {"required": ["regex"]}]}},
    {"required": ["exact"]},
    {"required": ["prefix"]},
    {"required": ["regex"]},
]))]
pub struct StringMatch {
    pub exact: Option<String>,
    pub prefix: Option<String>,
    pub regex: Option<RegexString>,
}

impl StringMatch {
    /// Number of match kinds set (valid values have at most one).
    pub fn kinds_set(&self) -> usize {
        usize::from(self.exact.is_some())
            + usize::from(self.prefix.is_some())
            + usize::from(self.regex.is_some())
    }
}

/// Istio `Percent` (`{value: 10.5}`).
#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct Percent {
    pub value: f64,
}

/// Istio `WorkloadSelector`.
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct WorkloadSelector {
    pub match_labels: BTreeMap<String, String>,
}

impl WorkloadSelector {
    /// True when every selector label is present with the same value in `labels`.
    pub fn matches(&self, labels: &BTreeMap<String, String>) -> bool {
        label_selector_matches(&self.match_labels, labels)
    }
}

/// True when every `selector` label is present with the same value in `labels`.
pub fn label_selector_matches(
    selector: &BTreeMap<String, String>,
    labels: &BTreeMap<String, String>,
) -> bool {
    selector.iter().all(|(k, v)| labels.get(k) == Some(v))
}

/// Istio `PolicyTargetReference` (also used by Telemetry).
#[derive(Debug, Clone, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct PolicyTargetReference {
    pub group: String,
    pub kind: String,
    pub name: String,
    pub namespace: String,
}

/// Istio `PortSelector`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default)]
pub struct PortSelector {
    pub number: u32,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn regex_errors_are_one_line() {
        let e = check_regex("^[0-9").unwrap_err();
        assert!(e.starts_with("regex parse error: \"^[0-9\""), "{e}");
        assert!(!e.contains('\n'), "{e}");
        assert!(check_regex("^[0-9]*[02468]$").is_ok());
    }

    #[test]
    fn regexes_over_the_waypoint_size_limit_are_refused() {
        let e = check_regex("a{100000}").unwrap_err();
        assert!(e.contains("size limit"), "{e}");
        assert!(check_regex("a{1000}").is_ok());
        // An unbalanced group is a syntax error even though the anchored form balances it.
        assert!(check_regex("a)|(b").is_err());
    }

    #[test]
    fn selector_matching() {
        let sel: BTreeMap<_, _> = [("app".to_string(), "a".to_string())].into();
        let mut labels = sel.clone();
        labels.insert("version".into(), "v1".into());
        assert!(label_selector_matches(&sel, &labels));
        assert!(!label_selector_matches(&labels, &sel));
        assert!(label_selector_matches(&BTreeMap::new(), &sel));
    }
}

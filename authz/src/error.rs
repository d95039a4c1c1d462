//! Errors found while compiling an `Authorization` into a matcher.

/// A bad value in an authorization policy. `policy` is `<ns>/<name>`, `rule` the rule index.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthzError {
    #[error("authorization policy {policy}: rules[{rule}].{field}: invalid IP block {value:?} (want an IP or a CIDR)")]
    InvalidIpBlock {
        policy: String,
        rule: usize,
        field: &'static str,
        value: String,
    },
    #[error("authorization policy {policy}: rules[{rule}].{field}: invalid port {value:?} (want 0-65535)")]
    InvalidPort {
        policy: String,
        rule: usize,
        field: &'static str,
        value: String,
    },
    #[error("authorization policy {policy}: rules[{rule}].{field}: invalid path template {value:?}: {reason}")]
    InvalidPathTemplate {
        policy: String,
        rule: usize,
        field: &'static str,
        value: String,
        reason: &'static str,
    },
    #[error("authorization policy {policy}: rules[{rule}].when: condition key {key:?} is not supported by Meshwork")]
    UnsupportedConditionKey {
        policy: String,
        rule: usize,
        key: String,
    },
    #[error("authorization policy {policy}: rules[{rule}].when: unknown condition key {key:?}")]
    UnknownConditionKey {
        policy: String,
        rule: usize,
        key: String,
    },
    #[error("authorization policy {policy}: rules[{rule}].when[{key}]: a condition needs values or notValues")]
    EmptyCondition {
        policy: String,
        rule: usize,
        key: String,
    },
}

//! One analysis result: severity, the resource it is about, what is wrong and how to fix it.

use std::fmt;
use std::path::Path;

use serde::Serialize;

/// How bad a finding is; `Error` makes `meshwork analyze` exit 1.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Severity {
    Error,
    Warning,
    Info,
}

impl fmt::Display for Severity {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.pad(match self {
            Severity::Error => "ERROR",
            Severity::Warning => "WARNING",
            Severity::Info => "INFO",
        })
    }
}

/// One finding. `resource` is `Kind ns/name` (or `Kind name` for cluster-scoped kinds).
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Serialize)]
pub struct Finding {
    pub severity: Severity,
    /// Short identifier of the check that produced it, e.g. `subset-no-destination-rule`.
    pub check: &'static str,
    /// Istio's message code (`IST0101`, ...) when `istioctl analyze` reports the same
    /// problem; absent for Meshwork-only findings (their `check` is their code).
    #[serde(skip_serializing_if = "Option::is_none")]
    pub code: Option<&'static str>,
    pub resource: String,
    /// File that defines the resource (empty when unknown).
    pub file: String,
    pub message: String,
    pub fix: String,
}

impl Finding {
    pub fn new(
        severity: Severity,
        check: &'static str,
        resource: String,
        file: Option<&Path>,
        message: impl Into<String>,
        fix: impl Into<String>,
    ) -> Self {
        Finding {
            severity,
            check,
            code: None,
            resource,
            file: file.map(|f| f.display().to_string()).unwrap_or_default(),
            message: message.into(),
            fix: fix.into(),
        }
    }
}

impl Finding {
    /// Tags the finding with Istio's message code for the same problem.
    pub fn with_code(mut self, code: &'static str) -> Self {
        self.code = Some(code);
        self
    }
}

/// `Kind ns/name`, or `Kind name` when there is no namespace.
pub fn resource_label(kind: &str, namespace: &str, name: &str) -> String {
    if namespace.is_empty() {
        format!("{kind} {name}")
    } else {
        format!("{kind} {namespace}/{name}")
    }
}

impl fmt::Display for Finding {
    /// `SEVERITY  Kind ns/name  [ISTxxxx] message (fix: ...)`.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let code = self.code.map(|c| format!("[{c}] ")).unwrap_or_default();
        write!(
            f,
            "{:<8} {}  {code}{} (fix: {})",
            self.severity, self.resource, self.message, self.fix
        )
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn human_line() {
        let f = Finding::new(
            Severity::Warning,
            "x",
            resource_label("Telemetry", "istio-system", "t"),
            None,
            "samples everything",
            "lower it",
        );
        assert_eq!(
            f.to_string(),
            "WARNING  Telemetry istio-system/t  samples everything (fix: lower it)"
        );
        assert_eq!(resource_label("Namespace", "", "a"), "Namespace a");
        let coded = f.clone().with_code("IST0109");
        assert!(
            coded
                .to_string()
                .contains("t  [IST0109] samples everything"),
            "{coded}"
        );
    }
}

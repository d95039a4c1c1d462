//! One analysis result: severity, the resource it is about, what is wrong and how to fix it.

use std::fmt;
use std::path::Path;

use serde::ser::SerializeStruct;
use serde::{Serialize, Serializer};

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
///
/// Serialized (`-o json|yaml`) with istioctl's message fields (`code`, `level`, `origin`,
/// `reference`, `message`, `documentationUrl`: Istio's `diag.Message.Unstructured`) beside
/// Meshwork's own (`severity`, `check`, `resource`, `file`, `fix`). A Meshwork-only
/// finding's `code` is its check name and it has no `documentationUrl`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord)]
pub struct Finding {
    pub severity: Severity,
    /// Short identifier of the check that produced it, e.g. `subset-no-destination-rule`.
    pub check: &'static str,
    /// Istio's message code (`IST0101`, ...) when `istioctl analyze` reports the same
    /// problem; absent for Meshwork-only findings (their `check` is their code).
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

/// Where istioctl's messages link for an Istio message code.
pub const ISTIO_ANALYSIS_DOCS: &str = "https://istio.io/latest/docs/reference/config/analysis";

impl Serialize for Finding {
    fn serialize<S: Serializer>(&self, s: S) -> Result<S::Ok, S::Error> {
        let mut st = s.serialize_struct("Finding", 11)?;
        st.serialize_field("code", self.code.unwrap_or(self.check))?;
        st.serialize_field(
            "level",
            match self.severity {
                Severity::Error => "Error",
                Severity::Warning => "Warning",
                Severity::Info => "Info",
            },
        )?;
        st.serialize_field("origin", &self.resource)?;
        st.serialize_field("reference", &self.file)?;
        st.serialize_field("message", &self.message)?;
        if let Some(code) = self.code {
            st.serialize_field(
                "documentationUrl",
                &format!("{ISTIO_ANALYSIS_DOCS}/{}/", code.to_ascii_lowercase()),
            )?;
        } else {
            st.skip_field("documentationUrl")?;
        }
        st.serialize_field("severity", &self.severity)?;
        st.serialize_field("check", self.check)?;
        st.serialize_field("resource", &self.resource)?;
        st.serialize_field("file", &self.file)?;
        st.serialize_field("fix", &self.fix)?;
        st.end()
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

    /// istioctl's `-o json` message fields, and Meshwork's.
    #[test]
    fn serialized_like_istioctl() {
        let f = Finding::new(
            Severity::Error,
            "x",
            resource_label("VirtualService", "default", "r"),
            Some(Path::new("dir/vs.yaml")),
            "Referenced host not found: \"a\"",
            "fix it",
        );
        let plain = serde_json::to_value(&f).unwrap();
        assert_eq!(plain["code"], "x");
        assert_eq!(plain["level"], "Error");
        assert_eq!(plain["origin"], "VirtualService default/r");
        assert_eq!(plain["reference"], "dir/vs.yaml");
        assert!(plain.get("documentationUrl").is_none());
        let coded = serde_json::to_value(f.with_code("IST0101")).unwrap();
        assert_eq!(coded["code"], "IST0101");
        assert_eq!(
            coded["documentationUrl"],
            "https://istio.io/latest/docs/reference/config/analysis/ist0101/"
        );
        assert_eq!(coded["severity"], "error");
        assert_eq!(coded["check"], "x");
        assert_eq!(coded["fix"], "fix it");
    }
}

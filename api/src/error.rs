//! Errors and warnings about user resources, each naming file, document, resource and field.

use std::fmt;
use std::path::PathBuf;

use crate::validate::printable;

/// One problem found in a resource file (used for both errors and warnings).
///
/// `Display` gives one line:
/// `seed/02.yaml:3 (doc 1): VirtualService production/order-service-vs: spec.http[1].timeout: invalid duration ...`
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, thiserror::Error)]
pub struct ApiError {
    pub file: PathBuf,
    /// 1-based index of the YAML document in the file (0 when not tied to a document).
    pub document: usize,
    /// 1-based line where the problem is (the document start when unknown; 0 if none).
    pub line: usize,
    /// Resource kind as written (may be empty when the document could not be read).
    pub kind: String,
    pub namespace: String,
    pub name: String,
    /// Field path, e.g. `spec.http[1].match[0].headers.x-user-id.regex`; empty for the whole document.
    pub field: String,
    pub message: String,
}

impl fmt::Display for ApiError {
    /// Every part is passed through [`printable`]: text from a hostile file (names, YAML
    /// excerpts in messages) cannot put control or bidi characters in a log line.
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        write!(f, "{}", printable(&self.file.display().to_string()))?;
        if self.line > 0 {
            write!(f, ":{}", self.line)?;
        }
        if self.document > 0 {
            write!(f, " (doc {})", self.document)?;
        }
        f.write_str(":")?;
        if !self.kind.is_empty() || !self.name.is_empty() {
            let kind = if self.kind.is_empty() {
                "<unknown kind>"
            } else {
                &self.kind
            };
            write!(f, " {} ", printable(kind))?;
            if !self.namespace.is_empty() {
                write!(f, "{}/", printable(&self.namespace))?;
            }
            let name = if self.name.is_empty() {
                "<unnamed>"
            } else {
                &self.name
            };
            write!(f, "{}:", printable(name))?;
        }
        if !self.field.is_empty() {
            write!(f, " {}:", printable(&self.field))?;
        }
        write!(f, " {}", printable(&self.message))
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn one_line_display() {
        let e = ApiError {
            file: "seed/02.yaml".into(),
            document: 1,
            line: 3,
            kind: "VirtualService".into(),
            namespace: "production".into(),
            name: "vs".into(),
            field: "spec.http[1].timeout".into(),
            message: "invalid duration".into(),
        };
        assert_eq!(
            e.to_string(),
            "seed/02.yaml:3 (doc 1): VirtualService production/vs: spec.http[1].timeout: invalid duration"
        );
    }
}

//! Istio's string matching for policy values: exact, `abc*` prefix, `*abc` suffix, `*` presence.

/// One compiled policy string.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum StrMatch {
    Exact(String),
    Prefix(String),
    Suffix(String),
    /// `*`: any non-empty value.
    Present,
}

impl StrMatch {
    pub fn parse(v: &str) -> Self {
        if v == "*" {
            StrMatch::Present
        } else if let Some(rest) = v.strip_prefix('*') {
            StrMatch::Suffix(rest.to_string())
        } else if let Some(rest) = v.strip_suffix('*') {
            StrMatch::Prefix(rest.to_string())
        } else {
            StrMatch::Exact(v.to_string())
        }
    }

    /// Lower-cased pattern, for case-insensitive fields (hosts).
    pub fn parse_lowercase(v: &str) -> Self {
        Self::parse(&v.to_ascii_lowercase())
    }

    pub fn matches(&self, value: &str) -> bool {
        match self {
            StrMatch::Exact(e) => value == e,
            StrMatch::Prefix(p) => value.starts_with(p.as_str()),
            StrMatch::Suffix(s) => value.ends_with(s.as_str()),
            StrMatch::Present => !value.is_empty(),
        }
    }
}

/// Matches when any pattern matches.
pub fn any_matches(patterns: &[StrMatch], value: &str) -> bool {
    patterns.iter().any(|p| p.matches(value))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn forms() {
        let cases = [
            ("abc", "abc", true),
            ("abc", "abcd", false),
            ("abc*", "abcd", true),
            ("abc*", "xabc", false),
            ("*abc", "xabc", true),
            ("*abc", "abcx", false),
            ("*", "x", true),
            ("*", "", false),
            ("a*b", "a*b", true),
            ("a*b", "axb", false),
            ("", "", true),
        ];
        for (pat, v, want) in cases {
            assert_eq!(StrMatch::parse(pat).matches(v), want, "{pat:?} vs {v:?}");
        }
        assert!(StrMatch::parse_lowercase("Foo.COM").matches("foo.com"));
    }
}

//! Object names and namespaces as Kubernetes checks them: a namespace is a DNS-1123 label,
//! a Service name a DNS-1035 label, every other name a DNS-1123 subdomain. Names reach
//! logs, metrics and proxy config, so a NUL or a bidi override never gets that far.

use crate::object::Kind;

/// Longest DNS-1123 / DNS-1035 label.
pub const MAX_LABEL: usize = 63;
/// Longest DNS-1123 subdomain.
pub const MAX_SUBDOMAIN: usize = 253;

/// What a name has to be.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum NameRule {
    /// `[a-z0-9]([-a-z0-9]*[a-z0-9])?`, at most 63 characters.
    Dns1123Label,
    /// Like a label, but starting with a letter (Service names).
    Dns1035Label,
    /// Labels joined by dots, at most 253 characters.
    Dns1123Subdomain,
}

impl NameRule {
    /// The rule Kubernetes applies to `metadata.name` of `kind`.
    pub fn for_name(kind: Kind) -> NameRule {
        match kind {
            Kind::Namespace => NameRule::Dns1123Label,
            Kind::Service => NameRule::Dns1035Label,
            _ => NameRule::Dns1123Subdomain,
        }
    }

    fn describe(self) -> &'static str {
        match self {
            NameRule::Dns1123Label => "a DNS-1123 label: lowercase letters, digits and '-', starting and ending with a letter or digit, at most 63 characters",
            NameRule::Dns1035Label => "a DNS-1035 label: lowercase letters, digits and '-', starting with a letter and ending with a letter or digit, at most 63 characters",
            NameRule::Dns1123Subdomain => "a DNS-1123 subdomain: lowercase letters, digits, '-' and '.', each dot-separated part starting and ending with a letter or digit, at most 253 characters",
        }
    }

    /// `Ok` when `name` follows the rule, else a message (the name is shown escaped, so
    /// control and bidi characters cannot reach a log line raw).
    pub fn check(self, name: &str) -> Result<(), String> {
        let ok = match self {
            NameRule::Dns1123Label => is_label(name, false),
            NameRule::Dns1035Label => is_label(name, true),
            NameRule::Dns1123Subdomain => {
                name.len() <= MAX_SUBDOMAIN && name.split('.').all(|l| is_label(l, false))
            }
        };
        if ok {
            Ok(())
        } else {
            Err(format!("\"{}\" is not {}", escaped(name), self.describe()))
        }
    }
}

fn is_label(s: &str, letter_first: bool) -> bool {
    let b = s.as_bytes();
    let alnum = |c: &u8| c.is_ascii_lowercase() || c.is_ascii_digit();
    !b.is_empty()
        && b.len() <= MAX_LABEL
        && b.iter().all(|c| alnum(c) || *c == b'-')
        && alnum(&b[0])
        && alnum(&b[b.len() - 1])
        && (!letter_first || b[0].is_ascii_lowercase())
}

/// Characters that must not reach a terminal or log line raw: controls (NUL, ESC, newline)
/// and the invisible formatting characters that reorder or hide text (bidi overrides and
/// isolates, zero-width characters, BOM).
fn is_hazard(c: char) -> bool {
    c.is_control()
        || matches!(c,
            '\u{061c}' | '\u{200b}'..='\u{200f}' | '\u{202a}'..='\u{202e}'
            | '\u{2060}'..='\u{2069}' | '\u{feff}')
}

/// `s` with hazardous characters escaped (`\u{0}`, `\u{202e}`); other text unchanged.
pub fn printable(s: &str) -> std::borrow::Cow<'_, str> {
    if !s.chars().any(is_hazard) {
        return s.into();
    }
    let mut out = String::with_capacity(s.len() + 8);
    for c in s.chars() {
        if is_hazard(c) {
            out.extend(c.escape_unicode());
        } else {
            out.push(c);
        }
    }
    out.into()
}

/// [`printable`], cut to a bounded length: for names quoted in error messages.
pub fn escaped(s: &str) -> String {
    const MAX: usize = 300;
    match s.char_indices().nth(MAX) {
        Some((cut, _)) => format!("{}...", printable(&s[..cut])),
        None => printable(s).into_owned(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn kubernetes_names_pass() {
        for n in [
            "a",
            "order-service",
            "v1.2.3",
            "0abc",
            "x".repeat(63).as_str(),
        ] {
            assert_eq!(NameRule::Dns1123Subdomain.check(n), Ok(()), "{n}");
        }
        assert!(NameRule::Dns1123Label.check("prod-1").is_ok());
        assert!(NameRule::Dns1035Label.check("svc-a").is_ok());
        let long_sub = [
            "a".repeat(63),
            "b".repeat(63),
            "c".repeat(63),
            "d".repeat(61),
        ]
        .join(".");
        assert_eq!(long_sub.len(), 253);
        assert!(NameRule::Dns1123Subdomain.check(&long_sub).is_ok());
    }

    #[test]
    fn hostile_and_malformed_names_fail() {
        let bad = [
            "",
            "evil\0name",
            "admin\u{202e}gnp.exe",
            "Order-Service",
            "-lead",
            "trail-",
            "a..b",
            "under_score",
            "sp ace",
            "ünï",
        ];
        for n in bad {
            assert!(NameRule::Dns1123Subdomain.check(n).is_err(), "{n:?}");
            assert!(NameRule::Dns1123Label.check(n).is_err(), "{n:?}");
        }
        assert!(NameRule::Dns1123Subdomain.check(&"a".repeat(254)).is_err());
        assert!(NameRule::Dns1123Label.check(&"a".repeat(64)).is_err());
        assert!(NameRule::Dns1123Label.check("a.b").is_err());
        assert!(NameRule::Dns1035Label.check("1svc").is_err());
    }

    #[test]
    fn messages_escape_control_and_bidi_characters() {
        let msg = NameRule::Dns1123Subdomain
            .check("a\0b\u{202e}c")
            .unwrap_err();
        assert!(!msg.contains('\0') && !msg.contains('\u{202e}'), "{msg:?}");
        assert!(msg.contains("a\\u{0}b\\u{202e}c"), "{msg}");
        assert!(escaped(&"x".repeat(1000)).len() < 320);
        assert_eq!(printable("plain ünï"), "plain ünï");
        assert_eq!(printable("a\nb\u{200b}"), "a\\u{a}b\\u{200b}");
    }
}

//! Path matching for `Operation.paths`: Istio string forms, or an Envoy URI template when the
//! value contains `{*}` (exactly one path segment) or `{**}` (one or more characters across
//! segments; must be the last operator).

use regex::Regex;

use crate::strmatch::StrMatch;

#[derive(Debug, Clone)]
pub enum PathMatch {
    Str(StrMatch),
    Template(Regex),
}

impl PathMatch {
    pub fn parse(v: &str) -> Result<Self, &'static str> {
        if v.contains("{*}") || v.contains("{**}") {
            return compile_template(v).map(PathMatch::Template);
        }
        Ok(PathMatch::Str(StrMatch::parse(v)))
    }

    pub fn matches(&self, path: &str) -> bool {
        match self {
            PathMatch::Str(s) => s.matches(path),
            PathMatch::Template(re) => re.is_match(path),
        }
    }
}

fn compile_template(v: &str) -> Result<Regex, &'static str> {
    if !v.starts_with('/') {
        return Err("a path template must start with '/'");
    }
    let mut pattern = String::from("^");
    let mut rest = v;
    let mut seen_many = false;
    while !rest.is_empty() {
        if let Some(after) = rest.strip_prefix("{**}") {
            if seen_many {
                return Err("{**} may appear only once, as the last operator");
            }
            seen_many = true;
            pattern.push_str(".+");
            rest = after;
        } else if let Some(after) = rest.strip_prefix("{*}") {
            if seen_many {
                return Err("{**} must be the last operator");
            }
            pattern.push_str("[^/]+");
            rest = after;
        } else {
            let c = rest.chars().next().unwrap_or_default();
            if c == '{' || c == '}' {
                return Err("only the {*} and {**} operators are supported");
            }
            if c == '*' {
                return Err("'*' cannot be mixed with {*} or {**}; use {*} or {**}");
            }
            pattern.push_str(&regex::escape(&rest[..c.len_utf8()]));
            rest = &rest[c.len_utf8()..];
        }
    }
    pattern.push('$');
    Regex::new(&pattern).map_err(|_| "the template does not compile")
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::{Rng, SeedableRng};

    fn m(pat: &str, path: &str) -> bool {
        PathMatch::parse(pat).unwrap().matches(path)
    }

    #[test]
    fn string_forms() {
        assert!(m("/api/payments/*", "/api/payments/x"));
        assert!(m("/api/payments/*", "/api/payments/"));
        assert!(!m("/api/payments/*", "/api/payment"));
        assert!(m("*.html", "/a/b.html"));
        assert!(m("/exact", "/exact"));
        assert!(!m("/exact", "/exact/"));
        assert!(m("*", "/"));
    }

    /// Regex syntax in a template's literal text stays literal: `)|(` cannot close the
    /// anchored pattern and make the template match unrelated paths.
    #[test]
    fn template_text_cannot_break_out_of_the_anchors() {
        let pat = "/a)|(.+/{*}";
        assert!(m(pat, "/a)|(.+/x"));
        for other in ["/a", "/admin/x", "/b/x", "/x", "/a)|(.+/", "/a)|(aa/x"] {
            assert!(!m(pat, other), "{other}");
        }
        assert!(m("/v1.0/{**}", "/v1.0/a/b"));
        assert!(!m("/v1.0/{**}", "/v1x0/a/b"));
    }

    #[test]
    fn templates() {
        assert!(m("/foo/{*}/bar", "/foo/abc/bar"));
        assert!(!m("/foo/{*}/bar", "/foo/bar"));
        assert!(!m("/foo/{*}/bar", "/foo/abc/def/bar"));
        assert!(m("/foo/{**}", "/foo/bar"));
        assert!(m("/foo/{**}", "/foo/bar/baz/abc"));
        assert!(!m("/foo/{**}", "/foo/"));
        assert!(!m("/foo/{**}", "/foo"));
        assert!(m("/foo/{*}/bar/{**}", "/foo/x/bar/y/z"));
        assert!(m("/foo/{*}.txt", "/foo/a.txt"));
        assert!(!m("/foo/{*}.txt", "/foo/a/b.txt"));
        assert!(m("/a.b/{*}", "/a.b/c"));
        assert!(!m("/a.b/{*}", "/axb/c"));
        assert!(m("/foo/{**}/end", "/foo/a/b/end"));
    }

    #[test]
    fn invalid_templates() {
        for bad in [
            "foo/{*}",
            "/foo/{**}/{*}",
            "/{**}/{**}",
            "/foo/{name}/{*}",
            "/foo/*/{*}",
        ] {
            assert!(PathMatch::parse(bad).is_err(), "{bad}");
        }
    }

    /// Randomized: arbitrary patterns and paths never panic, and template matches agree with a
    /// straightforward segment-by-segment reference for single-segment templates.
    #[test]
    fn fuzz_never_panics() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(0x5eed);
        let alphabet = [
            "/", "a", "b", "{*}", "{**}", "*", "{", "}", ".", "é", "%2F", "?", "",
        ];
        for _ in 0..5_000 {
            let pat: String = (0..rng.random_range(0..8))
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            let path: String = (0..rng.random_range(0..10))
                .map(|_| alphabet[rng.random_range(0..alphabet.len())])
                .collect();
            if let Ok(p) = PathMatch::parse(&pat) {
                let got = p.matches(&path);
                if !pat.contains('{') && !pat.contains('*') {
                    assert_eq!(got, pat == path, "{pat:?} {path:?}");
                }
                if let Some(prefix) = pat.strip_suffix("/{*}") {
                    if !prefix.contains('{') && !prefix.contains('*') {
                        let want = path
                            .strip_prefix(prefix)
                            .and_then(|r| r.strip_prefix('/'))
                            .is_some_and(|seg| !seg.is_empty() && !seg.contains('/'));
                        assert_eq!(got, want, "{pat:?} {path:?}");
                    }
                }
            }
        }
    }
}

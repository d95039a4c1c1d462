//! Rewrites (path, authority, regex), redirects and direct responses.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{header, HeaderValue, Response, StatusCode, Uri};
use meshwork_model::pb::config as pb;
use regex::Regex;

use crate::body::{self, Body};
use crate::request::routing::{MatchedPrefix, REGEX_SIZE_LIMIT};

static REGEX_COMPILATIONS: AtomicU64 = AtomicU64::new(0);

/// How many `rewrite.uriRegex` patterns have been compiled by this process.
pub fn regex_compilations() -> u64 {
    REGEX_COMPILATIONS.load(Ordering::Relaxed)
}

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("rewrite.uriRegex {regex:?} is invalid: {reason}")]
    Regex { regex: String, reason: String },
    #[error("rewritten URI {0:?} is invalid")]
    Uri(String),
}

/// A route's `rewrite`, with its `uriRegex` compiled once when the route config arrives
/// (within the size limit of every route regex) and its RE2 substitution translated.
#[derive(Debug, Clone)]
pub struct Rewrite {
    pub spec: pb::Rewrite,
    /// `uriRegex` and the substitution in the `regex` crate's syntax.
    regex: Option<(Regex, String)>,
}

impl Rewrite {
    pub fn compile(spec: &pb::Rewrite) -> Result<Rewrite, RewriteError> {
        let regex = if spec.uri_regex.is_empty() {
            None
        } else {
            REGEX_COMPILATIONS.fetch_add(1, Ordering::Relaxed);
            let re = regex::RegexBuilder::new(&spec.uri_regex)
                .size_limit(REGEX_SIZE_LIMIT)
                .build()
                .map_err(|e| RewriteError::Regex {
                    regex: spec.uri_regex.clone(),
                    reason: e
                        .to_string()
                        .split_whitespace()
                        .collect::<Vec<_>>()
                        .join(" "),
                })?;
            Some((re, re2_substitution(&spec.uri_regex_rewrite)))
        };
        Ok(Rewrite {
            spec: spec.clone(),
            regex,
        })
    }
}

/// An RE2 substitution (`\1` a group, `\\` a backslash, anything else literal) in the
/// `regex` crate's replacement syntax (`${1}`, `$$` for a literal `$`).
fn re2_substitution(s: &str) -> String {
    let mut out = String::with_capacity(s.len());
    let mut chars = s.chars().peekable();
    while let Some(c) = chars.next() {
        match c {
            '\\' => match chars.peek().copied() {
                Some(d) if d.is_ascii_digit() => {
                    chars.next();
                    out.push_str(&format!("${{{d}}}"));
                }
                Some('\\') => {
                    chars.next();
                    out.push('\\');
                }
                _ => out.push('\\'),
            },
            '$' => out.push_str("$$"),
            c => out.push(c),
        }
    }
    out
}

/// The new path-and-query after a rewrite. `matched_prefix` is the prefix the route matched
/// on, if it matched by prefix: only that part is replaced (for a Gateway API `PathPrefix`,
/// whole segments, as the spec's `ReplacePrefixMatch` table has it: `/foo` → `/xyz/` turns
/// `/foo/bar` into `/xyz/bar`, and `/foo` → `/` turns `/foo` into `/`).
pub fn rewrite_path(
    compiled: &Rewrite,
    uri: &Uri,
    matched_prefix: Option<&MatchedPrefix>,
) -> Option<String> {
    let rw = &compiled.spec;
    let path = uri.path();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    if let Some((re, repl)) = &compiled.regex {
        return Some(format!("{}{query}", re.replace_all(path, repl.as_str())));
    }
    if rw.uri.is_empty() {
        return None;
    }
    Some(format!(
        "{}{query}",
        swap_prefix(path, &rw.uri, matched_prefix)
    ))
}

/// `path` with the prefix the route matched replaced by `new` (the whole path when the
/// route did not match by prefix).
fn swap_prefix(path: &str, new: &str, matched_prefix: Option<&MatchedPrefix>) -> String {
    // The matched prefix is lower-case when the route ignores case (`ignoreUriCase`).
    let has = |p: &str| {
        path.get(..p.len())
            .is_some_and(|h| h.eq_ignore_ascii_case(p))
    };
    match matched_prefix {
        Some(MatchedPrefix::Chars(p)) if has(p) => format!("{new}{}", &path[p.len()..]),
        Some(MatchedPrefix::Segments(p)) if has(p) => {
            let joined = format!("{}{}", new.trim_end_matches('/'), &path[p.len()..]);
            if joined.is_empty() {
                "/".to_string()
            } else {
                joined
            }
        }
        _ => new.to_string(),
    }
}

/// Applies a rewrite to a request's URI and Host.
pub fn apply<B>(
    compiled: &Rewrite,
    req: &mut http::Request<B>,
    matched_prefix: Option<&MatchedPrefix>,
) -> Result<(), RewriteError> {
    let rw = &compiled.spec;
    if let Some(pq) = rewrite_path(compiled, req.uri(), matched_prefix) {
        let mut parts = req.uri().clone().into_parts();
        parts.path_and_query = Some(pq.parse().map_err(|_| RewriteError::Uri(pq.clone()))?);
        *req.uri_mut() = Uri::from_parts(parts).map_err(|_| RewriteError::Uri(pq))?;
    }
    if !rw.authority.is_empty() {
        let v = HeaderValue::from_str(&rw.authority)
            .map_err(|_| RewriteError::Uri(rw.authority.clone()))?;
        req.headers_mut().insert(header::HOST, v);
        if req.uri().authority().is_some() {
            let mut parts = req.uri().clone().into_parts();
            parts.authority = rw.authority.parse().ok();
            if let Ok(u) = Uri::from_parts(parts) {
                *req.uri_mut() = u;
            }
        }
    }
    Ok(())
}

/// A redirect response (default 301). As Envoy's redirect: `uri` replaces the path and
/// `prefixRewrite` the prefix the route matched; the request's query string is kept unless
/// the new path brings its own.
pub fn redirect(
    r: &pb::Redirect,
    uri: &Uri,
    host: &str,
    scheme: &str,
    matched_prefix: Option<&MatchedPrefix>,
) -> Response<Body> {
    let scheme = if r.scheme.is_empty() {
        scheme
    } else {
        &r.scheme
    };
    let host_only = host.rsplit_once(':').map(|(h, _)| h).unwrap_or(host);
    let authority = if r.authority.is_empty() {
        host.to_string()
    } else {
        r.authority.clone()
    };
    let authority = if r.port != 0 {
        let h = if r.authority.is_empty() {
            host_only
        } else {
            &r.authority
        };
        format!("{h}:{}", r.port)
    } else {
        authority
    };
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    let with_query = |p: String| {
        if p.contains('?') {
            p
        } else {
            format!("{p}{query}")
        }
    };
    let path = if !r.uri.is_empty() {
        with_query(r.uri.clone())
    } else if !r.prefix_rewrite.is_empty() {
        with_query(swap_prefix(uri.path(), &r.prefix_rewrite, matched_prefix))
    } else {
        uri.path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string()
    };
    let status = u16::try_from(r.redirect_code)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .filter(|s| s.is_redirection())
        .unwrap_or(StatusCode::MOVED_PERMANENTLY);
    let location = format!("{scheme}://{authority}{path}");
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = status;
    if let Ok(v) = HeaderValue::from_str(&location) {
        resp.headers_mut().insert(header::LOCATION, v);
    }
    resp
}

/// A direct response.
pub fn direct(d: &pb::DirectResponse) -> Response<Body> {
    let status = u16::try_from(d.status)
        .ok()
        .and_then(|c| StatusCode::from_u16(c).ok())
        .unwrap_or(StatusCode::OK);
    let mut resp = Response::new(body::full(d.body.clone()));
    *resp.status_mut() = status;
    resp
}

#[cfg(test)]
mod tests {
    use super::*;

    fn compiled(rw: pb::Rewrite) -> Rewrite {
        Rewrite::compile(&rw).unwrap()
    }

    #[test]
    fn prefix_and_full_rewrite() {
        let rw = compiled(pb::Rewrite {
            uri: "/v2/".into(),
            ..Default::default()
        });
        let uri: Uri = "/v1/items?x=1".parse().unwrap();
        assert_eq!(
            rewrite_path(&rw, &uri, Some(&MatchedPrefix::Chars("/v1/".into()))).as_deref(),
            Some("/v2/items?x=1")
        );
        assert_eq!(rewrite_path(&rw, &uri, None).as_deref(), Some("/v2/?x=1"));
        assert_eq!(
            rewrite_path(&compiled(pb::Rewrite::default()), &uri, None),
            None
        );
    }

    /// The Gateway API's `ReplacePrefixMatch` examples (prefix stored without its `/`).
    #[test]
    fn segment_prefix_rewrite() {
        for (prefix, path, replacement, want) in [
            ("/foo", "/foo/bar", "/xyz", "/xyz/bar"),
            ("/foo", "/foo/bar", "/xyz/", "/xyz/bar"),
            ("/foo", "/foo", "/xyz", "/xyz"),
            ("/foo", "/foo/", "/xyz", "/xyz/"),
            ("/foo", "/foo/", "/xyz/", "/xyz/"),
            ("/foo", "/foo", "/", "/"),
            ("/foo", "/foo/bar", "/", "/bar"),
            ("", "/bar", "/xyz", "/xyz/bar"),
        ] {
            let rw = compiled(pb::Rewrite {
                uri: replacement.into(),
                ..Default::default()
            });
            let uri: Uri = path.parse().unwrap();
            let m = MatchedPrefix::Segments(prefix.into());
            assert_eq!(
                rewrite_path(&rw, &uri, Some(&m)).as_deref(),
                Some(want),
                "{prefix} {path} {replacement}"
            );
        }
    }

    #[test]
    fn regex_rewrite() {
        let rw = compiled(pb::Rewrite {
            uri_regex: "^/service/([^/]+)(/.*)$".into(),
            uri_regex_rewrite: "\\2/instance/\\1".into(),
            ..Default::default()
        });
        let uri: Uri = "/service/foo/v1/api".parse().unwrap();
        assert_eq!(
            rewrite_path(&rw, &uri, None).as_deref(),
            Some("/v1/api/instance/foo")
        );
        for bad in ["(", "(?:a{1000}){1000}"] {
            let bad = pb::Rewrite {
                uri_regex: bad.into(),
                ..Default::default()
            };
            assert!(Rewrite::compile(&bad).is_err());
        }
    }

    #[test]
    fn re2_substitutions() {
        assert_eq!(re2_substitution("\\2/x/\\1"), "${2}/x/${1}");
        assert_eq!(re2_substitution("/a$1\\\\b"), "/a$$1\\b");
        assert_eq!(re2_substitution("\\x"), "\\x");
        // Followed by letters, the group stays a group (`$1abc` would name group `1abc`).
        let rw = compiled(pb::Rewrite {
            uri_regex: "^/(v[0-9])/(.*)$".into(),
            uri_regex_rewrite: "/\\2abc/$1".into(),
            ..Default::default()
        });
        let uri: Uri = "/v1/items".parse().unwrap();
        assert_eq!(
            rewrite_path(&rw, &uri, None).as_deref(),
            Some("/itemsabc/$1")
        );
    }

    #[test]
    fn apply_sets_host() {
        let mut req = http::Request::builder()
            .uri("/a")
            .header("host", "old")
            .body(())
            .unwrap();
        let rw = compiled(pb::Rewrite {
            uri: "/b".into(),
            authority: "new.example".into(),
            ..Default::default()
        });
        apply(&rw, &mut req, Some(&MatchedPrefix::Chars("/a".into()))).unwrap();
        assert_eq!(req.uri().path(), "/b");
        assert_eq!(req.headers()["host"], "new.example");
    }

    #[test]
    fn redirects() {
        let uri: Uri = "/old?q=1".parse().unwrap();
        let r = pb::Redirect {
            uri: "/new".into(),
            authority: "".into(),
            port: 8443,
            scheme: "https".into(),
            redirect_code: 308,
            ..Default::default()
        };
        let resp = redirect(&r, &uri, "shop:80", "http", None);
        assert_eq!(resp.status(), 308);
        // Envoy keeps the query string when the new path has none.
        assert_eq!(resp.headers()["location"], "https://shop:8443/new?q=1");
        let own_query = pb::Redirect {
            uri: "/new?x=2".into(),
            ..Default::default()
        };
        let resp = redirect(&own_query, &uri, "shop", "http", None);
        assert_eq!(resp.headers()["location"], "http://shop/new?x=2");
        let plain = redirect(&pb::Redirect::default(), &uri, "shop", "http", None);
        assert_eq!(plain.status(), 301);
        assert_eq!(plain.headers()["location"], "http://shop/old?q=1");
    }

    #[test]
    fn redirect_prefix_rewrite_swaps_the_matched_prefix() {
        let r = pb::Redirect {
            prefix_rewrite: "/v2/".into(),
            ..Default::default()
        };
        let uri: Uri = "/v1/items/7?q=1".parse().unwrap();
        let resp = redirect(
            &r,
            &uri,
            "shop",
            "http",
            Some(&MatchedPrefix::Chars("/v1/".into())),
        );
        assert_eq!(resp.headers()["location"], "http://shop/v2/items/7?q=1");
        // A route that ignores case matched `/v1/` on `/V1/...`: the suffix is kept.
        let upper: Uri = "/V1/items/7".parse().unwrap();
        let resp = redirect(
            &r,
            &upper,
            "shop",
            "http",
            Some(&MatchedPrefix::Chars("/v1/".into())),
        );
        assert_eq!(resp.headers()["location"], "http://shop/v2/items/7");
        // Without a prefix match the whole path is replaced.
        let resp = redirect(&r, &uri, "shop", "http", None);
        assert_eq!(resp.headers()["location"], "http://shop/v2/?q=1");
    }

    #[test]
    fn direct_response() {
        let resp = direct(&pb::DirectResponse {
            status: 418,
            body: b"teapot".to_vec(),
        });
        assert_eq!(resp.status(), 418);
    }
}

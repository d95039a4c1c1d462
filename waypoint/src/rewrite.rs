//! Rewrites (path, authority, regex), redirects and direct responses.

use http::{header, HeaderValue, Response, StatusCode, Uri};
use meshwork_model::pb::config as pb;
use regex::Regex;

use crate::body::{self, Body};
use crate::routing::MatchedPrefix;

#[derive(Debug, thiserror::Error)]
pub enum RewriteError {
    #[error("rewrite.uriRegex {regex:?} is invalid: {reason}")]
    Regex { regex: String, reason: String },
    #[error("rewritten URI {0:?} is invalid")]
    Uri(String),
}

/// The new path-and-query after a rewrite. `matched_prefix` is the prefix the route matched
/// on, if it matched by prefix: only that part is replaced (for a Gateway API `PathPrefix`,
/// whole segments, as the spec's `ReplacePrefixMatch` table has it: `/foo` → `/xyz/` turns
/// `/foo/bar` into `/xyz/bar`, and `/foo` → `/` turns `/foo` into `/`).
pub fn rewrite_path(
    rw: &pb::Rewrite,
    uri: &Uri,
    matched_prefix: Option<&MatchedPrefix>,
) -> Result<Option<String>, RewriteError> {
    let path = uri.path();
    let query = uri.query().map(|q| format!("?{q}")).unwrap_or_default();
    if !rw.uri_regex.is_empty() {
        let re = Regex::new(&rw.uri_regex).map_err(|e| RewriteError::Regex {
            regex: rw.uri_regex.clone(),
            reason: e.to_string(),
        })?;
        // RE2 substitutions use \1; the regex crate uses ${1}.
        let repl = Regex::new(r"\\(\d)")
            .map(|r| r.replace_all(&rw.uri_regex_rewrite, "$${$1}").into_owned())
            .unwrap_or_else(|_| rw.uri_regex_rewrite.clone());
        return Ok(Some(format!(
            "{}{query}",
            re.replace_all(path, repl.as_str())
        )));
    }
    if rw.uri.is_empty() {
        return Ok(None);
    }
    let new_path = match matched_prefix {
        Some(MatchedPrefix::Chars(p)) if path.starts_with(p.as_str()) => {
            format!("{}{}", rw.uri, &path[p.len()..])
        }
        Some(MatchedPrefix::Segments(p)) if path.starts_with(p.as_str()) => {
            let joined = format!("{}{}", rw.uri.trim_end_matches('/'), &path[p.len()..]);
            if joined.is_empty() {
                "/".to_string()
            } else {
                joined
            }
        }
        _ => rw.uri.clone(),
    };
    Ok(Some(format!("{new_path}{query}")))
}

/// Applies a rewrite to a request's URI and Host.
pub fn apply<B>(
    rw: &pb::Rewrite,
    req: &mut http::Request<B>,
    matched_prefix: Option<&MatchedPrefix>,
) -> Result<(), RewriteError> {
    if let Some(pq) = rewrite_path(rw, req.uri(), matched_prefix)? {
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

/// A redirect response (default 301).
pub fn redirect(r: &pb::Redirect, uri: &Uri, host: &str, scheme: &str) -> Response<Body> {
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
    let path = if r.uri.is_empty() {
        uri.path_and_query()
            .map(|p| p.as_str())
            .unwrap_or("/")
            .to_string()
    } else {
        r.uri.clone()
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

    #[test]
    fn prefix_and_full_rewrite() {
        let rw = pb::Rewrite {
            uri: "/v2/".into(),
            ..Default::default()
        };
        let uri: Uri = "/v1/items?x=1".parse().unwrap();
        assert_eq!(
            rewrite_path(&rw, &uri, Some(&MatchedPrefix::Chars("/v1/".into())))
                .unwrap()
                .as_deref(),
            Some("/v2/items?x=1")
        );
        assert_eq!(
            rewrite_path(&rw, &uri, None).unwrap().as_deref(),
            Some("/v2/?x=1")
        );
        assert_eq!(
            rewrite_path(&pb::Rewrite::default(), &uri, None).unwrap(),
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
            let rw = pb::Rewrite {
                uri: replacement.into(),
                ..Default::default()
            };
            let uri: Uri = path.parse().unwrap();
            let m = MatchedPrefix::Segments(prefix.into());
            assert_eq!(
                rewrite_path(&rw, &uri, Some(&m)).unwrap().as_deref(),
                Some(want),
                "{prefix} {path} {replacement}"
            );
        }
    }

    #[test]
    fn regex_rewrite() {
        let rw = pb::Rewrite {
            uri_regex: "^/service/([^/]+)(/.*)$".into(),
            uri_regex_rewrite: "\\2/instance/\\1".into(),
            ..Default::default()
        };
        let uri: Uri = "/service/foo/v1/api".parse().unwrap();
        assert_eq!(
            rewrite_path(&rw, &uri, None).unwrap().as_deref(),
            Some("/v1/api/instance/foo")
        );
        let bad = pb::Rewrite {
            uri_regex: "(".into(),
            ..Default::default()
        };
        assert!(rewrite_path(&bad, &uri, None).is_err());
    }

    #[test]
    fn apply_sets_host() {
        let mut req = http::Request::builder()
            .uri("/a")
            .header("host", "old")
            .body(())
            .unwrap();
        let rw = pb::Rewrite {
            uri: "/b".into(),
            authority: "new.example".into(),
            ..Default::default()
        };
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
        };
        let resp = redirect(&r, &uri, "shop:80", "http");
        assert_eq!(resp.status(), 308);
        assert_eq!(resp.headers()["location"], "https://shop:8443/new");
        let plain = redirect(&pb::Redirect::default(), &uri, "shop", "http");
        assert_eq!(plain.status(), 301);
        assert_eq!(plain.headers()["location"], "http://shop/old?q=1");
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

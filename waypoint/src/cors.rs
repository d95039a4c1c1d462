//! CORS: preflight answers and response headers for allowed origins.

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use meshwork_model::pb::config as pb;
use regex::Regex;

use crate::body::{self, Body};

fn origin_allowed(c: &pb::CorsPolicy, origin: &str) -> bool {
    use pb::string_match::Match;
    c.allow_origins.iter().any(|m| match &m.r#match {
        Some(Match::Exact(e)) => e == "*" || e == origin,
        Some(Match::Prefix(p) | Match::PathPrefix(p)) => origin.starts_with(p.as_str()),
        Some(Match::Regex(r)) => {
            Regex::new(&format!("^(?:{r})$")).is_ok_and(|re| re.is_match(origin))
        }
        None => m.present,
    })
}

fn set(h: &mut HeaderMap, name: header::HeaderName, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(name, v);
    }
}

/// The request's origin, when CORS applies to it.
pub fn allowed_origin(c: &pb::CorsPolicy, headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    origin_allowed(c, origin).then(|| origin.to_string())
}

/// Answers a preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed
/// origin; `None` lets the request through.
pub fn preflight(
    c: &pb::CorsPolicy,
    method: &Method,
    headers: &HeaderMap,
) -> Option<Response<Body>> {
    if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return None;
    }
    let origin = allowed_origin(c, headers)?;
    let mut resp = Response::new(body::empty());
    *resp.status_mut() = StatusCode::OK;
    let h = resp.headers_mut();
    set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, &origin);
    if !c.allow_methods.is_empty() {
        set(
            h,
            header::ACCESS_CONTROL_ALLOW_METHODS,
            &c.allow_methods.join(","),
        );
    }
    if !c.allow_headers.is_empty() {
        set(
            h,
            header::ACCESS_CONTROL_ALLOW_HEADERS,
            &c.allow_headers.join(","),
        );
    }
    if c.max_age_s > 0 {
        set(h, header::ACCESS_CONTROL_MAX_AGE, &c.max_age_s.to_string());
    }
    if c.allow_credentials {
        set(h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
    Some(resp)
}

/// Adds CORS headers to a response for an allowed origin.
pub fn decorate(c: &pb::CorsPolicy, origin: &str, h: &mut HeaderMap) {
    set(h, header::ACCESS_CONTROL_ALLOW_ORIGIN, origin);
    if !c.expose_headers.is_empty() {
        set(
            h,
            header::ACCESS_CONTROL_EXPOSE_HEADERS,
            &c.expose_headers.join(","),
        );
    }
    if c.allow_credentials {
        set(h, header::ACCESS_CONTROL_ALLOW_CREDENTIALS, "true");
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::string_match::Match;

    fn policy() -> pb::CorsPolicy {
        pb::CorsPolicy {
            allow_origins: vec![
                pb::StringMatch {
                    r#match: Some(Match::Exact("https://a.example".into())),
                    present: false,
                },
                pb::StringMatch {
                    r#match: Some(Match::Regex(r"https://.*\.b\.example".into())),
                    present: false,
                },
            ],
            allow_methods: vec!["GET".into(), "POST".into()],
            allow_headers: vec!["x-a".into()],
            expose_headers: vec!["x-b".into()],
            max_age_s: 60,
            allow_credentials: true,
        }
    }

    fn headers(origin: &str, preflight: bool) -> HeaderMap {
        let mut h = HeaderMap::new();
        h.insert(header::ORIGIN, origin.parse().unwrap());
        if preflight {
            h.insert(
                header::ACCESS_CONTROL_REQUEST_METHOD,
                "POST".parse().unwrap(),
            );
        }
        h
    }

    #[test]
    fn preflight_for_allowed_origin() {
        let c = policy();
        let r = preflight(&c, &Method::OPTIONS, &headers("https://x.b.example", true)).unwrap();
        assert_eq!(
            r.headers()["access-control-allow-origin"],
            "https://x.b.example"
        );
        assert_eq!(r.headers()["access-control-allow-methods"], "GET,POST");
        assert_eq!(r.headers()["access-control-max-age"], "60");
        assert!(preflight(&c, &Method::OPTIONS, &headers("https://evil", true)).is_none());
        assert!(preflight(&c, &Method::GET, &headers("https://a.example", true)).is_none());
        assert!(preflight(&c, &Method::OPTIONS, &headers("https://a.example", false)).is_none());
    }

    #[test]
    fn decorates_responses() {
        let c = policy();
        let origin = allowed_origin(&c, &headers("https://a.example", false)).unwrap();
        let mut h = HeaderMap::new();
        decorate(&c, &origin, &mut h);
        assert_eq!(h["access-control-expose-headers"], "x-b");
        assert_eq!(h["access-control-allow-credentials"], "true");
        assert!(allowed_origin(&c, &headers("https://c.example", false)).is_none());
    }
}

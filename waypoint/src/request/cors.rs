//! CORS: preflight answers and response headers for allowed origins.
//!
//! A route's policy is compiled once, with its route config ([`Cors::compile`]): an
//! `allowOrigins` regex is built then, with the size limit of every other route regex, and
//! an invalid one rejects the route config. Requests only run the compiled matchers.

use std::sync::atomic::{AtomicU64, Ordering};

use http::{header, HeaderMap, HeaderValue, Method, Response, StatusCode};
use meshwork_model::pb::config as pb;
use regex::Regex;

use crate::body::{self, Body};
use crate::request::routing::r#match::anchored_regex;

/// Regexes compiled for CORS policies since the process started (observability and tests:
/// it grows with route configs, never with requests).
static REGEX_COMPILATIONS: AtomicU64 = AtomicU64::new(0);

/// How many `allowOrigins` regexes have been compiled by this process.
pub fn regex_compilations() -> u64 {
    REGEX_COMPILATIONS.load(Ordering::Relaxed)
}

/// An `allowOrigins` regex that does not compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("corsPolicy.allowOrigins[{index}]: invalid regex {regex:?}: {reason}")]
pub struct CorsError {
    pub index: usize,
    pub regex: String,
    pub reason: String,
}

#[derive(Debug, Clone)]
enum Origin {
    Exact(String),
    Prefix(String),
    Regex(Regex),
    /// A match with no value: matches when `present` was set.
    Any(bool),
}

/// A route's CORS policy with its origin matchers compiled.
#[derive(Debug, Clone)]
pub struct Cors {
    pub policy: pb::CorsPolicy,
    origins: Vec<Origin>,
}

impl Cors {
    pub fn compile(policy: &pb::CorsPolicy) -> Result<Cors, CorsError> {
        use pb::string_match::Match;
        let mut origins = Vec::with_capacity(policy.allow_origins.len());
        for (index, m) in policy.allow_origins.iter().enumerate() {
            origins.push(match &m.r#match {
                Some(Match::Exact(e)) => Origin::Exact(e.clone()),
                Some(Match::Prefix(p) | Match::PathPrefix(p)) => Origin::Prefix(p.clone()),
                Some(Match::Regex(r)) => {
                    REGEX_COMPILATIONS.fetch_add(1, Ordering::Relaxed);
                    Origin::Regex(anchored_regex(r).map_err(|reason| CorsError {
                        index,
                        regex: r.clone(),
                        reason,
                    })?)
                }
                None => Origin::Any(m.present),
            });
        }
        Ok(Cors {
            policy: policy.clone(),
            origins,
        })
    }

    fn origin_allowed(&self, origin: &str) -> bool {
        self.origins.iter().any(|m| match m {
            Origin::Exact(e) => e == "*" || e == origin,
            Origin::Prefix(p) => origin.starts_with(p.as_str()),
            Origin::Regex(re) => re.is_match(origin),
            Origin::Any(present) => *present,
        })
    }
}

fn set(h: &mut HeaderMap, name: header::HeaderName, v: &str) {
    if let Ok(v) = HeaderValue::from_str(v) {
        h.insert(name, v);
    }
}

/// The request's origin, when CORS applies to it.
pub fn allowed_origin(c: &Cors, headers: &HeaderMap) -> Option<String> {
    let origin = headers.get(header::ORIGIN)?.to_str().ok()?;
    c.origin_allowed(origin).then(|| origin.to_string())
}

/// Answers a preflight (`OPTIONS` with `Access-Control-Request-Method`) from an allowed
/// origin; `None` lets the request through.
pub fn preflight(c: &Cors, method: &Method, headers: &HeaderMap) -> Option<Response<Body>> {
    if method != Method::OPTIONS || !headers.contains_key(header::ACCESS_CONTROL_REQUEST_METHOD) {
        return None;
    }
    let origin = allowed_origin(c, headers)?;
    let c = &c.policy;
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
pub fn decorate(c: &Cors, origin: &str, h: &mut HeaderMap) {
    let c = &c.policy;
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

    fn policy() -> Cors {
        Cors::compile(&pb::CorsPolicy {
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
        })
        .unwrap()
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

    #[test]
    fn regexes_are_compiled_with_the_policy() {
        let before = regex_compilations();
        let c = policy();
        assert!(regex_compilations() > before);
        for r in &c.origins {
            if let Origin::Regex(re) = r {
                assert_eq!(re.as_str(), r"^(?:https://.*\.b\.example)$");
            }
        }
        // Anchored: a longer origin does not match by containing an allowed one.
        assert!(allowed_origin(&c, &headers("https://x.b.example.evil", false)).is_none());
        assert!(allowed_origin(&c, &headers("https://a.example", false)).is_some());
    }

    #[test]
    fn bad_or_huge_regexes_are_rejected() {
        let with = |r: &str| pb::CorsPolicy {
            allow_origins: vec![
                pb::StringMatch {
                    r#match: Some(Match::Exact("https://a.example".into())),
                    present: false,
                },
                pb::StringMatch {
                    r#match: Some(Match::Regex(r.into())),
                    present: false,
                },
            ],
            ..Default::default()
        };
        let e = Cors::compile(&with("https://(")).unwrap_err();
        assert_eq!(e.index, 1);
        assert!(
            e.to_string()
                .starts_with("corsPolicy.allowOrigins[1]: invalid regex"),
            "{e}"
        );
        // Over the size limit every route regex has.
        assert!(Cors::compile(&with("(?:a{1000}){1000}")).is_err());
    }
}

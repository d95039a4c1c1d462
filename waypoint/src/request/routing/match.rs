//! Matching requests against VirtualService `match` blocks (`pb::RouteMatch`).

use std::collections::BTreeMap;

use http::{HeaderMap, Method, Uri};
use meshwork_model::pb::config as pb;
use regex::Regex;

use crate::request::cors::Cors;
use crate::request::rewrite::{Rewrite, RewriteError};

/// A route config whose regexes failed to compile.
#[derive(Debug, Clone, thiserror::Error)]
#[error("route {route}: http[{index}].{field}: invalid regex {regex:?}: {reason}")]
pub struct RouteError {
    pub route: String,
    pub index: usize,
    /// The field inside the route: `match[0].headers.x-user.regex`, `corsPolicy.allowOrigins[i]`.
    pub field: String,
    pub regex: String,
    pub reason: String,
}

/// Largest compiled program of a route regex (match, CORS origin): a regex bomb is refused
/// when the config arrives instead of being built.
pub const REGEX_SIZE_LIMIT: usize = 1 << 20;

/// `r` compiled to match whole values only, within [`REGEX_SIZE_LIMIT`].
///
/// The pattern must be a regex on its own before it is wrapped: `a)|(b` would otherwise
/// close the anchoring group and compile as `^(?:a)|(b)$`, which matches any value that
/// starts with `a` or ends with `b`. The waypoint does not rely on the control plane having
/// refused such a pattern (an older control plane, a static config file).
pub fn anchored_regex(r: &str) -> Result<Regex, String> {
    let build = |p: &str| {
        regex::RegexBuilder::new(p)
            .size_limit(REGEX_SIZE_LIMIT)
            .build()
            .map_err(|e| one_line(&e.to_string()))
    };
    build(r)?;
    build(&format!("^(?:{r})$"))
}

/// The `regex` crate's multi-line error as one line (the `error:` line when there is one).
fn one_line(text: &str) -> String {
    text.lines()
        .rev()
        .find(|l| l.trim_start().starts_with("error:"))
        .map(|l| l.trim().trim_start_matches("error:").trim().to_string())
        .unwrap_or_else(|| text.split_whitespace().collect::<Vec<_>>().join(" "))
}

/// What a request is matched on.
#[derive(Debug, Clone, Copy)]
pub struct MatchInput<'a> {
    pub method: &'a Method,
    pub uri: &'a Uri,
    pub headers: &'a HeaderMap,
    /// `:authority` / Host.
    pub authority: &'a str,
    pub scheme: &'a str,
    /// Destination (service) port.
    pub port: u16,
    pub source_labels: Option<&'a BTreeMap<String, String>>,
    pub source_namespace: Option<&'a str>,
}

#[derive(Debug, Clone)]
enum Str {
    Exact(String),
    /// A character prefix (Istio `prefix`: `/api/cart` matches `/api/cartoon`).
    Prefix(String),
    /// A path-segment prefix without its trailing `/` (Gateway API `PathPrefix`).
    PathPrefix(String),
    Regex(Regex),
    Present,
}

/// The prefix a request's URI matched by, for a prefix rewrite.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum MatchedPrefix {
    /// Istio `prefix`: exactly these characters are replaced.
    Chars(String),
    /// Gateway API `PathPrefix` (no trailing `/`): whole segments are replaced.
    Segments(String),
}

impl Str {
    fn compile(m: &pb::StringMatch, lower: bool) -> Result<Option<Str>, (String, String)> {
        use pb::string_match::Match;
        let norm = |s: &String| {
            if lower {
                s.to_ascii_lowercase()
            } else {
                s.clone()
            }
        };
        Ok(match &m.r#match {
            Some(Match::Exact(e)) => Some(Str::Exact(norm(e))),
            Some(Match::Prefix(p)) => Some(Str::Prefix(norm(p))),
            Some(Match::PathPrefix(p)) => {
                Some(Str::PathPrefix(norm(p).trim_end_matches('/').to_string()))
            }
            Some(Match::Regex(r)) => {
                Some(Str::Regex(anchored_regex(r).map_err(|e| (r.clone(), e))?))
            }
            None if m.present => Some(Str::Present),
            None => None,
        })
    }

    fn matches(&self, v: &str) -> bool {
        match self {
            Str::Exact(e) => v == e,
            Str::Prefix(p) => v.starts_with(p.as_str()),
            Str::PathPrefix(p) => v
                .strip_prefix(p.as_str())
                .is_some_and(|rest| rest.is_empty() || rest.starts_with('/')),
            Str::Regex(r) => r.is_match(v),
            Str::Present => true,
        }
    }
}

#[derive(Debug, Clone, Default)]
struct Match {
    uri: Option<Str>,
    ignore_uri_case: bool,
    scheme: Option<Str>,
    method: Option<Str>,
    authority: Option<Str>,
    headers: Vec<(String, Str)>,
    without_headers: Vec<(String, Str)>,
    query: Vec<(String, Str)>,
    port: u32,
    source_labels: BTreeMap<String, String>,
    source_namespace: String,
}

/// A match regex that does not compile: the field inside the match block, the pattern, why.
type FieldError = (String, String, String);

impl Match {
    fn compile(m: &pb::RouteMatch) -> Result<Match, FieldError> {
        let named = |field: &str| {
            let field = format!("{field}.regex");
            move |(regex, reason): (String, String)| (field, regex, reason)
        };
        let opt =
            |s: &Option<pb::StringMatch>, lower, field: &str| -> Result<Option<Str>, FieldError> {
                match s {
                    Some(s) => Str::compile(s, lower).map_err(named(field)),
                    None => Ok(None),
                }
            };
        let map = |m: &BTreeMap<String, pb::StringMatch>,
                   lower_key: bool,
                   field: &str|
         -> Result<Vec<(String, Str)>, FieldError> {
            let mut out = Vec::new();
            for (k, v) in m {
                let key = if lower_key {
                    k.to_ascii_lowercase()
                } else {
                    k.clone()
                };
                // A header match with no value matches presence.
                let s = Str::compile(v, false)
                    .map_err(named(&format!("{field}.{k}")))?
                    .unwrap_or(Str::Present);
                out.push((key, s));
            }
            Ok(out)
        };
        Ok(Match {
            uri: opt(&m.uri, m.ignore_uri_case, "uri")?,
            ignore_uri_case: m.ignore_uri_case,
            scheme: opt(&m.scheme, false, "scheme")?,
            method: opt(&m.method, false, "method")?,
            authority: opt(&m.authority, false, "authority")?,
            headers: map(&m.headers, true, "headers")?,
            without_headers: map(&m.without_headers, true, "withoutHeaders")?,
            query: map(&m.query_params, false, "queryParams")?,
            port: m.port,
            source_labels: m.source_labels.clone(),
            source_namespace: m.source_namespace.clone(),
        })
    }

    fn matches(&self, input: &MatchInput<'_>) -> bool {
        if let Some(uri) = &self.uri {
            let path = input.uri.path();
            let ok = if self.ignore_uri_case {
                uri.matches(&path.to_ascii_lowercase())
            } else {
                uri.matches(path)
            };
            if !ok {
                return false;
            }
        }
        if self
            .scheme
            .as_ref()
            .is_some_and(|s| !s.matches(input.scheme))
            || self
                .method
                .as_ref()
                .is_some_and(|m| !m.matches(input.method.as_str()))
            || self
                .authority
                .as_ref()
                .is_some_and(|a| !a.matches(input.authority))
        {
            return false;
        }
        if self.port != 0 && u32::from(input.port) != self.port {
            return false;
        }
        let header = |name: &str| -> Option<String> {
            let vals: Vec<&str> = input
                .headers
                .get_all(name)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .collect();
            (!vals.is_empty()).then(|| vals.join(","))
        };
        for (name, m) in &self.headers {
            if !header(name).is_some_and(|v| m.matches(&v)) {
                return false;
            }
        }
        for (name, m) in &self.without_headers {
            if header(name).is_some_and(|v| m.matches(&v)) {
                return false;
            }
        }
        if !self.query.is_empty() {
            let q = input.uri.query().unwrap_or("");
            for (name, m) in &self.query {
                let found = q.split('&').any(|kv| {
                    let (k, v) = kv.split_once('=').unwrap_or((kv, ""));
                    k == name && m.matches(v)
                });
                if !found {
                    return false;
                }
            }
        }
        if !self.source_labels.is_empty() {
            let Some(labels) = input.source_labels else {
                return false;
            };
            if !self
                .source_labels
                .iter()
                .all(|(k, v)| labels.get(k) == Some(v))
            {
                return false;
            }
        }
        if !self.source_namespace.is_empty()
            && input.source_namespace != Some(self.source_namespace.as_str())
        {
            return false;
        }
        true
    }
}

/// One HTTP route with its compiled matches and CORS policy.
#[derive(Debug, Clone)]
pub struct CompiledRoute {
    pub index: usize,
    pub route: pb::HttpRoute,
    /// `route.cors`, compiled.
    pub cors: Option<Cors>,
    /// `route.rewrite`, with its `uriRegex` compiled.
    pub rewrite: Option<Rewrite>,
    matches: Vec<Match>,
}

impl CompiledRoute {
    /// Empty `match` matches every request; otherwise any match block (OR).
    pub fn matches(&self, input: &MatchInput<'_>) -> bool {
        self.matches.is_empty() || self.matches.iter().any(|m| m.matches(input))
    }

    /// The URI prefix of the first matching block, when it matched by prefix (for rewrites).
    pub fn matched_prefix(&self, input: &MatchInput<'_>) -> Option<MatchedPrefix> {
        let m = self.matches.iter().find(|m| m.matches(input))?;
        match &m.uri {
            Some(Str::Prefix(p)) => Some(MatchedPrefix::Chars(p.clone())),
            Some(Str::PathPrefix(p)) => Some(MatchedPrefix::Segments(p.clone())),
            _ => None,
        }
    }
}

/// A host's routes, compiled once per config snapshot.
#[derive(Debug, Clone)]
pub struct CompiledRouteConfig {
    pub config: pb::RouteConfig,
    pub routes: Vec<CompiledRoute>,
}

impl CompiledRouteConfig {
    pub fn compile(config: &pb::RouteConfig) -> Result<Self, RouteError> {
        let name = format!("{}/{}", config.namespace, config.hostname);
        let mut routes = Vec::with_capacity(config.http.len());
        for (index, r) in config.http.iter().enumerate() {
            let matches = r
                .matches
                .iter()
                .enumerate()
                .map(|(i, m)| {
                    Match::compile(m).map_err(|(field, regex, reason)| RouteError {
                        route: name.clone(),
                        index,
                        field: format!("match[{i}].{field}"),
                        regex,
                        reason,
                    })
                })
                .collect::<Result<Vec<_>, _>>()?;
            let cors = r
                .cors
                .as_ref()
                .map(Cors::compile)
                .transpose()
                .map_err(|e| RouteError {
                    route: name.clone(),
                    index,
                    field: format!("corsPolicy.allowOrigins[{}]", e.index),
                    regex: e.regex,
                    reason: e.reason,
                })?;
            let rewrite = r
                .rewrite
                .as_ref()
                .map(Rewrite::compile)
                .transpose()
                .map_err(|e| {
                    let (regex, reason) = match e {
                        RewriteError::Regex { regex, reason } => (regex, reason),
                        RewriteError::Uri(u) => (u, "not a URI".into()),
                    };
                    RouteError {
                        route: name.clone(),
                        index,
                        field: "rewrite.uriRegex".into(),
                        regex,
                        reason,
                    }
                })?;
            routes.push(CompiledRoute {
                index,
                route: r.clone(),
                cors,
                rewrite,
                matches,
            });
        }
        Ok(CompiledRouteConfig {
            config: config.clone(),
            routes,
        })
    }

    /// The first route matching the request, in order.
    pub fn find(&self, input: &MatchInput<'_>) -> Option<&CompiledRoute> {
        self.routes.iter().find(|r| r.matches(input))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use pb::string_match::Match as M;

    fn sm(m: M) -> pb::StringMatch {
        pb::StringMatch {
            r#match: Some(m),
            present: false,
        }
    }

    fn input<'a>(
        method: &'a Method,
        uri: &'a Uri,
        headers: &'a HeaderMap,
        labels: Option<&'a BTreeMap<String, String>>,
    ) -> MatchInput<'a> {
        MatchInput {
            method,
            uri,
            headers,
            authority: "order-service:80",
            scheme: "http",
            port: 80,
            source_labels: labels,
            source_namespace: Some("production"),
        }
    }

    fn route(matches: Vec<pb::RouteMatch>) -> CompiledRouteConfig {
        CompiledRouteConfig::compile(&pb::RouteConfig {
            hostname: "h".into(),
            namespace: "n".into(),
            http: vec![pb::HttpRoute {
                matches,
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap()
    }

    /// A pattern that closes the anchoring group (`a)|(b`) is refused, not compiled unanchored.
    #[test]
    fn group_breaking_patterns_are_refused() {
        for bad in ["a)|(b", "a)|(?:b", ")|(", "x)|.*|(y", "(?x)a#"] {
            assert!(anchored_regex(bad).is_err(), "{bad:?}");
        }
        let re = anchored_regex("a|b").unwrap();
        assert!(re.is_match("a") && re.is_match("b"));
        assert!(!re.is_match("ab") && !re.is_match("a-anything"));
        let e = CompiledRouteConfig::compile(&pb::RouteConfig {
            hostname: "h".into(),
            namespace: "n".into(),
            http: vec![pb::HttpRoute {
                matches: vec![
                    pb::RouteMatch::default(),
                    pb::RouteMatch {
                        headers: [("X-User".to_string(), sm(M::Regex("a)|(b".into())))].into(),
                        ..Default::default()
                    },
                ],
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap_err()
        .to_string();
        assert!(
            e.starts_with(
                "route n/h: http[0].match[1].headers.X-User.regex: invalid regex \"a)|(b\""
            ),
            "{e}"
        );
    }

    #[test]
    fn seed_matches() {
        let canary = route(vec![pb::RouteMatch {
            headers: [("x-canary".to_string(), sm(M::Exact("true".into())))].into(),
            ..Default::default()
        }]);
        let even = route(vec![pb::RouteMatch {
            headers: [(
                "x-user-id".to_string(),
                sm(M::Regex("^[0-9]*[02468]$".into())),
            )]
            .into(),
            ..Default::default()
        }]);
        let get = Method::GET;
        let uri: Uri = "/orders".parse().unwrap();
        let mut h = HeaderMap::new();
        assert!(canary.find(&input(&get, &uri, &h, None)).is_none());
        h.insert("x-canary", "true".parse().unwrap());
        assert!(canary.find(&input(&get, &uri, &h, None)).is_some());
        h.insert("x-user-id", "1234".parse().unwrap());
        assert!(even.find(&input(&get, &uri, &h, None)).is_some());
        h.insert("x-user-id", "1235".parse().unwrap());
        assert!(even.find(&input(&get, &uri, &h, None)).is_none());
        h.insert("x-user-id", "a1234x".parse().unwrap());
        assert!(even.find(&input(&get, &uri, &h, None)).is_none());
    }

    #[test]
    fn path_prefix_matches_whole_segments() {
        let get = Method::GET;
        let h = HeaderMap::new();
        let matches = |prefix: &str, path: &str| {
            let r = route(vec![pb::RouteMatch {
                uri: Some(sm(M::PathPrefix(prefix.into()))),
                ..Default::default()
            }]);
            let uri: Uri = path.parse().unwrap();
            r.find(&input(&get, &uri, &h, None)).is_some()
        };
        for (prefix, path, want) in [
            ("/api/cart", "/api/cart", true),
            ("/api/cart", "/api/cart/", true),
            ("/api/cart", "/api/cart/x", true),
            ("/api/cart", "/api/cart?q=1", true),
            ("/api/cart", "/api/cartoon", false),
            ("/api/cart", "/api/car", false),
            ("/api/cart", "/api", false),
            ("/api/cart/", "/api/cart", true),
            ("/api/cart/", "/api/cart/x", true),
            ("/api/cart/", "/api/cartoon", false),
            ("/", "/anything", true),
            ("/", "/", true),
        ] {
            assert_eq!(matches(prefix, path), want, "{prefix} vs {path}");
        }
        // Istio's `prefix` keeps its character meaning.
        let r = route(vec![pb::RouteMatch {
            uri: Some(sm(M::Prefix("/api/cart".into()))),
            ..Default::default()
        }]);
        let uri: Uri = "/api/cartoon".parse().unwrap();
        let i = input(&get, &uri, &h, None);
        assert!(r.find(&i).is_some());
        assert_eq!(
            r.routes[0].matched_prefix(&i),
            Some(MatchedPrefix::Chars("/api/cart".into()))
        );
    }

    #[test]
    fn every_field() {
        let get = Method::GET;
        let uri: Uri = "/API/items?id=7&x".parse().unwrap();
        let mut h = HeaderMap::new();
        h.insert("x-env", "prod".parse().unwrap());
        let labels: BTreeMap<String, String> = [("app".to_string(), "web".to_string())].into();
        let cases: Vec<(&str, pb::RouteMatch, bool)> = vec![
            (
                "uri prefix case",
                pb::RouteMatch {
                    uri: Some(sm(M::Prefix("/api".into()))),
                    ignore_uri_case: true,
                    ..Default::default()
                },
                true,
            ),
            (
                "uri prefix",
                pb::RouteMatch {
                    uri: Some(sm(M::Prefix("/api".into()))),
                    ..Default::default()
                },
                false,
            ),
            (
                "uri exact no query",
                pb::RouteMatch {
                    uri: Some(sm(M::Exact("/API/items".into()))),
                    ..Default::default()
                },
                true,
            ),
            (
                "method",
                pb::RouteMatch {
                    method: Some(sm(M::Exact("POST".into()))),
                    ..Default::default()
                },
                false,
            ),
            (
                "scheme",
                pb::RouteMatch {
                    scheme: Some(sm(M::Exact("http".into()))),
                    ..Default::default()
                },
                true,
            ),
            (
                "authority",
                pb::RouteMatch {
                    authority: Some(sm(M::Prefix("order".into()))),
                    ..Default::default()
                },
                true,
            ),
            (
                "port",
                pb::RouteMatch {
                    port: 8080,
                    ..Default::default()
                },
                false,
            ),
            (
                "without header",
                pb::RouteMatch {
                    without_headers: [("x-env".to_string(), sm(M::Exact("prod".into())))].into(),
                    ..Default::default()
                },
                false,
            ),
            (
                "header present",
                pb::RouteMatch {
                    headers: [(
                        "X-Env".to_string(),
                        pb::StringMatch {
                            r#match: None,
                            present: true,
                        },
                    )]
                    .into(),
                    ..Default::default()
                },
                true,
            ),
            (
                "query exact",
                pb::RouteMatch {
                    query_params: [("id".to_string(), sm(M::Exact("7".into())))].into(),
                    ..Default::default()
                },
                true,
            ),
            (
                "query regex",
                pb::RouteMatch {
                    query_params: [("id".to_string(), sm(M::Regex("[0-9]+".into())))].into(),
                    ..Default::default()
                },
                true,
            ),
            (
                "query missing",
                pb::RouteMatch {
                    query_params: [("q".to_string(), sm(M::Exact("7".into())))].into(),
                    ..Default::default()
                },
                false,
            ),
            (
                "source labels",
                pb::RouteMatch {
                    source_labels: [("app".to_string(), "web".to_string())].into(),
                    ..Default::default()
                },
                true,
            ),
            (
                "source labels miss",
                pb::RouteMatch {
                    source_labels: [("app".to_string(), "db".to_string())].into(),
                    ..Default::default()
                },
                false,
            ),
            (
                "source namespace",
                pb::RouteMatch {
                    source_namespace: "staging".into(),
                    ..Default::default()
                },
                false,
            ),
        ];
        for (name, m, want) in cases {
            let r = route(vec![m]);
            assert_eq!(
                r.find(&input(&get, &uri, &h, Some(&labels))).is_some(),
                want,
                "{name}"
            );
        }
    }

    #[test]
    fn bad_regex_is_an_error() {
        let err = CompiledRouteConfig::compile(&pb::RouteConfig {
            hostname: "h".into(),
            namespace: "n".into(),
            http: vec![pb::HttpRoute {
                matches: vec![pb::RouteMatch {
                    uri: Some(sm(M::Regex("(".into()))),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        })
        .unwrap_err();
        assert!(err.to_string().contains("n/h: http[0]"), "{err}");
    }
}

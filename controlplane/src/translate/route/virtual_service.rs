//! VirtualService HTTP/TCP routes.

use std::collections::BTreeMap;

use meshwork_api::common::StringMatch as ApiStringMatch;
use meshwork_api::networking as net;
use meshwork_model::pb::config::{
    fault, string_match::Match, CorsPolicy, Destination, DirectResponse, Fault, HeaderOps, Headers,
    HttpRoute, Redirect, Retry, Rewrite, RouteMatch, StringMatch, TcpRoute, WeightedDestination,
};

use super::{ms, resolve_host};

fn string_match(m: &ApiStringMatch) -> StringMatch {
    let r#match = if let Some(e) = &m.exact {
        Some(Match::Exact(e.clone()))
    } else if let Some(p) = &m.prefix {
        Some(Match::Prefix(p.clone()))
    } else {
        m.regex.as_ref().map(|r| Match::Regex(r.0.clone()))
    };
    StringMatch {
        present: r#match.is_none(),
        r#match,
    }
}

fn string_map(
    m: &BTreeMap<String, ApiStringMatch>,
    lowercase: bool,
) -> BTreeMap<String, StringMatch> {
    m.iter()
        .map(|(k, v)| {
            let k = if lowercase {
                k.to_lowercase()
            } else {
                k.clone()
            };
            (k, string_match(v))
        })
        .collect()
}

fn destination(d: &net::Destination, ns: &str) -> Destination {
    Destination {
        host: resolve_host(&d.host, ns),
        subset: d.subset.clone(),
        port: d.port.map(|p| p.number).unwrap_or(0),
    }
}

fn header_ops(h: &Option<net::HeaderOperations>) -> Option<HeaderOps> {
    h.as_ref().map(|h| HeaderOps {
        set: h.set.clone(),
        add: h.add.clone(),
        remove: h.remove.clone(),
    })
}

fn headers(h: &Option<net::Headers>) -> Option<Headers> {
    h.as_ref().map(|h| Headers {
        request: header_ops(&h.request),
        response: header_ops(&h.response),
    })
}

/// gRPC status names as Istio accepts them in `fault.abort.grpcStatus`.
fn grpc_code(s: &str) -> u32 {
    s.parse()
        .ok()
        .or_else(|| meshwork_api::networking::grpc_status_code(s))
        .unwrap_or(2)
}

/// VirtualService weights: the mesh's one rule ([`meshwork_model::rules::weights::fill_in`]).
use meshwork_model::rules::weights::fill_in as weights;

pub(super) fn vs_http_route(r: &net::HttpRoute, ns: &str, origin: &str) -> HttpRoute {
    let weights = weights(r.route.iter().map(|d| d.weight));
    let mirror = r
        .mirror
        .as_ref()
        .map(|m| {
            (
                m,
                r.mirror_percentage
                    .map(|p| p.value)
                    .or(r.mirror_percent.map(f64::from)),
            )
        })
        .or_else(|| {
            r.mirrors
                .first()
                .map(|m| (&m.destination, m.percentage.map(|p| p.value)))
        });
    HttpRoute {
        name: r.name.clone(),
        matches: r
            .matches
            .iter()
            .map(|m| RouteMatch {
                name: m.name.clone(),
                uri: m.uri.as_ref().map(string_match),
                scheme: m.scheme.as_ref().map(string_match),
                method: m.method.as_ref().map(string_match),
                authority: m.authority.as_ref().map(string_match),
                headers: string_map(&m.headers, true),
                without_headers: string_map(&m.without_headers, true),
                query_params: string_map(&m.query_params, false),
                port: m.port.unwrap_or(0),
                ignore_uri_case: m.ignore_uri_case,
                source_labels: m.source_labels.clone(),
                source_namespace: m.source_namespace.clone(),
            })
            .collect(),
        route: r
            .route
            .iter()
            .zip(weights)
            .map(|(d, weight)| WeightedDestination {
                destination: Some(destination(&d.destination, ns)),
                weight,
                headers: headers(&d.headers),
            })
            .collect(),
        timeout_ms: ms(r.timeout),
        has_timeout: r.timeout.is_some(),
        retries: r.retries.as_ref().map(|rt| Retry {
            attempts: rt.attempts,
            per_try_timeout_ms: ms(rt.per_try_timeout),
            retry_on: rt
                .retry_on
                .split(',')
                .map(str::trim)
                .filter(|s| !s.is_empty())
                .map(String::from)
                .collect(),
            retry_remote_localities: rt.retry_remote_localities.unwrap_or(false),
            backoff_ms: ms(rt.backoff),
        }),
        fault: r.fault.as_ref().map(|f| Fault {
            delay: f.delay.as_ref().map(|d| fault::Delay {
                fixed_delay_ms: ms(d.fixed_delay.or(d.exponential_delay)),
                percentage: d
                    .percentage
                    .map(|p| p.value)
                    .or(d.percent.map(f64::from))
                    .unwrap_or(100.0),
            }),
            abort: f.abort.as_ref().map(|a| fault::Abort {
                http_status: a.http_status.unwrap_or(0),
                grpc_status: a.grpc_status.as_deref().map(grpc_code).unwrap_or(0),
                percentage: a.percentage.map(|p| p.value).unwrap_or(100.0),
            }),
        }),
        mirror: mirror.map(|(d, _)| destination(d, ns)),
        mirror_percentage: mirror.map(|(_, p)| p.unwrap_or(100.0)).unwrap_or(0.0),
        redirect: r.redirect.as_ref().map(|rd| Redirect {
            uri: rd.uri.clone(),
            authority: rd.authority.clone(),
            port: rd.port.unwrap_or(0),
            scheme: rd.scheme.clone(),
            redirect_code: rd.redirect_code.unwrap_or(301),
            prefix_rewrite: rd.prefix_rewrite.clone(),
        }),
        rewrite: r.rewrite.as_ref().map(|rw| Rewrite {
            uri: rw.uri.clone(),
            authority: rw.authority.clone(),
            uri_regex: rw
                .uri_regex_rewrite
                .as_ref()
                .map(|x| x.pattern.0.clone())
                .unwrap_or_default(),
            uri_regex_rewrite: rw
                .uri_regex_rewrite
                .as_ref()
                .map(|x| x.rewrite.clone())
                .unwrap_or_default(),
        }),
        direct_response: r.direct_response.as_ref().map(|d| DirectResponse {
            status: d.status,
            body: d
                .body
                .as_ref()
                .map(|b| match (&b.string, &b.bytes) {
                    (Some(s), _) => s.clone().into_bytes(),
                    (None, Some(b64)) => base64_decode(b64),
                    (None, None) => Vec::new(),
                })
                .unwrap_or_default(),
        }),
        headers: headers(&r.headers),
        cors: r.cors_policy.as_ref().map(|c| CorsPolicy {
            allow_origins: c
                .allow_origins
                .iter()
                .map(string_match)
                .chain(c.allow_origin.iter().map(|o| StringMatch {
                    r#match: Some(Match::Exact(o.clone())),
                    present: false,
                }))
                .collect(),
            allow_methods: c.allow_methods.clone(),
            allow_headers: c.allow_headers.clone(),
            expose_headers: c.expose_headers.clone(),
            max_age_s: c.max_age.map(|d| d.as_std().as_secs()).unwrap_or(0),
            allow_credentials: c.allow_credentials.unwrap_or(false),
        }),
        origin: origin.to_string(),
    }
}

/// Standard base64 (padding optional); invalid characters are skipped.
fn base64_decode(s: &str) -> Vec<u8> {
    let val = |c: u8| -> Option<u32> {
        Some(match c {
            b'A'..=b'Z' => c - b'A',
            b'a'..=b'z' => c - b'a' + 26,
            b'0'..=b'9' => c - b'0' + 52,
            b'+' | b'-' => 62,
            b'/' | b'_' => 63,
            _ => return None,
        } as u32)
    };
    let mut out = Vec::new();
    let (mut acc, mut bits) = (0u32, 0u32);
    for v in s.bytes().filter_map(val) {
        acc = (acc << 6) | v;
        bits += 6;
        if bits >= 8 {
            bits -= 8;
            out.push((acc >> bits) as u8);
            acc &= (1 << bits) - 1;
        }
    }
    out
}

pub(super) fn vs_tcp_route(r: &net::TcpRoute, ns: &str) -> TcpRoute {
    let weights = weights(r.route.iter().map(|d| d.weight));
    TcpRoute {
        route: r
            .route
            .iter()
            .zip(weights)
            .map(|(d, weight)| WeightedDestination {
                destination: Some(destination(&d.destination, ns)),
                weight,
                headers: None,
            })
            .collect(),
        port: r.matches.iter().find_map(|m| m.port).unwrap_or(0),
    }
}

/// Delegate route matches combined with the root's (both must hold): every pair, the
/// delegate's fields overriding the root's where both set the same field.
pub(super) fn merge_matches(root: &[RouteMatch], delegate: &[RouteMatch]) -> Vec<RouteMatch> {
    if root.is_empty() {
        return delegate.to_vec();
    }
    if delegate.is_empty() {
        return root.to_vec();
    }
    let mut out = Vec::with_capacity(root.len() * delegate.len());
    for r in root {
        for d in delegate {
            let mut m = r.clone();
            if !d.name.is_empty() {
                m.name = d.name.clone();
            }
            for (dst, src) in [
                (&mut m.uri, &d.uri),
                (&mut m.scheme, &d.scheme),
                (&mut m.method, &d.method),
                (&mut m.authority, &d.authority),
            ] {
                if src.is_some() {
                    *dst = src.clone();
                }
            }
            m.headers.extend(d.headers.clone());
            m.without_headers.extend(d.without_headers.clone());
            m.query_params.extend(d.query_params.clone());
            if d.port != 0 {
                m.port = d.port;
            }
            m.ignore_uri_case |= d.ignore_uri_case;
            m.source_labels.extend(d.source_labels.clone());
            if !d.source_namespace.is_empty() {
                m.source_namespace = d.source_namespace.clone();
            }
            out.push(m);
        }
    }
    out
}

//! Gateway API HTTPRoute / GRPCRoute rules (GAMMA: Service parents; waypoint Gateway
//! parents, restricted to the route's `hostnames`).

use std::collections::BTreeMap;

use meshwork_api::gateway::{self as gw, HttpBackendRef, HttpHeaderMatch, HttpRouteFilter};
use meshwork_model::pb::config::{
    string_match::Match, Destination, HeaderOps, HttpRoute, Redirect, Retry, Rewrite, RouteMatch,
    StringMatch, WeightedDestination,
};

use super::{ms, RouteId};
use crate::translate::workload::CLUSTER_DOMAIN;

pub(super) fn parent_port(refs: &[gw::ParentReference], id: &RouteId) -> u32 {
    refs.iter()
        .filter(|p| p.is_service() && id.host.starts_with(&format!("{}.", p.name)))
        .find_map(|p| p.port)
        .unwrap_or(0)
}

/// A header, query or method match (`Exact` unless `RegularExpression`), or a path match
/// (`PathPrefix` unless `Exact`/`RegularExpression`). `PathPrefix` matches whole path
/// segments, its trailing `/` ignored: unlike Istio's character `prefix`, `/api/cart` does
/// not match `/api/cartoon`.
fn gw_match(kind: Option<&str>, value: &str, is_path: bool) -> StringMatch {
    let m = match kind {
        Some("Exact") => Match::Exact(value.to_string()),
        Some("RegularExpression") => Match::Regex(value.to_string()),
        Some("PathPrefix") | None if is_path => {
            Match::PathPrefix(value.trim_end_matches('/').to_string())
        }
        _ => Match::Exact(value.to_string()),
    };
    StringMatch {
        r#match: Some(m),
        present: false,
    }
}

fn gw_headers(hs: &[HttpHeaderMatch]) -> BTreeMap<String, StringMatch> {
    hs.iter()
        .map(|h| {
            (
                h.name.to_lowercase(),
                gw_match(h.type_.as_deref(), &h.value, false),
            )
        })
        .collect()
}

fn gw_backends(refs: &[HttpBackendRef], ns: &str) -> Vec<WeightedDestination> {
    refs.iter()
        .filter(|b| matches!(b.kind.as_deref(), None | Some("Service")))
        .map(|b| WeightedDestination {
            destination: Some(Destination {
                host: format!(
                    "{}.{}.svc.{CLUSTER_DOMAIN}",
                    b.name,
                    b.namespace.as_deref().unwrap_or(ns)
                ),
                subset: String::new(),
                port: b.port.unwrap_or(0),
            }),
            weight: b
                .weight
                .unwrap_or(meshwork_model::rules::weights::GATEWAY_API_DEFAULT),
            headers: None,
        })
        .collect()
}

fn header_modifier(m: &gw::HeaderModifier) -> HeaderOps {
    HeaderOps {
        set: m
            .set
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        add: m
            .add
            .iter()
            .map(|h| (h.name.clone(), h.value.clone()))
            .collect(),
        remove: m.remove.clone(),
    }
}

fn apply_filters(r: &mut HttpRoute, filters: &[HttpRouteFilter], ns: &str) {
    for f in filters {
        if let Some(m) = &f.request_header_modifier {
            r.headers.get_or_insert_with(Default::default).request = Some(header_modifier(m));
        }
        if let Some(m) = &f.response_header_modifier {
            r.headers.get_or_insert_with(Default::default).response = Some(header_modifier(m));
        }
        if let Some(rd) = &f.request_redirect {
            // `ReplacePrefixMatch` swaps the matched `PathPrefix` (whole segments), as a
            // URL rewrite's does; `ReplaceFullPath` replaces the path.
            let path = rd.path.as_ref();
            r.redirect = Some(Redirect {
                uri: path
                    .and_then(|p| p.replace_full_path.clone())
                    .unwrap_or_default(),
                prefix_rewrite: path
                    .and_then(|p| p.replace_prefix_match.clone())
                    .unwrap_or_default(),
                authority: rd.hostname.clone().unwrap_or_default(),
                port: rd.port.unwrap_or(0),
                scheme: rd.scheme.clone().unwrap_or_default(),
                redirect_code: rd.status_code.unwrap_or(302),
            });
            r.route.clear();
        }
        if let Some(rw) = &f.url_rewrite {
            r.rewrite = Some(Rewrite {
                uri: rw
                    .path
                    .as_ref()
                    .and_then(|p| {
                        p.replace_prefix_match
                            .clone()
                            .or(p.replace_full_path.clone())
                    })
                    .unwrap_or_default(),
                authority: rw.hostname.clone().unwrap_or_default(),
                ..Default::default()
            });
        }
        if let Some(m) = &f.request_mirror {
            let b = &m.backend_ref;
            r.mirror = Some(Destination {
                host: format!(
                    "{}.{}.svc.{CLUSTER_DOMAIN}",
                    b.name,
                    b.namespace.as_deref().unwrap_or(ns)
                ),
                subset: String::new(),
                port: b.port.unwrap_or(0),
            });
            r.mirror_percentage = m
                .percent
                .map(f64::from)
                .or(m.fraction.as_ref().map(|f| {
                    f64::from(f.numerator) * 100.0 / f64::from(f.denominator.unwrap_or(100).max(1))
                }))
                .unwrap_or(100.0);
        }
    }
}

pub(super) fn gw_http_rule(
    rule: &gw::HttpRouteRule,
    ns: &str,
    origin: &str,
    i: usize,
    port: u32,
) -> HttpRoute {
    let matches: Vec<RouteMatch> = rule
        .matches
        .iter()
        .map(|m| RouteMatch {
            uri: m
                .path
                .as_ref()
                .map(|p| gw_match(p.type_.as_deref(), p.value.as_deref().unwrap_or("/"), true)),
            method: m.method.as_ref().map(|v| gw_match(Some("Exact"), v, false)),
            headers: gw_headers(&m.headers),
            query_params: m
                .query_params
                .iter()
                .map(|h| {
                    (
                        h.name.clone(),
                        gw_match(h.type_.as_deref(), &h.value, false),
                    )
                })
                .collect(),
            port,
            ..Default::default()
        })
        .collect();
    let mut r = gw_route(
        rule.name.as_deref(),
        i,
        matches,
        port,
        &rule.backend_refs,
        ns,
        origin,
    );
    if let Some(t) = rule
        .timeouts
        .as_ref()
        .and_then(|t| t.request.or(t.backend_request))
    {
        r.timeout_ms = t.as_millis();
        r.has_timeout = true;
    }
    if let Some(rt) = &rule.retry {
        let mut retry_on = vec!["5xx".to_string()];
        if !rt.codes.is_empty() {
            retry_on = vec!["retriable-status-codes".into()];
            retry_on.extend(rt.codes.iter().map(|c| c.to_string()));
        }
        r.retries = Some(Retry {
            attempts: rt.attempts.unwrap_or(1),
            retry_on,
            backoff_ms: ms(rt.backoff),
            ..Default::default()
        });
    }
    apply_filters(&mut r, &rule.filters, ns);
    r
}

pub(super) fn gw_grpc_rule(
    rule: &gw::GrpcRouteRule,
    ns: &str,
    origin: &str,
    i: usize,
    port: u32,
) -> HttpRoute {
    let matches: Vec<RouteMatch> = rule
        .matches
        .iter()
        .map(|m| {
            let uri = m.method.as_ref().map(|mm| {
                let svc = mm.service.as_deref();
                let method = mm.method.as_deref();
                let m = if mm.type_.as_deref() == Some("RegularExpression") {
                    Match::Regex(format!(
                        "/{}/{}",
                        svc.unwrap_or("[^/]+"),
                        method.unwrap_or("[^/]+")
                    ))
                } else {
                    match (svc, method) {
                        (Some(s), Some(m)) => Match::Exact(format!("/{s}/{m}")),
                        (Some(s), None) => Match::Prefix(format!("/{s}/")),
                        (None, Some(m)) => Match::Regex(format!("/[^/]+/{}", regex_escape(m))),
                        (None, None) => Match::Prefix("/".into()),
                    }
                };
                StringMatch {
                    r#match: Some(m),
                    present: false,
                }
            });
            RouteMatch {
                uri,
                headers: gw_headers(&m.headers),
                port,
                ..Default::default()
            }
        })
        .collect();
    let mut r = gw_route(
        rule.name.as_deref(),
        i,
        matches,
        port,
        &rule.backend_refs,
        ns,
        origin,
    );
    apply_filters(&mut r, &rule.filters, ns);
    r
}

/// The route of one HTTPRoute/GRPCRoute rule: its name (`rule-<i>` when unnamed), its
/// matches (a port-only match when it has none and the parent names a port), its backends.
fn gw_route(
    name: Option<&str>,
    i: usize,
    mut matches: Vec<RouteMatch>,
    port: u32,
    backends: &[HttpBackendRef],
    ns: &str,
    origin: &str,
) -> HttpRoute {
    if matches.is_empty() && port != 0 {
        matches.push(RouteMatch {
            port,
            ..Default::default()
        });
    }
    HttpRoute {
        name: name.map_or_else(|| format!("rule-{i}"), str::to_string),
        matches,
        route: gw_backends(backends, ns),
        origin: origin.to_string(),
        ..Default::default()
    }
}

/// Restricts a rule to the route's `hostnames` (Gateway API: matched against the Host
/// header, ignoring any port, case-insensitively; `*.example.com` matches one or more labels
/// in front of `.example.com`). Every match is combined with each hostname; no hostnames
/// leaves the rule as it is.
pub(super) fn with_hostnames(mut r: HttpRoute, hostnames: &[String]) -> HttpRoute {
    if hostnames.is_empty() {
        return r;
    }
    let authorities: Vec<StringMatch> = hostnames
        .iter()
        .map(|h| {
            let host = match h.strip_prefix("*.") {
                Some(suffix) => format!("[^:]+\\.{}", regex_escape(suffix)),
                None => regex_escape(h),
            };
            StringMatch {
                r#match: Some(Match::Regex(format!("(?i:{host})(?::[0-9]+)?"))),
                present: false,
            }
        })
        .collect();
    let base = if r.matches.is_empty() {
        vec![RouteMatch::default()]
    } else {
        std::mem::take(&mut r.matches)
    };
    r.matches = base
        .iter()
        .flat_map(|m| {
            authorities.iter().map(move |a| RouteMatch {
                authority: Some(a.clone()),
                ..m.clone()
            })
        })
        .collect();
    r
}

fn regex_escape(s: &str) -> String {
    s.chars()
        .flat_map(|c| {
            let special = "\\.+*?()|[]{}^$".contains(c);
            special
                .then_some('\\')
                .into_iter()
                .chain(std::iter::once(c))
        })
        .collect()
}

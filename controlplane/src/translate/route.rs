//! VirtualService + DestinationRule + Gateway API HTTPRoute/GRPCRoute → `RouteConfig`
//! per host (`route/<ns>/<fqdn>`).
//!
//! - Hosts are resolved against the namespace of the resource that names them: `name` →
//!   `name.<ns>.svc.cluster.local`, `name.ns.svc` → `+ .cluster.local`; anything else is
//!   taken as written. The route namespace is the service's namespace for
//!   `*.<ns>.svc.cluster.local` hosts, else the namespace of the resource.
//! - `http[].delegate` inlines the delegate VirtualService's (no `hosts`) HTTP routes at
//!   that position, each match combined with the root route's match; a missing delegate
//!   drops the route (as Istio does).
//! - VirtualServices whose `gateways` list is set and lacks `mesh` apply to ingress
//!   gateways only and contribute nothing here.
//! - HTTP/TCP routes of every VirtualService for the host are concatenated, oldest
//!   VirtualService first; then Gateway API routes (HTTPRoute, then GRPCRoute, oldest
//!   first) whose parentRefs name the Service (GAMMA). Gateway API backend weights are
//!   relative (default 1), VirtualService weights total 100.
//! - The oldest DestinationRule for the host gives the host traffic policy and subsets;
//!   each subset's policy is merged over the host policy field by field.
//! - Durations are milliseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use meshwork_api::common::StringMatch as ApiStringMatch;
use meshwork_api::gateway::{self as gw, HttpBackendRef, HttpHeaderMatch, HttpRouteFilter};
use meshwork_api::networking::{self as net, TrafficPolicy as ApiPolicy};
use meshwork_api::{Kind, Object, ObjectKey, Spec};
use meshwork_model::pb::config::{
    consistent_hash::Key as HashKey, fault, load_balancer::Simple, string_match::Match,
    ConnectionPool, ConsistentHash, CorsPolicy, Destination, DirectResponse, Fault, HeaderOps,
    Headers, HttpRoute, LoadBalancer, OutlierDetection, Redirect, Retry, Rewrite, RouteConfig,
    RouteMatch, StringMatch, Subset, TcpRoute, TrafficPolicy, WeightedDestination,
};

use super::index::{age_order, Indexes};
use super::workload::CLUSTER_DOMAIN;

/// Identity of one `RouteConfig`.
#[derive(Debug, Clone, PartialEq, Eq, PartialOrd, Ord, Hash)]
pub struct RouteId {
    pub namespace: String,
    pub host: String,
}

impl RouteId {
    pub fn key(&self) -> String {
        format!("route/{}/{}", self.namespace, self.host)
    }
}

/// Resolves a host as written in a resource of namespace `ns` to an FQDN.
pub fn resolve_host(host: &str, ns: &str) -> String {
    if host.contains('*') {
        host.to_string()
    } else if !host.contains('.') {
        format!("{host}.{ns}.svc.{CLUSTER_DOMAIN}")
    } else if host.ends_with(".svc") {
        format!("{host}.{CLUSTER_DOMAIN}")
    } else {
        host.to_string()
    }
}

fn route_id(fqdn: String, origin_ns: &str) -> RouteId {
    let suffix = format!(".svc.{CLUSTER_DOMAIN}");
    let namespace = fqdn
        .strip_suffix(&suffix)
        .and_then(|rest| rest.split_once('.'))
        .filter(|(_, ns)| !ns.contains('.'))
        .map(|(_, ns)| ns.to_string())
        .unwrap_or_else(|| origin_ns.to_string());
    RouteId {
        namespace,
        host: fqdn,
    }
}

fn gw_service_parents(refs: &[gw::ParentReference], ns: &str) -> Vec<RouteId> {
    refs.iter()
        .filter(|p| p.is_service())
        .map(|p| {
            let pns = p.namespace.as_deref().unwrap_or(ns);
            route_id(format!("{}.{pns}.svc.{CLUSTER_DOMAIN}", p.name), pns)
        })
        .collect()
}

/// The routes an object contributes to.
fn targets(obj: &Object) -> Vec<RouteId> {
    let ns = obj.namespace.as_str();
    let mut out: Vec<RouteId> = match &obj.spec {
        // Bound only to ingress gateways: not mesh (waypoint) routing.
        Spec::VirtualService(vs)
            if !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh") =>
        {
            Vec::new()
        }
        Spec::VirtualService(vs) => vs
            .hosts
            .iter()
            .map(|h| route_id(resolve_host(h, ns), ns))
            .collect(),
        Spec::DestinationRule(dr) => vec![route_id(resolve_host(&dr.host, ns), ns)],
        Spec::HttpRoute(r) => gw_service_parents(&r.parent_refs, ns),
        Spec::GrpcRoute(r) => gw_service_parents(&r.parent_refs, ns),
        _ => Vec::new(),
    };
    out.sort();
    out.dedup();
    out
}

/// Which objects contribute to which routes.
#[derive(Debug, Default)]
pub struct RouteIndex {
    targets: HashMap<ObjectKey, Vec<RouteId>>,
    sources: BTreeMap<RouteId, BTreeSet<ObjectKey>>,
    /// Delegate VirtualService -> root VirtualServices that reference it.
    delegate_roots: HashMap<ObjectKey, BTreeSet<ObjectKey>>,
    /// Root VirtualService -> delegates it references.
    root_delegates: HashMap<ObjectKey, Vec<ObjectKey>>,
}

/// Delegates a VirtualService references (`http[].delegate`).
fn delegates_of(obj: &Object) -> Vec<ObjectKey> {
    let Spec::VirtualService(vs) = &obj.spec else {
        return Vec::new();
    };
    vs.http
        .iter()
        .filter_map(|r| r.delegate.as_ref())
        .map(|d| {
            let ns = if d.namespace.is_empty() {
                obj.namespace.as_str()
            } else {
                d.namespace.as_str()
            };
            ObjectKey::new(Kind::VirtualService, ns, d.name.clone())
        })
        .collect()
}

impl RouteIndex {
    /// Records the new version of `key` (None = deleted); returns every affected route.
    pub fn update(&mut self, key: &ObjectKey, new: Option<&Object>) -> Vec<RouteId> {
        let old = self.targets.remove(key).unwrap_or_default();
        for id in &old {
            if let Some(set) = self.sources.get_mut(id) {
                set.remove(key);
                if set.is_empty() {
                    self.sources.remove(id);
                }
            }
        }
        let new_targets = new.map(targets).unwrap_or_default();
        for id in &new_targets {
            self.sources
                .entry(id.clone())
                .or_default()
                .insert(key.clone());
        }
        let mut affected = old;
        affected.extend(new_targets.iter().cloned());
        if !new_targets.is_empty() {
            self.targets.insert(key.clone(), new_targets);
        }
        if key.kind == Kind::VirtualService {
            for d in self.root_delegates.remove(key).unwrap_or_default() {
                if let Some(roots) = self.delegate_roots.get_mut(&d) {
                    roots.remove(key);
                    if roots.is_empty() {
                        self.delegate_roots.remove(&d);
                    }
                }
            }
            let delegates = new.map(delegates_of).unwrap_or_default();
            for d in &delegates {
                self.delegate_roots
                    .entry(d.clone())
                    .or_default()
                    .insert(key.clone());
            }
            if !delegates.is_empty() {
                self.root_delegates.insert(key.clone(), delegates);
            }
            // Routes of the roots that inline this VirtualService as a delegate.
            for root in self.delegate_roots.get(key).into_iter().flatten() {
                affected.extend(self.targets.get(root).into_iter().flatten().cloned());
            }
        }
        affected
    }

    /// Builds the route config for `id` from its current sources.
    pub fn build(&self, id: &RouteId, idx: &Indexes) -> Option<RouteConfig> {
        let keys = self.sources.get(id)?;
        let mut objs: Vec<&Object> = keys
            .iter()
            .filter_map(|k| idx.get(k).map(|o| o.as_ref()))
            .collect();
        if objs.is_empty() {
            return None;
        }
        objs.sort_by(|a, b| {
            kind_rank(a.kind)
                .cmp(&kind_rank(b.kind))
                .then_with(|| age_order(a, b))
        });
        let mut rc = RouteConfig {
            hostname: id.host.clone(),
            namespace: id.namespace.clone(),
            ..Default::default()
        };
        let mut have_dr = false;
        for o in objs {
            let origin = format!("{}/{}/{}", o.kind, o.namespace, o.name);
            let ns = o.namespace.as_str();
            match &o.spec {
                Spec::VirtualService(vs) => {
                    let mut delegate_origins = Vec::new();
                    for r in &vs.http {
                        match &r.delegate {
                            None => rc.http.push(vs_http_route(r, ns, &origin)),
                            Some(d) => {
                                let dns = if d.namespace.is_empty() {
                                    ns
                                } else {
                                    &d.namespace
                                };
                                let Some(dobj) = idx.virtual_services.get(dns, &d.name) else {
                                    continue; // missing delegate: the route is dropped
                                };
                                let Spec::VirtualService(dvs) = &dobj.spec else {
                                    continue;
                                };
                                if !dvs.hosts.is_empty() {
                                    continue; // only host-less VirtualServices are delegates
                                }
                                let dorigin = format!("VirtualService/{dns}/{}", d.name);
                                let root = vs_http_route(r, ns, &origin);
                                for dr in &dvs.http {
                                    let mut route = vs_http_route(dr, dns, &dorigin);
                                    route.matches = merge_matches(&root.matches, &route.matches);
                                    rc.http.push(route);
                                }
                                delegate_origins.push(dorigin);
                            }
                        }
                    }
                    rc.tcp.extend(vs.tcp.iter().map(|r| vs_tcp_route(r, ns)));
                    rc.origins.push(origin);
                    rc.origins.extend(delegate_origins);
                    continue;
                }
                Spec::DestinationRule(dr) if !have_dr => {
                    have_dr = true;
                    let host_policy = dr.traffic_policy.clone().unwrap_or_default();
                    if dr.traffic_policy.is_some() {
                        rc.traffic_policy = Some(traffic_policy(&host_policy));
                    }
                    rc.subsets = dr
                        .subsets
                        .iter()
                        .map(|s| Subset {
                            name: s.name.clone(),
                            labels: s.labels.clone(),
                            traffic_policy: match &s.traffic_policy {
                                Some(sp) => Some(traffic_policy(&merge_policy(&host_policy, sp))),
                                None => dr.traffic_policy.as_ref().map(traffic_policy),
                            },
                        })
                        .collect();
                }
                Spec::DestinationRule(_) => continue, // a newer DR for the same host is ignored
                Spec::HttpRoute(r) => {
                    let port = parent_port(&r.parent_refs, id);
                    rc.http.extend(
                        r.rules
                            .iter()
                            .enumerate()
                            .map(|(i, rule)| gw_http_rule(rule, ns, &origin, i, port)),
                    );
                }
                Spec::GrpcRoute(r) => {
                    let port = parent_port(&r.parent_refs, id);
                    rc.http.extend(
                        r.rules
                            .iter()
                            .enumerate()
                            .map(|(i, rule)| gw_grpc_rule(rule, ns, &origin, i, port)),
                    );
                }
                _ => continue,
            }
            rc.origins.push(origin);
        }
        Some(rc)
    }
}

fn kind_rank(k: Kind) -> u8 {
    match k {
        Kind::VirtualService => 0,
        Kind::HttpRoute => 1,
        Kind::GrpcRoute => 2,
        _ => 3,
    }
}

fn ms(d: Option<meshwork_api::Duration>) -> u64 {
    d.map(|d| d.as_millis()).unwrap_or(0)
}

// ------------------------------------------------------------------ VirtualService

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
    const CODES: [&str; 17] = [
        "OK",
        "CANCELLED",
        "UNKNOWN",
        "INVALID_ARGUMENT",
        "DEADLINE_EXCEEDED",
        "NOT_FOUND",
        "ALREADY_EXISTS",
        "PERMISSION_DENIED",
        "RESOURCE_EXHAUSTED",
        "FAILED_PRECONDITION",
        "ABORTED",
        "OUT_OF_RANGE",
        "UNIMPLEMENTED",
        "INTERNAL",
        "UNAVAILABLE",
        "DATA_LOSS",
        "UNAUTHENTICATED",
    ];
    s.parse()
        .ok()
        .or_else(|| CODES.iter().position(|c| *c == s).map(|p| p as u32))
        .unwrap_or(2)
}

/// VirtualService weights: as given (missing = 0) when any is given; otherwise 100 split
/// evenly (the remainder goes to the first destinations).
fn weights(given: impl Iterator<Item = Option<u32>> + Clone) -> Vec<u32> {
    let n = given.clone().count() as u32;
    if given.clone().any(|w| w.is_some()) {
        return given.map(|w| w.unwrap_or(0)).collect();
    }
    (0..n)
        .map(|i| 100 / n.max(1) + u32::from(i < 100 % n.max(1)))
        .collect()
}

fn vs_http_route(r: &net::HttpRoute, ns: &str, origin: &str) -> HttpRoute {
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

fn vs_tcp_route(r: &net::TcpRoute, ns: &str) -> TcpRoute {
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
fn merge_matches(root: &[RouteMatch], delegate: &[RouteMatch]) -> Vec<RouteMatch> {
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

// ------------------------------------------------------------------ DestinationRule

/// Overlays `b` on `a`: every field set in `b` wins.
fn merge_opt<T: Clone>(a: &Option<T>, b: &Option<T>, merge: impl Fn(&T, &T) -> T) -> Option<T> {
    match (a, b) {
        (Some(a), Some(b)) => Some(merge(a, b)),
        (None, b) => b.clone(),
        (a, None) => a.clone(),
    }
}

fn pick<T: Clone>(a: &Option<T>, b: &Option<T>) -> Option<T> {
    b.clone().or_else(|| a.clone())
}

/// Subset policy merged over the host policy, field by field.
pub fn merge_policy(host: &ApiPolicy, subset: &ApiPolicy) -> ApiPolicy {
    ApiPolicy {
        load_balancer: pick(&host.load_balancer, &subset.load_balancer),
        connection_pool: merge_opt(&host.connection_pool, &subset.connection_pool, |a, b| {
            net::ConnectionPoolSettings {
                tcp: merge_opt(&a.tcp, &b.tcp, |a, b| net::TcpSettings {
                    max_connections: pick(&a.max_connections, &b.max_connections),
                    connect_timeout: pick(&a.connect_timeout, &b.connect_timeout),
                    tcp_keepalive: pick(&a.tcp_keepalive, &b.tcp_keepalive),
                    max_connection_duration: pick(
                        &a.max_connection_duration,
                        &b.max_connection_duration,
                    ),
                    idle_timeout: pick(&a.idle_timeout, &b.idle_timeout),
                }),
                http: merge_opt(&a.http, &b.http, |a, b| net::HttpSettings {
                    http1_max_pending_requests: pick(
                        &a.http1_max_pending_requests,
                        &b.http1_max_pending_requests,
                    ),
                    http2_max_requests: pick(&a.http2_max_requests, &b.http2_max_requests),
                    max_requests_per_connection: pick(
                        &a.max_requests_per_connection,
                        &b.max_requests_per_connection,
                    ),
                    max_retries: pick(&a.max_retries, &b.max_retries),
                    idle_timeout: pick(&a.idle_timeout, &b.idle_timeout),
                    h2_upgrade_policy: pick(&a.h2_upgrade_policy, &b.h2_upgrade_policy),
                    use_client_protocol: pick(&a.use_client_protocol, &b.use_client_protocol),
                    max_concurrent_streams: pick(
                        &a.max_concurrent_streams,
                        &b.max_concurrent_streams,
                    ),
                }),
            }
        }),
        outlier_detection: merge_opt(
            &host.outlier_detection,
            &subset.outlier_detection,
            |a, b| net::OutlierDetection {
                split_external_local_origin_errors: pick(
                    &a.split_external_local_origin_errors,
                    &b.split_external_local_origin_errors,
                ),
                consecutive_local_origin_failures: pick(
                    &a.consecutive_local_origin_failures,
                    &b.consecutive_local_origin_failures,
                ),
                consecutive_gateway_errors: pick(
                    &a.consecutive_gateway_errors,
                    &b.consecutive_gateway_errors,
                ),
                consecutive_5xx_errors: pick(&a.consecutive_5xx_errors, &b.consecutive_5xx_errors),
                consecutive_errors: pick(&a.consecutive_errors, &b.consecutive_errors),
                interval: pick(&a.interval, &b.interval),
                base_ejection_time: pick(&a.base_ejection_time, &b.base_ejection_time),
                max_ejection_percent: pick(&a.max_ejection_percent, &b.max_ejection_percent),
                min_health_percent: pick(&a.min_health_percent, &b.min_health_percent),
            },
        ),
        tls: pick(&host.tls, &subset.tls),
        port_level_settings: if subset.port_level_settings.is_empty() {
            host.port_level_settings.clone()
        } else {
            subset.port_level_settings.clone()
        },
        tunnel: pick(&host.tunnel, &subset.tunnel),
        proxy_protocol: pick(&host.proxy_protocol, &subset.proxy_protocol),
    }
}

/// Istio's defaults where the user left a field out: `baseEjectionTime` 30 s,
/// `interval` 10 s, `maxEjectionPercent` 10, `consecutive5xxErrors` 5.
pub fn traffic_policy(p: &ApiPolicy) -> TrafficPolicy {
    TrafficPolicy {
        connection_pool: p.connection_pool.as_ref().map(|c| {
            let tcp = c.tcp.clone().unwrap_or_default();
            let http = c.http.clone().unwrap_or_default();
            ConnectionPool {
                max_connections: tcp.max_connections.unwrap_or(0),
                connect_timeout_ms: ms(tcp.connect_timeout),
                http1_max_pending_requests: http.http1_max_pending_requests.unwrap_or(0),
                http2_max_requests: http.http2_max_requests.unwrap_or(0),
                max_requests_per_connection: http.max_requests_per_connection.unwrap_or(0),
                max_retries: http.max_retries.unwrap_or(0),
                idle_timeout_ms: ms(http.idle_timeout.or(tcp.idle_timeout)),
                h2_upgrade_policy: http.h2_upgrade_policy.unwrap_or_default(),
            }
        }),
        outlier_detection: p.outlier_detection.as_ref().map(|o| OutlierDetection {
            consecutive_5xx_errors: o
                .consecutive_5xx_errors
                .or(o.consecutive_errors)
                .unwrap_or(5),
            consecutive_gateway_errors: o.consecutive_gateway_errors.unwrap_or(0),
            interval_ms: o.interval.map(|d| d.as_millis()).unwrap_or(10_000),
            base_ejection_time_ms: o
                .base_ejection_time
                .map(|d| d.as_millis())
                .unwrap_or(30_000),
            max_ejection_percent: o.max_ejection_percent.unwrap_or(10),
            min_health_percent: o.min_health_percent.unwrap_or(0),
            split_external_local_origin_errors: o
                .split_external_local_origin_errors
                .unwrap_or(false),
            consecutive_local_origin_failures: o.consecutive_local_origin_failures.unwrap_or(0),
            enabled: true,
        }),
        load_balancer: p.load_balancer.as_ref().map(|lb| LoadBalancer {
            simple: match lb.simple.as_deref() {
                Some("ROUND_ROBIN") => Simple::RoundRobin,
                Some("LEAST_CONN") | Some("LEAST_REQUEST") => Simple::LeastRequest,
                Some("RANDOM") => Simple::Random,
                Some("PASSTHROUGH") => Simple::Passthrough,
                _ => Simple::Unspecified,
            } as i32,
            consistent_hash: lb.consistent_hash.as_ref().map(|ch| ConsistentHash {
                key: if let Some(h) = &ch.http_header_name {
                    Some(HashKey::HttpHeaderName(h.clone()))
                } else if let Some(c) = &ch.http_cookie {
                    Some(HashKey::HttpCookie(c.name.clone()))
                } else if ch.use_source_ip == Some(true) {
                    Some(HashKey::UseSourceIp(true))
                } else {
                    ch.http_query_parameter_name
                        .clone()
                        .map(HashKey::HttpQueryParameterName)
                },
                cookie_ttl_ms: ch.http_cookie.as_ref().map(|c| ms(c.ttl)).unwrap_or(0),
            }),
        }),
        tls_mode: p
            .tls
            .as_ref()
            .and_then(|t| t.mode.clone())
            .unwrap_or_default(),
    }
}

// ------------------------------------------------------------------ Gateway API

fn parent_port(refs: &[gw::ParentReference], id: &RouteId) -> u32 {
    refs.iter()
        .filter(|p| p.is_service() && id.host.starts_with(&format!("{}.", p.name)))
        .find_map(|p| p.port)
        .unwrap_or(0)
}

fn gw_match(kind: Option<&str>, value: &str, default_prefix: bool) -> StringMatch {
    let m = match kind {
        Some("Exact") => Match::Exact(value.to_string()),
        Some("RegularExpression") => Match::Regex(value.to_string()),
        Some("PathPrefix") => Match::Prefix(value.to_string()),
        _ if default_prefix => Match::Prefix(value.to_string()),
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
            weight: b.weight.unwrap_or(1),
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
            r.redirect = Some(Redirect {
                uri: rd
                    .path
                    .as_ref()
                    .and_then(|p| {
                        p.replace_full_path
                            .clone()
                            .or(p.replace_prefix_match.clone())
                    })
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

fn gw_http_rule(
    rule: &gw::HttpRouteRule,
    ns: &str,
    origin: &str,
    i: usize,
    port: u32,
) -> HttpRoute {
    let mut matches: Vec<RouteMatch> = rule
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
    if matches.is_empty() && port != 0 {
        matches.push(RouteMatch {
            port,
            ..Default::default()
        });
    }
    let mut r = HttpRoute {
        name: rule.name.clone().unwrap_or_else(|| format!("rule-{i}")),
        matches,
        route: gw_backends(&rule.backend_refs, ns),
        origin: origin.to_string(),
        ..Default::default()
    };
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

fn gw_grpc_rule(
    rule: &gw::GrpcRouteRule,
    ns: &str,
    origin: &str,
    i: usize,
    port: u32,
) -> HttpRoute {
    let mut matches: Vec<RouteMatch> = rule
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
    if matches.is_empty() && port != 0 {
        matches.push(RouteMatch {
            port,
            ..Default::default()
        });
    }
    let mut r = HttpRoute {
        name: rule.name.clone().unwrap_or_else(|| format!("rule-{i}")),
        matches,
        route: gw_backends(&rule.backend_refs, ns),
        origin: origin.to_string(),
        ..Default::default()
    };
    apply_filters(&mut r, &rule.filters, ns);
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

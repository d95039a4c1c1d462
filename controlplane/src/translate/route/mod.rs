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
//!   VirtualService first (creationTimestamp, then namespace, then name; with the directory
//!   source the timestamp is the time the control plane first saw the object, see
//!   [`crate::state`], so renaming a resource cannot move it ahead); then Gateway API routes (HTTPRoute, then GRPCRoute, oldest
//!   first) whose parentRefs name the Service (GAMMA). Gateway API backend weights are
//!   relative (default 1), VirtualService weights are relative too
//!   (Istio normalises them by their sum; the waypoint picks in proportion to the sum).
//! - The oldest DestinationRule for the host gives the host traffic policy and subsets;
//!   each subset's policy is merged over the host policy field by field.
//! - HTTPRoute / GRPCRoute whose parentRefs name a Gateway (kind `Gateway`, the default) are
//!   routes bound to that Gateway as a waypoint (Istio: "attach to the entire waypoint").
//!   They go to one `RouteConfig` per Gateway under the reserved host
//!   [`gateway_host`]`(name)` = `gateway~<name>` (`~` cannot occur in a DNS name), key
//!   `route/<gateway ns>/gateway~<name>`, oldest route first. The route's `hostnames` become
//!   `authority` matches on every rule match (Host header, case-insensitive, any port,
//!   `*.example.com` = one or more labels before `.example.com`); no hostnames: every host.
//!   The waypoint named by the Gateway applies them to traffic for the services it serves,
//!   after the service's own routes (see the waypoint's routing). The parent's port and
//!   sectionName are ignored (a waypoint has one HBONE listener).
//! - Durations are milliseconds.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use meshwork_api::gateway as gw;
use meshwork_api::{Kind, Object, ObjectKey, Spec};
use meshwork_model::pb::config::{RouteConfig, Subset};

mod destination_rule;
mod gateway_api;
mod undefined_subsets;
mod virtual_service;

pub use destination_rule::{merge_policy, traffic_policy};
pub use undefined_subsets::undefined_subsets;

use super::index::{age_order, Indexes};
use super::workload::CLUSTER_DOMAIN;
use gateway_api::{gw_grpc_rule, gw_http_rule, parent_port, with_hostnames};
use virtual_service::{merge_matches, vs_http_route, vs_tcp_route};

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

pub use meshwork_model::rules::{gateway_host, GATEWAY_HOST_PREFIX};

/// Whether a parentRef names a Gateway (`kind` defaults to Gateway, in the Gateway API group).
fn is_gateway(p: &gw::ParentReference) -> bool {
    matches!(p.kind.as_deref(), None | Some("Gateway"))
        && matches!(p.group.as_deref(), None | Some("gateway.networking.k8s.io"))
}

/// The routes a Gateway API route contributes to: its Service parents' hosts (GAMMA) and its
/// Gateway parents' waypoint route configs.
///
/// A Gateway parent in another namespace is not attached: Gateway API attaches it only when
/// the Gateway's listener allows that namespace (`allowedRoutes.namespaces.from`, `Same` by
/// default, which waypoint Gateways keep), and Meshwork does not read `allowedRoutes`, so
/// it keeps the default. Otherwise any namespace could route another's waypoint traffic.
fn gw_parents(refs: &[gw::ParentReference], ns: &str) -> Vec<RouteId> {
    refs.iter()
        .filter_map(|p| {
            let pns = p.namespace.as_deref().unwrap_or(ns);
            if p.is_service() {
                Some(route_id(
                    format!("{}.{pns}.svc.{CLUSTER_DOMAIN}", p.name),
                    pns,
                ))
            } else if is_gateway(p) && pns == ns {
                Some(RouteId {
                    namespace: pns.to_string(),
                    host: gateway_host(&p.name),
                })
            } else {
                None
            }
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
        Spec::HttpRoute(r) => gw_parents(&r.parent_refs, ns),
        Spec::GrpcRoute(r) => gw_parents(&r.parent_refs, ns),
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
        // GAMMA: consumer routes (from another namespace) leave the Service's other clients
        // on its default route unless the Service has routes of its own.
        let gateway = id.host.starts_with(GATEWAY_HOST_PREFIX);
        let (mut producer_http, mut consumer_http) = (false, false);
        for o in objs {
            let origin = format!("{}/{}/{}", o.kind, o.namespace, o.name);
            let ns = o.namespace.as_str();
            match &o.spec {
                Spec::VirtualService(vs) => {
                    producer_http |= !vs.http.is_empty();
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
                    if !gateway && id.namespace != ns {
                        consumer_http = true;
                    } else {
                        producer_http = true;
                    }
                    let port = parent_port(&r.parent_refs, id);
                    let rules = r
                        .rules
                        .iter()
                        .enumerate()
                        .map(|(i, rule)| gw_http_rule(rule, ns, &origin, i, port));
                    rc.http.extend(for_gateway(id, ns, &r.hostnames, rules));
                }
                Spec::GrpcRoute(r) => {
                    if !gateway && id.namespace != ns {
                        consumer_http = true;
                    } else {
                        producer_http = true;
                    }
                    let port = parent_port(&r.parent_refs, id);
                    let rules = r
                        .rules
                        .iter()
                        .enumerate()
                        .map(|(i, rule)| gw_grpc_rule(rule, ns, &origin, i, port));
                    rc.http.extend(for_gateway(id, ns, &r.hostnames, rules));
                }
                _ => continue,
            }
            rc.origins.push(origin);
        }
        if consumer_http && !producer_http {
            rc.http.push(default_route(&id.host));
        }
        Some(rc)
    }
}

/// The Service's own default route (to itself, on the request's port), after its consumer
/// routes.
fn default_route(host: &str) -> meshwork_model::pb::config::HttpRoute {
    use meshwork_model::pb::config::{Destination, HttpRoute, WeightedDestination};
    HttpRoute {
        name: "default".into(),
        route: vec![WeightedDestination {
            destination: Some(Destination {
                host: host.to_string(),
                subset: String::new(),
                port: 0,
            }),
            weight: meshwork_model::rules::weights::WHOLE,
            headers: None,
        }],
        ..Default::default()
    }
}

/// Rules as they apply to `id`: on a waypoint Gateway's route config, restricted to the
/// route's `hostnames`; on a Service's, as they are (GAMMA ignores `hostnames`), except that
/// a route from another namespace than the Service's is a GAMMA *consumer* route: it applies
/// only to requests from clients of its own namespace (`route_ns`), never to the Service's
/// other clients.
fn for_gateway<'a>(
    id: &RouteId,
    route_ns: &'a str,
    hostnames: &'a [String],
    rules: impl Iterator<Item = meshwork_model::pb::config::HttpRoute> + 'a,
) -> impl Iterator<Item = meshwork_model::pb::config::HttpRoute> + 'a {
    let gateway = id.host.starts_with(GATEWAY_HOST_PREFIX);
    let consumer = !gateway && id.namespace != route_ns;
    rules.map(move |mut r| {
        if gateway {
            with_hostnames(r, hostnames)
        } else if consumer {
            if r.matches.is_empty() {
                r.matches.push(Default::default());
            }
            for m in &mut r.matches {
                m.source_namespace = route_ns.to_string();
            }
            r
        } else {
            r
        }
    })
}

fn kind_rank(k: Kind) -> u8 {
    match k {
        Kind::VirtualService => 0,
        Kind::HttpRoute => 1,
        Kind::GrpcRoute => 2,
        _ => 3,
    }
}

pub(super) fn ms(d: Option<meshwork_api::Duration>) -> u64 {
    d.map(|d| d.as_millis()).unwrap_or(0)
}

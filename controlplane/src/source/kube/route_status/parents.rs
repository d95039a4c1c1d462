//! What a route's `status.parents[]` says for each of its waypoint Gateway parents.
//!
//! For every `parentRef` naming a Gateway (kind `Gateway`, group
//! `gateway.networking.k8s.io`, the defaults) one entry with controller
//! [`MESH_CONTROLLER`], the parentRef as written, and two conditions:
//! - `Accepted`: `True`/`Accepted` when the Gateway exists with class `istio-waypoint`
//!   and the route is valid; `False`/`NoMatchingParent` when the Gateway does not exist
//!   or is of another class; `False`/`NotAllowedByListeners` when the Gateway is in another
//!   namespace (routes attach only to their own namespace's Gateways); `False`/`UnsupportedValue` with the validation errors when
//!   the route itself is invalid;
//! - `ResolvedRefs`: `True`/`ResolvedRefs` when every `backendRef` is an existing
//!   Service; `False`/`InvalidKind` for a backend kind other than Service, else
//!   `False`/`BackendNotFound` naming the missing Services.
//!
//! Service parents (GAMMA) get no entry here.

use std::collections::{BTreeMap, BTreeSet};
use std::path::Path;

use k8s_openapi::jiff::Timestamp;
use serde_json::{json, Value};

use super::super::pseudo;
use super::super::waypoints::gateway::WAYPOINT_CLASS;
use super::super::waypoints::status::Cond;

/// Controller name of the waypoint class (`istio-waypoint`), as Istio writes it.
pub const MESH_CONTROLLER: &str = "istio.io/mesh-controller";
const GATEWAY_GROUP: &str = "gateway.networking.k8s.io";

/// `(namespace, name)`.
pub type Key = (String, String);

/// A route as read from its pseudo-file.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RouteObs {
    pub kind: String,
    pub namespace: String,
    pub name: String,
    pub generation: Option<i64>,
    /// The Gateway parentRefs, as written.
    pub gateway_parents: Vec<Value>,
    /// `(group, kind, namespace, name)` of every backendRef.
    pub backends: Vec<(String, String, String, String)>,
    /// The route's validation errors, joined; `None` when valid.
    pub invalid: Option<String>,
}

/// Reads an HTTPRoute or GRPCRoute pseudo-file; `None` for other paths or unreadable JSON.
pub fn observe_route(path: &Path, text: &str) -> Option<RouteObs> {
    let (kind, namespace, name) = pseudo::parse_path(path)?;
    if kind != "HTTPRoute" && kind != "GRPCRoute" {
        return None;
    }
    let namespace = namespace.unwrap_or_default().to_string();
    let v: Value = serde_json::from_str(text).ok()?;
    let gateway_parents = v["spec"]["parentRefs"]
        .as_array()
        .into_iter()
        .flatten()
        .filter(|p| is_gateway_ref(p))
        .cloned()
        .collect();
    let backends = v["spec"]["rules"]
        .as_array()
        .into_iter()
        .flatten()
        .flat_map(|r| r["backendRefs"].as_array().into_iter().flatten())
        .map(|b| {
            let s = |f: &str| b[f].as_str().unwrap_or_default().to_string();
            let kind = b["kind"].as_str().unwrap_or("Service").to_string();
            let ns = b["namespace"].as_str().unwrap_or(&namespace).to_string();
            (s("group"), kind, ns, s("name"))
        })
        .collect();
    let parsed = meshwork_api::parse_file(path, text, &namespace);
    let errors: Vec<String> = parsed
        .errors()
        .map(|e| {
            if e.field.is_empty() {
                e.message.clone()
            } else {
                format!("{}: {}", e.field, e.message)
            }
        })
        .collect();
    Some(RouteObs {
        kind: kind.to_string(),
        namespace,
        name: name.to_string(),
        generation: v["metadata"]["generation"].as_i64(),
        gateway_parents,
        backends,
        invalid: (!errors.is_empty()).then(|| errors.join("; ")),
    })
}

fn is_gateway_ref(p: &Value) -> bool {
    matches!(p["kind"].as_str(), None | Some("Gateway"))
        && matches!(p["group"].as_str(), None | Some(GATEWAY_GROUP))
}

/// What the route's parents resolve against: Gateways (with their class) and Services.
#[derive(Debug, Default, Clone)]
pub struct Cluster {
    pub gateways: BTreeMap<Key, String>,
    pub services: BTreeSet<Key>,
}

/// One `status.parents[]` entry.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ParentStatus {
    pub parent_ref: Value,
    pub accepted: Cond,
    pub resolved_refs: Cond,
}

/// Our entries of a route's `status.parents`.
#[derive(Debug, Clone, PartialEq, Eq, Default)]
pub struct RouteStatus {
    pub parents: Vec<ParentStatus>,
    pub observed_generation: Option<i64>,
}

/// The entries for `route`'s Gateway parents given what exists.
pub fn route_status(route: &RouteObs, cluster: &Cluster) -> RouteStatus {
    let resolved = resolved_refs(route, cluster);
    let parents = route
        .gateway_parents
        .iter()
        .map(|p| {
            let ns = p["namespace"]
                .as_str()
                .unwrap_or(&route.namespace)
                .to_string();
            let name = p["name"].as_str().unwrap_or_default().to_string();
            let accepted = match (
                cluster.gateways.get(&(ns.clone(), name.clone())),
                &route.invalid,
            ) {
                (None, _) => {
                    Cond::failed("NoMatchingParent", format!("Gateway {ns}/{name} not found"))
                }
                (Some(class), _) if class != WAYPOINT_CLASS => Cond::failed(
                    "NoMatchingParent",
                    format!(
                        "Gateway {ns}/{name} has class {class:?}, not {WAYPOINT_CLASS:?}: \
                         only waypoint Gateways take routes in the mesh"
                    ),
                ),
                (Some(_), _) if ns != route.namespace => Cond::failed(
                    "NotAllowedByListeners",
                    format!(
                        "Gateway {ns}/{name} is in another namespace: Meshwork attaches routes \
                         only to Gateways of their own namespace (allowedRoutes is not read; \
                         its default is Same)"
                    ),
                ),
                (Some(_), Some(errors)) => Cond::failed("UnsupportedValue", errors.clone()),
                (Some(_), None) => Cond::ok("Accepted", "Route was valid"),
            };
            ParentStatus {
                parent_ref: p.clone(),
                accepted,
                resolved_refs: resolved.clone(),
            }
        })
        .collect();
    RouteStatus {
        parents,
        observed_generation: route.generation,
    }
}

fn resolved_refs(route: &RouteObs, cluster: &Cluster) -> Cond {
    let invalid: Vec<String> = route
        .backends
        .iter()
        .filter(|(group, kind, _, _)| !(group.is_empty() && kind == "Service"))
        .map(|(group, kind, ns, name)| {
            let gk = if group.is_empty() {
                kind.clone()
            } else {
                format!("{kind}.{group}")
            };
            format!("{gk} {ns}/{name}")
        })
        .collect();
    if !invalid.is_empty() {
        return Cond::failed(
            "InvalidKind",
            format!(
                "backendRefs must be Services; unsupported: {}",
                invalid.join(", ")
            ),
        );
    }
    let mut missing: Vec<String> = route
        .backends
        .iter()
        .filter(|(_, _, ns, name)| !cluster.services.contains(&(ns.clone(), name.clone())))
        .map(|(_, _, ns, name)| format!("{ns}/{name}"))
        .collect();
    missing.sort();
    missing.dedup();
    if missing.is_empty() {
        Cond::ok("ResolvedRefs", "All references resolved")
    } else {
        Cond::failed(
            "BackendNotFound",
            format!("backend Service(s) not found: {}", missing.join(", ")),
        )
    }
}

impl RouteStatus {
    /// The merge-patch body: `current` (the object's `status.parents` as the API server
    /// has it) without our entries, then ours. A condition whose status did not change
    /// keeps its `lastTransitionTime`; the others get `now`.
    pub fn patch(&self, current: &Value, now: Timestamp) -> Value {
        let current = current.as_array().map(Vec::as_slice).unwrap_or(&[]);
        let mine = |e: &&Value| e["controllerName"].as_str() == Some(MESH_CONTROLLER);
        let mut parents: Vec<Value> = current.iter().filter(|e| !mine(e)).cloned().collect();
        for p in &self.parents {
            let before = current
                .iter()
                .filter(mine)
                .find(|e| e["parentRef"] == p.parent_ref);
            let cond = |t: &str, c: &Cond| {
                let status = if c.status { "True" } else { "False" };
                let since = before
                    .and_then(|e| e["conditions"].as_array())
                    .and_then(|cs| cs.iter().find(|x| x["type"] == t && x["status"] == status))
                    .and_then(|x| x["lastTransitionTime"].as_str())
                    .map(str::to_string)
                    .unwrap_or_else(|| now.to_string());
                let mut v = json!({
                    "type": t,
                    "status": status,
                    "reason": c.reason,
                    "message": c.message,
                    "lastTransitionTime": since,
                });
                if let Some(g) = self.observed_generation {
                    v["observedGeneration"] = json!(g);
                }
                v
            };
            parents.push(json!({
                "parentRef": p.parent_ref,
                "controllerName": MESH_CONTROLLER,
                "conditions": [cond("Accepted", &p.accepted), cond("ResolvedRefs", &p.resolved_refs)],
            }));
        }
        json!({"status": {"parents": parents}})
    }
}

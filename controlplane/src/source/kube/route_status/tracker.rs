//! Desired vs written route parent statuses. Gateway and Service events change the
//! desired status of the routes naming them, so the desired status is computed from the
//! current routes, Gateways and Services whenever it is asked for.

use std::collections::BTreeMap;
use std::path::PathBuf;

use serde_json::Value;

use super::super::pseudo;
use super::super::status::{ObjectRef, Tracker};
use super::parents::{observe_route, route_status, Cluster, RouteObs, RouteStatus};
use crate::source::FileEvent;

#[derive(Debug, Default)]
pub struct RouteTracker {
    cluster: Cluster,
    routes: BTreeMap<PathBuf, RouteObs>,
    written: BTreeMap<PathBuf, RouteStatus>,
}

impl Tracker for RouteTracker {
    type Status = RouteStatus;

    /// Other kinds than routes, Gateways and Services are ignored.
    fn observe(&mut self, events: &[FileEvent]) {
        for ev in events {
            let (path, text) = match ev {
                FileEvent::Changed(p, t) => (p, Some(t)),
                FileEvent::Removed(p) => (p, None),
            };
            let Some((kind, Some(ns), name)) = pseudo::parse_path(path) else {
                continue;
            };
            let key = (ns.to_string(), name.to_string());
            match (kind, text) {
                ("Gateway", Some(t)) => {
                    let class = serde_json::from_str::<Value>(t)
                        .ok()
                        .and_then(|v| v["spec"]["gatewayClassName"].as_str().map(String::from))
                        .unwrap_or_default();
                    self.cluster.gateways.insert(key, class);
                }
                ("Gateway", None) => {
                    self.cluster.gateways.remove(&key);
                }
                ("Service", Some(_)) => {
                    self.cluster.services.insert(key);
                }
                ("Service", None) => {
                    self.cluster.services.remove(&key);
                }
                ("HTTPRoute" | "GRPCRoute", Some(t)) => match observe_route(path, t) {
                    Some(r) => {
                        self.routes.insert(path.clone(), r);
                    }
                    None => {
                        self.routes.remove(path);
                    }
                },
                ("HTTPRoute" | "GRPCRoute", None) => {
                    self.routes.remove(path);
                    self.written.remove(path);
                }
                _ => {}
            }
        }
    }

    /// Statuses not written yet (or changed since), in path order. A route that never had
    /// an entry of ours and has no Gateway parent is left alone.
    fn pending(&self) -> Vec<(PathBuf, ObjectRef, RouteStatus)> {
        self.routes
            .iter()
            .filter_map(|(path, r)| {
                let desired = route_status(r, &self.cluster);
                let written = self.written.get(path);
                let unchanged = match written {
                    Some(w) => *w == desired,
                    None => desired.parents.is_empty(),
                };
                (!unchanged).then(|| {
                    let obj = ObjectRef {
                        kind: r.kind.clone(),
                        namespace: r.namespace.clone(),
                        name: r.name.clone(),
                    };
                    (path.clone(), obj, desired)
                })
            })
            .collect()
    }

    fn mark_written(&mut self, path: PathBuf, status: RouteStatus) {
        self.written.insert(path, status);
    }

    fn reset_written(&mut self) {
        self.written.clear();
    }
}

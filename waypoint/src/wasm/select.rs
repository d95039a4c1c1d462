//! Which loaded plugins apply to a request, in the order they run.
//!
//! Attachment, as Istio ambient: a plugin applies when one of its `targetRefs` names this
//! waypoint's Gateway (all its traffic) or the request's destination Service. Its `match`
//! list, when given, must have an entry whose `mode` takes the waypoint's side (a waypoint
//! is the server side of the traffic it handles: `SERVER`, `CLIENT_AND_SERVER` or unset) and
//! whose `ports` are empty or hold the destination port.
//!
//! Order, as Istio places the filters in Envoy's chain: `AUTHN`, then `AUTHZ` run before
//! the waypoint's own authorization; `STATS`, then `UNSPECIFIED` after it (before routing,
//! so header changes steer the route). Within a phase, higher `priority` first; equal
//! priorities by namespace/name.

use std::sync::Arc;

use meshwork_model::pb::config as pb;

use super::registry::{is_this_gateway, Loaded, PluginSet};
use crate::config::WaypointId;

/// What a request gets when a FAIL_CLOSE plugin cannot run (Envoy's `wasm_fail_stream`).
pub const FAIL_STATUS: u16 = 503;

/// The plugins of one request: before and after the waypoint's authorization.
#[derive(Debug, Default, Clone)]
pub struct Selected {
    pub before_authz: Vec<Arc<Loaded>>,
    pub after_authz: Vec<Arc<Loaded>>,
}

impl Selected {
    pub fn is_empty(&self) -> bool {
        self.before_authz.is_empty() && self.after_authz.is_empty()
    }
}

fn targets(p: &pb::WasmPlugin, w: &WaypointId, service: &pb::Service) -> bool {
    p.target_refs.iter().any(|r| {
        is_this_gateway(r, w)
            || (r.kind == "Service"
                && matches!(r.group.as_str(), "" | "core")
                && r.name == service.name
                && (if r.namespace.is_empty() {
                    p.namespace == service.namespace
                } else {
                    r.namespace == service.namespace
                }))
    })
}

fn matches(p: &pb::WasmPlugin, port: u16) -> bool {
    p.r#match.is_empty()
        || p.r#match.iter().any(|m| {
            matches!(
                m.mode.as_str(),
                "" | "UNDEFINED" | "SERVER" | "CLIENT_AND_SERVER"
            ) && (m.ports.is_empty() || m.ports.contains(&u32::from(port)))
        })
}

/// Run order of a phase: AUTHN, AUTHZ, STATS, UNSPECIFIED.
fn rank(phase: i32) -> u8 {
    match pb::WasmPhase::try_from(phase).unwrap_or_default() {
        pb::WasmPhase::Authn => 0,
        pb::WasmPhase::Authz => 1,
        pb::WasmPhase::Stats => 2,
        pb::WasmPhase::PhaseUnspecified => 3,
    }
}

/// The plugins of `set` for a request to `service` port `port` through waypoint `w`.
pub fn select(set: &PluginSet, w: &WaypointId, service: &pb::Service, port: u16) -> Selected {
    let mut all: Vec<&Arc<Loaded>> = set
        .plugins
        .iter()
        .filter(|l| targets(&l.spec, w, service) && matches(&l.spec, port))
        .collect();
    all.sort_by(|a, b| {
        (rank(a.spec.phase), -i64::from(a.spec.priority))
            .cmp(&(rank(b.spec.phase), -i64::from(b.spec.priority)))
            .then_with(|| (&a.spec.namespace, &a.spec.name).cmp(&(&b.spec.namespace, &b.spec.name)))
    });
    let (before, after): (Vec<_>, Vec<_>) = all.into_iter().partition(|l| rank(l.spec.phase) < 2);
    Selected {
        before_authz: before.into_iter().cloned().collect(),
        after_authz: after.into_iter().cloned().collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn wp() -> WaypointId {
        WaypointId {
            namespace: "prod".into(),
            name: "waypoint".into(),
        }
    }

    fn svc(name: &str) -> pb::Service {
        pb::Service {
            name: name.into(),
            namespace: "prod".into(),
            ..Default::default()
        }
    }

    fn tref(kind: &str, name: &str) -> pb::TargetRef {
        pb::TargetRef {
            group: if kind == "Gateway" {
                "gateway.networking.k8s.io".into()
            } else {
                String::new()
            },
            kind: kind.into(),
            name: name.into(),
            namespace: "prod".into(),
        }
    }

    fn plugin(name: &str, phase: pb::WasmPhase, priority: i32, r: pb::TargetRef) -> Arc<Loaded> {
        Arc::new(Loaded {
            spec: pb::WasmPlugin {
                name: name.into(),
                namespace: "prod".into(),
                phase: phase as i32,
                priority,
                target_refs: vec![r],
                ..Default::default()
            },
            plugin: Err("not loaded in this test".into()),
        })
    }

    fn names(v: &[Arc<Loaded>]) -> Vec<&str> {
        v.iter().map(|l| l.spec.name.as_str()).collect()
    }

    #[test]
    fn order_by_phase_then_priority() {
        use pb::WasmPhase::*;
        let gw = || tref("Gateway", "waypoint");
        let set = PluginSet {
            plugins: vec![
                plugin("stats", Stats, 0, gw()),
                plugin("plain", PhaseUnspecified, 100, gw()),
                plugin("authz", Authz, 5, gw()),
                plugin("authn-low", Authn, 1, gw()),
                plugin("authn-high", Authn, 10, gw()),
                plugin("authn-tie-b", Authn, 1, gw()),
            ],
        };
        let s = select(&set, &wp(), &svc("orders"), 80);
        assert_eq!(
            names(&s.before_authz),
            ["authn-high", "authn-low", "authn-tie-b", "authz"]
        );
        assert_eq!(names(&s.after_authz), ["stats", "plain"]);
    }

    #[test]
    fn attachment_and_match() {
        use pb::WasmPhase::*;
        let mut on_port = plugin("port81", PhaseUnspecified, 0, tref("Gateway", "waypoint"));
        Arc::get_mut(&mut on_port).unwrap().spec.r#match = vec![pb::WasmTrafficSelector {
            mode: "SERVER".into(),
            ports: vec![81],
        }];
        let mut client = plugin("client", PhaseUnspecified, 0, tref("Gateway", "waypoint"));
        Arc::get_mut(&mut client).unwrap().spec.r#match = vec![pb::WasmTrafficSelector {
            mode: "CLIENT".into(),
            ports: vec![],
        }];
        let set = PluginSet {
            plugins: vec![
                plugin("orders", PhaseUnspecified, 0, tref("Service", "orders")),
                plugin("other-gw", PhaseUnspecified, 0, tref("Gateway", "other")),
                plugin("payments", PhaseUnspecified, 0, tref("Service", "payments")),
                on_port,
                client,
            ],
        };
        let s = select(&set, &wp(), &svc("orders"), 80);
        assert_eq!(names(&s.after_authz), ["orders"]);
        let s = select(&set, &wp(), &svc("payments"), 81);
        assert_eq!(names(&s.after_authz), ["payments", "port81"]);
        assert!(s.before_authz.is_empty());
    }
}

//! What each kind of proxy receives.
//!
//! - ztunnel (by node): the mesh settings, every workload and service (it must resolve
//!   any destination), telemetry, and only the authorization policies that can apply to
//!   its own node's workloads, in the L4 form ztunnel enforces.
//! - waypoint: routes, services, workloads and telemetry for any destination it may serve,
//!   and policies in full (L7) form.
//! - observer (CLI): everything, as the control plane holds it.

use std::collections::BTreeSet;
use std::sync::Arc;

use meshwork_model::keys::{make_resource, Kind};
use meshwork_model::pb::config::{resource, Authorization, PolicyScope, ProxyKind, Resource};

use super::hub::HubState;

/// Rewrites a policy into the form ztunnel enforces.
pub type L4View = fn(&Authorization) -> Authorization;

/// The per-node facts that decide which policies a ztunnel needs.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct NodeContext {
    namespaces: BTreeSet<String>,
    selector_policies: BTreeSet<String>,
    /// Keys of the workloads on the node.
    local: BTreeSet<String>,
}

impl NodeContext {
    pub fn compute(state: &HubState, node: &str) -> NodeContext {
        let mut ctx = NodeContext::default();
        for (key, r) in state.resources.iter() {
            if let Some(resource::Kind::Workload(w)) = &r.kind {
                if w.node == node {
                    ctx.local.insert(key.clone());
                    ctx.namespaces.insert(w.namespace.clone());
                    ctx.selector_policies
                        .extend(w.authorization_policies.iter().cloned());
                }
            }
        }
        ctx
    }
}

pub struct Filter {
    pub kind: ProxyKind,
    pub node: String,
    pub root_namespace: String,
    pub l4_view: L4View,
    pub node_ctx: NodeContext,
}

impl Filter {
    /// The resource this proxy should hold under `key`, if any.
    pub fn desired(&self, key: &str, res: &Arc<Resource>) -> Option<Arc<Resource>> {
        let kind = Kind::of_key(key)?;
        match (self.kind, kind) {
            (ProxyKind::Observer, _) => Some(res.clone()),
            (ProxyKind::Ztunnel, Kind::Route) => None,
            (ProxyKind::Ztunnel, Kind::Authorization) => {
                let Some(resource::Kind::Authorization(a)) = &res.kind else {
                    return None;
                };
                if !self.ztunnel_needs(a) {
                    return None;
                }
                let view = (self.l4_view)(a);
                if &view == a {
                    Some(res.clone())
                } else {
                    Some(Arc::new(make_resource(
                        key.to_string(),
                        resource::Kind::Authorization(view),
                    )))
                }
            }
            (ProxyKind::Ztunnel | ProxyKind::Waypoint, _) => Some(res.clone()),
            (ProxyKind::Unspecified, _) => None,
        }
    }

    fn ztunnel_needs(&self, a: &Authorization) -> bool {
        match PolicyScope::try_from(a.scope).unwrap_or(PolicyScope::Namespace) {
            PolicyScope::Global => a.namespace == self.root_namespace || a.namespace.is_empty(),
            PolicyScope::Namespace => self.node_ctx.namespaces.contains(&a.namespace),
            PolicyScope::WorkloadSelector => self
                .node_ctx
                .selector_policies
                .contains(&format!("{}/{}", a.namespace, a.name)),
            PolicyScope::TargetRef => false,
        }
    }

    /// Whether a change to `key` can change which policies this proxy needs: a workload
    /// that is, or was, on this node.
    pub fn affects_context(&self, state: &HubState, key: &str) -> bool {
        if self.kind != ProxyKind::Ztunnel || Kind::of_key(key) != Some(Kind::Workload) {
            return false;
        }
        self.node_ctx.local.contains(key)
            || matches!(state.resources.get(key).and_then(|r| r.kind.as_ref()),
                Some(resource::Kind::Workload(w)) if w.node == self.node)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::pb::config::{Action, Rule, Workload};

    fn authz(ns: &str, name: &str, scope: PolicyScope) -> Arc<Resource> {
        Arc::new(make_resource(
            Kind::Authorization.key(ns, name),
            resource::Kind::Authorization(Authorization {
                name: name.into(),
                namespace: ns.into(),
                scope: scope as i32,
                action: Action::Deny as i32,
                rules: vec![Rule::default()],
                ..Default::default()
            }),
        ))
    }

    fn state() -> HubState {
        let mut st = HubState::default();
        let w = Workload {
            name: "pay".into(),
            namespace: "production".into(),
            node: "node-a".into(),
            authorization_policies: vec!["production/payment-policy".into()],
            ..Default::default()
        };
        st.resources.insert(
            "workload/production/pay".into(),
            Arc::new(make_resource(
                "workload/production/pay".into(),
                resource::Kind::Workload(w),
            )),
        );
        st
    }

    fn filter(kind: ProxyKind, node: &str) -> Filter {
        let st = state();
        Filter {
            kind,
            node: node.into(),
            root_namespace: "istio-system".into(),
            l4_view: |a| {
                let mut a = a.clone();
                a.rules.clear();
                a
            },
            node_ctx: NodeContext::compute(&st, node),
        }
    }

    #[test]
    fn ztunnel_gets_only_its_nodes_policies_in_l4_form() {
        let f = filter(ProxyKind::Ztunnel, "node-a");
        let ns = authz("production", "deny-all", PolicyScope::Namespace);
        let sel = authz(
            "production",
            "payment-policy",
            PolicyScope::WorkloadSelector,
        );
        let other_sel = authz("production", "other", PolicyScope::WorkloadSelector);
        let other_ns = authz("staging", "x", PolicyScope::Namespace);
        let global = authz("istio-system", "g", PolicyScope::Global);
        let target = authz("production", "t", PolicyScope::TargetRef);
        let got = f.desired(&ns.key, &ns).unwrap();
        match &got.kind {
            Some(resource::Kind::Authorization(a)) => assert!(a.rules.is_empty()),
            other => panic!("{other:?}"),
        }
        assert_ne!(got.version, ns.version, "the L4 view has its own version");
        assert!(f.desired(&sel.key, &sel).is_some());
        assert!(f.desired(&other_sel.key, &other_sel).is_none());
        assert!(f.desired(&other_ns.key, &other_ns).is_none());
        assert!(f.desired(&global.key, &global).is_some());
        assert!(f.desired(&target.key, &target).is_none());

        let elsewhere = filter(ProxyKind::Ztunnel, "node-b");
        assert!(elsewhere.desired(&ns.key, &ns).is_none());
    }

    #[test]
    fn waypoint_and_observer_get_full_policies() {
        let ns = authz("production", "deny-all", PolicyScope::Namespace);
        for kind in [ProxyKind::Waypoint, ProxyKind::Observer] {
            let got = filter(kind, "").desired(&ns.key, &ns).unwrap();
            assert_eq!(got.version, ns.version);
        }
    }
}

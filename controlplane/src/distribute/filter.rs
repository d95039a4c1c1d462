//! What each kind of proxy receives.
//!
//! - ztunnel (by node): the mesh settings, every service and workload (it must resolve
//!   any destination) — its own node's workloads in full, every other workload in the
//!   compact remote view the hub encodes once ([`meshwork_model::view`]) — telemetry, and
//!   only the authorization policies that can apply to its own node's workloads, in the
//!   L4 form ztunnel enforces.
//! - waypoint: the mesh settings, every service and workload (it may route to any
//!   destination), and the policies, routes and telemetry — policies in full (L7) form —
//!   of its own namespace, of the root namespace, and of the namespaces whose services or
//!   workloads use it (`istio.io/use-waypoint-namespace`): never another namespace's.
//! - observer (the CLI, debugging; needs an observer token): everything, as the control
//!   plane holds it.

use std::collections::{BTreeMap, BTreeSet, HashSet};
use std::sync::Arc;

use meshwork_model::keys::{make_resource, Kind};
use meshwork_model::pb::config::{resource, Authorization, PolicyScope, ProxyKind, Resource};

use bytes::Bytes;
use prost::Message;

use super::hub::{Before, Compact, HubState};

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

/// The services and workloads that use one waypoint: their namespaces' policies, routes
/// and telemetry are the waypoint's to enforce.
#[derive(Debug, Default, Clone, PartialEq, Eq)]
pub struct WaypointContext {
    /// Key of a service or workload using the waypoint -> its namespace.
    bound: BTreeMap<String, String>,
}

impl WaypointContext {
    pub fn compute(state: &HubState, namespace: &str, name: &str) -> WaypointContext {
        let mut ctx = WaypointContext::default();
        for (key, r) in state.resources.iter() {
            if let Some(ns) = bound_to(r, namespace, name) {
                ctx.bound.insert(key.clone(), ns);
            }
        }
        ctx
    }

    /// Follows changes to `keys`; true when the set of namespaces changed.
    pub fn update<'a>(
        &mut self,
        state: &HubState,
        namespace: &str,
        name: &str,
        keys: impl IntoIterator<Item = &'a String>,
    ) -> bool {
        let before = self.namespaces();
        for key in keys {
            if !matches!(Kind::of_key(key), Some(Kind::Service | Kind::Workload)) {
                continue;
            }
            match state
                .resources
                .get(key)
                .and_then(|r| bound_to(r, namespace, name))
            {
                Some(ns) => self.bound.insert(key.clone(), ns),
                None => self.bound.remove(key),
            };
        }
        self.namespaces() != before
    }

    pub fn namespaces(&self) -> BTreeSet<String> {
        self.bound.values().cloned().collect()
    }
}

/// The namespace of a service or workload whose waypoint is `namespace/name`.
fn bound_to(r: &Resource, namespace: &str, name: &str) -> Option<String> {
    let (ns, wp) = match &r.kind {
        Some(resource::Kind::Service(s)) => (&s.namespace, s.waypoint.as_ref()),
        Some(resource::Kind::Workload(w)) => (&w.namespace, w.waypoint.as_ref()),
        _ => return None,
    };
    wp.filter(|g| g.namespace == namespace && g.name == name)
        .map(|_| ns.clone())
}

/// What a proxy should hold under a key, and how it is encoded.
#[derive(Debug, Clone)]
pub enum Desired {
    /// The hub's resource, sent as the hub's shared encoding.
    Hub(Arc<Resource>),
    /// A workload's compact remote view, as the hub encoded it once.
    Compact(Compact),
    /// A view made for this proxy (a policy's L4 form).
    Own(Arc<Resource>),
}

impl Desired {
    pub fn version(&self) -> &str {
        match self {
            Desired::Hub(r) | Desired::Own(r) => &r.version,
            Desired::Compact(c) => &c.version,
        }
    }

    /// The encoding to send.
    pub fn encode(&self, state: &HubState, key: &str) -> Bytes {
        match self {
            Desired::Hub(r) => state
                .encoded(key)
                .cloned()
                .unwrap_or_else(|| Bytes::from(r.encode_to_vec())),
            Desired::Compact(c) => c.bytes.clone(),
            Desired::Own(r) => Bytes::from(r.encode_to_vec()),
        }
    }

    /// The resource itself (decoded again for a compact view; for tests and debugging).
    pub fn resource(&self) -> Arc<Resource> {
        match self {
            Desired::Hub(r) | Desired::Own(r) => r.clone(),
            Desired::Compact(c) => {
                Arc::new(Resource::decode(c.bytes.clone()).expect("the hub encoded this resource"))
            }
        }
    }
}

pub struct Filter {
    pub kind: ProxyKind,
    pub node: String,
    /// A waypoint's Gateway.
    pub namespace: String,
    pub name: String,
    pub root_namespace: String,
    pub l4_view: L4View,
    pub node_ctx: NodeContext,
    pub waypoint_ctx: WaypointContext,
}

impl Filter {
    pub fn new(kind: ProxyKind, node: &str, namespace: &str, name: &str, l4_view: L4View) -> Self {
        Filter {
            kind,
            node: node.to_string(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            root_namespace: String::new(),
            l4_view,
            node_ctx: NodeContext::default(),
            waypoint_ctx: WaypointContext::default(),
        }
    }

    /// Brings the per-proxy context up to date with `changed` (`None`: everything, on
    /// (re)connect). True when keys [`Filter::is_scoped`] must be decided again.
    pub fn refresh_context(&mut self, state: &HubState, changed: Option<&HashSet<String>>) -> bool {
        match self.kind {
            ProxyKind::Ztunnel => {
                if changed.is_some_and(|c| !c.iter().any(|k| self.affects_context(state, k))) {
                    return false;
                }
                let ctx = NodeContext::compute(state, &self.node);
                let differs = ctx != self.node_ctx;
                self.node_ctx = ctx;
                differs
            }
            ProxyKind::Waypoint => match changed {
                None => {
                    let ctx = WaypointContext::compute(state, &self.namespace, &self.name);
                    let differs = ctx != self.waypoint_ctx;
                    self.waypoint_ctx = ctx;
                    differs
                }
                Some(c) => self
                    .waypoint_ctx
                    .update(state, &self.namespace, &self.name, c),
            },
            _ => false,
        }
    }

    /// Whether this proxy's context decides if it gets `key`.
    pub fn is_scoped(&self, key: &str) -> bool {
        matches!(
            (self.kind, Kind::of_key(key)),
            (ProxyKind::Ztunnel, Some(Kind::Authorization))
                | (
                    ProxyKind::Waypoint,
                    Some(Kind::Authorization | Kind::Route | Kind::Telemetry | Kind::WasmPlugin)
                )
        )
    }

    /// Whether this proxy takes an unscoped key (one its kind alone decides) at all.
    pub fn passes_unscoped(&self, key: &str) -> bool {
        !matches!(
            (self.kind, Kind::of_key(key)),
            (_, None)
                | (ProxyKind::Unspecified, _)
                | (ProxyKind::Ztunnel, Some(Kind::Route | Kind::WasmPlugin))
        )
    }

    /// Whether a waypoint enforces the resources of namespace `ns`.
    fn waypoint_serves(&self, ns: &str) -> bool {
        ns == self.namespace
            || ns == self.root_namespace
            || self.waypoint_ctx.bound.values().any(|b| b == ns)
    }

    /// The resource this proxy should hold under `key`, if any.
    pub fn desired(&self, state: &HubState, key: &str, res: &Arc<Resource>) -> Option<Desired> {
        let kind = Kind::of_key(key)?;
        match (self.kind, kind) {
            (ProxyKind::Observer, _) => Some(Desired::Hub(res.clone())),
            (ProxyKind::Ztunnel, Kind::Route | Kind::WasmPlugin) => None,
            (ProxyKind::Ztunnel, Kind::Authorization) => {
                let Some(resource::Kind::Authorization(a)) = &res.kind else {
                    return None;
                };
                if !self.ztunnel_needs(a) {
                    return None;
                }
                let view = (self.l4_view)(a);
                if &view == a {
                    Some(Desired::Hub(res.clone()))
                } else {
                    Some(Desired::Own(Arc::new(make_resource(
                        key.to_string(),
                        resource::Kind::Authorization(view),
                    ))))
                }
            }
            (ProxyKind::Ztunnel, Kind::Workload) => match &res.kind {
                Some(resource::Kind::Workload(w)) if w.node != self.node => state
                    .compact(key)
                    .cloned()
                    .or_else(|| Compact::of(key, res))
                    .map(Desired::Compact),
                _ => Some(Desired::Hub(res.clone())),
            },
            (
                ProxyKind::Waypoint,
                Kind::Authorization | Kind::Route | Kind::Telemetry | Kind::WasmPlugin,
            ) => {
                let ns = key.split('/').nth(1).unwrap_or_default();
                self.waypoint_serves(ns).then(|| Desired::Hub(res.clone()))
            }
            (ProxyKind::Ztunnel | ProxyKind::Waypoint, _) => Some(Desired::Hub(res.clone())),
            (ProxyKind::Unspecified, _) => None,
        }
    }

    /// The version of unscoped `key` this proxy received as of the generation `before`
    /// describes, when the key was then on this proxy's node (`was_local`) or not.
    pub fn version_then(&self, key: &str, before: &Before, was_local: bool) -> Option<String> {
        if !self.passes_unscoped(key) {
            return None;
        }
        match (self.kind, Kind::of_key(key)) {
            (ProxyKind::Ztunnel, Some(Kind::Workload)) if !was_local => before.compact.clone(),
            _ => before.version.clone(),
        }
    }

    /// Whether the workload under `key` is on this ztunnel's node, as of the last
    /// [`Filter::refresh_context`].
    pub fn is_local(&self, key: &str) -> bool {
        self.node_ctx.local.contains(key)
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
    use meshwork_model::pb::config::{Action, GatewayAddress, Rule, Service, Workload};

    /// What `f` holds under `key`, as a resource.
    fn desired(f: &Filter, key: &str, res: &Arc<Resource>) -> Option<Arc<Resource>> {
        f.desired(&HubState::default(), key, res)
            .map(|d| d.resource())
    }

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
        let mut f = Filter::new(kind, node, "production", "waypoint", |a| {
            let mut a = a.clone();
            a.rules.clear();
            a
        });
        f.root_namespace = "istio-system".into();
        f.refresh_context(&st, None);
        f
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
        let got = desired(&f, &ns.key, &ns).unwrap();
        match &got.kind {
            Some(resource::Kind::Authorization(a)) => assert!(a.rules.is_empty()),
            other => panic!("{other:?}"),
        }
        assert_ne!(got.version, ns.version, "the L4 view has its own version");
        assert!(desired(&f, &sel.key, &sel).is_some());
        assert!(desired(&f, &other_sel.key, &other_sel).is_none());
        assert!(desired(&f, &other_ns.key, &other_ns).is_none());
        assert!(desired(&f, &global.key, &global).is_some());
        assert!(desired(&f, &target.key, &target).is_none());

        let elsewhere = filter(ProxyKind::Ztunnel, "node-b");
        assert!(desired(&elsewhere, &ns.key, &ns).is_none());
    }

    #[test]
    fn waypoint_and_observer_get_full_policies() {
        let ns = authz("production", "deny-all", PolicyScope::Namespace);
        for kind in [ProxyKind::Waypoint, ProxyKind::Observer] {
            let got = desired(&filter(kind, ""), &ns.key, &ns).unwrap();
            assert_eq!(got.version, ns.version);
        }
    }

    fn service(ns: &str, name: &str, waypoint: Option<(&str, &str)>) -> (String, Arc<Resource>) {
        let key = Kind::Service.key(ns, &format!("{name}.{ns}.svc.cluster.local"));
        let s = Service {
            name: name.into(),
            namespace: ns.into(),
            waypoint: waypoint.map(|(ns, name)| GatewayAddress {
                namespace: ns.into(),
                name: name.into(),
                ..Default::default()
            }),
            ..Default::default()
        };
        let r = Arc::new(make_resource(key.clone(), resource::Kind::Service(s)));
        (key, r)
    }

    #[test]
    fn a_waypoint_gets_only_the_namespaces_it_serves() {
        let mut st = state();
        let mut f = Filter::new(ProxyKind::Waypoint, "", "partners", "waypoint", |a| {
            a.clone()
        });
        f.root_namespace = "istio-system".into();
        f.refresh_context(&st, None);
        let prod = authz("production", "deny-all", PolicyScope::Namespace);
        let own = authz("partners", "allow", PolicyScope::TargetRef);
        let root = authz("istio-system", "g", PolicyScope::Global);
        assert!(
            desired(&f, &prod.key, &prod).is_none(),
            "production's policy"
        );
        assert!(desired(&f, &own.key, &own).is_some());
        assert!(desired(&f, &root.key, &root).is_some());
        let route = Arc::new(make_resource(
            Kind::Route.key("production", "pay"),
            resource::Kind::Route(Default::default()),
        ));
        assert!(desired(&f, &route.key, &route).is_none());
        // Services and workloads of any namespace: it may route there.
        let (key, svc) = service("production", "pay", None);
        assert!(desired(&f, &key, &svc).is_some());

        // A production service that uses partners' waypoint: production's policies are
        // now this waypoint's to enforce ...
        let (key, svc) = service("production", "pay", Some(("partners", "waypoint")));
        st.resources.insert(key.clone(), svc);
        let changed = HashSet::from([key.clone()]);
        assert!(f.refresh_context(&st, Some(&changed)), "namespaces changed");
        assert!(desired(&f, &prod.key, &prod).is_some());
        assert!(desired(&f, &route.key, &route).is_some());
        // ... until it no longer does.
        st.resources.remove(&key);
        assert!(f.refresh_context(&st, Some(&changed)));
        assert!(desired(&f, &prod.key, &prod).is_none());
        assert!(!f.refresh_context(&st, Some(&changed)), "no change");
    }

    fn wasm(ns: &str, name: &str, scope: PolicyScope) -> Arc<Resource> {
        Arc::new(make_resource(
            Kind::WasmPlugin.key(ns, name),
            resource::Kind::WasmPlugin(meshwork_model::pb::config::WasmPlugin {
                name: name.into(),
                namespace: ns.into(),
                scope: scope as i32,
                url: "oci://ghcr.io/org/p:v1".into(),
                ..Default::default()
            }),
        ))
    }

    #[test]
    fn wasm_plugins_go_to_the_waypoints_serving_their_namespace_only() {
        let mut st = state();
        let mut f = Filter::new(ProxyKind::Waypoint, "", "partners", "waypoint", |a| {
            a.clone()
        });
        f.root_namespace = "istio-system".into();
        f.refresh_context(&st, None);
        let own = wasm("partners", "auth", PolicyScope::TargetRef);
        let own_ns = wasm("partners", "all", PolicyScope::Namespace);
        let global = wasm("istio-system", "g", PolicyScope::Global);
        let prod = wasm("production", "p", PolicyScope::Namespace);
        assert_eq!(own.key, "wasmplugin/partners/auth");
        assert!(f.is_scoped(&own.key));
        assert!(desired(&f, &own.key, &own).is_some());
        assert!(desired(&f, &own_ns.key, &own_ns).is_some());
        assert!(desired(&f, &global.key, &global).is_some());
        assert!(
            desired(&f, &prod.key, &prod).is_none(),
            "production's plugin"
        );

        // Bound: a production service uses partners' waypoint.
        let (key, svc) = service("production", "pay", Some(("partners", "waypoint")));
        st.resources.insert(key.clone(), svc);
        assert!(f.refresh_context(&st, Some(&HashSet::from([key.clone()]))));
        assert!(desired(&f, &prod.key, &prod).is_some());

        // Never to ztunnels (nor unscoped to them), always to observers.
        let z = filter(ProxyKind::Ztunnel, "node-a");
        assert!(!z.passes_unscoped(&own.key));
        assert!(desired(&z, &global.key, &global).is_none());
        assert!(desired(&filter(ProxyKind::Observer, ""), &prod.key, &prod).is_some());
    }

    #[test]
    fn a_ztunnel_gets_its_nodes_workloads_in_full_and_the_others_compact() {
        let st = state();
        let key = "workload/production/pay".to_string();
        let res = st.resources.get(&key).unwrap().clone();
        let local = filter(ProxyKind::Ztunnel, "node-a");
        let got = local.desired(&st, &key, &res).unwrap();
        assert!(matches!(got, Desired::Hub(_)), "{got:?}");
        assert_eq!(got.version(), res.version);

        let remote = filter(ProxyKind::Ztunnel, "node-b");
        let got = remote.desired(&st, &key, &res).unwrap();
        assert!(matches!(got, Desired::Compact(_)), "{got:?}");
        assert_ne!(got.version(), res.version);
        match &got.resource().kind {
            Some(resource::Kind::Workload(w)) => {
                assert!(w.compact);
                assert_eq!((w.name.as_str(), w.node.as_str()), ("pay", "node-a"));
                assert!(w.authorization_policies.is_empty());
            }
            other => panic!("{other:?}"),
        }
        // Waypoints and observers get every workload in full.
        for kind in [ProxyKind::Waypoint, ProxyKind::Observer] {
            let got = filter(kind, "node-b").desired(&st, &key, &res).unwrap();
            assert!(matches!(got, Desired::Hub(_)), "{kind:?}");
        }
        // Which version a ztunnel held: the compact one unless the workload was local.
        let before = Before {
            version: Some("full".into()),
            compact: Some("compact".into()),
        };
        assert_eq!(
            remote.version_then(&key, &before, false).as_deref(),
            Some("compact")
        );
        assert_eq!(
            local.version_then(&key, &before, true).as_deref(),
            Some("full")
        );
        let svc = "service/production/pay.production.svc.cluster.local";
        assert_eq!(
            remote.version_then(svc, &before, false).as_deref(),
            Some("full")
        );
        assert!(local.is_local(&key) && !remote.is_local(&key));
    }
}

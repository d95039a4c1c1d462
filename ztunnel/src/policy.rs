//! L4 authorization of inbound connections: Istio AuthorizationPolicy via
//! `meshwork-authz`, matched as Istio's ztunnel matches it ([`Enforcer::Ztunnel`]: ALLOW
//! rules with HTTP attributes never match, DENY rules' HTTP-only sources, operations and
//! conditions match nothing, CUSTOM/AUDIT do not apply), or under the opt-in mesh setting
//! `meshwork.ztunnelPolicyFailClosed` as Envoy matches TCP ([`Enforcer::Envoy`]); or — for
//! a workload served by a waypoint — admit only the waypoint's identity.

use std::collections::HashMap;
use std::net::{IpAddr, SocketAddr};

use meshwork_authz::{
    applicable, evaluate, Enforcer, Outcome, Policy, PolicyTarget, RequestContext,
};
use meshwork_identity::SpiffeId;
use meshwork_model::pb::config::Enforcement;
use meshwork_model::Snapshot;

use crate::state::State;

const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// What a connection is judged on (kept for re-checks on policy changes).
#[derive(Debug, Clone)]
pub struct ConnAttrs {
    /// Authenticated peer; `None` for plaintext.
    pub src_identity: Option<SpiffeId>,
    pub src_addr: SocketAddr,
    /// Original client IP from the HBONE `forwarded` header, if any.
    pub remote_ip: Option<IpAddr>,
    pub dst: SocketAddr,
    /// `<ns>/<name>` of the destination workload.
    pub dst_workload: String,
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Verdict {
    pub allowed: bool,
    pub reason: String,
    /// `<ns>/<name>` of the deciding policy.
    pub policy: Option<String>,
}

impl Verdict {
    fn deny(reason: String) -> Self {
        Verdict {
            allowed: false,
            reason,
            policy: None,
        }
    }
}

/// Compiled policies of one snapshot.
pub struct Authorizer {
    compiled: HashMap<String, Policy>,
    root_namespace: String,
}

impl Authorizer {
    pub fn new(snapshot: &Snapshot) -> Self {
        let enforcer = Enforcer::for_ztunnel(snapshot.mesh());
        let compiled = snapshot
            .authorizations()
            .map(|a| {
                (
                    format!("{}/{}", a.namespace, a.name),
                    Policy::compile_for(a, enforcer),
                )
            })
            .collect();
        let root_namespace = snapshot
            .mesh()
            .map(|m| m.root_namespace.clone())
            .filter(|r| !r.is_empty())
            .unwrap_or_else(|| DEFAULT_ROOT_NAMESPACE.to_string());
        Authorizer {
            compiled,
            root_namespace,
        }
    }

    pub fn check(&self, state: &State, c: &ConnAttrs) -> Verdict {
        let Some(w) = state.workload_by_ref(&c.dst_workload) else {
            return Verdict::deny(format!(
                "destination workload {} no longer exists",
                c.dst_workload
            ));
        };
        if let Some(gw) = state.waypoint_of(w) {
            let expected = match state.waypoint_identity(&gw) {
                Ok(id) => id,
                Err(e) => return Verdict::deny(e.to_string()),
            };
            return if c.src_identity.as_ref() == Some(&expected) {
                Verdict {
                    allowed: true,
                    reason: format!("from waypoint {}/{}", gw.namespace, gw.name),
                    policy: None,
                }
            } else {
                Verdict::deny(format!(
                    "{} is served by waypoint {}/{}: only {expected} is admitted, got {}",
                    c.dst_workload,
                    gw.namespace,
                    gw.name,
                    c.src_identity
                        .as_ref()
                        .map(|i| i.to_string())
                        .unwrap_or_else(|| "plaintext".into())
                ))
            };
        }
        let all = state
            .snapshot
            .authorizations()
            .filter(|a| a.enforcement() != Enforcement::EnforceWaypoint);
        let policies: Vec<&Policy> =
            applicable(all, &PolicyTarget::workload(w), &self.root_namespace)
                .into_iter()
                .filter_map(|a| self.compiled.get(&format!("{}/{}", a.namespace, a.name)))
                .collect();
        let ctx = RequestContext {
            source_principal: c.src_identity.as_ref().map(|i| i.to_string()),
            source_ip: Some(c.src_addr.ip()),
            remote_ip: c.remote_ip,
            destination_ip: Some(c.dst.ip()),
            destination_port: c.dst.port(),
            ..Default::default()
        };
        let d = evaluate(policies, &ctx);
        if let Outcome::Custom { provider } = &d.outcome {
            return Verdict {
                allowed: false,
                reason: format!("CUSTOM authorization provider {provider:?} is not supported"),
                policy: d.policy,
            };
        }
        Verdict {
            allowed: d.allowed,
            reason: d.reason,
            policy: d.policy,
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::state::tests::{snapshot, workload};
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::{
        resource, Action, Authorization, GatewayAddress, PolicyScope, Rule, Source,
    };
    use meshwork_model::Kind;
    use std::sync::Arc;

    fn with_policy(snap: &Snapshot, a: Authorization) -> Arc<Snapshot> {
        let k = Kind::Authorization.key(&a.namespace, &a.name);
        Arc::new(snap.apply(
            2,
            vec![make_resource(k, resource::Kind::Authorization(a))],
            &[],
        ))
    }

    fn attrs(src: Option<&str>) -> ConnAttrs {
        ConnAttrs {
            src_identity: src.map(|s| s.parse().unwrap()),
            src_addr: "10.0.0.1:40000".parse().unwrap(),
            remote_ip: None,
            dst: "10.0.0.2:8080".parse().unwrap(),
            dst_workload: "prod/server".into(),
        }
    }

    #[test]
    fn deny_by_principal_and_plaintext() {
        let snap = snapshot(vec![workload("prod", "server", "n1", "10.0.0.2")], vec![]);
        let snap = with_policy(
            &snap,
            Authorization {
                name: "deny-evil".into(),
                namespace: "prod".into(),
                scope: PolicyScope::Namespace as i32,
                action: Action::Deny as i32,
                rules: vec![Rule {
                    from: vec![Source {
                        principals: vec!["cluster.local/ns/evil/sa/*".into()],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                ..Default::default()
            },
        );
        let st = State::new(snap.clone(), "n1", 15008);
        let az = Authorizer::new(&snap);
        let v = az.check(&st, &attrs(Some("spiffe://cluster.local/ns/evil/sa/x")));
        assert!(!v.allowed);
        assert_eq!(v.policy.as_deref(), Some("prod/deny-evil"));
        assert!(
            az.check(&st, &attrs(Some("spiffe://cluster.local/ns/prod/sa/ok")))
                .allowed
        );
        assert!(az.check(&st, &attrs(None)).allowed);
        let mut gone = attrs(None);
        gone.dst_workload = "prod/missing".into();
        assert!(!az.check(&st, &gone).allowed);
    }

    #[test]
    fn waypoint_only_admission() {
        let mut server = workload("prod", "server", "n1", "10.0.0.2");
        server.waypoint = Some(GatewayAddress {
            namespace: "prod".into(),
            name: "waypoint".into(),
            address: "10.0.0.9".into(),
            hbone_port: 15008,
            identity: "spiffe://cluster.local/ns/prod/sa/waypoint".into(),
        });
        let snap = snapshot(vec![server], vec![]);
        let st = State::new(snap.clone(), "n1", 15008);
        let az = Authorizer::new(&snap);
        assert!(
            az.check(
                &st,
                &attrs(Some("spiffe://cluster.local/ns/prod/sa/waypoint"))
            )
            .allowed
        );
        let v = az.check(
            &st,
            &attrs(Some("spiffe://cluster.local/ns/prod/sa/client")),
        );
        assert!(!v.allowed);
        assert!(v.reason.contains("waypoint"), "{}", v.reason);
        assert!(!az.check(&st, &attrs(None)).allowed);
    }

    #[test]
    fn allow_rule_with_l7_never_matches_at_l4() {
        use meshwork_model::pb::config::Operation;
        let snap = snapshot(vec![workload("prod", "server", "n1", "10.0.0.2")], vec![]);
        let snap = with_policy(
            &snap,
            Authorization {
                name: "allow-get".into(),
                namespace: "prod".into(),
                scope: PolicyScope::Namespace as i32,
                action: Action::Allow as i32,
                rules: vec![Rule {
                    to: vec![Operation {
                        methods: vec!["GET".into()],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
                has_l7: true,
                ..Default::default()
            },
        );
        let st = State::new(snap.clone(), "n1", 15008);
        assert!(
            !Authorizer::new(&snap)
                .check(&st, &attrs(Some("spiffe://cluster.local/ns/prod/sa/c")))
                .allowed
        );
    }
}

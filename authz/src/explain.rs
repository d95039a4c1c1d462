//! Deciding one request the way the data path does (`meshwork authz check`): find the
//! source and destination workloads, pick the enforcement point (waypoint or destination
//! ztunnel) and evaluate the policies that proxy would apply. The mesh rules it applies
//! (mTLS per port, waypoint binding) are the model's ([`meshwork_model::rules`]), the ones
//! the proxies apply; ztunnel's `tests/explain_agrees.rs` runs both on the same snapshots.

use std::net::IpAddr;

use crate::{
    applicable, evaluate, Decision, Enforcer, HttpAttributes, Outcome, Policy, PolicyTarget,
    RequestContext,
};
use meshwork_model::pb::config::{self as pb, Enforcement, MtlsMode};
use meshwork_model::{Kind, Snapshot};
use serde::Serialize;

const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// Errors in what the user asked about.
#[derive(Debug, thiserror::Error, PartialEq, Eq)]
pub enum CheckError {
    #[error("--from {0:?}: expected <namespace>/<workload>")]
    BadWorkloadRef(String),
    #[error("--from {0}: no such workload in the model")]
    UnknownSource(String),
    #[error("--to {0}: no such service host or workload in the model")]
    UnknownDestination(String),
    #[error("--to {0}: the service has no member workloads")]
    NoMembers(String),
    #[error("--header {0:?}: expected <name>=<value> with a valid header name and value")]
    BadHeader(String),
}

/// The request to decide.
#[derive(Debug, Clone, Default)]
pub struct Query {
    /// `<ns>/<workload>`.
    pub from: String,
    /// A service host (FQDN or alias, resolved from the source's namespace) or `<ns>/<workload>`.
    pub to: String,
    pub port: Option<u16>,
    pub method: Option<String>,
    pub path: Option<String>,
    /// `name=value` pairs.
    pub headers: Vec<String>,
}

/// The decision at one enforcement point.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Verdict {
    /// `<ns>/<name>` of the destination workload, or of the Service when a waypoint decides.
    pub destination: String,
    /// `waypoint <ns>/<name>` or `ztunnel on node <node>`.
    pub enforced_by: String,
    pub allowed: bool,
    /// `<ns>/<name>` of the deciding policy.
    pub policy: Option<String>,
    pub rule: Option<usize>,
    pub reason: String,
    /// Policies the enforcement point applies, in evaluation order.
    pub applicable: Vec<String>,
}

/// The whole answer.
#[derive(Debug, Clone, Serialize)]
#[serde(rename_all = "camelCase")]
pub struct Report {
    pub source: String,
    /// `None` when the source is not in the mesh (its traffic is plaintext).
    pub source_identity: Option<String>,
    pub source_ip: Option<String>,
    pub destination: String,
    pub port: u16,
    pub method: String,
    pub path: String,
    /// Allowed at every enforcement point (all member workloads).
    pub allowed: bool,
    pub verdicts: Vec<Verdict>,
}

enum Dest<'a> {
    Service(&'a pb::Service),
    Workload(&'a pb::Workload),
}

/// Decides `q` over `snap`.
pub fn check(snap: &Snapshot, q: &Query) -> Result<Report, CheckError> {
    let mesh = snap.mesh();
    let root = mesh
        .map(|m| m.root_namespace.as_str())
        .filter(|r| !r.is_empty())
        .unwrap_or(DEFAULT_ROOT_NAMESPACE);
    let src = find_workload(snap, &q.from)
        .map_err(|_| CheckError::BadWorkloadRef(q.from.clone()))?
        .ok_or_else(|| CheckError::UnknownSource(q.from.clone()))?;
    // A source outside the mesh (not captured) sends plaintext: no identity.
    let identity = src
        .captured
        .then(|| snap.workload_identity(src).ok().map(|id| id.to_string()))
        .flatten();
    let src_ip: Option<IpAddr> = src.addresses.iter().find_map(|a| a.parse().ok());
    let dest = match snap.service_by_host(&q.to, &src.namespace) {
        Some(s) => Dest::Service(s),
        None => match find_workload(snap, &q.to) {
            Ok(Some(w)) => Dest::Workload(w),
            _ => return Err(CheckError::UnknownDestination(q.to.clone())),
        },
    };
    let http = http_attributes(q, &dest)?;
    let (method, path) = (http.method.clone(), http.path.clone());
    let base = RequestContext {
        source_principal: identity.clone(),
        source_ip: src_ip,
        ..Default::default()
    };
    let (port, verdicts) = match dest {
        Dest::Service(svc) => {
            let port = q
                .port
                .or_else(|| svc.ports.first().and_then(|p| u16::try_from(p.port).ok()))
                .unwrap_or(0);
            // Plaintext reaches the pods directly (the waypoint is only on the mesh's path).
            let waypoint = snap.service_waypoint(svc).filter(|_| identity.is_some());
            let verdicts = match waypoint {
                Some(gw) => {
                    let target = PolicyTarget::Waypoint {
                        namespace: &gw.namespace,
                        name: &gw.name,
                        service: Some((&svc.namespace, &svc.name)),
                        pods: (!svc.selector.is_empty()).then_some((&svc.namespace, &svc.selector)),
                    };
                    let ctx = RequestContext {
                        destination_ip: svc.vips.iter().find_map(|v| v.parse().ok()),
                        destination_port: port,
                        http: Some(http),
                        ..base.clone()
                    };
                    let dst = format!("{}/{}", svc.namespace, svc.name);
                    vec![at_waypoint(snap, root, gw, &target, &ctx, dst)]
                }
                None => {
                    let members: Vec<_> = snap.service_members(svc).collect();
                    if members.is_empty() {
                        return Err(CheckError::NoMembers(q.to.clone()));
                    }
                    members
                        .into_iter()
                        .map(|(w, sp)| {
                            let target_port = sp
                                .ports
                                .get(&u32::from(port))
                                .and_then(|p| u16::try_from(*p).ok())
                                .unwrap_or(port);
                            to_workload(snap, root, w, &base, target_port, &http)
                        })
                        .collect()
                }
            };
            (port, verdicts)
        }
        Dest::Workload(w) => {
            let port = q.port.unwrap_or(0);
            (port, vec![to_workload(snap, root, w, &base, port, &http)])
        }
    };
    Ok(Report {
        source: format!("{}/{}", src.namespace, src.name),
        source_identity: identity,
        source_ip: src_ip.map(|i| i.to_string()),
        destination: q.to.clone(),
        port,
        method,
        path,
        allowed: verdicts.iter().all(|v| v.allowed),
        verdicts,
    })
}

/// `Ok(None)`: well-formed but absent; `Err`: not `<ns>/<name>`.
fn find_workload<'a>(snap: &'a Snapshot, r: &str) -> Result<Option<&'a pb::Workload>, ()> {
    let (ns, name) = r.split_once('/').ok_or(())?;
    if ns.is_empty() || name.is_empty() || name.contains('/') {
        return Err(());
    }
    Ok(snap.workload(&Kind::Workload.key(ns, name)))
}

fn http_attributes(q: &Query, dest: &Dest<'_>) -> Result<HttpAttributes, CheckError> {
    let mut headers = http::HeaderMap::new();
    for h in &q.headers {
        let bad = || CheckError::BadHeader(h.clone());
        let (k, v) = h.split_once('=').ok_or_else(bad)?;
        let name = http::HeaderName::from_bytes(k.trim().as_bytes()).map_err(|_| bad())?;
        let value = http::HeaderValue::from_str(v.trim()).map_err(|_| bad())?;
        headers.append(name, value);
    }
    let host = match dest {
        Dest::Service(s) => s.hostname.clone(),
        Dest::Workload(_) => q.to.clone(),
    };
    Ok(HttpAttributes {
        host,
        method: q.method.clone().unwrap_or_else(|| "GET".into()),
        path: q.path.clone().unwrap_or_else(|| "/".into()),
        headers,
        ..Default::default()
    })
}

/// Traffic addressed to one workload: its waypoint decides if it has one, else its ztunnel.
fn to_workload(
    snap: &Snapshot,
    root: &str,
    w: &pb::Workload,
    base: &RequestContext,
    port: u16,
    http: &HttpAttributes,
) -> Verdict {
    let ip = w.addresses.iter().find_map(|a| a.parse().ok());
    let dst = format!("{}/{}", w.namespace, w.name);
    let ztunnel = if w.node.is_empty() {
        "ztunnel (workload has no node)".to_string()
    } else {
        format!("ztunnel on node {}", w.node)
    };
    let refused = |reason: String| Verdict {
        destination: dst.clone(),
        enforced_by: ztunnel.clone(),
        allowed: false,
        policy: None,
        rule: None,
        reason,
        applicable: Vec::new(),
    };
    match &base.source_principal {
        None => {
            if let Some(why) = plaintext_refused(snap, w, port) {
                return refused(why);
            }
        }
        // The source ztunnel sends traffic for a pod to the pod's own waypoint only; the
        // destination ztunnel admits only the waypoint of the pod or of its services.
        Some(id) if w.own_waypoint().is_none() => {
            if let Some(gw) = snap.waypoint_of(w) {
                return refused(format!(
                    "served by waypoint {}/{}: only {} is admitted, got {id} \
                     (address the service to go through its waypoint)",
                    gw.namespace, gw.name, gw.identity
                ));
            }
        }
        Some(_) => {}
    }
    if let Some(gw) = w.own_waypoint() {
        let target = PolicyTarget::Waypoint {
            namespace: &gw.namespace,
            name: &gw.name,
            service: None,
            pods: Some((&w.namespace, &w.labels)),
        };
        let ctx = RequestContext {
            destination_ip: ip,
            destination_port: port,
            http: Some(http.clone()),
            ..base.clone()
        };
        return at_waypoint(snap, root, gw, &target, &ctx, dst);
    }
    let policies: Vec<pb::Authorization> = applicable(
        snap.authorizations()
            .filter(|a| a.enforcement() != Enforcement::EnforceWaypoint),
        &PolicyTarget::workload(w),
        root,
    )
    .into_iter()
    .cloned()
    .collect();
    let ctx = RequestContext {
        destination_ip: ip,
        destination_port: port,
        ..base.clone()
    };
    let enforcer = Enforcer::for_ztunnel(snap.mesh());
    verdict(dst, ztunnel, &policies, &ctx, enforcer)
}

/// Why the destination ztunnel refuses plaintext before any policy, as it does: STRICT
/// mTLS on the port, or a destination served by a waypoint (only the waypoint is admitted).
fn plaintext_refused(snap: &Snapshot, w: &pb::Workload, port: u16) -> Option<String> {
    if w.mtls_mode_for_port(port) == MtlsMode::Strict {
        // A port-level mode is set by the workload's own PeerAuthentication, which may not
        // be the one that decided the workload-wide mode.
        let by = if w.port_mtls.contains_key(&u32::from(port)) && !w.port_mtls_source.is_empty() {
            format!(
                " (PeerAuthentication {} portLevelMtls {port})",
                w.port_mtls_source
            )
        } else if w.mtls_source.is_empty() {
            String::new()
        } else {
            format!(" (PeerAuthentication {})", w.mtls_source)
        };
        return Some(format!(
            "plaintext refused: STRICT mTLS{by}; the source is not in the mesh"
        ));
    }
    snap.waypoint_of(w).map(|gw| {
        format!(
            "served by waypoint {}/{}: only {} is admitted, got plaintext",
            gw.namespace, gw.name, gw.identity
        )
    })
}

fn at_waypoint(
    snap: &Snapshot,
    root: &str,
    gw: &pb::GatewayAddress,
    target: &PolicyTarget<'_>,
    ctx: &RequestContext,
    dst: String,
) -> Verdict {
    let policies: Vec<pb::Authorization> = applicable(snap.authorizations(), target, root)
        .into_iter()
        .cloned()
        .collect();
    let mut v = verdict(
        dst,
        format!("waypoint {}/{}", gw.namespace, gw.name),
        &policies,
        ctx,
        Enforcer::Envoy,
    );
    v.reason
        .push_str("; the destination ztunnel admits only the waypoint");
    v
}

fn verdict(
    destination: String,
    enforced_by: String,
    policies: &[pb::Authorization],
    ctx: &RequestContext,
    enforcer: Enforcer,
) -> Verdict {
    let compiled: Vec<Policy> = policies
        .iter()
        .map(|a| Policy::compile_for(a, enforcer))
        .collect();
    let d: Decision = evaluate(&compiled, ctx);
    let reason = match &d.outcome {
        Outcome::AllowedNoPolicy => "no policy: allowed by default".to_string(),
        Outcome::Custom { provider } => {
            format!("CUSTOM provider {provider:?} is not supported: denied")
        }
        _ => d.reason.clone(),
    };
    Verdict {
        destination,
        enforced_by,
        allowed: d.allowed,
        policy: d.policy,
        rule: d.rule,
        reason,
        applicable: policies
            .iter()
            .map(|a| format!("{}/{}", a.namespace, a.name))
            .collect(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::resource::Kind as R;
    use std::collections::BTreeMap;
    use std::sync::Arc;

    fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
        kv.iter()
            .map(|(k, v)| (k.to_string(), v.to_string()))
            .collect()
    }

    fn workload(ns: &str, name: &str, sa: &str, ip: &str, app: &str) -> pb::Workload {
        pb::Workload {
            name: name.into(),
            namespace: ns.into(),
            service_account: sa.into(),
            node: "node-a".into(),
            addresses: vec![ip.into()],
            captured: true,
            labels: labels(&[("app", app)]),
            ..Default::default()
        }
    }

    fn snapshot(items: Vec<(String, R)>) -> Snapshot {
        let map = items
            .into_iter()
            .map(|(k, r)| (k.clone(), Arc::new(make_resource(k, r))))
            .collect();
        Snapshot::new(1, map)
    }

    fn deny_foreign() -> pb::Authorization {
        pb::Authorization {
            name: "deny-foreign".into(),
            namespace: "prod".into(),
            scope: pb::PolicyScope::Namespace as i32,
            action: pb::Action::Deny as i32,
            rules: vec![pb::Rule {
                from: vec![pb::Source {
                    not_principals: vec!["cluster.local/ns/prod/sa/*".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn l7_allow() -> pb::Authorization {
        pb::Authorization {
            name: "post-only".into(),
            namespace: "prod".into(),
            scope: pb::PolicyScope::WorkloadSelector as i32,
            action: pb::Action::Allow as i32,
            selector: labels(&[("app", "server")]),
            has_l7: true,
            rules: vec![pb::Rule {
                to: vec![pb::Operation {
                    methods: vec!["POST".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    fn mesh(waypoint: bool) -> Snapshot {
        let mut server = workload("prod", "server-0", "server", "127.0.0.2", "server");
        server.services = vec![pb::ServicePorts {
            service: "prod/server.prod.svc.cluster.local".into(),
            ports: [(80, 8080)].into(),
        }];
        let svc = pb::Service {
            name: "server".into(),
            namespace: "prod".into(),
            hostname: "server.prod.svc.cluster.local".into(),
            aliases: vec!["server".into()],
            vips: vec!["127.0.1.1".into()],
            ports: vec![pb::ServicePort {
                port: 80,
                target_port: 8080,
                ..Default::default()
            }],
            selector: labels(&[("app", "server")]),
            waypoint: waypoint.then(|| pb::GatewayAddress {
                namespace: "prod".into(),
                name: "wp".into(),
                address: "127.0.0.9".into(),
                hbone_port: 15008,
                identity: "spiffe://cluster.local/ns/prod/sa/wp".into(),
            }),
            ..Default::default()
        };
        let client = workload("prod", "client-0", "client", "127.0.0.1", "client");
        let evil = workload("evil", "x-0", "x", "127.0.0.3", "x");
        snapshot(vec![
            ("workload/prod/server-0".into(), R::Workload(server)),
            ("workload/prod/client-0".into(), R::Workload(client)),
            ("workload/evil/x-0".into(), R::Workload(evil)),
            (
                "service/prod/server.prod.svc.cluster.local".into(),
                R::Service(svc),
            ),
            (
                "authz/prod/deny-foreign".into(),
                R::Authorization(deny_foreign()),
            ),
            ("authz/prod/post-only".into(), R::Authorization(l7_allow())),
        ])
    }

    fn q(from: &str, to: &str, method: &str) -> Query {
        Query {
            from: from.into(),
            to: to.into(),
            method: Some(method.into()),
            ..Default::default()
        }
    }

    #[test]
    fn waypoint_applies_l7_rules() {
        let snap = mesh(true);
        let r = check(&snap, &q("prod/client-0", "server", "POST")).unwrap();
        assert!(r.allowed);
        assert_eq!(r.verdicts[0].enforced_by, "waypoint prod/wp");
        assert_eq!(r.verdicts[0].policy.as_deref(), Some("prod/post-only"));
        assert_eq!(
            r.source_identity.as_deref(),
            Some("spiffe://cluster.local/ns/prod/sa/client")
        );
        let r = check(&snap, &q("prod/client-0", "server", "GET")).unwrap();
        assert!(!r.allowed);
        assert!(r.verdicts[0].reason.contains("no ALLOW policy matched"));
        let r = check(&snap, &q("evil/x-0", "server", "POST")).unwrap();
        assert!(!r.allowed);
        assert_eq!(r.verdicts[0].policy.as_deref(), Some("prod/deny-foreign"));
    }

    #[test]
    fn without_waypoint_l7_allow_fails_closed_at_ztunnel() {
        let snap = mesh(false);
        let r = check(&snap, &q("prod/client-0", "server", "POST")).unwrap();
        assert!(!r.allowed);
        assert_eq!(r.verdicts[0].enforced_by, "ztunnel on node node-a");
        assert_eq!(r.verdicts[0].destination, "prod/server-0");
        assert_eq!(r.port, 80);
        // Addressing the workload directly is the same decision.
        let r = check(&snap, &q("prod/client-0", "prod/server-0", "POST")).unwrap();
        assert!(!r.allowed);
    }

    #[test]
    fn a_pod_behind_its_services_waypoint_admits_only_the_waypoint() {
        let snap = mesh(true);
        let r = check(&snap, &q("prod/client-0", "prod/server-0", "POST")).unwrap();
        assert!(!r.allowed);
        assert_eq!(r.verdicts[0].enforced_by, "ztunnel on node node-a");
        assert!(
            r.verdicts[0].reason.starts_with(
                "served by waypoint prod/wp: only spiffe://cluster.local/ns/prod/sa/wp is admitted"
            ),
            "{}",
            r.verdicts[0].reason
        );
    }

    #[test]
    fn no_policy_allows_by_default() {
        let snap = mesh(false);
        let r = check(&snap, &q("evil/x-0", "prod/client-0", "GET")).unwrap();
        assert!(!r.allowed, "deny-foreign is namespace-wide");
        let r = check(&snap, &q("prod/client-0", "evil/x-0", "GET")).unwrap();
        assert!(r.allowed);
        assert_eq!(r.verdicts[0].reason, "no policy: allowed by default");
        assert!(r.verdicts[0].applicable.is_empty());
    }

    #[test]
    fn plaintext_sources_meet_the_destination_ztunnel() {
        let mut snap = mesh(true);
        let mut legacy = workload("legacy", "old-0", "old", "127.0.0.4", "old");
        legacy.captured = false;
        let mut strict = workload("prod", "vault-0", "vault", "127.0.0.5", "vault");
        strict.mtls_mode = MtlsMode::Strict as i32;
        strict.mtls_source = "prod/strict".into();
        strict.port_mtls = [(9090, MtlsMode::Permissive as i32)].into();
        let open = workload("other", "open-0", "open", "127.0.0.6", "open");
        snap = snap.apply(
            2,
            vec![
                make_resource("workload/legacy/old-0".into(), R::Workload(legacy)),
                make_resource("workload/prod/vault-0".into(), R::Workload(strict)),
                make_resource("workload/other/open-0".into(), R::Workload(open)),
            ],
            &[],
        );
        let mut to_vault = q("legacy/old-0", "prod/vault-0", "GET");
        to_vault.port = Some(8080);
        let r = check(&snap, &to_vault).unwrap();
        assert_eq!(r.source_identity, None);
        assert!(!r.allowed);
        assert_eq!(
            r.verdicts[0].reason,
            "plaintext refused: STRICT mTLS (PeerAuthentication prod/strict); the source is not in the mesh"
        );
        // The PERMISSIVE port override lets plaintext through to the policies, where the
        // namespace DENY for non-prod principals matches a peer without one.
        to_vault.port = Some(9090);
        let r = check(&snap, &to_vault).unwrap();
        assert_eq!(r.verdicts[0].policy.as_deref(), Some("prod/deny-foreign"));
        // The service's waypoint is not on a plaintext client's path: the pod's ztunnel
        // admits only the waypoint.
        let r = check(&snap, &q("legacy/old-0", "server", "POST")).unwrap();
        assert!(!r.allowed);
        assert_eq!(r.verdicts[0].enforced_by, "ztunnel on node node-a");
        assert!(r.verdicts[0]
            .reason
            .starts_with("served by waypoint prod/wp"));
        let r = check(&snap, &q("legacy/old-0", "other/open-0", "GET")).unwrap();
        assert!(r.allowed);
    }

    /// A port-level STRICT in the workload's own PeerAuthentication refuses plaintext while
    /// the workload-wide mode came from another PeerAuthentication: the port's is named.
    #[test]
    fn port_level_strict_names_the_workload_peer_authentication() {
        let mut legacy = workload("legacy", "old-0", "old", "127.0.0.4", "old");
        legacy.captured = false;
        let mut db = workload("prod", "db-0", "db", "127.0.0.5", "db");
        db.mtls_mode = MtlsMode::Permissive as i32;
        db.mtls_source = "istio-system/default".into();
        db.port_mtls = [(5432, MtlsMode::Strict as i32)].into();
        db.port_mtls_source = "prod/db-port-strict".into();
        let snap = snapshot(vec![
            ("workload/legacy/old-0".into(), R::Workload(legacy)),
            ("workload/prod/db-0".into(), R::Workload(db)),
        ]);
        let mut to_db = q("legacy/old-0", "prod/db-0", "GET");
        to_db.port = Some(5432);
        let r = check(&snap, &to_db).unwrap();
        assert!(!r.allowed);
        assert_eq!(
            r.verdicts[0].reason,
            "plaintext refused: STRICT mTLS (PeerAuthentication prod/db-port-strict portLevelMtls 5432); the source is not in the mesh"
        );
        to_db.port = Some(8080);
        assert!(
            check(&snap, &to_db).unwrap().allowed,
            "PERMISSIVE elsewhere"
        );
    }

    fn l7_only(action: pb::Action) -> pb::Authorization {
        pb::Authorization {
            name: "no-delete".into(),
            namespace: "prod".into(),
            scope: pb::PolicyScope::WorkloadSelector as i32,
            action: action as i32,
            selector: labels(&[("app", "server")]),
            has_l7: true,
            provider: "opa".into(),
            rules: vec![pb::Rule {
                to: vec![pb::Operation {
                    methods: vec!["DELETE".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    /// As Istio's ztunnel: an L7-only DENY rule and a CUSTOM policy do not apply at a
    /// ztunnel; with `ztunnelPolicyFailClosed` both reject.
    #[test]
    fn ztunnel_ignores_l7_only_deny_and_custom_unless_fail_closed() {
        for action in [pb::Action::Deny, pb::Action::Custom] {
            let policy = l7_only(action);
            let mut items = vec![
                (
                    "workload/prod/server-0".into(),
                    R::Workload(workload(
                        "prod",
                        "server-0",
                        "server",
                        "127.0.0.2",
                        "server",
                    )),
                ),
                (
                    "workload/prod/client-0".into(),
                    R::Workload(workload(
                        "prod",
                        "client-0",
                        "client",
                        "127.0.0.1",
                        "client",
                    )),
                ),
                ("authz/prod/no-delete".into(), R::Authorization(policy)),
            ];
            let snap = snapshot(items.clone());
            let r = check(&snap, &q("prod/client-0", "prod/server-0", "DELETE")).unwrap();
            assert!(r.allowed, "{action:?}: {}", r.verdicts[0].reason);
            assert_eq!(r.verdicts[0].enforced_by, "ztunnel on node node-a");
            items.push((
                "mesh".into(),
                R::Mesh(pb::MeshSettings {
                    ztunnel_policy_fail_closed: true,
                    ..Default::default()
                }),
            ));
            let snap = snapshot(items);
            let r = check(&snap, &q("prod/client-0", "prod/server-0", "GET")).unwrap();
            assert!(!r.allowed, "{action:?}");
            assert_eq!(r.verdicts[0].policy.as_deref(), Some("prod/no-delete"));
        }
    }

    #[test]
    fn bad_input_is_named() {
        let snap = mesh(true);
        assert_eq!(
            check(&snap, &q("prod/nope", "server", "GET")).unwrap_err(),
            CheckError::UnknownSource("prod/nope".into())
        );
        assert_eq!(
            check(&snap, &q("nope", "server", "GET")).unwrap_err(),
            CheckError::BadWorkloadRef("nope".into())
        );
        assert_eq!(
            check(&snap, &q("prod/client-0", "missing", "GET")).unwrap_err(),
            CheckError::UnknownDestination("missing".into())
        );
        let mut bad = q("prod/client-0", "server", "GET");
        bad.headers = vec!["no-equals".into()];
        assert_eq!(
            check(&snap, &bad).unwrap_err(),
            CheckError::BadHeader("no-equals".into())
        );
    }
}

//! `meshwork authz check`'s explanation (`meshwork_authz::explain`) and the ztunnel's data
//! path decide the same way on the same snapshots: where a request is enforced (a waypoint
//! or the destination ztunnel) and, at the ztunnel, whether it is let through — without a
//! waypoint, behind a namespace's or a service's waypoint, and under STRICT, PERMISSIVE and
//! DISABLE mTLS with port-level overrides.
//!
//! The data path here is the ztunnel's own code: the source ztunnel's outbound routing
//! (`State::route`), the destination ztunnel's admission of HBONE (`Authorizer::check` with
//! the peer's identity) and of captured plaintext (`inbound_plain::decide`). What a waypoint
//! then decides at L7 is the waypoint's (its tests cover it); here only that it is the
//! waypoint that decides.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::Arc;

use meshwork_authz::explain::{check, Query, Verdict};
use meshwork_model::keys::make_resource;
use meshwork_model::pb::config::{
    self as pb, resource::Kind as R, GatewayAddress, MtlsMode, Workload,
};
use meshwork_model::{Kind, Snapshot};
use meshwork_ztunnel::inbound_plain::{self, Decision};
use meshwork_ztunnel::policy::{Authorizer, ConnAttrs};
use meshwork_ztunnel::state::{RoundRobin, Route, State, Target};

const HBONE_PORT: u16 = 15008;

fn labels(kv: &[(&str, &str)]) -> BTreeMap<String, String> {
    kv.iter()
        .map(|(k, v)| (k.to_string(), v.to_string()))
        .collect()
}

fn workload(ns: &str, name: &str, ip: &str) -> Workload {
    Workload {
        uid: format!("{ns}/{name}"),
        name: name.into(),
        namespace: ns.into(),
        service_account: name.into(),
        node: "node-a".into(),
        addresses: vec![ip.into()],
        captured: true,
        healthy: true,
        labels: labels(&[("app", name)]),
        ..Default::default()
    }
}

fn waypoint(ns: &str, name: &str, ip: &str) -> GatewayAddress {
    GatewayAddress {
        namespace: ns.into(),
        name: name.into(),
        address: ip.into(),
        hbone_port: u32::from(HBONE_PORT),
        identity: format!("spiffe://cluster.local/ns/{ns}/sa/{name}"),
    }
}

/// A service `name` in `ns` on port 80 → 8080 whose single member is `member`.
fn service(ns: &str, name: &str, vip: &str, member: &mut Workload) -> pb::Service {
    let hostname = format!("{name}.{ns}.svc.cluster.local");
    member.services.push(pb::ServicePorts {
        service: format!("{ns}/{hostname}"),
        ports: [(80, 8080)].into(),
    });
    pb::Service {
        name: name.into(),
        namespace: ns.into(),
        hostname,
        aliases: vec![name.into()],
        vips: vec![vip.into()],
        ports: vec![pb::ServicePort {
            port: 80,
            target_port: 8080,
            ..Default::default()
        }],
        selector: member.labels.clone(),
        ..Default::default()
    }
}

/// Denies every principal outside the workload's namespace (L4 only).
fn deny_foreign(ns: &str) -> pb::Authorization {
    pb::Authorization {
        name: "deny-foreign".into(),
        namespace: ns.into(),
        scope: pb::PolicyScope::Namespace as i32,
        action: pb::Action::Deny as i32,
        rules: vec![pb::Rule {
            from: vec![pb::Source {
                not_principals: vec![format!("cluster.local/ns/{ns}/sa/*")],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// An ALLOW with an L7 part: never matches at L4, so the workload it selects refuses all.
fn l7_allow(ns: &str, app: &str) -> pb::Authorization {
    pb::Authorization {
        name: "get-only".into(),
        namespace: ns.into(),
        scope: pb::PolicyScope::WorkloadSelector as i32,
        action: pb::Action::Allow as i32,
        selector: labels(&[("app", app)]),
        has_l7: true,
        rules: vec![pb::Rule {
            to: vec![pb::Operation {
                methods: vec!["GET".into()],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

/// The mesh the cases run on:
/// - `prod`: no waypoint; `server-0` behind service `server`; `vault-0` STRICT with port
///   9090 PERMISSIVE and 9091 DISABLE; `open-0` DISABLE with port 8443 STRICT; `locked-0`
///   selected by an L7-only ALLOW; a namespace-wide DENY of foreign principals.
/// - `ns-wp`: a namespace waypoint (on the pod and the service, as the control plane
///   writes a namespace's `istio.io/use-waypoint`).
/// - `svc-wp`: a waypoint on the service only.
/// - clients: `prod/client-0`, `evil/x-0` (meshed), `legacy/old-0` (not captured).
fn mesh() -> Arc<Snapshot> {
    let client = workload("prod", "client-0", "10.0.0.1");
    let evil = workload("evil", "x-0", "10.0.0.2");
    let mut legacy = workload("legacy", "old-0", "10.0.0.3");
    legacy.captured = false;

    let mut server = workload("prod", "server-0", "10.0.1.1");
    let server_svc = service("prod", "server", "10.96.0.1", &mut server);
    let mut vault = workload("prod", "vault-0", "10.0.1.2");
    vault.mtls_mode = MtlsMode::Strict as i32;
    vault.mtls_source = "prod/strict".into();
    vault.port_mtls = [
        (9090, MtlsMode::Permissive as i32),
        (9091, MtlsMode::Disable as i32),
    ]
    .into();
    let mut open = workload("prod", "open-0", "10.0.1.3");
    open.mtls_mode = MtlsMode::Disable as i32;
    open.port_mtls = [(8443, MtlsMode::Strict as i32)].into();
    let locked = workload("prod", "locked-0", "10.0.1.4");

    let ns_wp = waypoint("ns-wp", "waypoint", "10.0.2.9");
    let mut a = workload("ns-wp", "a-0", "10.0.2.1");
    a.waypoint = Some(ns_wp.clone());
    let mut a_svc = service("ns-wp", "a", "10.96.0.2", &mut a);
    a_svc.waypoint = Some(ns_wp);

    let mut b = workload("svc-wp", "b-0", "10.0.3.1");
    let mut b_svc = service("svc-wp", "b", "10.96.0.3", &mut b);
    b_svc.waypoint = Some(waypoint("svc-wp", "b-waypoint", "10.0.3.9"));

    let mut m = BTreeMap::new();
    for w in [client, evil, legacy, server, vault, open, locked, a, b] {
        let k = Kind::Workload.key(&w.namespace, &w.name);
        m.insert(k.clone(), Arc::new(make_resource(k, R::Workload(w))));
    }
    for s in [server_svc, a_svc, b_svc] {
        let k = Kind::Service.key(&s.namespace, &s.hostname);
        m.insert(k.clone(), Arc::new(make_resource(k, R::Service(s))));
    }
    for a in [deny_foreign("prod"), l7_allow("prod", "locked-0")] {
        let k = Kind::Authorization.key(&a.namespace, &a.name);
        m.insert(k.clone(), Arc::new(make_resource(k, R::Authorization(a))));
    }
    Arc::new(Snapshot::new(1, m))
}

/// What the ztunnels do with one connection, in the explanation's terms.
#[derive(Debug, PartialEq, Eq)]
struct DataPath {
    enforced_by: String,
    /// `<ns>/<name>` of the destination workload, or of the Service at a waypoint.
    destination: String,
    /// At a ztunnel: whether it lets the connection through; at a waypoint: not decided here.
    allowed: Option<bool>,
}

fn workload_by_ref<'a>(snap: &'a Snapshot, r: &str) -> &'a Workload {
    let (ns, name) = r.split_once('/').unwrap();
    snap.workload(&Kind::Workload.key(ns, name))
        .unwrap_or_else(|| panic!("no workload {r}"))
}

fn first_ip(w: &Workload) -> std::net::IpAddr {
    w.addresses[0].parse().unwrap()
}

/// Runs the ztunnels' code for a connection from `from` to `dst`.
fn data_path(snap: &Arc<Snapshot>, from: &str, dst: SocketAddr) -> Vec<DataPath> {
    let state = State::new(snap.clone(), "node-a", HBONE_PORT);
    let authz = Authorizer::new(snap);
    let src = workload_by_ref(snap, from);
    let src_addr = SocketAddr::new(first_ip(src), 40000);
    let at_ztunnel = |w: &Workload, allowed: bool| DataPath {
        enforced_by: format!("ztunnel on node {}", w.node),
        destination: format!("{}/{}", w.namespace, w.name),
        allowed: Some(allowed),
    };
    if !src.captured {
        // Plaintext: the address reaches a pod (a service's members, as kube-proxy picks
        // them), whose ztunnel captures it on 15006.
        let pods: Vec<(&Workload, u16)> = match snap.service_by_vip(dst.ip()) {
            Some(svc) => snap
                .service_members(svc)
                .map(|(w, sp)| (w, sp.ports[&u32::from(dst.port())] as u16))
                .collect(),
            None => vec![(snap.workload_by_ip(dst.ip()).unwrap(), dst.port())],
        };
        return pods
            .into_iter()
            .map(|(w, port)| {
                let to = SocketAddr::new(first_ip(w), port);
                let allowed = match inbound_plain::decide(&state, &authz, w, src_addr, to) {
                    Decision::Strict => false,
                    Decision::Policy(d) => d.1.allowed,
                };
                at_ztunnel(w, allowed)
            })
            .collect();
    }
    let route = state
        .route(src, &Target::Addr(dst), &RoundRobin::default())
        .expect("a route");
    let Route::Hbone {
        authority,
        workload,
        service,
        via_waypoint,
        identity,
        ..
    } = route
    else {
        panic!("{from} → {dst}: not carried over HBONE");
    };
    if via_waypoint {
        let gw = workload
            .as_ref()
            .and_then(|w| w.waypoint.clone())
            .or_else(|| service.as_ref().and_then(|s| s.waypoint.clone()))
            .expect("the waypoint routed to");
        assert_eq!(identity.to_string(), gw.identity);
        let destination = match (&service, &workload) {
            (Some(s), None) => format!("{}/{}", s.namespace, s.name),
            (_, Some(w)) => format!("{}/{}", w.namespace, w.name),
            (None, None) => unreachable!(),
        };
        return vec![DataPath {
            enforced_by: format!("waypoint {}/{}", gw.namespace, gw.name),
            destination,
            allowed: None,
        }];
    }
    // Direct HBONE to the pod: its ztunnel admits the peer identity (a pod served by a
    // waypoint admits only the waypoint) and applies the L4 policies.
    let w = workload.expect("a destination pod");
    let attrs = ConnAttrs {
        src_identity: Some(state.identity(src).unwrap()),
        src_addr,
        remote_ip: None,
        dst: authority.parse().unwrap(),
        dst_workload: format!("{}/{}", w.namespace, w.name),
    };
    vec![at_ztunnel(&w, authz.check(&state, &attrs).allowed)]
}

fn explained(v: &Verdict) -> DataPath {
    DataPath {
        enforced_by: v.enforced_by.clone(),
        destination: v.destination.clone(),
        allowed: v.enforced_by.starts_with("ztunnel").then_some(v.allowed),
    }
}

/// Asserts the explanation and the data path agree on `from → to:port`; returns the
/// decisions for the case's own expectations.
fn agree(snap: &Arc<Snapshot>, from: &str, to: &str, dst: &str, port: u16) -> Vec<DataPath> {
    let report = check(
        snap,
        &Query {
            from: from.into(),
            to: to.into(),
            port: Some(port),
            ..Default::default()
        },
    )
    .unwrap_or_else(|e| panic!("{from} → {to}: {e}"));
    let dst = SocketAddr::new(dst.parse().unwrap(), port);
    let path = data_path(snap, from, dst);
    let explanation: Vec<DataPath> = report.verdicts.iter().map(explained).collect();
    assert_eq!(
        explanation,
        path,
        "{from} → {to}:{port}: the explanation (left) differs from the data path (right); \
         reasons: {:?}",
        report
            .verdicts
            .iter()
            .map(|v| &v.reason)
            .collect::<Vec<_>>()
    );
    path
}

fn allowed(d: &[DataPath]) -> Vec<Option<bool>> {
    d.iter().map(|d| d.allowed).collect()
}

#[test]
fn no_waypoint_policies_at_the_destination_ztunnel() {
    let snap = mesh();
    let d = agree(&snap, "prod/client-0", "server", "10.96.0.1", 80);
    assert_eq!(d[0].enforced_by, "ztunnel on node node-a");
    assert_eq!(allowed(&d), [Some(true)]);
    let d = agree(&snap, "evil/x-0", "server", "10.96.0.1", 80);
    assert_eq!(allowed(&d), [Some(false)], "deny-foreign");
    let d = agree(&snap, "prod/client-0", "prod/server-0", "10.0.1.1", 8080);
    assert_eq!(allowed(&d), [Some(true)]);
    let d = agree(&snap, "prod/client-0", "prod/locked-0", "10.0.1.4", 8080);
    assert_eq!(
        allowed(&d),
        [Some(false)],
        "an L7 ALLOW never matches at L4"
    );
    // Plaintext from outside the mesh meets the pod's ztunnel; no principal, so the
    // namespace DENY of foreign principals matches it.
    let d = agree(&snap, "legacy/old-0", "server", "10.96.0.1", 80);
    assert_eq!(allowed(&d), [Some(false)]);
}

#[test]
fn namespace_waypoint() {
    let snap = mesh();
    let d = agree(
        &snap,
        "prod/client-0",
        "a.ns-wp.svc.cluster.local",
        "10.96.0.2",
        80,
    );
    assert_eq!(d[0].enforced_by, "waypoint ns-wp/waypoint");
    let d = agree(&snap, "prod/client-0", "ns-wp/a-0", "10.0.2.1", 8080);
    assert_eq!(
        d[0].enforced_by, "waypoint ns-wp/waypoint",
        "the pod's own waypoint"
    );
    let d = agree(&snap, "legacy/old-0", "ns-wp/a-0", "10.0.2.1", 8080);
    assert_eq!(allowed(&d), [Some(false)], "only the waypoint is admitted");
}

#[test]
fn service_waypoint() {
    let snap = mesh();
    let d = agree(
        &snap,
        "prod/client-0",
        "b.svc-wp.svc.cluster.local",
        "10.96.0.3",
        80,
    );
    assert_eq!(d[0].enforced_by, "waypoint svc-wp/b-waypoint");
    // Addressed directly, the pod is not behind its own waypoint: the client goes to its
    // ztunnel, which admits only its service's waypoint.
    let d = agree(&snap, "prod/client-0", "svc-wp/b-0", "10.0.3.1", 8080);
    assert_eq!(d[0].enforced_by, "ztunnel on node node-a");
    assert_eq!(allowed(&d), [Some(false)]);
    let d = agree(
        &snap,
        "legacy/old-0",
        "b.svc-wp.svc.cluster.local",
        "10.96.0.3",
        80,
    );
    assert_eq!(allowed(&d), [Some(false)]);
}

#[test]
fn mtls_modes_per_port() {
    let snap = mesh();
    // STRICT with PERMISSIVE (9090) and DISABLE (9091) overrides; plaintext from outside
    // the mesh: refused under STRICT, else the policies decide (deny-foreign matches a
    // peer without a principal).
    let cases = [
        ("prod/vault-0", "10.0.1.2", 8080, "STRICT"),
        ("prod/vault-0", "10.0.1.2", 9090, "PERMISSIVE override"),
        ("prod/vault-0", "10.0.1.2", 9091, "DISABLE override"),
        ("prod/open-0", "10.0.1.3", 8080, "DISABLE"),
        ("prod/open-0", "10.0.1.3", 8443, "STRICT override"),
    ];
    for (to, ip, port, what) in cases {
        let d = agree(&snap, "legacy/old-0", to, ip, port);
        assert_eq!(allowed(&d), [Some(false)], "{to}:{port} {what}");
        // Meshed sources come over HBONE: mTLS modes do not refuse them.
        let d = agree(&snap, "prod/client-0", to, ip, port);
        assert_eq!(allowed(&d), [Some(true)], "{to}:{port} {what}");
    }
}

#[test]
fn mtls_modes_per_port_without_policies() {
    // Without the namespace DENY, plaintext passes wherever the port is not STRICT.
    let snap = Arc::new(mesh().apply(
        2,
        vec![],
        &[Kind::Authorization.key("prod", "deny-foreign")],
    ));
    for (to, ip, port, want) in [
        ("prod/vault-0", "10.0.1.2", 8080, false),
        ("prod/vault-0", "10.0.1.2", 9090, true),
        ("prod/vault-0", "10.0.1.2", 9091, true),
        ("prod/open-0", "10.0.1.3", 8080, true),
        ("prod/open-0", "10.0.1.3", 8443, false),
    ] {
        let d = agree(&snap, "legacy/old-0", to, ip, port);
        assert_eq!(allowed(&d), [Some(want)], "{to}:{port}");
    }
}

/// An L7-only DENY and a CUSTOM policy on a ztunnel-only workload: no effect, as at Istio's
/// ztunnel, unless the mesh sets `meshwork.ztunnelPolicyFailClosed`; the explanation agrees
/// with the data path either way.
#[test]
fn l7_only_deny_and_custom_follow_the_mesh_setting() {
    let l7_only = |name: &str, action: pb::Action| pb::Authorization {
        name: name.into(),
        namespace: "prod".into(),
        scope: pb::PolicyScope::WorkloadSelector as i32,
        action: action as i32,
        selector: labels(&[("app", "server-0")]),
        has_l7: true,
        provider: "ext-authz".into(),
        rules: vec![pb::Rule {
            to: vec![pb::Operation {
                methods: vec!["DELETE".into()],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    };
    for (action, name) in [(pb::Action::Deny, "no-delete"), (pb::Action::Custom, "ext")] {
        for fail_closed in [false, true] {
            let a = l7_only(name, action);
            let mesh_settings = pb::MeshSettings {
                ztunnel_policy_fail_closed: fail_closed,
                ..Default::default()
            };
            let base = mesh();
            let snap = Arc::new(base.apply(
                2,
                vec![
                    make_resource(
                        Kind::Authorization.key(&a.namespace, &a.name),
                        R::Authorization(a),
                    ),
                    make_resource("mesh".into(), R::Mesh(mesh_settings)),
                ],
                &[],
            ));
            let d = agree(&snap, "prod/client-0", "prod/server-0", "10.0.1.1", 8080);
            assert_eq!(
                allowed(&d),
                [Some(!fail_closed)],
                "{action:?} fail_closed={fail_closed}"
            );
        }
    }
}

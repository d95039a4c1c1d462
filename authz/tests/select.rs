//! Policy selection for workloads (ztunnel) and waypoints.

mod common;

use std::collections::BTreeMap;

use common::*;
use meshwork_authz::{applicable, PolicyTarget};
use meshwork_model::pb::config as pb;

fn named(ns: &str, name: &str, scope: pb::PolicyScope) -> pb::Authorization {
    let mut p = policy(name, pb::Action::Allow, vec![]);
    p.namespace = ns.into();
    p.scope = scope as i32;
    p
}

fn names(v: Vec<&pb::Authorization>) -> Vec<String> {
    v.iter()
        .map(|a| format!("{}/{}", a.namespace, a.name))
        .collect()
}

#[test]
fn workload_selection() {
    let global = named("istio-system", "global", pb::PolicyScope::Global);
    let ns = named("production", "ns", pb::PolicyScope::Namespace);
    let other_ns = named("staging", "ns", pb::PolicyScope::Namespace);
    let listed = named("production", "listed", pb::PolicyScope::WorkloadSelector);
    let mut by_label = named("production", "by-label", pb::PolicyScope::WorkloadSelector);
    by_label
        .selector
        .insert("app".into(), "payment-service".into());
    let mut label_miss = named("production", "miss", pb::PolicyScope::WorkloadSelector);
    label_miss.selector.insert("app".into(), "other".into());
    let mut foreign_label = named("staging", "foreign", pb::PolicyScope::WorkloadSelector);
    foreign_label
        .selector
        .insert("app".into(), "payment-service".into());
    let target_ref = named("production", "tr", pb::PolicyScope::TargetRef);
    let wrong_root = named("production", "not-root", pb::PolicyScope::Global);
    let all = [
        global,
        ns,
        other_ns,
        listed,
        by_label,
        label_miss,
        foreign_label,
        target_ref,
        wrong_root,
    ];

    let mut labels = BTreeMap::new();
    labels.insert("app".to_string(), "payment-service".to_string());
    let w = pb::Workload {
        namespace: "production".into(),
        labels,
        authorization_policies: vec!["production/listed".into()],
        ..Default::default()
    };
    let got = applicable(&all, &PolicyTarget::workload(&w), "istio-system");
    assert_eq!(
        names(got),
        [
            "istio-system/global",
            "production/ns",
            "production/listed",
            "production/by-label"
        ]
    );
}

#[test]
fn waypoint_selection() {
    let tr = |name: &str, refs: Vec<pb::TargetRef>| {
        let mut p = named("production", name, pb::PolicyScope::TargetRef);
        p.target_refs = refs;
        p
    };
    let r = |kind: &str, name: &str, ns: &str| pb::TargetRef {
        group: "".into(),
        kind: kind.into(),
        name: name.into(),
        namespace: ns.into(),
    };
    let gw = tr("gw", vec![r("Gateway", "waypoint", "")]);
    let gw_other = tr("gw-other", vec![r("Gateway", "other", "")]);
    let svc = tr("svc", vec![r("Service", "payment-service", "")]);
    let svc_other = tr("svc-other", vec![r("Service", "order-service", "")]);
    let mut class = named("istio-system", "class", pb::PolicyScope::TargetRef);
    class.target_refs = vec![r("GatewayClass", "istio-waypoint", "")];
    let ns_scoped = named("production", "ns", pb::PolicyScope::Namespace);
    let all = [gw, gw_other, svc, svc_other, class, ns_scoped];
    let target = PolicyTarget::Waypoint {
        namespace: "production",
        name: "waypoint",
        service: Some(("production", "payment-service")),
        pods: None,
    };
    assert_eq!(
        names(applicable(&all, &target, "istio-system")),
        ["production/gw", "production/svc", "istio-system/class"]
    );
    // With the destination's pods: their namespace and selector policies apply too.
    let mut selector = named("production", "sel", pb::PolicyScope::WorkloadSelector);
    selector
        .selector
        .insert("app".into(), "payment-service".into());
    let mut other = named("production", "other", pb::PolicyScope::WorkloadSelector);
    other.selector.insert("app".into(), "order-service".into());
    let all = [all.to_vec(), vec![selector, other]].concat();
    let labels: BTreeMap<String, String> =
        [("app".to_string(), "payment-service".to_string())].into();
    let target = PolicyTarget::Waypoint {
        namespace: "production",
        name: "waypoint",
        service: Some(("production", "payment-service")),
        pods: Some(("production", &labels)),
    };
    assert_eq!(
        names(applicable(&all, &target, "istio-system")),
        [
            "production/gw",
            "production/svc",
            "istio-system/class",
            "production/ns",
            "production/sel"
        ]
    );
}

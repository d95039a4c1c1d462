//! The diff and ACK/NACK bookkeeping of one stream, without gRPC: what each update
//! carries, exactly.

use meshwork_model::keys::{make_resource, Kind};
use meshwork_model::pb::config::{
    proxy_message, resource, Ack, Action, Authorization, PolicyScope, ProxyKind, ProxyMessage,
    Resource, Rule, Workload,
};
use prost::Message;

use super::*;

fn workload(name: &str, node: &str, rev: &str) -> (String, Option<Resource>) {
    let key = Kind::Workload.key("ns", name);
    let w = Workload {
        name: name.into(),
        namespace: "ns".into(),
        node: node.into(),
        labels: [("rev".to_string(), rev.to_string())].into(),
        authorization_policies: vec!["ns/sel".into()],
        ..Default::default()
    };
    (
        key.clone(),
        Some(make_resource(key, resource::Kind::Workload(w))),
    )
}

fn selector_policy() -> (String, Option<Resource>) {
    let key = Kind::Authorization.key("ns", "sel");
    let a = Authorization {
        name: "sel".into(),
        namespace: "ns".into(),
        scope: PolicyScope::WorkloadSelector as i32,
        action: Action::Deny as i32,
        rules: vec![Rule::default()],
        ..Default::default()
    };
    (
        key.clone(),
        Some(make_resource(key, resource::Kind::Authorization(a))),
    )
}

fn gone(key: &str) -> (String, Option<Resource>) {
    (key.to_string(), None)
}

fn task(hub: &Arc<ModelHub>, node: &str, known: HashMap<String, String>) -> StreamTask {
    let registry = Arc::new(Registry::default());
    let filter = Filter::new(ProxyKind::Ztunnel, node, "", "", |a| a.clone());
    StreamTask::new(1, hub.clone(), registry, filter, known, true)
}

/// Keys upserted and removed by the next update (None: nothing to send).
fn next(t: &mut StreamTask) -> Option<(Vec<String>, Vec<String>)> {
    let u = t.next_update().expect("no resync")?;
    let mut keys: Vec<String> = u
        .resources
        .iter()
        .map(|b| Resource::decode(b.clone()).unwrap().key)
        .collect();
    keys.sort();
    Some((keys, u.removed))
}

fn answer(t: &mut StreamTask, error: &str) {
    let nonce = t
        .in_flight
        .as_ref()
        .expect("an update in flight")
        .nonce
        .clone();
    t.on_message(ProxyMessage {
        msg: Some(proxy_message::Msg::Ack(Ack {
            nonce,
            error: error.into(),
        })),
    });
    assert!(t.in_flight.is_none());
}

fn strs(v: &[&str]) -> Vec<String> {
    v.iter().map(|s| s.to_string()).collect()
}

#[test]
fn deltas_carry_exactly_what_changed_for_this_proxy() {
    let hub = ModelHub::new();
    hub.apply([workload("a", "node-1", "1"), workload("b", "node-2", "1")]);
    let mut t = task(&hub, "node-1", HashMap::new());
    let (up, rm) = next(&mut t).unwrap();
    assert_eq!(up, strs(&["workload/ns/a", "workload/ns/b"]));
    assert!(rm.is_empty());
    answer(&mut t, "");
    assert_eq!(t.count, 2);
    assert!(next(&mut t).is_none(), "nothing changed");

    // An upsert, an addition, and the policy that selects node-1's workload.
    hub.apply([workload("a", "node-1", "2"), workload("c", "node-3", "1")]);
    hub.apply([selector_policy()]);
    let (up, rm) = next(&mut t).unwrap();
    assert_eq!(
        up,
        strs(&["authz/ns/sel", "workload/ns/a", "workload/ns/c"])
    );
    assert!(rm.is_empty());
    answer(&mut t, "");
    assert_eq!(t.count, 4);

    // A removal, and a change made and undone between two updates: only the removal.
    hub.apply([gone("workload/ns/b")]);
    hub.apply([workload("c", "node-3", "2")]);
    hub.apply([workload("c", "node-3", "1")]);
    let (up, rm) = next(&mut t).unwrap();
    assert!(up.is_empty(), "{up:?}");
    assert_eq!(rm, strs(&["workload/ns/b"]));
    answer(&mut t, "");
    assert_eq!(t.count, 3);

    // A key added and removed between two updates is neither sent nor removed.
    hub.apply([workload("d", "node-3", "1")]);
    hub.apply([gone("workload/ns/d")]);
    assert!(next(&mut t).is_none());
    assert!(t.deviant.is_empty() && t.known.is_none());
}

#[test]
fn a_rejected_update_is_not_resent_until_it_changes_again() {
    let hub = ModelHub::new();
    hub.apply([workload("a", "node-1", "1"), workload("b", "node-1", "1")]);
    let mut t = task(&hub, "node-1", HashMap::new());
    next(&mut t).unwrap();
    answer(&mut t, "");

    hub.apply([workload("a", "node-1", "2")]);
    assert_eq!(next(&mut t).unwrap().0, strs(&["workload/ns/a"]));
    answer(&mut t, "bad workload");
    assert_eq!(t.count, 2);

    // Another key changes: the rejected one is not sent again.
    hub.apply([workload("b", "node-1", "2")]);
    assert_eq!(next(&mut t).unwrap().0, strs(&["workload/ns/b"]));
    answer(&mut t, "");
    // Changed back to what the proxy holds: nothing to send, and the proxy is in sync.
    hub.apply([workload("a", "node-1", "1")]);
    assert!(next(&mut t).is_none());
    // Changed again: sent.
    hub.apply([workload("a", "node-1", "3")]);
    assert_eq!(next(&mut t).unwrap().0, strs(&["workload/ns/a"]));
    answer(&mut t, "");
    assert!(t.deviant.is_empty(), "in sync after the ACK");
    hub.apply([gone("workload/ns/a")]);
    assert_eq!(next(&mut t).unwrap().1, strs(&["workload/ns/a"]));
    answer(&mut t, "");
    assert_eq!(t.count, 1);
}

#[test]
fn a_resuming_proxy_gets_the_difference_to_what_it_holds() {
    let hub = ModelHub::new();
    let (a, b) = (workload("a", "node-1", "1"), workload("b", "node-1", "1"));
    let a_version = a.1.as_ref().unwrap().version.clone();
    hub.apply([a, b]);
    let known: HashMap<String, String> = [
        ("workload/ns/a".to_string(), a_version),
        ("workload/ns/old".to_string(), "v0".to_string()),
    ]
    .into();
    let mut t = task(&hub, "node-1", known);
    let (up, rm) = next(&mut t).unwrap();
    assert_eq!(up, strs(&["workload/ns/b"]));
    assert_eq!(rm, strs(&["workload/ns/old"]));
    answer(&mut t, "");
    assert_eq!(t.count, 2);
}

#[test]
fn after_a_rejected_first_update_deltas_follow_what_the_proxy_still_holds() {
    let hub = ModelHub::new();
    let a1 = workload("a", "node-1", "1");
    let a1_version = a1.1.as_ref().unwrap().version.clone();
    hub.apply([workload("a", "node-1", "2"), workload("b", "node-1", "1")]);
    let known: HashMap<String, String> = [("workload/ns/a".to_string(), a1_version)].into();
    let mut t = task(&hub, "node-1", known);
    let (up, _) = next(&mut t).unwrap();
    assert_eq!(up, strs(&["workload/ns/a", "workload/ns/b"]));
    answer(&mut t, "rejected");
    assert_eq!(t.count, 1, "it still holds what it had");

    // `a` goes back to the version the proxy holds: nothing to send for it.
    hub.apply([a1, workload("c", "node-1", "1")]);
    assert_eq!(next(&mut t).unwrap().0, strs(&["workload/ns/c"]));
    answer(&mut t, "");
    assert_eq!(t.count, 2);
    hub.apply([gone("workload/ns/c"), gone("workload/ns/a")]);
    let (_, rm) = next(&mut t).unwrap();
    assert_eq!(rm, strs(&["workload/ns/a", "workload/ns/c"]));
    answer(&mut t, "");
    assert_eq!(t.count, 0);
}

#[test]
fn a_ztunnel_gets_a_policy_when_its_node_starts_running_a_selected_workload() {
    let hub = ModelHub::new();
    hub.apply([workload("a", "node-2", "1"), selector_policy()]);
    let mut t = task(&hub, "node-1", HashMap::new());
    assert_eq!(next(&mut t).unwrap().0, strs(&["workload/ns/a"]));
    answer(&mut t, "");
    hub.apply([workload("a", "node-1", "1")]);
    assert_eq!(
        next(&mut t).unwrap().0,
        strs(&["authz/ns/sel", "workload/ns/a"])
    );
    answer(&mut t, "");
    hub.apply([workload("a", "node-2", "2")]);
    let (up, rm) = next(&mut t).unwrap();
    assert_eq!(
        (up, rm),
        (strs(&["workload/ns/a"]), strs(&["authz/ns/sel"]))
    );
    answer(&mut t, "");
    assert_eq!(t.count, 1);
}

#[test]
fn a_proxy_behind_the_change_log_is_asked_to_resubscribe() {
    let hub = ModelHub::new();
    hub.apply([workload("a", "node-1", "0")]);
    let mut t = task(&hub, "node-1", HashMap::new());
    next(&mut t).unwrap();
    answer(&mut t, "");
    for i in 1..=(super::super::hub::LOG_LEN + 2) {
        hub.apply([workload("a", "node-1", &i.to_string())]);
    }
    let err = t.next_update().unwrap_err();
    assert_eq!(err.code(), tonic::Code::Aborted);
}

/// The workloads of the next update, by key, as the proxy decodes them.
fn next_workloads(t: &mut StreamTask) -> Option<Vec<(String, Workload)>> {
    let u = t.next_update().expect("no resync")?;
    let mut v: Vec<(String, Workload)> = u
        .resources
        .iter()
        .filter_map(|b| {
            let r = Resource::decode(b.clone()).unwrap();
            match r.kind {
                Some(resource::Kind::Workload(w)) => Some((r.key, w)),
                _ => None,
            }
        })
        .collect();
    v.sort_by(|a, b| a.0.cmp(&b.0));
    Some(v)
}

#[test]
fn a_ztunnel_gets_remote_workloads_compact_and_its_own_in_full() {
    let hub = ModelHub::new();
    hub.apply([workload("a", "node-1", "1"), workload("b", "node-2", "1")]);
    let mut t = task(&hub, "node-1", HashMap::new());
    let got = next_workloads(&mut t).unwrap();
    let (a, b) = (&got[0].1, &got[1].1);
    assert!(!a.compact && a.labels.contains_key("rev"));
    assert_eq!(a.authorization_policies, ["ns/sel"]);
    assert!(b.compact && b.labels.is_empty() && b.authorization_policies.is_empty());
    assert_eq!(b.node, "node-2");
    answer(&mut t, "");

    // A label is outside the compact view: node-2's change does not reach node-1 ...
    hub.apply([workload("b", "node-2", "2")]);
    assert!(next(&mut t).is_none(), "nothing for a remote label");
    // ... but a local one does.
    hub.apply([workload("a", "node-1", "2")]);
    assert_eq!(next(&mut t).unwrap().0, strs(&["workload/ns/a"]));
    answer(&mut t, "");

    // A field of the view (the address) reaches every ztunnel.
    let mut moved = workload("b", "node-2", "2");
    if let Some(Resource {
        kind: Some(resource::Kind::Workload(w)),
        ..
    }) = &mut moved.1
    {
        w.addresses = vec!["10.0.0.9".into()];
    }
    let moved = (
        moved.0.clone(),
        Some(make_resource(moved.0, moved.1.unwrap().kind.unwrap())),
    );
    hub.apply([moved]);
    let got = next_workloads(&mut t).unwrap();
    assert_eq!(got.len(), 1);
    assert!(got[0].1.compact && got[0].1.addresses == ["10.0.0.9"]);
    answer(&mut t, "");
    assert!(t.deviant.is_empty());
}

#[test]
fn a_workload_moving_nodes_switches_form() {
    let hub = ModelHub::new();
    hub.apply([workload("a", "node-2", "1")]);
    let mut t = task(&hub, "node-1", HashMap::new());
    assert!(next_workloads(&mut t).unwrap()[0].1.compact);
    answer(&mut t, "");

    // To this node: in full (with the policy that now applies).
    hub.apply([workload("a", "node-1", "1")]);
    let got = next_workloads(&mut t).unwrap();
    assert!(!got[0].1.compact && !got[0].1.labels.is_empty());
    answer(&mut t, "");
    // A label change while local is sent ...
    hub.apply([workload("a", "node-1", "2")]);
    assert_eq!(next(&mut t).unwrap().0, strs(&["workload/ns/a"]));
    answer(&mut t, "");
    // ... and away again: compact, and later label changes are not.
    hub.apply([workload("a", "node-3", "2")]);
    let got = next_workloads(&mut t).unwrap();
    assert!(got[0].1.compact && got[0].1.node == "node-3");
    answer(&mut t, "");
    hub.apply([workload("a", "node-3", "3")]);
    assert!(next(&mut t).is_none());

    // A proxy resuming with the compact version it holds is not sent it again.
    let held = t.count;
    let known: HashMap<String, String> = [(
        "workload/ns/a".to_string(),
        hub.read().compact("workload/ns/a").unwrap().version.clone(),
    )]
    .into();
    let mut resumed = task(&hub, "node-1", known);
    let (up, rm) = next(&mut resumed).unwrap();
    assert!(up.is_empty() && rm.is_empty(), "{up:?} {rm:?}");
    assert_eq!(held, 1);
}

#[test]
fn a_change_that_concerns_no_one_still_counts_as_in_sync() {
    let hub = ModelHub::new();
    hub.apply([workload("a", "node-2", "1")]);
    let registry = Arc::new(Registry::default());
    let filter = Filter::new(ProxyKind::Ztunnel, "node-1", "", "", |a| a.clone());
    let id = 7;
    registry.lock().insert(
        id,
        super::super::registry::ProxyInfo {
            id,
            kind: "ztunnel".into(),
            node: "node-1".into(),
            gateway: String::new(),
            proxy_id: String::new(),
            peer: None,
            connected_at_unix: 0,
            acked_version: 0,
            resources: 0,
            acks: 0,
            nacks: 0,
            last_nack: None,
        },
    );
    let mut t = StreamTask::new(
        id,
        hub.clone(),
        registry.clone(),
        filter,
        HashMap::new(),
        true,
    );
    next(&mut t).unwrap();
    answer(&mut t, "");
    assert_eq!(registry.acked_at_least(1), 1);
    let g = hub.apply([workload("a", "node-2", "2")]);
    assert!(next(&mut t).is_none());
    assert_eq!(registry.acked_at_least(g), 1, "in sync without an update");
}

//! The Kubernetes source driven by synthetic watch events (no cluster), the way kube-rs and
//! linkerd's policy controller test theirs: events → pseudo-file batches → the validated
//! store that the YAML source feeds.

use std::path::Path;
use std::time::Duration;

use kube::core::DynamicObject;
use kube::runtime::watcher::{self, Event};
use meshwork_api::{Change, Kind, ObjectKey, Store};
use meshwork_controlplane::source::dir::FileEvent;
use meshwork_controlplane::source::kube::resources::watched;
use meshwork_controlplane::source::kube::{watch::pump, SourceIndex};
use serde_json::json;
use tokio::sync::mpsc;

type Item = (usize, Result<Event<DynamicObject>, watcher::Error>);

fn obj(v: serde_json::Value) -> DynamicObject {
    serde_json::from_value(v).unwrap()
}

fn namespace(name: &str) -> DynamicObject {
    obj(json!({"metadata": {"name": name, "labels": {"istio.io/dataplane-mode": "ambient"}}}))
}

fn peer_auth(name: &str, mode: &str, rv: &str) -> DynamicObject {
    obj(json!({
        "metadata": {"name": name, "namespace": "production", "resourceVersion": rv, "generation": 1},
        "spec": {"selector": {"matchLabels": {"app": "payment-service"}}, "mtls": {"mode": mode}},
    }))
}

fn kinds() -> SourceIndex {
    SourceIndex::new([
        watched("Namespace").unwrap().preferred(),
        watched("PeerAuthentication").unwrap().preferred(),
    ])
}

const NS: usize = 0;
const PA: usize = 1;

fn apply(store: &mut Store, batch: Vec<FileEvent>) -> Vec<Change> {
    let mut changes = Vec::new();
    for ev in batch {
        match ev {
            FileEvent::Changed(p, text) => changes.extend(store.apply_file(&p, &text, "default")),
            FileEvent::Removed(p) => changes.extend(store.remove_file(&p)),
        }
    }
    changes
}

async fn next(rx: &mut mpsc::Receiver<Vec<FileEvent>>) -> Vec<FileEvent> {
    tokio::time::timeout(Duration::from_secs(5), rx.recv())
        .await
        .expect("batch delivered")
        .expect("source running")
}

fn pa_key(name: &str) -> ObjectKey {
    ObjectKey::new(Kind::PeerAuthentication, "production", name)
}

#[tokio::test]
async fn initial_batch_waits_for_every_kind_then_lands_in_the_store() {
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Item>();
    let (tx, mut rx) = mpsc::channel(4);
    let events = tokio_stream::wrappers::UnboundedReceiverStream::new(ev_rx);
    tokio::spawn(pump(events, kinds(), tx));

    for e in [
        (NS, Event::Init),
        (NS, Event::InitApply(namespace("production"))),
        (NS, Event::InitDone),
        (PA, Event::Init),
        (PA, Event::InitApply(peer_auth("strict", "STRICT", "1"))),
    ] {
        ev_tx.send((e.0, Ok(e.1))).unwrap();
    }
    tokio::task::yield_now().await;
    assert!(rx.try_recv().is_err(), "no batch before every kind listed");
    ev_tx.send((PA, Ok(Event::InitDone))).unwrap();
    let initial = next(&mut rx).await;
    assert_eq!(initial.len(), 2, "{initial:?}");

    let mut store = Store::new();
    let changes = apply(&mut store, initial);
    assert_eq!(changes.len(), 2);
    assert!(store.errors().is_empty(), "{:?}", store.errors());
    let pa = store
        .get(&pa_key("strict"))
        .expect("PeerAuthentication in force");
    assert_eq!(
        pa.file,
        Path::new("k8s://PeerAuthentication/production/strict")
    );
    assert_eq!(pa.object.api_version, "security.istio.io/v1");
    let ns = store
        .get(&ObjectKey::new(Kind::Namespace, "", "production"))
        .expect("Namespace in force");
    assert_eq!(
        ns.object
            .labels
            .get("istio.io/dataplane-mode")
            .map(String::as_str),
        Some("ambient")
    );

    // A later edit is its own batch.
    ev_tx
        .send((PA, Ok(Event::Apply(peer_auth("strict", "PERMISSIVE", "2")))))
        .unwrap();
    let batch = next(&mut rx).await;
    let changes = apply(&mut store, batch);
    assert!(matches!(&changes[..], [Change::Upsert(o)] if o.name == "strict"));
}

fn feed(
    index: &mut SourceIndex,
    store: &mut Store,
    evs: Vec<(usize, Event<DynamicObject>)>,
) -> (Vec<FileEvent>, Vec<Change>) {
    let batch: Vec<FileEvent> = evs
        .into_iter()
        .flat_map(|(k, e)| index.handle(k, e))
        .collect();
    (batch.clone(), apply(store, batch))
}

#[tokio::test]
async fn relist_after_410_gone_deletes_what_vanished_and_ignores_the_unchanged() {
    let mut store = Store::new();
    let mut index = kinds();
    feed(
        &mut index,
        &mut store,
        vec![
            (NS, Event::Init),
            (NS, Event::InitDone),
            (PA, Event::Init),
            (PA, Event::InitApply(peer_auth("keep", "STRICT", "1"))),
            (
                PA,
                Event::InitApply(peer_auth("deleted-while-away", "STRICT", "2")),
            ),
            (PA, Event::InitDone),
        ],
    );
    assert_eq!(store.len(), 2);

    // The watch hit 410 Gone; meanwhile "deleted-while-away" was deleted and "keep" was
    // not touched (its resourceVersion moved only because of a status write).
    let (batch, changes) = feed(
        &mut index,
        &mut store,
        vec![
            (PA, Event::Init),
            (PA, Event::InitApply(peer_auth("keep", "STRICT", "77"))),
            (PA, Event::InitDone),
        ],
    );
    assert_eq!(
        batch,
        vec![FileEvent::Removed(
            "k8s://PeerAuthentication/production/deleted-while-away".into()
        )]
    );
    assert_eq!(changes, vec![Change::Delete(pa_key("deleted-while-away"))]);
    assert!(store.get(&pa_key("keep")).is_some());
}

#[tokio::test]
async fn invalid_object_is_a_store_error_naming_the_object_and_keeps_the_last_good() {
    let mut store = Store::new();
    let mut index = kinds();
    let mut batch = Vec::new();
    for (k, e) in [
        (NS, Event::Init),
        (NS, Event::InitDone),
        (PA, Event::Init),
        (PA, Event::InitApply(peer_auth("strict", "STRICT", "1"))),
        (PA, Event::InitDone),
    ] {
        batch.extend(index.handle(k, e));
    }
    apply(&mut store, batch);
    let bad = index.handle(PA, Event::Apply(peer_auth("strict", "SOMETIMES", "2")));
    let changes = apply(&mut store, bad);
    assert!(changes.is_empty(), "last good version stays: {changes:?}");
    let errors = store.errors();
    assert_eq!(errors.len(), 1, "{errors:?}");
    let msg = errors[0].to_string();
    assert!(
        msg.contains("k8s://PeerAuthentication/production/strict"),
        "{msg}"
    );
    assert!(msg.contains("mtls"), "{msg}");

    // Deleting it clears both the object and the error.
    let gone = index.handle(PA, Event::Delete(peer_auth("strict", "SOMETIMES", "3")));
    let changes = apply(&mut store, gone);
    assert_eq!(changes, vec![Change::Delete(pa_key("strict"))]);
    assert!(store.errors().is_empty());
}

#[tokio::test]
async fn watch_errors_are_logged_and_the_stream_goes_on() {
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Item>();
    let (tx, mut rx) = mpsc::channel(4);
    let events = tokio_stream::wrappers::UnboundedReceiverStream::new(ev_rx);
    tokio::spawn(pump(events, kinds(), tx));
    for (k, e) in [
        (NS, Event::Init),
        (NS, Event::InitDone),
        (PA, Event::Init),
        (PA, Event::InitDone),
    ] {
        ev_tx.send((k, Ok(e))).unwrap();
    }
    assert!(
        next(&mut rx).await.is_empty(),
        "empty cluster: empty initial batch"
    );
    ev_tx
        .send((PA, Err(watcher::Error::NoResourceVersion)))
        .unwrap();
    ev_tx
        .send((PA, Ok(Event::Apply(peer_auth("late", "STRICT", "5")))))
        .unwrap();
    let batch = next(&mut rx).await;
    assert!(
        matches!(&batch[..], [FileEvent::Changed(p, _)] if p.ends_with("late")),
        "{batch:?}"
    );
}

/// The canary controller's kinds through the Kubernetes source: watched Deployments, a
/// Canary and its MetricTemplate become the controller's inputs, and the Canary's plan
/// names the target's and the primary's pods; a new image of the target is a new revision.
#[tokio::test]
async fn canaries_and_their_deployments_become_the_canary_controllers_inputs() {
    use meshwork_controlplane::canary::spec::Inputs;
    const DEP: usize = 0;
    const CAN: usize = 1;
    const MT: usize = 2;
    let index = SourceIndex::new([
        watched("Deployment").unwrap().preferred(),
        watched("Canary").unwrap().preferred(),
        watched("MetricTemplate").unwrap().preferred(),
    ]);
    let (ev_tx, ev_rx) = mpsc::unbounded_channel::<Item>();
    let (tx, mut rx) = mpsc::channel(4);
    let events = tokio_stream::wrappers::UnboundedReceiverStream::new(ev_rx);
    tokio::spawn(pump(events, index, tx));
    let deployment = |name: &str, version: &str, image: &str, rv: &str| {
        obj(json!({
            "apiVersion": "apps/v1", "kind": "Deployment",
            "metadata": {"name": name, "namespace": "shop", "resourceVersion": rv,
                         "managedFields": [{"manager": "kubectl"}]},
            "spec": {
                "selector": {"matchLabels": {"app": "web", "version": version}},
                "template": {"metadata": {"labels": {"app": "web", "version": version}},
                             "spec": {"containers": [{"name": "web", "image": image}]}},
            },
            "status": {"replicas": 1},
        }))
    };
    let canary = obj(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "Canary",
        "metadata": {"name": "web", "namespace": "shop", "resourceVersion": "7"},
        "spec": {
            "targetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "web"},
            "service": {"port": 80},
            "analysis": {"interval": "30s", "threshold": 2, "stepWeight": 25, "maxWeight": 50,
                "metrics": [{"name": "not-found", "templateRef": {"name": "nf", "namespace": "shop"},
                             "thresholdRange": {"max": 5}}]},
        },
        "status": {"phase": "Succeeded", "canaryWeight": 0},
    }));
    let template = obj(json!({
        "apiVersion": "flagger.app/v1beta1", "kind": "MetricTemplate",
        "metadata": {"name": "nf", "namespace": "shop", "resourceVersion": "8"},
        "spec": {"provider": {"type": "prometheus", "address": "http://prometheus:9090"},
                 "query": "sum(rate(x{namespace=\"{{ namespace }}\"}[{{ interval }}]))"},
    }));
    for e in [
        (DEP, Event::Init),
        (DEP, Event::InitApply(deployment("web", "v2", "web:2", "1"))),
        (
            DEP,
            Event::InitApply(deployment("web-primary", "v1", "web:1", "2")),
        ),
        (DEP, Event::InitDone),
        (CAN, Event::Init),
        (CAN, Event::InitApply(canary)),
        (CAN, Event::InitDone),
        (MT, Event::Init),
        (MT, Event::InitApply(template)),
        (MT, Event::InitDone),
    ] {
        ev_tx.send((e.0, Ok(e.1))).unwrap();
    }
    let mut store = Store::new();
    let changes = apply(&mut store, next(&mut rx).await);
    assert!(store.errors().is_empty(), "{:?}", store.errors());
    assert_eq!(changes.len(), 4);
    let objects: Vec<_> = changes
        .into_iter()
        .filter_map(|c| match c {
            Change::Upsert(o) => Some(o),
            Change::Delete(_) => None,
        })
        .collect();
    let inputs = Inputs::collect(objects.iter());
    assert_eq!(inputs.canaries.len(), 1);
    let plan = inputs
        .plan(&inputs.canaries[0])
        .expect("the Canary can run");
    assert_eq!(plan.canary_selector.get("version").unwrap(), "v2");
    assert_eq!(plan.primary_selector.get("version").unwrap(), "v1");
    assert_ne!(Some(&plan.revision), plan.primary_revision.as_ref());
    assert_eq!(plan.checks.len(), 1);

    // A new image of the target: another revision for the controller.
    ev_tx
        .send((DEP, Ok(Event::Apply(deployment("web", "v2", "web:3", "9")))))
        .unwrap();
    let changes = apply(&mut store, next(&mut rx).await);
    let objects: Vec<_> = store.objects().map(|(_, o)| o.object.clone()).collect();
    assert_eq!(changes.len(), 1);
    let again = Inputs::collect(objects.iter());
    let next_plan = again.plan(&again.canaries[0]).unwrap();
    assert_ne!(next_plan.revision, plan.revision);
}

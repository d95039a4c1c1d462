//! Scale: full load of 10k pods / 1k services / 1k policies and single-change cost.
//! Bounds are the targets in release builds; debug builds (unoptimized) get 20x.

use std::time::{Duration, Instant};

use meshwork_api::{Change, Spec};

use super::super::synthetic::synthetic_cluster;
use super::super::Translator;

fn budget(release: Duration) -> Duration {
    if cfg!(debug_assertions) {
        release * 20
    } else {
        release
    }
}

#[test]
fn full_load_and_single_pod_change_are_fast() {
    let objects = synthetic_cluster(10_000, 1_000, 1_000);
    let changes: Vec<Change> = objects.iter().cloned().map(Change::Upsert).collect();
    let mut tr = Translator::new();
    let started = Instant::now();
    let model = tr.apply_batch(&changes);
    let load = started.elapsed();
    assert!(model.len() > 11_000, "{}", model.len());
    assert!(
        load < budget(Duration::from_secs(1)),
        "full load took {load:?}"
    );

    // Change one pod's labels: exactly one workload recomputed, fast.
    let pod = objects
        .iter()
        .find(|o| matches!(o.spec, Spec::Pod(_)) && o.name == "pod-4242")
        .unwrap();
    let mut changed = (**pod).clone();
    changed.labels.insert("version".into(), "v9".into());
    let started = Instant::now();
    let out = tr.apply(&Change::Upsert(changed.into()));
    let one = started.elapsed();
    eprintln!(
        "full load of 10k pods / 1k services / 1k policies: {load:?}; one pod change: {one:?}"
    );
    assert_eq!(out.len(), 1);
    assert_eq!(out[0].key, format!("workload/{}/pod-4242", pod.namespace));
    assert!(
        one < budget(Duration::from_millis(10)),
        "pod change took {one:?}"
    );
}

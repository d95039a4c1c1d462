//! Memory the Kubernetes source and the validated store hold for N synthetic Pods of
//! realistic size (managedFields, annotations, two containers, status), listed through
//! the real watch path from the fake API server over loopback HTTP. A measurement, not a
//! check: run it with
//!
//! ```text
//! MESHWORK_MEMORY_PODS=5000,20000 cargo test -p meshwork-controlplane --test kube_memory -- --ignored --nocapture
//! ```
//!
//! The heap is counted by a global allocator: live bytes after the initial list is in
//! the store, minus live bytes before the source started (the fake API's own copy of the
//! objects is allocated before, and is the same in both).

mod fake_api;

use std::alloc::{GlobalAlloc, Layout, System};
use std::sync::atomic::{AtomicIsize, Ordering};
use std::time::{Duration, Instant};

use fake_api::FakeApi;
use meshwork_api::Store;
use meshwork_controlplane::source::dir::FileEvent;
use serde_json::{json, Value};

struct Counting;

static LIVE: AtomicIsize = AtomicIsize::new(0);

unsafe impl GlobalAlloc for Counting {
    unsafe fn alloc(&self, l: Layout) -> *mut u8 {
        LIVE.fetch_add(l.size() as isize, Ordering::Relaxed);
        unsafe { System.alloc(l) }
    }
    unsafe fn dealloc(&self, p: *mut u8, l: Layout) {
        LIVE.fetch_sub(l.size() as isize, Ordering::Relaxed);
        unsafe { System.dealloc(p, l) }
    }
    unsafe fn realloc(&self, p: *mut u8, l: Layout, new: usize) -> *mut u8 {
        LIVE.fetch_add(new as isize - l.size() as isize, Ordering::Relaxed);
        unsafe { System.realloc(p, l, new) }
    }
}

#[global_allocator]
static A: Counting = Counting;

fn live() -> isize {
    LIVE.load(Ordering::Relaxed)
}

/// A Pod as a Deployment's ReplicaSet creates it and the kubelet updates it.
fn pod(i: usize) -> Value {
    let name = format!("payments-7d9f8c6b5-{i:05}");
    let fields = |manager: &str, f: Value| {
        json!({"manager": manager, "operation": "Update", "apiVersion": "v1",
               "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1", "fieldsV1": f})
    };
    let container = |n: &str, port: i32| {
        json!({"name": n, "image": format!("registry.example.com/team/{n}:1.42.{i}"),
               "imagePullPolicy": "IfNotPresent",
               "ports": [{"name": "http", "containerPort": port, "protocol": "TCP"}],
               "env": [{"name": "LOG_LEVEL", "value": "info"},
                       {"name": "POD_NAME", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.name"}}},
                       {"name": "POD_IP", "valueFrom": {"fieldRef": {"apiVersion": "v1", "fieldPath": "status.podIP"}}}],
               "resources": {"limits": {"cpu": "500m", "memory": "512Mi"}, "requests": {"cpu": "100m", "memory": "128Mi"}},
               "readinessProbe": {"httpGet": {"path": "/ready", "port": port, "scheme": "HTTP"},
                                  "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
               "livenessProbe": {"httpGet": {"path": "/live", "port": port, "scheme": "HTTP"},
                                 "periodSeconds": 10, "timeoutSeconds": 1, "successThreshold": 1, "failureThreshold": 3},
               "volumeMounts": [{"name": "kube-api-access-x7k2p", "readOnly": true,
                                 "mountPath": "/var/run/secrets/kubernetes.io/serviceaccount"}],
               "terminationMessagePath": "/dev/termination-log", "terminationMessagePolicy": "File"})
    };
    let status = |n: &str| {
        json!({"name": n, "ready": true, "restartCount": 0, "started": true,
               "image": format!("registry.example.com/team/{n}:1.42.{i}"),
               "imageID": format!("registry.example.com/team/{n}@sha256:{:064x}", i),
               "containerID": format!("containerd://{:064x}", i * 7),
               "state": {"running": {"startedAt": "2026-01-01T00:00:05Z"}}, "lastState": {}})
    };
    let cond = |t: &str| {
        json!({"type": t, "status": "True", "lastProbeTime": null,
               "lastTransitionTime": "2026-01-01T00:00:05Z"})
    };
    json!({
        "apiVersion": "v1", "kind": "Pod",
        "metadata": {
            "name": name, "generateName": "payments-7d9f8c6b5-", "namespace": format!("ns-{}", i % 50),
            "uid": format!("{:08x}-0000-4000-8000-{:012x}", i, i),
            "creationTimestamp": "2026-01-01T00:00:00Z",
            "labels": {"app": "payments", "version": "v1", "pod-template-hash": "7d9f8c6b5",
                       "app.kubernetes.io/name": "payments", "app.kubernetes.io/part-of": "shop"},
            "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z",
                            "prometheus.io/scrape": "true", "prometheus.io/port": "9090"},
            "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "payments-7d9f8c6b5",
                                 "uid": "6a7b8c9d-0000-4000-8000-000000000001", "controller": true,
                                 "blockOwnerDeletion": true}],
            "managedFields": [
                fields("kube-controller-manager", json!({"f:metadata": {"f:generateName": {}, "f:labels": {".": {},
                    "f:app": {}, "f:pod-template-hash": {}, "f:version": {}}, "f:ownerReferences": {".": {},
                    "k:{\"uid\":\"6a7b8c9d-0000-4000-8000-000000000001\"}": {}}},
                    "f:spec": {"f:containers": {"k:{\"name\":\"app\"}": {".": {}, "f:env": {}, "f:image": {},
                    "f:imagePullPolicy": {}, "f:livenessProbe": {}, "f:name": {}, "f:ports": {}, "f:readinessProbe": {},
                    "f:resources": {}, "f:terminationMessagePath": {}, "f:terminationMessagePolicy": {}},
                    "k:{\"name\":\"metrics\"}": {".": {}, "f:image": {}, "f:name": {}, "f:ports": {}}},
                    "f:dnsPolicy": {}, "f:enableServiceLinks": {}, "f:restartPolicy": {}, "f:schedulerName": {},
                    "f:securityContext": {}, "f:terminationGracePeriodSeconds": {}}})),
                fields("kubelet", json!({"f:status": {"f:conditions": {
                    "k:{\"type\":\"ContainersReady\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                    "k:{\"type\":\"Initialized\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}},
                    "k:{\"type\":\"Ready\"}": {".": {}, "f:lastProbeTime": {}, "f:lastTransitionTime": {}, "f:status": {}, "f:type": {}}},
                    "f:containerStatuses": {}, "f:hostIP": {}, "f:hostIPs": {}, "f:phase": {}, "f:podIP": {},
                    "f:podIPs": {".": {}, "k:{\"ip\":\"10.0.0.1\"}": {".": {}, "f:ip": {}}}, "f:startTime": {}}}))
            ]
        },
        "spec": {
            "containers": [container("app", 8080), container("metrics", 9090)],
            "volumes": [{"name": "kube-api-access-x7k2p", "projected": {"defaultMode": 420, "sources": [
                {"serviceAccountToken": {"expirationSeconds": 3607, "path": "token"}},
                {"configMap": {"name": "kube-root-ca.crt", "items": [{"key": "ca.crt", "path": "ca.crt"}]}},
                {"downwardAPI": {"items": [{"path": "namespace", "fieldRef": {"apiVersion": "v1", "fieldPath": "metadata.namespace"}}]}}]}}],
            "restartPolicy": "Always", "terminationGracePeriodSeconds": 30, "dnsPolicy": "ClusterFirst",
            "serviceAccountName": "payments", "serviceAccount": "payments",
            "nodeName": format!("node-{}", i % 100), "securityContext": {}, "schedulerName": "default-scheduler",
            "tolerations": [{"key": "node.kubernetes.io/not-ready", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300},
                            {"key": "node.kubernetes.io/unreachable", "operator": "Exists", "effect": "NoExecute", "tolerationSeconds": 300}],
            "priority": 0, "enableServiceLinks": true, "preemptionPolicy": "PreemptLowerPriority"
        },
        "status": {
            "phase": "Running",
            "conditions": [cond("Initialized"), cond("Ready"), cond("ContainersReady"), cond("PodScheduled")],
            "hostIP": format!("172.18.0.{}", i % 100), "hostIPs": [{"ip": format!("172.18.0.{}", i % 100)}],
            "podIP": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256),
            "podIPs": [{"ip": format!("10.{}.{}.{}", i / 65536, (i / 256) % 256, i % 256)}],
            "startTime": "2026-01-01T00:00:01Z",
            "containerStatuses": [status("app"), status("metrics")],
            "qosClass": "Burstable"
        }
    })
}

async fn measure(n: usize) {
    let api = FakeApi::start().await;
    let pods: Vec<Value> = (0..n).map(pod).collect();
    let avg = pods.iter().map(|p| p.to_string().len()).sum::<usize>() / n;
    api.seed("", "pods", pods);
    tokio::time::sleep(Duration::from_millis(50)).await;
    let before = live();
    let started = Instant::now();
    let client = api.client();
    let (mut rx, _handle) = meshwork_controlplane::source::kube::watch(
        client,
        &meshwork_controlplane::source::kube::KubeSourceOptions::default(),
    );
    let initial = rx.recv().await.unwrap();
    let mut store = Store::new();
    for ev in initial {
        match ev {
            FileEvent::Changed(p, t) => store.apply_file(&p, &t, "default"),
            FileEvent::Removed(p) => store.remove_file(&p),
        };
    }
    let elapsed = started.elapsed();
    tokio::time::sleep(Duration::from_millis(200)).await;
    let after = live();
    assert_eq!(store.len(), n);
    println!(
        "pods={n} avg_pod_json_bytes={avg} source+store_heap_bytes={} per_pod_bytes={} initial_list_s={:.1}",
        after - before,
        (after - before) / n as isize,
        elapsed.as_secs_f64()
    );
    drop(rx);
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
#[ignore = "measurement; see the module doc"]
async fn kubernetes_source_memory_per_pod() {
    use meshwork_api::k8s_openapi::api::core::v1 as k;
    // The store's typed copy is a k8s-openapi Pod: its inline sizes, before any heap.
    println!(
        "size_of Pod={} PodSpec={} Container={} PodStatus={} ObjectMeta={}",
        std::mem::size_of::<k::Pod>(),
        std::mem::size_of::<k::PodSpec>(),
        std::mem::size_of::<k::Container>(),
        std::mem::size_of::<k::PodStatus>(),
        std::mem::size_of::<meshwork_api::k8s_openapi::apimachinery::pkg::apis::meta::v1::ObjectMeta>(
        ),
    );
    let ns = std::env::var("MESHWORK_MEMORY_PODS").unwrap_or_else(|_| "5000".into());
    for n in ns.split(',') {
        measure(n.trim().parse().unwrap()).await;
    }
}

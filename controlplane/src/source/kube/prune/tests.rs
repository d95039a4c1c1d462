//! Pruning keeps every field translation reads: full objects and their pruned copies
//! give the same model.

use ::kube::core::DynamicObject;
use meshwork_api::Store;
use serde_json::{json, Value};

use super::super::pseudo;
use super::super::resources::watched;
use crate::translate::Translator;

fn managed_fields() -> Value {
    json!([{"manager": "kubelet", "operation": "Update", "apiVersion": "v1",
            "time": "2026-01-01T00:00:00Z", "fieldsType": "FieldsV1",
            "fieldsV1": {"f:status": {"f:conditions": {"k:{\"type\":\"Ready\"}": {".": {}}}}}}])
}

fn pod(name: &str, labels: Value, extra_meta: Value, spec: Value, status: Value) -> Value {
    let mut meta = json!({"name": name, "namespace": "production", "uid": format!("uid-{name}"),
        "resourceVersion": "12", "generateName": "x-", "labels": labels,
        "creationTimestamp": "2026-01-01T00:00:00Z",
        "annotations": {"kubectl.kubernetes.io/restartedAt": "2026-01-01T00:00:00Z",
                        "prometheus.io/scrape": "true"},
        "ownerReferences": [{"apiVersion": "apps/v1", "kind": "ReplicaSet", "name": "x",
                             "uid": "rs", "controller": true}],
        "finalizers": ["example.com/f"],
        "managedFields": managed_fields()});
    for (k, v) in extra_meta.as_object().unwrap() {
        if k == "annotations" {
            for (ak, av) in v.as_object().unwrap() {
                meta["annotations"][ak] = av.clone();
            }
        } else {
            meta[k] = v.clone();
        }
    }
    let mut s = json!({"nodeName": "node-a", "serviceAccountName": "payments",
        "containers": [
            {"name": "app", "image": "example/app:1", "ports": [{"name": "http", "containerPort": 8080, "protocol": "TCP"}],
             "env": [{"name": "A", "value": "b"}], "resources": {"limits": {"cpu": "1"}},
             "readinessProbe": {"httpGet": {"path": "/ready", "port": 8080}},
             "volumeMounts": [{"name": "v", "mountPath": "/v"}]},
            {"name": "sidecar", "image": "example/side:1"}],
        "volumes": [{"name": "v", "emptyDir": {}}],
        "tolerations": [{"key": "k", "operator": "Exists"}]});
    for (k, v) in spec.as_object().unwrap() {
        s[k] = v.clone();
    }
    let mut st = json!({"phase": "Running", "podIP": "10.0.0.7", "podIPs": [{"ip": "10.0.0.7"}],
        "hostIP": "172.18.0.2", "qosClass": "Burstable", "startTime": "2026-01-01T00:00:00Z",
        "conditions": [{"type": "Ready", "status": "True", "lastProbeTime": null,
                        "lastTransitionTime": "2026-01-01T00:00:00Z"}],
        "containerStatuses": [{"name": "app", "ready": true, "restartCount": 0, "image": "i",
                               "imageID": "i", "started": true, "state": {"running": {}}}]});
    for (k, v) in status.as_object().unwrap() {
        st[k] = v.clone();
    }
    json!({"apiVersion": "v1", "kind": "Pod", "metadata": meta, "spec": s, "status": st})
}

/// A cluster exercising every pod and service field translation reads.
fn cluster() -> Vec<(&'static str, Value)> {
    let nothing = json!({});
    vec![
        (
            "Namespace",
            json!({"metadata": {"name": "production", "uid": "ns-1",
            "labels": {"istio.io/dataplane-mode": "ambient"},
            "annotations": {"a": "b"}, "managedFields": managed_fields()},
            "spec": {"finalizers": ["kubernetes"]}, "status": {"phase": "Active"}}),
        ),
        (
            "Pod",
            pod(
                "plain",
                json!({"app": "payments", "version": "v2"}),
                nothing.clone(),
                nothing.clone(),
                nothing.clone(),
            ),
        ),
        (
            "Pod",
            pod(
                "sidecar",
                json!({"app": "payments"}),
                json!({"annotations": {"sidecar.istio.io/status": "{\"containers\":[\"istio-proxy\"]}"}}),
                nothing.clone(),
                nothing.clone(),
            ),
        ),
        (
            "Pod",
            pod(
                "host",
                json!({"app": "payments"}),
                nothing.clone(),
                json!({"hostNetwork": true}),
                nothing.clone(),
            ),
        ),
        (
            "Pod",
            pod(
                "terminating",
                json!({"app": "payments"}),
                json!({"deletionTimestamp": "2026-01-02T00:00:00Z"}),
                nothing.clone(),
                nothing.clone(),
            ),
        ),
        (
            "Pod",
            pod(
                "unready",
                json!({"app": "payments", "istio.io/use-waypoint": "wp"}),
                nothing.clone(),
                nothing.clone(),
                json!({"conditions": [{"type": "Ready", "status": "False"}]}),
            ),
        ),
        (
            "Pod",
            pod(
                "starting",
                json!({"app": "payments"}),
                nothing.clone(),
                json!({"serviceAccount": "legacy", "serviceAccountName": null}),
                json!({"phase": "Pending", "podIP": null, "podIPs": null}),
            ),
        ),
        (
            "Pod",
            pod(
                "done",
                json!({"app": "payments"}),
                nothing.clone(),
                nothing.clone(),
                json!({"phase": "Succeeded"}),
            ),
        ),
        (
            "Pod",
            pod(
                "wp-1",
                json!({"gateway.networking.k8s.io/gateway-name": "wp"}),
                nothing.clone(),
                nothing.clone(),
                json!({"podIP": "10.0.0.9", "podIPs": [{"ip": "10.0.0.9"}]}),
            ),
        ),
        (
            "Service",
            json!({"metadata": {"name": "payments", "namespace": "production", "uid": "s-1",
            "labels": {"istio.io/use-waypoint": "wp"}, "annotations": {"x": "y"}, "managedFields": managed_fields()},
            "spec": {"type": "ClusterIP", "clusterIP": "10.96.0.10", "clusterIPs": ["10.96.0.10"],
                     "selector": {"app": "payments"}, "sessionAffinity": "None", "ipFamilies": ["IPv4"],
                     "ports": [{"name": "http", "port": 80, "targetPort": "http", "protocol": "TCP"},
                               {"name": "grpc", "port": 9090, "targetPort": 9091, "appProtocol": "grpc"}]},
            "status": {"loadBalancer": {}}}),
        ),
        (
            "ServiceAccount",
            json!({"metadata": {"name": "payments", "namespace": "production",
            "annotations": {"a": "b"}, "managedFields": managed_fields()},
            "secrets": [{"name": "tok"}], "imagePullSecrets": [{"name": "reg"}]}),
        ),
        (
            "EndpointSlice",
            json!({"metadata": {"name": "payments-abc", "namespace": "production",
            "labels": {"kubernetes.io/service-name": "payments"}, "managedFields": managed_fields()},
            "addressType": "IPv4",
            "endpoints": [{"addresses": ["10.0.0.7"], "conditions": {"ready": true}, "nodeName": "node-a",
                           "targetRef": {"kind": "Pod", "name": "plain", "namespace": "production"}}],
            "ports": [{"name": "http", "port": 8080, "protocol": "TCP"}]}),
        ),
        (
            "AuthorizationPolicy",
            json!({"metadata": {"name": "allow", "namespace": "production", "generation": 3,
            "annotations": {"istio.io/dry-run": "true",
                            "kubectl.kubernetes.io/last-applied-configuration": "{}"},
            "managedFields": managed_fields()},
            "spec": {"selector": {"matchLabels": {"app": "payments"}}, "action": "ALLOW",
                     "rules": [{"from": [{"source": {"principals": ["cluster.local/ns/a/sa/b"]}}]}]},
            "status": {"conditions": [{"type": "Accepted", "status": "True"}]}}),
        ),
    ]
}

/// The model translated from `objects`, each rendered with `render`.
fn model(render: impl Fn(&str, &Value) -> (std::path::PathBuf, String)) -> Vec<(String, String)> {
    let mut store = Store::new();
    let mut tr = Translator::new();
    tr.set_mesh_file(None);
    let mut changes = Vec::new();
    for (kind, v) in cluster() {
        let (path, text) = render(kind, &v);
        changes.extend(store.apply_file(&path, &text, "default"));
    }
    assert!(store.errors().is_empty(), "{:#?}", store.errors());
    tr.apply_batch(&changes);
    tr.resources()
        .iter()
        .map(|(k, r)| (k.clone(), format!("{r:?}")))
        .collect()
}

fn ar(kind: &str) -> ::kube::core::ApiResource {
    watched(kind).unwrap().preferred()
}

#[test]
fn pruned_objects_translate_to_the_same_model_as_full_ones() {
    let full = model(|kind, v| {
        // The object as the API server sends it, only apiVersion/kind set.
        let ar = ar(kind);
        let mut v = v.clone();
        v["apiVersion"] = json!(ar.api_version);
        v["kind"] = json!(kind);
        let ns = v["metadata"]["namespace"].as_str().map(str::to_string);
        let name = v["metadata"]["name"].as_str().unwrap().to_string();
        (pseudo::path(kind, ns.as_deref(), &name), v.to_string())
    });
    let pruned = model(|kind, v| {
        let o: DynamicObject = serde_json::from_value(v.clone()).unwrap();
        pseudo::render(&ar(kind), &o).unwrap()
    });
    assert!(
        full.iter().any(|(k, _)| k.starts_with("workload/")),
        "{full:?}"
    );
    assert!(
        full.iter().any(|(k, _)| k.starts_with("authz/")),
        "{full:?}"
    );
    assert_eq!(full, pruned);
}

#[test]
fn pruning_drops_what_translation_does_not_read() {
    for (kind, v) in cluster() {
        let o: DynamicObject = serde_json::from_value(v.clone()).unwrap();
        let (_, text) = pseudo::render(&ar(kind), &o).unwrap();
        assert!(!text.contains("managedFields"), "{kind}: {text}");
        assert!(!text.contains("ownerReferences"), "{kind}: {text}");
        assert!(
            !text.contains("last-applied-configuration"),
            "{kind}: {text}"
        );
        assert!(
            text.len() < v.to_string().len(),
            "{kind}: {} ≥ {}",
            text.len(),
            v.to_string().len()
        );
        if kind == "Pod" {
            let p: Value = serde_json::from_str(&text).unwrap();
            assert!(p["spec"]["containers"][0].get("image").is_none(), "{text}");
            assert!(p["status"].get("containerStatuses").is_none(), "{text}");
            assert!(p["metadata"]["annotations"]
                .get("prometheus.io/scrape")
                .is_none());
        }
    }
}

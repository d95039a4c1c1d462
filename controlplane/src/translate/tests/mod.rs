//! Translator tests: seed manifests table test, incremental behaviour, scale.

mod consistency;
mod incremental;
mod routes;
mod scale;
mod seed;

use std::path::Path;

use meshwork_api::{Change, Store};
use meshwork_model::pb::config::{
    resource::Kind as ResKind, Authorization, RouteConfig, Service, TelemetryConfig, Workload,
};

use super::{ModelChange, Translator};

/// Store + translator driven together, as the engine does.
pub(super) struct Harness {
    pub store: Store,
    pub tr: Translator,
}

impl Harness {
    pub fn new() -> Self {
        let mut tr = Translator::new();
        tr.set_mesh_file(None);
        Harness {
            store: Store::new(),
            tr,
        }
    }

    pub fn apply(&mut self, file: &str, yaml: &str) -> Vec<ModelChange> {
        let changes: Vec<Change> = self.store.apply_file(Path::new(file), yaml, "production");
        let errors = self.store.errors();
        assert!(errors.is_empty(), "{errors:#?}");
        self.tr.apply_batch(&changes)
    }

    pub fn workload(&self, ns: &str, name: &str) -> &Workload {
        match self.kind(&format!("workload/{ns}/{name}")) {
            ResKind::Workload(w) => w,
            other => panic!("not a workload: {other:?}"),
        }
    }

    pub fn service(&self, ns: &str, host: &str) -> &Service {
        match self.kind(&format!("service/{ns}/{host}")) {
            ResKind::Service(s) => s,
            other => panic!("not a service: {other:?}"),
        }
    }

    pub fn authz(&self, ns: &str, name: &str) -> &Authorization {
        match self.kind(&format!("authz/{ns}/{name}")) {
            ResKind::Authorization(a) => a,
            other => panic!("not an authorization: {other:?}"),
        }
    }

    pub fn route(&self, ns: &str, host: &str) -> &RouteConfig {
        match self.kind(&format!("route/{ns}/{host}")) {
            ResKind::Route(r) => r,
            other => panic!("not a route: {other:?}"),
        }
    }

    pub fn telemetry(&self, ns: &str, name: &str) -> &TelemetryConfig {
        match self.kind(&format!("telemetry/{ns}/{name}")) {
            ResKind::Telemetry(t) => t,
            other => panic!("not a telemetry: {other:?}"),
        }
    }

    pub fn kind(&self, key: &str) -> &ResKind {
        let keys: Vec<&String> = self.tr.resources().keys().collect();
        self.tr
            .resources()
            .get(key)
            .unwrap_or_else(|| panic!("no resource {key}; have {keys:?}"))
            .kind
            .as_ref()
            .expect("resource without kind")
    }
}

/// Keys of the changes, with `-` for removals.
pub(super) fn keys(changes: &[ModelChange]) -> Vec<String> {
    changes
        .iter()
        .map(|c| match c.resource {
            Some(_) => c.key.clone(),
            None => format!("-{}", c.key),
        })
        .collect()
}

/// A pod manifest.
pub(super) fn pod(name: &str, labels: &[(&str, &str)], sa: &str, node: &str, ip: &str) -> String {
    let mut l = String::new();
    for (k, v) in labels {
        l.push_str(&format!("    {k}: \"{v}\"\n"));
    }
    format!(
        "apiVersion: v1\nkind: Pod\nmetadata:\n  name: {name}\n  labels:\n{l}spec:\n  serviceAccountName: {sa}\n  nodeName: {node}\n  containers:\n  - name: app\n    image: app\n    ports:\n    - name: http\n      containerPort: 8080\nstatus:\n  phase: Running\n  podIP: {ip}\n"
    )
}

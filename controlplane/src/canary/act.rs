//! Acting on a [`Routing`]: the resources Flagger's Istio provider generates — ClusterIP
//! Services `<service>-primary` and `<service>-canary` and the VirtualService `<service>`
//! with the weights — written as one pseudo-file (`canary://<ns>/<name>`) the engine
//! parses, validates and translates like any file. Directory mode needs no file rewrite:
//! the weights change in memory and reach the waypoints as a model update.

use std::path::PathBuf;

use serde_json::{json, Value};
use tokio::sync::mpsc;
use tracing::warn;

use super::machine::Routing;
use super::spec::Plan;
use super::status::Status;
use crate::source::FileEvent;

/// Where generated config goes.
pub trait Router: Send + Sync {
    /// Puts `routing` in force for the canary of `plan`; `Err` to retry at the next step.
    fn apply(&self, plan: &Plan, routing: &Routing) -> Result<(), String>;
    /// The Canary is gone: remove what was generated for it.
    fn remove(&self, namespace: &str, name: &str);
    /// The Canary's status changed at a step that decided `decision`: written back where
    /// the mode keeps it (Kubernetes: the `status` subresource and an Event). Directory
    /// mode shows it on the admin endpoint only.
    fn status(&self, _namespace: &str, _name: &str, _status: &Status, _decision: &str) {}
    /// Whether this replica runs the Canaries now (Kubernetes: while it holds the
    /// Lease); when not, the controller steps nothing and forgets its state.
    fn active(&self) -> bool {
        true
    }
}

/// Prefix of the pseudo-files the controller feeds the engine (never persisted).
pub const PSEUDO_FILE_PREFIX: &str = "canary://";

pub fn pseudo_file(namespace: &str, name: &str) -> PathBuf {
    PathBuf::from(format!("{PSEUDO_FILE_PREFIX}{namespace}/{name}"))
}

/// Directory (and any in-memory) mode: generated objects go to the engine as file events.
pub struct EngineRouter {
    pub events: mpsc::UnboundedSender<Vec<FileEvent>>,
}

impl Router for EngineRouter {
    fn apply(&self, plan: &Plan, routing: &Routing) -> Result<(), String> {
        let text = generate(plan, routing);
        self.events
            .send(vec![FileEvent::Changed(
                pseudo_file(&plan.namespace, &plan.name),
                text,
            )])
            .map_err(|_| "the engine is gone".to_string())
    }
    fn remove(&self, namespace: &str, name: &str) {
        if self
            .events
            .send(vec![FileEvent::Removed(pseudo_file(namespace, name))])
            .is_err()
        {
            warn!(canary = %format!("{namespace}/{name}"), "cannot remove the generated routing: the engine is gone");
        }
    }
}

fn target_port(plan: &Plan) -> u32 {
    plan.target_port.unwrap_or(plan.port)
}

fn service(
    plan: &Plan,
    suffix: &str,
    selector: &std::collections::BTreeMap<String, String>,
) -> Value {
    json!({
        "apiVersion": "v1",
        "kind": "Service",
        "metadata": {
            "name": format!("{}-{suffix}", plan.service),
            "namespace": plan.namespace,
            "labels": {"app.kubernetes.io/managed-by": "meshwork-canary"},
        },
        "spec": {
            "selector": selector,
            "ports": [{
                "name": "http",
                "port": plan.port,
                "targetPort": target_port(plan),
                "protocol": "TCP",
            }],
        },
    })
}

fn destination(host: String, weight: u32) -> Value {
    json!({"destination": {"host": host}, "weight": weight})
}

/// The generated resources as multi-document YAML (each document JSON, which is YAML).
pub fn generate(plan: &Plan, r: &Routing) -> String {
    objects(plan, r)
        .iter()
        .map(|v| v.to_string())
        .collect::<Vec<_>>()
        .join("\n---\n")
}

/// The generated resources: Services `<service>-primary`, `<service>-canary` and the
/// VirtualService `<service>` (at `networking.istio.io/v1`).
pub fn objects(plan: &Plan, r: &Routing) -> Vec<Value> {
    let primary = format!("{}-primary", plan.service);
    let canary = format!("{}-canary", plan.service);
    let mut hosts = vec![plan.service.clone()];
    hosts.extend(plan.hosts.iter().cloned());
    let mut http = Vec::new();
    if r.match_to_canary && !plan.matches.is_empty() {
        http.push(json!({
            "name": "canary",
            "match": plan.matches,
            "route": [destination(primary.clone(), 0), destination(canary.clone(), 100)],
        }));
    }
    http.push(json!({
        "name": "primary",
        "route": [
            destination(primary, r.primary_weight),
            destination(canary, r.canary_weight),
        ],
    }));
    let mut vs_spec = json!({"hosts": hosts, "http": http});
    if !plan.gateways.is_empty() {
        let mut gws = plan.gateways.clone();
        if !gws.iter().any(|g| g == "mesh") {
            gws.push("mesh".into());
        }
        vs_spec["gateways"] = json!(gws);
    }
    let vs = json!({
        "apiVersion": "networking.istio.io/v1",
        "kind": "VirtualService",
        "metadata": {
            "name": plan.service,
            "namespace": plan.namespace,
            "labels": {"app.kubernetes.io/managed-by": "meshwork-canary"},
        },
        "spec": vs_spec,
    });
    vec![
        service(plan, "primary", &r.primary_selector),
        service(plan, "canary", &r.canary_selector),
        vs,
    ]
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::canary::spec::tests::{inputs, DEPLOYMENTS};
    use meshwork_api::{Spec, Store};

    #[test]
    fn generated_routing_is_valid_istio_with_the_weights() {
        let yaml = format!(
            "{DEPLOYMENTS}---\napiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: web, namespace: shop}}\nspec:\n  targetRef: {{kind: Deployment, name: web}}\n  service: {{port: 80, targetPort: 8080, hosts: [web.example.com], gateways: [edge]}}\n  analysis:\n    iterations: 3\n    match:\n    - headers: {{x-canary: {{exact: \"1\"}}}}\n"
        );
        let i = inputs(&yaml);
        let plan = i.plan(&i.canaries[0]).unwrap();
        let r = Routing {
            primary_weight: 70,
            canary_weight: 30,
            match_to_canary: true,
            primary_selector: plan.primary_selector.clone(),
            canary_selector: plan.canary_selector.clone(),
        };
        let text = generate(&plan, &r);
        let mut store = Store::new();
        let changes = store.apply_file(&pseudo_file("shop", "web"), &text, "default");
        let errors: Vec<String> = store.errors().iter().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}\n{text}");
        assert_eq!(changes.len(), 3);
        let vs = changes
            .iter()
            .find_map(|c| match c {
                meshwork_api::Change::Upsert(o) => match &o.spec {
                    Spec::VirtualService(vs) => Some(vs.clone()),
                    _ => None,
                },
                _ => None,
            })
            .unwrap();
        assert_eq!(vs.hosts, ["web", "web.example.com"]);
        assert_eq!(vs.gateways, ["edge", "mesh"]);
        assert_eq!(vs.http.len(), 2);
        let weights: Vec<(String, u32)> = vs.http[1]
            .route
            .iter()
            .map(|d| (d.destination.host.clone(), d.weight.unwrap_or(0)))
            .collect();
        assert_eq!(
            weights,
            [
                ("web-primary".to_string(), 70),
                ("web-canary".to_string(), 30)
            ]
        );
        assert!(text.contains("\"targetPort\":8080"), "{text}");
        assert!(text.contains("\"version\":\"v1\""), "{text}");
    }
}

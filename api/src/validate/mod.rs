//! Semantic validation per kind (what Istio's webhook would reject), returning named-field
//! problems. Syntax and type errors (bad durations, regexes, wrong types, unknown enum
//! values) are already caught while deserializing.

mod authorization;
mod canary;
mod extensions;
mod gateway;
mod names;
mod networking;
mod security;
mod syntax;
mod telemetry;
mod traffic_policy;

pub use names::{escaped, printable, NameRule};

use crate::mesh::MeshConfigOverlay;
use crate::object::{Object, Spec};
use crate::security::AuthzAction;
use authorization::authorization_policy;
use extensions::wasm_plugin;
use gateway::{gw_grpc_route, gw_http_route};
use networking::{destination_rule, virtual_service};
use security::peer_authentication;
use telemetry::telemetry;

/// ConfigMaps with a `mesh` key are validated as mesh config in this namespace.
pub const DEFAULT_ROOT_NAMESPACE: &str = "istio-system";

/// A semantic problem in one field of a resource.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct Problem {
    pub field: String,
    pub message: String,
}

/// What [`check`] finds: errors (the resource is rejected) and warnings (accepted, but
/// Istio would warn too).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Report {
    pub errors: Vec<Problem>,
    pub warnings: Vec<Problem>,
}

#[derive(Default)]
pub(crate) struct Problems {
    errors: Vec<Problem>,
    warnings: Vec<Problem>,
}

impl Problems {
    pub(crate) fn add(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.errors.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }
    pub(crate) fn warn(&mut self, field: impl Into<String>, message: impl Into<String>) {
        self.warnings.push(Problem {
            field: field.into(),
            message: message.into(),
        });
    }
    pub(crate) fn into_report(self) -> Report {
        Report {
            errors: self.errors,
            warnings: self.warnings,
        }
    }
    /// Istio's `ValidateDuration`: at least 1ms, in whole milliseconds.
    pub(crate) fn duration(&mut self, field: impl Into<String>, d: &crate::Duration) {
        let d = d.as_std();
        if d < std::time::Duration::from_millis(1) || !d.subsec_nanos().is_multiple_of(1_000_000) {
            self.add(
                field,
                format!("duration {d:?} must be at least 1ms and a whole number of milliseconds"),
            );
        }
    }
    pub(crate) fn percent(&mut self, field: impl Into<String>, v: f64) {
        if !(0.0..=100.0).contains(&v) || v.is_nan() {
            self.add(field, format!("percentage {v} must be between 0 and 100"));
        }
    }
}

/// Istio's `validateMetadata`: `istio.io/dry-run` only on an ALLOW or DENY
/// AuthorizationPolicy and only `true`/`false`; annotations Istio reserves for itself are
/// refused.
fn istio_annotations(obj: &Object, p: &mut Problems) {
    const DRY_RUN: &str = "istio.io/dry-run";
    if let Some(v) = obj.annotations.get(DRY_RUN) {
        let f = format!("metadata.annotations.{DRY_RUN}");
        match &obj.spec {
            Spec::AuthorizationPolicy(ap) => match ap.action {
                AuthzAction::Allow | AuthzAction::Deny => {
                    if crate::security::parse_dry_run(v).is_none() {
                        p.add(
                            f,
                            format!("invalid value \"{}\" (true or false)", escaped(v)),
                        );
                    }
                }
                a => p.add(
                    f,
                    format!(
                        "only supported with action ALLOW or DENY, not {}",
                        a.as_str()
                    ),
                ),
            },
            _ => p.add(f, "unsupported annotation, please remove it"),
        }
    }
    for reserved in [
        "internal.istio.io/parent-namespace",
        "internal.istio.io/parents",
        "internal.istio.io/webhook-always-reject",
    ] {
        if obj.annotations.contains_key(reserved) {
            p.add(
                format!("metadata.annotations.{reserved}"),
                "reserved annotation, may not be set by users",
            );
        }
    }
}

/// Validates one object; an empty result means it is acceptable. Warnings are left out:
/// see [`check`].
pub fn validate(obj: &Object) -> Vec<Problem> {
    check(obj).errors
}

/// Validates one object: errors, and the warnings Istio would give for an accepted one.
pub fn check(obj: &Object) -> Report {
    let mut p = Problems::default();
    if matches!(
        obj.spec,
        Spec::VirtualService(_)
            | Spec::DestinationRule(_)
            | Spec::PeerAuthentication(_)
            | Spec::AuthorizationPolicy(_)
            | Spec::Telemetry(_)
    ) {
        istio_annotations(obj, &mut p);
    }
    match &obj.spec {
        Spec::VirtualService(vs) => virtual_service(vs, &obj.namespace, &mut p),
        Spec::DestinationRule(dr) => destination_rule(dr, &obj.namespace, &mut p),
        Spec::PeerAuthentication(pa) => peer_authentication(pa, &mut p),
        Spec::AuthorizationPolicy(ap) => authorization_policy(ap, &mut p),
        Spec::Telemetry(t) => telemetry(t, &mut p),
        Spec::WasmPlugin(w) => wasm_plugin(w, &mut p),
        Spec::Gateway(g) => {
            if g.gateway_class_name.is_empty() {
                p.add("spec.gatewayClassName", "required");
            }
            let mut names = std::collections::BTreeSet::new();
            for (i, l) in g.listeners.iter().enumerate() {
                if !names.insert(l.name.as_str()) {
                    p.add(
                        format!("spec.listeners[{i}].name"),
                        format!("duplicate listener name \"{}\"", l.name),
                    );
                }
                if !(1..=65535).contains(&l.port) {
                    p.add(
                        format!("spec.listeners[{i}].port"),
                        format!("port {} out of range 1..=65535", l.port),
                    );
                }
            }
        }
        Spec::HttpRoute(r) => gw_http_route(r, &mut p),
        Spec::Canary(c) => canary::canary(c, &mut p),
        Spec::MetricTemplate(t) => canary::metric_template(t, &mut p),
        Spec::GrpcRoute(r) => gw_grpc_route(r, &mut p),
        Spec::ConfigMap(cm) if obj.namespace == DEFAULT_ROOT_NAMESPACE => {
            if let Some(mesh) = cm.data.as_ref().and_then(|d| d.get("mesh")) {
                if let Err(e) = MeshConfigOverlay::from_yaml(mesh) {
                    let field = match e.field() {
                        "" => "data.mesh".to_string(),
                        f => format!("data.mesh.{f}"),
                    };
                    p.add(field, e.message());
                }
            }
        }
        _ => {}
    }
    p.into_report()
}

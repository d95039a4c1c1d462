//! From the stored `Canary` (with its MetricTemplates and Deployments) to a [`Plan`]: what
//! the state machine runs, with every reference resolved and named when it cannot be.

use std::collections::BTreeMap;
use std::time::Duration;

use meshwork_api::canary::{
    CanaryWebhook, HookType, MetricTemplate, REQUEST_DURATION, REQUEST_SUCCESS_RATE,
};
use meshwork_api::networking::HttpMatchRequest;
use meshwork_api::{Kind, Object, ObjectKey, Spec};

/// Why a Canary cannot run (yet).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PlanError {
    #[error("Canary {canary}: spec.targetRef: Deployment {namespace}/{name} not found")]
    NoTarget {
        canary: String,
        namespace: String,
        name: String,
    },
    #[error("Canary {canary}: spec.targetRef: Deployment {namespace}/{name} has no spec.selector.matchLabels")]
    NoSelector {
        canary: String,
        namespace: String,
        name: String,
    },
    #[error("Canary {canary}: {field}: MetricTemplate {namespace}/{name} not found")]
    NoTemplate {
        canary: String,
        field: String,
        namespace: String,
        name: String,
    },
}

/// One metric check of the analysis.
#[derive(Debug, Clone, PartialEq)]
pub struct Check {
    pub name: String,
    /// `{{ interval }}` of the query.
    pub interval: Duration,
    pub min: Option<f64>,
    pub max: Option<f64>,
    pub source: CheckSource,
    pub variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, PartialEq)]
pub enum CheckSource {
    /// Flagger's built-in Istio metric (`request-success-rate`, `request-duration`).
    Builtin(Builtin),
    /// A MetricTemplate (or a deprecated inline query, with no address).
    Query {
        template: Option<ObjectKey>,
        provider: String,
        address: String,
        query: String,
    },
}

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Builtin {
    SuccessRate,
    Duration,
}

impl Check {
    /// Whether `value` passes the threshold range (inclusive bounds, as Flagger).
    pub fn passes(&self, value: f64) -> bool {
        !value.is_nan()
            && self.min.is_none_or(|m| value >= m)
            && self.max.is_none_or(|m| value <= m)
    }
}

/// How traffic moves during the analysis.
#[derive(Debug, Clone, PartialEq)]
pub enum Steps {
    /// Canary weights in order, the last one being where promotion starts.
    Weights(Vec<u32>),
    /// A/B testing: `iterations` intervals with `match` routed to the canary.
    Iterations(u32),
}

/// Everything the state machine needs about one Canary.
#[derive(Debug, Clone, PartialEq)]
pub struct Plan {
    pub namespace: String,
    pub name: String,
    /// `targetRef.name`: the canary workload, `{{ target }}` of the queries.
    pub target: String,
    /// Apex service name (`service.name` or the target's name).
    pub service: String,
    pub port: u32,
    /// `service.targetPort` when a number (a port name is left to the port itself).
    pub target_port: Option<u32>,
    pub hosts: Vec<String>,
    pub gateways: Vec<String>,
    pub interval: Duration,
    pub threshold: u32,
    pub steps: Steps,
    pub matches: Vec<HttpMatchRequest>,
    pub checks: Vec<Check>,
    pub hooks: Vec<CanaryWebhook>,
    pub skip_analysis: bool,
    pub suspend: bool,
    /// Pods of the canary version: the target Deployment's `selector.matchLabels`.
    pub canary_selector: BTreeMap<String, String>,
    /// Pods of the primary version before any promotion: Deployment `<target>-primary`'s
    /// selector, else the target's own (its first version is the primary, as in Flagger).
    pub primary_selector: BTreeMap<String, String>,
    /// Identity of the canary version: a digest of the target's pod template.
    pub revision: String,
    /// The same digest of Deployment `<target>-primary`, when it exists: a first sight
    /// with a different primary is a new revision to analyse.
    pub primary_revision: Option<String>,
}

impl Plan {
    pub fn key(&self) -> String {
        format!("{}/{}", self.namespace, self.name)
    }
    pub fn hooks(&self, t: HookType) -> impl Iterator<Item = &CanaryWebhook> {
        self.hooks.iter().filter(move |h| h.hook_type() == t)
    }
    /// The canary weight after `current` (traffic shifting), or `None` at the last step.
    pub fn next_weight(&self, current: u32) -> Option<u32> {
        match &self.steps {
            Steps::Weights(w) => w.iter().copied().find(|&w| w > current),
            Steps::Iterations(_) => None,
        }
    }
    pub fn max_weight(&self) -> u32 {
        match &self.steps {
            Steps::Weights(w) => w.last().copied().unwrap_or(0),
            Steps::Iterations(_) => 100,
        }
    }
}

/// The Canary kinds the controller reads, as the engine last stored them.
#[derive(Debug, Clone, Default)]
pub struct Inputs {
    pub canaries: Vec<std::sync::Arc<Object>>,
    pub templates: BTreeMap<(String, String), MetricTemplate>,
    pub deployments: BTreeMap<(String, String), std::sync::Arc<Object>>,
}

impl Inputs {
    /// Collects the kinds the controller reads from a set of stored objects.
    pub fn collect<'a>(objects: impl Iterator<Item = &'a std::sync::Arc<Object>>) -> Inputs {
        let mut i = Inputs::default();
        for o in objects {
            let id = (o.namespace.clone(), o.name.clone());
            match (&o.kind, &o.spec) {
                (Kind::Canary, _) => i.canaries.push(o.clone()),
                (Kind::MetricTemplate, Spec::MetricTemplate(t)) => {
                    i.templates.insert(id, t.clone());
                }
                (Kind::Deployment, _) => {
                    i.deployments.insert(id, o.clone());
                }
                _ => {}
            }
        }
        i
    }

    fn selector_and_template(
        &self,
        ns: &str,
        name: &str,
    ) -> Option<(BTreeMap<String, String>, String)> {
        let o = self.deployments.get(&(ns.to_string(), name.to_string()))?;
        let Spec::Deployment(d) = &o.spec else {
            return None;
        };
        let spec = d.spec.as_ref()?;
        let sel = spec.selector.match_labels.clone().unwrap_or_default();
        let template = serde_json::to_string(&spec.template).unwrap_or_default();
        Some((sel, template))
    }

    /// Resolves one Canary into a plan.
    pub fn plan(&self, obj: &Object) -> Result<Plan, PlanError> {
        let Spec::Canary(c) = &obj.spec else {
            unreachable!("plan of a non-Canary object")
        };
        let ns = obj.namespace.as_str();
        let canary = obj.ns_name();
        let target = c.target_ref.name.clone();
        let (canary_selector, template) =
            self.selector_and_template(ns, &target)
                .ok_or_else(|| PlanError::NoTarget {
                    canary: canary.clone(),
                    namespace: ns.into(),
                    name: target.clone(),
                })?;
        if canary_selector.is_empty() {
            return Err(PlanError::NoSelector {
                canary,
                namespace: ns.into(),
                name: target,
            });
        }
        let primary = self
            .selector_and_template(ns, &format!("{target}-primary"))
            .filter(|(s, _)| !s.is_empty());
        let primary_revision = primary.as_ref().map(|(_, t)| digest(t));
        let primary_selector = primary
            .map(|(s, _)| s)
            .unwrap_or_else(|| canary_selector.clone());
        let default = Default::default();
        let a = c.analysis().unwrap_or(&default);
        let steps = if !a.step_weights.is_empty() {
            Steps::Weights(a.step_weights.clone())
        } else if let Some(step) = a.step_weight.filter(|&s| s > 0) {
            let max = a.max_weight.unwrap_or(100).min(100);
            let mut w = Vec::new();
            let mut cur = 0;
            while cur < max {
                cur = (cur + step).min(max);
                w.push(cur);
            }
            Steps::Weights(w)
        } else if let Some(n) = a.iterations {
            Steps::Iterations(n)
        } else {
            Steps::Weights(Vec::new())
        };
        let mut checks = Vec::new();
        for (i, m) in a.metrics.iter().enumerate() {
            let interval = m
                .interval
                .map(|d| d.as_std())
                .unwrap_or(Duration::from_secs(60));
            let (mut min, mut max) = m
                .threshold_range
                .map(|r| (r.min, r.max))
                .unwrap_or((None, None));
            let source = if let Some(t) = &m.template_ref {
                let tns = if t.namespace.is_empty() {
                    ns
                } else {
                    &t.namespace
                };
                let tpl = self
                    .templates
                    .get(&(tns.to_string(), t.name.clone()))
                    .ok_or_else(|| PlanError::NoTemplate {
                        canary: canary.clone(),
                        field: format!("spec.analysis.metrics[{i}].templateRef"),
                        namespace: tns.into(),
                        name: t.name.clone(),
                    })?;
                CheckSource::Query {
                    template: Some(ObjectKey::new(Kind::MetricTemplate, tns, &t.name)),
                    provider: tpl.provider.type_.clone(),
                    address: tpl.provider.address.clone(),
                    query: tpl.query.clone(),
                }
            } else if m.name == REQUEST_SUCCESS_RATE {
                CheckSource::Builtin(Builtin::SuccessRate)
            } else if m.name == REQUEST_DURATION {
                CheckSource::Builtin(Builtin::Duration)
            } else {
                CheckSource::Query {
                    template: None,
                    provider: "prometheus".into(),
                    address: String::new(),
                    query: m.query.clone(),
                }
            };
            // Flagger's deprecated `threshold`: a minimum for the success rate, a maximum
            // for everything else.
            if let (Some(t), None, None) = (m.threshold, min, max) {
                if source == CheckSource::Builtin(Builtin::SuccessRate) {
                    min = Some(t);
                } else {
                    max = Some(t);
                }
            }
            checks.push(Check {
                name: m.name.clone(),
                interval,
                min,
                max,
                source,
                variables: m.template_variables.clone(),
            });
        }
        Ok(Plan {
            namespace: ns.to_string(),
            name: obj.name.clone(),
            service: c.service_name(&obj.name).to_string(),
            target,
            port: c.service.port,
            target_port: c
                .service
                .target_port
                .as_ref()
                .and_then(|v| v.as_u64())
                .and_then(|v| u32::try_from(v).ok()),
            hosts: c.service.hosts.clone(),
            gateways: c.service.gateways.clone(),
            interval: a.interval_or_default(),
            threshold: a.threshold_or_default(),
            steps,
            matches: a.match_.clone(),
            checks,
            hooks: a.webhooks.clone(),
            skip_analysis: c.skip_analysis,
            suspend: c.suspend,
            canary_selector,
            primary_selector,
            revision: digest(&template),
            primary_revision,
        })
    }
}

/// FNV-1a of the text, as hex: stable across runs and builds.
fn digest(text: &str) -> String {
    let mut h: u64 = 0xcbf29ce484222325;
    for b in text.bytes() {
        h ^= u64::from(b);
        h = h.wrapping_mul(0x100000001b3);
    }
    format!("{h:016x}")
}

#[cfg(test)]
pub(crate) mod tests {
    use super::*;
    use meshwork_api::Store;
    use std::sync::Arc;

    pub(crate) const DEPLOYMENTS: &str = "\
apiVersion: apps/v1
kind: Deployment
metadata: {name: web, namespace: shop}
spec:
  selector: {matchLabels: {app: web, version: v2}}
  template:
    metadata: {labels: {app: web, version: v2}}
    spec: {containers: [{name: web, image: web:2}]}
---
apiVersion: apps/v1
kind: Deployment
metadata: {name: web-primary, namespace: shop}
spec:
  selector: {matchLabels: {app: web, version: v1}}
  template:
    metadata: {labels: {app: web, version: v1}}
    spec: {containers: [{name: web, image: web:1}]}
";

    pub(crate) fn inputs(yaml: &str) -> Inputs {
        let mut store = Store::new();
        let changes = store.apply_file("c.yaml".as_ref(), yaml, "default");
        let errors: Vec<String> = store.errors().iter().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let objs: Vec<Arc<Object>> = changes
            .into_iter()
            .filter_map(|c| match c {
                meshwork_api::Change::Upsert(o) => Some(o),
                _ => None,
            })
            .collect();
        Inputs::collect(objs.iter())
    }

    #[test]
    fn step_weight_up_to_max_weight_and_primary_selector() {
        let yaml = format!(
            "{DEPLOYMENTS}---\napiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: web, namespace: shop}}\nspec:\n  targetRef: {{apiVersion: apps/v1, kind: Deployment, name: web}}\n  service: {{port: 80}}\n  analysis:\n    stepWeight: 20\n    maxWeight: 50\n    metrics:\n    - name: request-success-rate\n      threshold: 99\n    - name: request-duration\n      thresholdRange: {{max: 500}}\n"
        );
        let i = inputs(&yaml);
        let p = i.plan(&i.canaries[0]).unwrap();
        assert_eq!(p.steps, Steps::Weights(vec![20, 40, 50]));
        assert_eq!(p.next_weight(0), Some(20));
        assert_eq!(p.next_weight(40), Some(50));
        assert_eq!(p.next_weight(50), None);
        assert_eq!(p.primary_selector.get("version").unwrap(), "v1");
        assert_eq!(p.canary_selector.get("version").unwrap(), "v2");
        assert_eq!((p.checks[0].min, p.checks[0].max), (Some(99.0), None));
        assert!(p.checks[1].passes(500.0) && !p.checks[1].passes(500.1));
        assert!(!p.checks[0].passes(f64::NAN));
        assert_eq!(p.service, "web");
        assert_eq!(p.interval, Duration::from_secs(60));
    }

    #[test]
    fn missing_references_are_named() {
        let yaml = "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: web, namespace: shop}\nspec:\n  targetRef: {kind: Deployment, name: web}\n  service: {port: 80}\n";
        let i = inputs(yaml);
        assert_eq!(
            i.plan(&i.canaries[0]).unwrap_err().to_string(),
            "Canary shop/web: spec.targetRef: Deployment shop/web not found"
        );
        let yaml = format!(
            "{DEPLOYMENTS}---\napiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {{name: web, namespace: shop}}\nspec:\n  targetRef: {{kind: Deployment, name: web}}\n  service: {{port: 80}}\n  analysis:\n    metrics:\n    - name: errors\n      templateRef: {{name: errs, namespace: ops}}\n      thresholdRange: {{max: 1}}\n"
        );
        let i = inputs(&yaml);
        assert_eq!(
            i.plan(&i.canaries[0]).unwrap_err().to_string(),
            "Canary shop/web: spec.analysis.metrics[0].templateRef: MetricTemplate ops/errs not found"
        );
    }
}

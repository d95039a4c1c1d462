//! Flagger's `flagger.app/v1beta1` `Canary` and `MetricTemplate`, read so that a team can
//! switch between Flagger and Meshwork's built-in canary controller without rewriting
//! manifests. Field meanings follow Flagger's API; fields Meshwork reads but does not act
//! on are listed in `docs/canary.md`.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::networking::{HttpMatchRequest, Raw};
use crate::Duration;

/// `Canary.spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct Canary {
    /// The workload under canary (a `Deployment`): its pods are the canary version.
    pub target_ref: LocalObjectReference,
    /// Accepted for compatibility; Meshwork does not scale workloads.
    pub autoscaler_ref: Option<Raw>,
    pub ingress_ref: Option<Raw>,
    pub upstream_ref: Option<Raw>,
    pub service: CanaryService,
    pub analysis: Option<CanaryAnalysis>,
    /// Older name of `analysis` (Flagger still reads it).
    pub canary_analysis: Option<CanaryAnalysis>,
    pub progress_deadline_seconds: Option<u32>,
    pub skip_analysis: bool,
    pub suspend: bool,
    pub revert_on_deletion: bool,
    pub provider: String,
    pub metrics_server: String,
}

impl Canary {
    /// `analysis`, else the older `canaryAnalysis`.
    pub fn analysis(&self) -> Option<&CanaryAnalysis> {
        self.analysis.as_ref().or(self.canary_analysis.as_ref())
    }
    /// The apex service name: `service.name`, else the target's name (as Flagger).
    pub fn service_name<'a>(&'a self, fallback: &'a str) -> &'a str {
        if !self.service.name.is_empty() {
            &self.service.name
        } else if !self.target_ref.name.is_empty() {
            &self.target_ref.name
        } else {
            fallback
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LocalObjectReference {
    pub api_version: String,
    pub kind: String,
    pub name: String,
}

/// `Canary.spec.service`: the ClusterIP services and the VirtualService Flagger generates.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CanaryService {
    pub name: String,
    pub port: u32,
    pub port_name: String,
    /// A number or a port name.
    pub target_port: Option<Raw>,
    pub port_discovery: bool,
    pub app_protocol: String,
    pub timeout: Option<Duration>,
    pub gateways: Vec<String>,
    pub hosts: Vec<String>,
    pub delegation: bool,
    pub traffic_policy: Option<Raw>,
    #[serde(rename = "match")]
    pub match_: Vec<HttpMatchRequest>,
    pub rewrite: Option<Raw>,
    pub retries: Option<Raw>,
    pub headers: Option<Raw>,
    pub mirror: Option<Raw>,
    pub cors_policy: Option<Raw>,
    pub primary: Option<Raw>,
    pub canary: Option<Raw>,
    pub apex: Option<Raw>,
}

/// `Canary.spec.analysis`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CanaryAnalysis {
    /// Time between steps (Flagger's default: 1m).
    pub interval: Option<Duration>,
    /// Failed checks before a rollback.
    pub threshold: Option<u32>,
    /// Weight at which the canary is promoted (traffic shifting).
    pub max_weight: Option<u32>,
    pub step_weight: Option<u32>,
    /// Explicit weights, in order; replaces `stepWeight`/`maxWeight`.
    pub step_weights: Vec<u32>,
    pub step_weight_promotion: Option<u32>,
    /// A/B testing: number of intervals with `match` routed to the canary.
    pub iterations: Option<u32>,
    pub mirror: bool,
    pub mirror_weight: Option<u32>,
    pub primary_ready_threshold: Option<u32>,
    pub canary_ready_threshold: Option<u32>,
    #[serde(rename = "match")]
    pub match_: Vec<HttpMatchRequest>,
    pub session_affinity: Option<Raw>,
    pub alerts: Vec<Raw>,
    pub metrics: Vec<CanaryMetric>,
    pub webhooks: Vec<CanaryWebhook>,
}

impl CanaryAnalysis {
    /// Flagger's defaults: 1m interval, threshold 1 (at least one failed check rolls back).
    pub fn interval_or_default(&self) -> std::time::Duration {
        self.interval
            .map(|d| d.as_std())
            .unwrap_or(std::time::Duration::from_secs(60))
    }
    pub fn threshold_or_default(&self) -> u32 {
        self.threshold.unwrap_or(1).max(1)
    }
}

/// `analysis.metrics[]`: a built-in metric by name or a `templateRef`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CanaryMetric {
    pub name: String,
    /// Range of the query's window (`{{ interval }}`); default 1m.
    pub interval: Option<Duration>,
    /// Deprecated in Flagger: the minimum (success rate) or maximum (duration).
    pub threshold: Option<f64>,
    pub threshold_range: Option<ThresholdRange>,
    /// Deprecated inline query.
    pub query: String,
    pub template_ref: Option<CrossNamespaceObjectReference>,
    pub template_variables: BTreeMap<String, String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ThresholdRange {
    pub min: Option<f64>,
    pub max: Option<f64>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CrossNamespaceObjectReference {
    pub name: String,
    pub namespace: String,
}

/// When a webhook is called (`analysis.webhooks[].type`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord, Serialize, Deserialize)]
pub enum HookType {
    /// Gate before the analysis starts: the rollout waits until it answers 2xx.
    #[serde(rename = "confirm-rollout")]
    ConfirmRollout,
    /// Once before traffic shifting; a failure counts as a failed check.
    #[serde(rename = "pre-rollout")]
    PreRollout,
    /// Every interval before the metric checks (Flagger's default type).
    #[serde(rename = "rollout")]
    Rollout,
    /// Gate before promotion (`WaitingPromotion` until it answers 2xx).
    #[serde(rename = "confirm-promotion")]
    ConfirmPromotion,
    /// After the canary succeeded or failed.
    #[serde(rename = "post-rollout")]
    PostRollout,
    /// Polled while progressing: 2xx means roll back now.
    #[serde(rename = "rollback")]
    Rollback,
    /// Called with every event (Flagger); Meshwork calls it on each phase change.
    #[serde(rename = "event")]
    Event,
    /// Gate before each weight increase.
    #[serde(rename = "confirm-traffic-increase")]
    ConfirmTrafficIncrease,
}

impl HookType {
    pub fn as_str(&self) -> &'static str {
        match self {
            HookType::ConfirmRollout => "confirm-rollout",
            HookType::PreRollout => "pre-rollout",
            HookType::Rollout => "rollout",
            HookType::ConfirmPromotion => "confirm-promotion",
            HookType::PostRollout => "post-rollout",
            HookType::Rollback => "rollback",
            HookType::Event => "event",
            HookType::ConfirmTrafficIncrease => "confirm-traffic-increase",
        }
    }
}

/// `analysis.webhooks[]`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct CanaryWebhook {
    pub name: String,
    /// Absent means `rollout`, as in Flagger.
    #[serde(rename = "type")]
    pub type_: Option<HookType>,
    pub url: String,
    /// Default 10s.
    pub timeout: Option<Duration>,
    pub mute_alert: bool,
    pub metadata: BTreeMap<String, String>,
    pub retries: Option<u32>,
}

impl CanaryWebhook {
    pub fn hook_type(&self) -> HookType {
        self.type_.unwrap_or(HookType::Rollout)
    }
    /// The hook's `timeout` (Flagger's default 10 s), at most [`MAX_WEBHOOK_TIMEOUT`]: the
    /// built-in controller calls hooks from one task, so one Canary's never-answering hook
    /// must not hold every other Canary's steps for longer than that.
    pub fn timeout_or_default(&self) -> std::time::Duration {
        self.timeout
            .map(|d| d.as_std())
            .unwrap_or(std::time::Duration::from_secs(10))
            .min(MAX_WEBHOOK_TIMEOUT)
    }
}

/// The longest a webhook call may take (see `timeout_or_default`).
pub const MAX_WEBHOOK_TIMEOUT: std::time::Duration = std::time::Duration::from_secs(60);

#[cfg(test)]
mod webhook_timeout_tests {
    use super::*;

    #[test]
    fn a_webhook_cannot_hold_the_controller_longer_than_the_cap() {
        let hook: CanaryWebhook =
            serde_yaml_ng::from_str("{name: t, url: 'http://x/', timeout: 87600h}").unwrap();
        assert_eq!(hook.timeout_or_default(), MAX_WEBHOOK_TIMEOUT);
        let hook: CanaryWebhook =
            serde_yaml_ng::from_str("{name: t, url: 'http://x/', timeout: 15s}").unwrap();
        assert_eq!(
            hook.timeout_or_default(),
            std::time::Duration::from_secs(15)
        );
    }
}

/// `MetricTemplate.spec`.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricTemplate {
    pub provider: MetricProvider,
    /// A query with `{{ namespace }}`, `{{ target }}`, `{{ interval }}`, `{{ service }}`,
    /// `{{ ingress }}` and `{{ variables.NAME }}` placeholders.
    pub query: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricProvider {
    /// Only `prometheus` is evaluated by Meshwork.
    #[serde(rename = "type")]
    pub type_: String,
    pub address: String,
    pub secret_ref: Option<Raw>,
    pub insecure_skip_verify: bool,
}

/// Built-in metric names (Flagger's Istio observer).
pub const REQUEST_SUCCESS_RATE: &str = "request-success-rate";
pub const REQUEST_DURATION: &str = "request-duration";

#[cfg(test)]
mod tests {
    use crate::object::Spec;
    use crate::parse_file;

    const PODINFO: &str = r#"
apiVersion: flagger.app/v1beta1
kind: Canary
metadata:
  name: podinfo
  namespace: test
spec:
  targetRef:
    apiVersion: apps/v1
    kind: Deployment
    name: podinfo
  progressDeadlineSeconds: 60
  service:
    port: 9898
    targetPort: 9898
    gateways: [public-gateway.istio-system.svc.cluster.local]
    hosts: [app.example.com]
  analysis:
    interval: 1m
    threshold: 5
    maxWeight: 50
    stepWeight: 10
    metrics:
    - name: request-success-rate
      thresholdRange:
        min: 99
      interval: 1m
    - name: request-duration
      thresholdRange:
        max: 500
      interval: 30s
    - name: not-found-percentage
      templateRef:
        name: not-found-percentage
        namespace: istio-system
      thresholdRange:
        max: 5
      interval: 1m
    webhooks:
      - name: acceptance-test
        type: pre-rollout
        url: http://flagger-loadtester.test/
        timeout: 30s
        metadata:
          type: bash
          cmd: "curl -sd 'test' http://podinfo-canary:9898/token | grep token"
      - name: load-test
        url: http://flagger-loadtester.test/
        timeout: 5s
        metadata:
          cmd: "hey -z 1m -q 10 -c 2 http://podinfo-canary.test:9898/"
---
apiVersion: flagger.app/v1beta1
kind: MetricTemplate
metadata:
  name: not-found-percentage
  namespace: istio-system
spec:
  provider:
    type: prometheus
    address: http://prometheus.istio-system:9090
  query: |
    100 - sum(rate(istio_requests_total{reporter="destination",destination_workload_namespace="{{ namespace }}",destination_workload="{{ target }}",response_code!="404"}[{{ interval }}]))
"#;

    #[test]
    fn flaggers_podinfo_example_parses() {
        let f = parse_file("c.yaml".as_ref(), PODINFO, "default");
        let errors: Vec<String> = f.errors().map(|e| e.to_string()).collect();
        assert!(errors.is_empty(), "{errors:?}");
        let warnings: Vec<String> = f.warnings().map(|e| e.to_string()).collect();
        assert!(warnings.is_empty(), "{warnings:?}");
        let objs: Vec<_> = f.objects().collect();
        assert_eq!(objs.len(), 2);
        let Spec::Canary(c) = &objs[0].spec else {
            panic!("not a canary")
        };
        let a = c.analysis().unwrap();
        assert_eq!(a.interval_or_default().as_secs(), 60);
        assert_eq!(
            (a.threshold, a.max_weight, a.step_weight),
            (Some(5), Some(50), Some(10))
        );
        assert_eq!(a.metrics[0].threshold_range.unwrap().min, Some(99.0));
        assert_eq!(a.metrics[1].interval.unwrap().as_millis(), 30_000);
        assert_eq!(a.webhooks[0].hook_type().as_str(), "pre-rollout");
        assert_eq!(a.webhooks[1].hook_type().as_str(), "rollout");
        assert_eq!(c.service_name("x"), "podinfo");
        let Spec::MetricTemplate(t) = &objs[1].spec else {
            panic!("not a template")
        };
        assert_eq!(t.provider.type_, "prometheus");
    }

    fn errors_of(yaml: &str) -> Vec<String> {
        parse_file("c.yaml".as_ref(), yaml, "default")
            .errors()
            .map(|e| e.to_string())
            .collect()
    }

    const HEAD: &str =
        "apiVersion: flagger.app/v1beta1\nkind: Canary\nmetadata: {name: web, namespace: shop}\n";

    #[test]
    fn errors_name_the_resource_and_field() {
        let e = errors_of(&format!("{HEAD}spec:\n  service: {{port: 80}}\n"));
        assert_eq!(
            e,
            ["c.yaml:1 (doc 1): Canary shop/web: spec.targetRef.name: required"]
        );
        let e = errors_of(&format!(
            "{HEAD}spec:\n  targetRef: {{kind: Deployment, name: web}}\n  service: {{port: 80}}\n  analysis:\n    interval: 1x\n"
        ));
        assert_eq!(e.len(), 1);
        assert!(
            e[0].contains("Canary shop/web: spec.analysis.interval: invalid duration"),
            "{e:?}"
        );
        let e = errors_of(&format!(
            "{HEAD}spec:\n  targetRef: {{kind: Deployment, name: web}}\n  service: {{port: 0}}\n  analysis:\n    stepWeight: 30\n    maxWeight: 120\n    metrics:\n    - name: request-success-rate\n    - name: custom\n      thresholdRange: {{max: 1}}\n    webhooks:\n    - name: gate\n      type: confirm-rollout\n"
        ));
        let fields: Vec<&str> = e
            .iter()
            .map(|l| l.split(": ").nth(2).unwrap_or_default())
            .collect();
        assert_eq!(
            fields,
            [
                "spec.service.port",
                "spec.analysis.maxWeight",
                "spec.analysis.metrics[1].templateRef",
                "spec.analysis.webhooks[0].url",
            ],
            "{e:?}"
        );
        let e = errors_of(&format!(
            "{HEAD}spec:\n  targetRef: {{kind: Deployment, name: web}}\n  service: {{port: 80}}\n  analysis:\n    webhooks:\n    - name: x\n      type: sometimes\n      url: http://a/\n"
        ));
        assert!(
            e[0].contains("spec.analysis.webhooks[0].type: unknown variant `sometimes`"),
            "{e:?}"
        );
    }

    #[test]
    fn step_weights_must_increase_and_templates_need_prometheus() {
        let e = errors_of(&format!(
            "{HEAD}spec:\n  targetRef: {{kind: Deployment, name: web}}\n  service: {{port: 80}}\n  analysis:\n    stepWeights: [10, 5, 101]\n"
        ));
        assert_eq!(e.len(), 2, "{e:?}");
        assert!(e[0].contains("spec.analysis.stepWeights[1]"), "{e:?}");
        assert!(e[1].contains("spec.analysis.stepWeights[2]"), "{e:?}");
        // Another provider is Flagger's business: accepted with a warning.
        let f = parse_file(
            "t.yaml".as_ref(),
            "apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata: {name: t}\nspec:\n  provider: {type: datadog}\n  query: x\n",
            "default",
        );
        assert_eq!(f.errors().count(), 0);
        let w: Vec<String> = f.warnings().map(|e| e.to_string()).collect();
        assert!(
            w[0].contains("MetricTemplate default/t: spec.provider.type"),
            "{w:?}"
        );
        let e = errors_of(
            "apiVersion: flagger.app/v1beta1\nkind: MetricTemplate\nmetadata: {name: t}\nspec:\n  provider: {type: prometheus}\n",
        );
        let fields: Vec<&str> = e
            .iter()
            .map(|l| l.split(": ").nth(2).unwrap_or_default())
            .collect();
        assert_eq!(fields, ["spec.provider.address", "spec.query"], "{e:?}");
    }
}

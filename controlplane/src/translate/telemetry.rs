//! Telemetry → `TelemetryConfig`.
//!
//! As in Istio, a tracing/metrics/accessLogging entry that names no provider uses the
//! mesh config's `defaultProviders` for that signal; the model carries the resolved names.

use meshwork_api::mesh::DefaultProviders;
use meshwork_api::telemetry::{ProviderRef, Telemetry};
use meshwork_api::Object;
use meshwork_model::pb::config::{
    custom_tag::Value as TagValue, AccessLogging, CustomTag, MetricOverride, Metrics, PolicyScope,
    TelemetryConfig, Tracing,
};

use super::authz::target_ref;

fn names(p: &[ProviderRef], default: &Option<Vec<String>>) -> Vec<String> {
    if p.is_empty() {
        return default.clone().unwrap_or_default();
    }
    p.iter().map(|p| p.name.clone()).collect()
}

/// Translates one Telemetry resource.
pub fn telemetry(
    obj: &Object,
    t: &Telemetry,
    root_namespace: &str,
    defaults: &DefaultProviders,
) -> TelemetryConfig {
    let refs = t.all_target_refs();
    let scope = if !refs.is_empty() {
        PolicyScope::TargetRef
    } else if t.selector.is_some() {
        PolicyScope::WorkloadSelector
    } else if obj.namespace == root_namespace {
        PolicyScope::Global
    } else {
        PolicyScope::Namespace
    };
    TelemetryConfig {
        name: obj.name.clone(),
        namespace: obj.namespace.clone(),
        scope: scope as i32,
        selector: t
            .selector
            .as_ref()
            .map(|s| s.match_labels.clone())
            .unwrap_or_default(),
        target_refs: refs.iter().map(|r| target_ref(r, &obj.namespace)).collect(),
        tracing: t
            .tracing
            .iter()
            .map(|tr| Tracing {
                providers: names(&tr.providers, &defaults.tracing),
                random_sampling_percentage: tr.random_sampling_percentage.unwrap_or(0.0),
                has_sampling: tr.random_sampling_percentage.is_some(),
                custom_tags: tr
                    .custom_tags
                    .iter()
                    .map(|(name, tag)| {
                        let (value, default_value) = if let Some(l) = &tag.literal {
                            (Some(TagValue::Literal(l.value.clone())), String::new())
                        } else if let Some(e) = &tag.environment {
                            (
                                Some(TagValue::Environment(e.name.clone())),
                                e.default_value.clone(),
                            )
                        } else if let Some(h) = &tag.header {
                            (
                                Some(TagValue::Header(h.name.clone())),
                                h.default_value.clone(),
                            )
                        } else {
                            (None, String::new())
                        };
                        CustomTag {
                            name: name.clone(),
                            value,
                            default_value,
                        }
                    })
                    .collect(),
                disable_span_reporting: tr.disable_span_reporting.unwrap_or(false),
            })
            .collect(),
        metrics: t
            .metrics
            .iter()
            .map(|m| Metrics {
                providers: names(&m.providers, &defaults.metrics),
                overrides: m
                    .overrides
                    .iter()
                    .map(|o| {
                        let sel = o.match_.clone().unwrap_or_default();
                        let mut ov = MetricOverride {
                            metric: sel
                                .custom_metric
                                .or(sel.metric)
                                .unwrap_or_else(|| "ALL_METRICS".into()),
                            mode: sel.mode.unwrap_or_else(|| "CLIENT_AND_SERVER".into()),
                            disabled: o.disabled.unwrap_or(false),
                            ..Default::default()
                        };
                        for (tag, to) in &o.tag_overrides {
                            if to.operation.as_deref() == Some("REMOVE") {
                                ov.tag_remove.push(tag.clone());
                            } else {
                                ov.tag_upsert
                                    .insert(tag.clone(), to.value.clone().unwrap_or_default());
                            }
                        }
                        ov
                    })
                    .collect(),
            })
            .collect(),
        access_logging: t
            .access_logging
            .iter()
            .map(|a| AccessLogging {
                providers: names(&a.providers, &defaults.access_logging),
                disabled: a.disabled.unwrap_or(false),
                has_disabled: a.disabled.is_some(),
                filter: a
                    .filter
                    .as_ref()
                    .map(|f| f.expression.clone())
                    .unwrap_or_default(),
                mode: a
                    .match_
                    .as_ref()
                    .map(|m| m.mode.clone())
                    .unwrap_or_else(|| "CLIENT_AND_SERVER".into()),
            })
            .collect(),
    }
}

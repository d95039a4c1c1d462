//! `telemetry.istio.io` Telemetry (v1alpha1, v1).

use std::collections::BTreeMap;

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{PolicyTargetReference, WorkloadSelector};

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Telemetry {
    pub selector: Option<WorkloadSelector>,
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Vec<PolicyTargetReference>,
    pub tracing: Vec<Tracing>,
    pub metrics: Vec<Metrics>,
    pub access_logging: Vec<AccessLogging>,
}

impl Telemetry {
    /// `targetRef` and `targetRefs` combined.
    pub fn all_target_refs(&self) -> Vec<PolicyTargetReference> {
        self.target_ref
            .iter()
            .chain(self.target_refs.iter())
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ProviderRef {
    pub name: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(transform = crate::schema::istio_only_tracing)]
pub struct Tracing {
    #[serde(rename = "match")]
    pub match_: Option<TracingSelector>,
    pub providers: Vec<ProviderRef>,
    pub random_sampling_percentage: Option<f64>,
    pub disable_span_reporting: Option<bool>,
    pub custom_tags: BTreeMap<String, CustomTag>,
    pub use_request_id_for_trace_sampling: Option<bool>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TracingSelector {
    /// `CLIENT_AND_SERVER`, `CLIENT`, `SERVER`.
    #[schemars(extend("enum" = ["CLIENT_AND_SERVER", "CLIENT", "SERVER"]))]
    pub mode: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
#[schemars(transform = crate::schema::istio_only_custom_tag)]
pub struct CustomTag {
    pub literal: Option<LiteralTag>,
    pub environment: Option<EnvironmentTag>,
    pub header: Option<HeaderTag>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct LiteralTag {
    pub value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvironmentTag {
    pub name: String,
    pub default_value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct HeaderTag {
    pub name: String,
    pub default_value: String,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Metrics {
    pub providers: Vec<ProviderRef>,
    pub overrides: Vec<MetricsOverride>,
    pub reporting_interval: Option<crate::duration::Duration>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricsOverride {
    #[serde(rename = "match")]
    pub match_: Option<MetricSelector>,
    pub disabled: Option<bool>,
    pub tag_overrides: BTreeMap<String, TagOverride>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct MetricSelector {
    /// `ALL_METRICS`, `REQUEST_COUNT`, `REQUEST_DURATION`, ...
    #[schemars(extend("enum" = ["ALL_METRICS", "REQUEST_COUNT", "REQUEST_DURATION", "REQUEST_SIZE", "RESPONSE_SIZE", "TCP_OPENED_CONNECTIONS", "TCP_CLOSED_CONNECTIONS", "TCP_SENT_BYTES", "TCP_RECEIVED_BYTES", "GRPC_REQUEST_MESSAGES", "GRPC_RESPONSE_MESSAGES"]))]
    pub metric: Option<String>,
    pub custom_metric: Option<String>,
    /// `CLIENT_AND_SERVER`, `CLIENT`, `SERVER`.
    #[schemars(extend("enum" = ["CLIENT_AND_SERVER", "CLIENT", "SERVER"]))]
    pub mode: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TagOverride {
    /// `UPSERT` (default) or `REMOVE`.
    #[schemars(extend("enum" = ["UPSERT", "REMOVE"]))]
    pub operation: Option<String>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct AccessLogging {
    #[serde(rename = "match")]
    pub match_: Option<TracingSelector>,
    pub providers: Vec<ProviderRef>,
    pub disabled: Option<bool>,
    pub filter: Option<AccessLogFilter>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct AccessLogFilter {
    pub expression: String,
}

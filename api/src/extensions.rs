//! `extensions.istio.io` WasmPlugin (v1alpha1): a proxy-wasm module run by the proxies.
//!
//! Enum fields are typed: a value outside Istio's enum is a parse error naming the field,
//! as the API server's schema check is. `pluginConfig` is free-form (any object).

use schemars::JsonSchema;
use serde::{Deserialize, Serialize};

use crate::common::{PolicyTargetReference, PortSelector, WorkloadSelector};
use crate::networking::Raw;

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct WasmPlugin {
    pub selector: Option<WorkloadSelector>,
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Vec<PolicyTargetReference>,
    /// `file://`, `http://`, `https://`, `oci://`, or a bare image reference (OCI).
    pub url: String,
    /// Lower-case hex SHA-256 of the module.
    pub sha256: String,
    #[schemars(schema_with = "crate::schema::optional::<PullPolicy>")]
    pub image_pull_policy: Option<PullPolicy>,
    /// A `kubernetes.io/dockerconfigjson` Secret in the plugin's namespace.
    pub image_pull_secret: Option<String>,
    /// Istio's `verificationKey` (not implemented by Istio either; kept so manifests apply).
    pub verification_key: Option<String>,
    #[schemars(schema_with = "crate::schema::raw_object")]
    pub plugin_config: Option<Raw>,
    /// The plugin's root id.
    pub plugin_name: Option<String>,
    #[schemars(schema_with = "crate::schema::optional::<PluginPhase>")]
    pub phase: Option<PluginPhase>,
    pub priority: Option<i32>,
    #[schemars(schema_with = "crate::schema::optional::<FailStrategy>")]
    pub fail_strategy: Option<FailStrategy>,
    pub vm_config: Option<VmConfig>,
    #[serde(rename = "match")]
    pub match_: Vec<TrafficSelector>,
    #[serde(rename = "type")]
    #[schemars(schema_with = "crate::schema::optional::<PluginType>")]
    pub type_: Option<PluginType>,
}

impl WasmPlugin {
    /// `targetRef` and `targetRefs` combined.
    pub fn all_target_refs(&self) -> Vec<PolicyTargetReference> {
        self.target_ref
            .iter()
            .chain(self.target_refs.iter())
            .cloned()
            .collect()
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum PullPolicy {
    #[default]
    #[serde(rename = "UNSPECIFIED_POLICY")]
    Unspecified,
    IfNotPresent,
    Always,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum PluginPhase {
    #[default]
    #[serde(rename = "UNSPECIFIED_PHASE")]
    Unspecified,
    #[serde(rename = "AUTHN")]
    Authn,
    #[serde(rename = "AUTHZ")]
    Authz,
    #[serde(rename = "STATS")]
    Stats,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum FailStrategy {
    #[default]
    FailClose,
    FailOpen,
    /// Istio: fail closed, and reload the VM on a fatal error.
    FailReload,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
pub enum PluginType {
    #[default]
    #[serde(rename = "UNSPECIFIED_PLUGIN_TYPE")]
    Unspecified,
    #[serde(rename = "HTTP")]
    Http,
    #[serde(rename = "NETWORK")]
    Network,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct VmConfig {
    pub env: Vec<EnvVar>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct EnvVar {
    pub name: String,
    #[schemars(schema_with = "crate::schema::optional::<EnvValueSource>")]
    pub value_from: Option<EnvValueSource>,
    pub value: Option<String>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum EnvValueSource {
    #[default]
    Inline,
    Host,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct TrafficSelector {
    #[schemars(schema_with = "crate::schema::optional::<WorkloadMode>")]
    pub mode: Option<WorkloadMode>,
    pub ports: Vec<PortSelector>,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum WorkloadMode {
    #[default]
    Undefined,
    Client,
    Server,
    ClientAndServer,
}

impl WorkloadMode {
    pub fn as_str(&self) -> &'static str {
        match self {
            WorkloadMode::Undefined => "",
            WorkloadMode::Client => "CLIENT",
            WorkloadMode::Server => "SERVER",
            WorkloadMode::ClientAndServer => "CLIENT_AND_SERVER",
        }
    }
}

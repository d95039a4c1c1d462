//! `security.istio.io` PeerAuthentication and AuthorizationPolicy (v1beta1, v1).

use std::collections::BTreeMap;
use std::fmt;

use schemars::JsonSchema;
use serde::de::{self, Deserializer, Visitor};
use serde::{Deserialize, Serialize};

use crate::common::{PolicyTargetReference, WorkloadSelector};

// ------------------------------------------------------------------ PeerAuthentication

/// Istio's schema: `portLevelMtls`, when written, has at least one port (`{}` is refused;
/// leaving it out is fine).
fn non_empty_ports<'de, D: Deserializer<'de>>(
    d: D,
) -> Result<BTreeMap<PortKey, PeerMtls>, D::Error> {
    let map = BTreeMap::<PortKey, PeerMtls>::deserialize(d)?;
    if map.is_empty() {
        return Err(de::Error::custom("must have at least one port"));
    }
    Ok(map)
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct PeerAuthentication {
    pub selector: Option<WorkloadSelector>,
    pub mtls: Option<PeerMtls>,
    /// Keyed by the workload (target) port.
    #[schemars(with = "BTreeMap<String, PeerMtls>")]
    #[serde(deserialize_with = "non_empty_ports")]
    pub port_level_mtls: BTreeMap<PortKey, PeerMtls>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct PeerMtls {
    pub mode: MtlsMode,
}

/// PeerAuthentication mTLS mode.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum MtlsMode {
    /// Inherit from the parent level.
    #[default]
    Unset,
    Disable,
    Permissive,
    Strict,
}

/// A port number used as a map key; accepts `8080:` and `"8080":`.
#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize, JsonSchema)]
#[serde(transparent)]
pub struct PortKey(pub u32);

impl<'de> Deserialize<'de> for PortKey {
    fn deserialize<D: Deserializer<'de>>(d: D) -> Result<Self, D::Error> {
        struct V;
        impl Visitor<'_> for V {
            type Value = PortKey;
            fn expecting(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
                f.write_str("a port number 1..=65535")
            }
            fn visit_u64<E: de::Error>(self, v: u64) -> Result<PortKey, E> {
                if (1..=65535).contains(&v) {
                    Ok(PortKey(v as u32))
                } else {
                    Err(E::custom(format!("port {v} out of range 1..=65535")))
                }
            }
            fn visit_i64<E: de::Error>(self, v: i64) -> Result<PortKey, E> {
                if v < 0 {
                    return Err(E::custom(format!("port {v} out of range 1..=65535")));
                }
                self.visit_u64(v as u64)
            }
            fn visit_str<E: de::Error>(self, v: &str) -> Result<PortKey, E> {
                let n: u64 = v
                    .parse()
                    .map_err(|_| E::custom(format!("invalid port \"{v}\"")))?;
                self.visit_u64(n)
            }
        }
        d.deserialize_any(V)
    }
}

// ------------------------------------------------------------------ AuthorizationPolicy

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct AuthorizationPolicy {
    pub selector: Option<WorkloadSelector>,
    pub target_ref: Option<PolicyTargetReference>,
    pub target_refs: Vec<PolicyTargetReference>,
    pub rules: Vec<Rule>,
    pub action: AuthzAction,
    pub provider: Option<ExtensionProviderRef>,
}

impl AuthorizationPolicy {
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
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum AuthzAction {
    #[default]
    Allow,
    Deny,
    Audit,
    Custom,
}

impl AuthzAction {
    pub fn as_str(&self) -> &'static str {
        match self {
            AuthzAction::Allow => "ALLOW",
            AuthzAction::Deny => "DENY",
            AuthzAction::Audit => "AUDIT",
            AuthzAction::Custom => "CUSTOM",
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct ExtensionProviderRef {
    pub name: String,
}

/// Istio: `from` / `to`, when written, are not empty (`from: []` is refused; leaving the
/// field out matches any source / operation).
fn non_empty_list<'de, D: Deserializer<'de>, T: Deserialize<'de>>(
    d: D,
) -> Result<Vec<T>, D::Error> {
    let list = Vec::<T>::deserialize(d)?;
    if list.is_empty() {
        return Err(de::Error::custom(
            "must not be empty (leave the field out instead)",
        ));
    }
    Ok(list)
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Rule {
    #[serde(
        deserialize_with = "non_empty_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub from: Vec<RuleFrom>,
    #[serde(
        deserialize_with = "non_empty_list",
        skip_serializing_if = "Vec::is_empty"
    )]
    pub to: Vec<RuleTo>,
    pub when: Vec<Condition>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct RuleFrom {
    pub source: Option<Source>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct RuleTo {
    pub operation: Option<Operation>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Source {
    pub principals: Vec<String>,
    pub not_principals: Vec<String>,
    pub request_principals: Vec<String>,
    pub not_request_principals: Vec<String>,
    pub namespaces: Vec<String>,
    pub not_namespaces: Vec<String>,
    pub service_accounts: Vec<String>,
    pub not_service_accounts: Vec<String>,
    pub ip_blocks: Vec<String>,
    pub not_ip_blocks: Vec<String>,
    pub remote_ip_blocks: Vec<String>,
    pub not_remote_ip_blocks: Vec<String>,
    /// Trust domains of the peer identity (`cluster.local`, `td-*`, `*`).
    pub trust_domains: Vec<String>,
    pub not_trust_domains: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Operation {
    pub hosts: Vec<String>,
    pub not_hosts: Vec<String>,
    pub ports: Vec<String>,
    pub not_ports: Vec<String>,
    pub methods: Vec<String>,
    pub not_methods: Vec<String>,
    pub paths: Vec<String>,
    pub not_paths: Vec<String>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize, JsonSchema)]
#[serde(default, rename_all = "camelCase")]
pub struct Condition {
    pub key: String,
    pub values: Vec<String>,
    pub not_values: Vec<String>,
}

/// The value of the `istio.io/dry-run` annotation as Istio reads it (Go's
/// `strconv.ParseBool`): `1 t T true TRUE True` and `0 f F false FALSE False`; anything
/// else is not a value (validation refuses it).
pub fn parse_dry_run(value: &str) -> Option<bool> {
    match value {
        "1" | "t" | "T" | "true" | "TRUE" | "True" => Some(true),
        "0" | "f" | "F" | "false" | "FALSE" | "False" => Some(false),
        _ => None,
    }
}

//! Istio MeshConfig: the parts Meshwork uses (trust domain, root namespace, extension
//! providers, default providers, path normalisation).
//!
//! Sources, applied in this order over the defaults (`trustDomain: cluster.local`,
//! `rootNamespace: istio-system`):
//! 1. an optional standalone mesh config file (`MeshConfigOverlay::from_yaml`);
//! 2. every ConfigMap in the root namespace that has a `mesh` key, in name order.
//!
//! Each overlay sets only what it mentions: scalar fields override; `extensionProviders`
//! are merged by `name` (a later provider with the same name replaces the earlier one, new
//! names are appended); each `defaultProviders` list replaces the earlier list when given.
//! Field names are accepted in camelCase and in the proto snake_case form
//! (`resource_detectors`, `max_tag_length`), as Istio does.

use std::collections::BTreeMap;

use serde::{Deserialize, Serialize};

use crate::networking::Raw;

/// Effective mesh configuration.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct MeshConfig {
    pub trust_domain: String,
    pub root_namespace: String,
    pub extension_providers: Vec<ExtensionProvider>,
    pub default_providers: DefaultProviders,
    /// `pathNormalization.normalization` (`BASE` unless set).
    pub path_normalization: NormalizationType,
    /// Meshwork extension `meshwork.ztunnelPolicyFailClosed` (default `false`): ztunnels
    /// enforce DENY rules without their HTTP attributes and reject on a matching CUSTOM
    /// policy, instead of ignoring both as Istio's ztunnel does.
    pub ztunnel_policy_fail_closed: bool,
}

impl Default for MeshConfig {
    fn default() -> Self {
        MeshConfig {
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            extension_providers: Vec::new(),
            default_providers: DefaultProviders::default(),
            path_normalization: NormalizationType::Base,
            ztunnel_policy_fail_closed: false,
        }
    }
}

impl MeshConfig {
    /// Applies one overlay (see the module docs for the merge rules).
    pub fn apply(&mut self, overlay: &MeshConfigOverlay) {
        if let Some(td) = overlay.trust_domain.as_ref().filter(|s| !s.is_empty()) {
            self.trust_domain = td.clone();
        }
        if let Some(ns) = overlay.root_namespace.as_ref().filter(|s| !s.is_empty()) {
            self.root_namespace = ns.clone();
        }
        for p in &overlay.extension_providers {
            match self
                .extension_providers
                .iter_mut()
                .find(|e| e.name == p.name)
            {
                Some(existing) => *existing = p.clone(),
                None => self.extension_providers.push(p.clone()),
            }
        }
        if let Some(n) = overlay
            .path_normalization
            .as_ref()
            .and_then(|p| p.normalization)
        {
            self.path_normalization = n;
        }
        if let Some(v) = overlay
            .meshwork
            .as_ref()
            .and_then(|m| m.ztunnel_policy_fail_closed)
        {
            self.ztunnel_policy_fail_closed = v;
        }
        if let Some(d) = &overlay.default_providers {
            if let Some(t) = &d.tracing {
                self.default_providers.tracing = Some(t.clone());
            }
            if let Some(m) = &d.metrics {
                self.default_providers.metrics = Some(m.clone());
            }
            if let Some(a) = &d.access_logging {
                self.default_providers.access_logging = Some(a.clone());
            }
        }
    }

    /// Defaults with `overlays` applied in order.
    pub fn from_overlays<'a>(overlays: impl IntoIterator<Item = &'a MeshConfigOverlay>) -> Self {
        let mut m = MeshConfig::default();
        for o in overlays {
            m.apply(o);
        }
        m
    }
}

/// A mesh config document as written (every field optional).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MeshConfigOverlay {
    #[serde(alias = "trust_domain")]
    pub trust_domain: Option<String>,
    #[serde(alias = "root_namespace")]
    pub root_namespace: Option<String>,
    #[serde(alias = "extension_providers")]
    pub extension_providers: Vec<ExtensionProvider>,
    #[serde(alias = "default_providers")]
    pub default_providers: Option<DefaultProviders>,
    /// Accepted and kept, not interpreted.
    #[serde(alias = "default_config")]
    pub default_config: Option<Raw>,
    #[serde(alias = "enable_tracing")]
    pub enable_tracing: Option<bool>,
    #[serde(alias = "access_log_file")]
    pub access_log_file: Option<String>,
    #[serde(alias = "access_log_encoding")]
    pub access_log_encoding: Option<String>,
    #[serde(alias = "enable_auto_mtls")]
    pub enable_auto_mtls: Option<bool>,
    #[serde(alias = "trust_domain_aliases")]
    pub trust_domain_aliases: Vec<String>,
    #[serde(alias = "outbound_traffic_policy")]
    pub outbound_traffic_policy: Option<Raw>,
    #[serde(alias = "enable_prometheus_merge")]
    pub enable_prometheus_merge: Option<bool>,
    #[serde(alias = "path_normalization")]
    pub path_normalization: Option<PathNormalization>,
    /// Meshwork's own settings (not an Istio field).
    pub meshwork: Option<MeshworkSettings>,
}

/// `meshwork:` in a mesh config: settings with no Istio counterpart.
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct MeshworkSettings {
    /// Opt-in: ztunnels enforce AuthorizationPolicy as Envoy does for TCP (DENY rules
    /// without their HTTP attributes, so they match more; a matching CUSTOM policy rejects)
    /// instead of as Istio's ztunnel does (such DENY rules and CUSTOM policies have no
    /// effect there). See `docs/istio-differences.md`.
    pub ztunnel_policy_fail_closed: Option<bool>,
}

/// `pathNormalization`: how proxies normalise request paths before authorization and
/// routing (and forward them).
#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct PathNormalization {
    pub normalization: Option<NormalizationType>,
}

/// Istio's `ProxyPathNormalization.NormalizationType`; an unknown value is an error naming
/// `pathNormalization.normalization` and the accepted values.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default, Serialize, Deserialize)]
#[serde(rename_all = "SCREAMING_SNAKE_CASE")]
pub enum NormalizationType {
    /// RFC 3986 normalisation plus `\` → `/` (Istio's default; `DEFAULT` means this too).
    #[default]
    #[serde(alias = "DEFAULT")]
    Base,
    /// No normalisation: paths are matched and forwarded as received.
    None,
    /// `BASE`, then adjacent slashes merged.
    MergeSlashes,
    /// `%2F`/`%5C` decoded first, then `MERGE_SLASHES`.
    DecodeAndMergeSlashes,
}

/// Errors reading a mesh config document.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum MeshConfigError {
    #[error("invalid YAML: {0}")]
    Yaml(String),
    #[error("{field}: {message}")]
    Field { field: String, message: String },
}

impl MeshConfigError {
    /// Field path inside the mesh config (empty for YAML syntax errors).
    pub fn field(&self) -> &str {
        match self {
            MeshConfigError::Yaml(_) => "",
            MeshConfigError::Field { field, .. } => field,
        }
    }
    pub fn message(&self) -> String {
        match self {
            MeshConfigError::Yaml(m) => format!("invalid YAML: {m}"),
            MeshConfigError::Field { message, .. } => message.clone(),
        }
    }
}

impl MeshConfigOverlay {
    /// Parses a mesh config document; unknown fields are returned as warnings (paths).
    pub fn from_yaml(text: &str) -> Result<(Self, Vec<String>), MeshConfigError> {
        use crate::guard::{nested_deeper_than, MAX_NESTING};
        if nested_deeper_than(text, MAX_NESTING) {
            return Err(MeshConfigError::Yaml(format!(
                "collections nested deeper than {MAX_NESTING} levels"
            )));
        }
        let value: serde_yaml_ng::Value =
            serde_yaml_ng::from_str(text).map_err(|e| MeshConfigError::Yaml(e.to_string()))?;
        if value.is_null() {
            return Ok((Self::default(), Vec::new()));
        }
        let mut ignored = Vec::new();
        let mut cb = |p: serde_ignored::Path<'_>| ignored.push(crate::guard::ignored_path(&p));
        let de = serde_ignored::Deserializer::new(value, &mut cb);
        let overlay: MeshConfigOverlay =
            serde_path_to_error::deserialize(de).map_err(|e| MeshConfigError::Field {
                field: e.path().to_string(),
                message: e.into_inner().to_string(),
            })?;
        let mut names = std::collections::BTreeSet::new();
        for (i, p) in overlay.extension_providers.iter().enumerate() {
            if p.name.is_empty() {
                return Err(MeshConfigError::Field {
                    field: format!("extensionProviders[{i}].name"),
                    message: "required".into(),
                });
            }
            if !names.insert(p.name.as_str()) {
                return Err(MeshConfigError::Field {
                    field: format!("extensionProviders[{i}].name"),
                    message: format!("duplicate extension provider \"{}\"", p.name),
                });
            }
            if let Some(o) = &p.opentelemetry {
                if o.service.is_empty() {
                    return Err(MeshConfigError::Field {
                        field: format!("extensionProviders[{i}].opentelemetry.service"),
                        message: "required".into(),
                    });
                }
                if !(1..=65535).contains(&o.port) {
                    return Err(MeshConfigError::Field {
                        field: format!("extensionProviders[{i}].opentelemetry.port"),
                        message: format!("port {} out of range 1..=65535", o.port),
                    });
                }
            }
        }
        Ok((overlay, ignored))
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct DefaultProviders {
    pub tracing: Option<Vec<String>>,
    pub metrics: Option<Vec<String>>,
    #[serde(alias = "access_logging")]
    pub access_logging: Option<Vec<String>>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ExtensionProvider {
    pub name: String,
    pub opentelemetry: Option<OpenTelemetryProvider>,
    #[serde(alias = "envoy_file_access_log")]
    pub envoy_file_access_log: Option<FileAccessLogProvider>,
    pub prometheus: Option<Raw>,
    // Other Istio provider types are accepted but not used by Meshwork.
    pub zipkin: Option<Raw>,
    pub datadog: Option<Raw>,
    pub skywalking: Option<Raw>,
    pub stackdriver: Option<Raw>,
    #[serde(alias = "envoy_ext_authz_http")]
    pub envoy_ext_authz_http: Option<Raw>,
    #[serde(alias = "envoy_ext_authz_grpc")]
    pub envoy_ext_authz_grpc: Option<Raw>,
    #[serde(alias = "envoy_otel_als")]
    pub envoy_otel_als: Option<Raw>,
    #[serde(alias = "envoy_http_als")]
    pub envoy_http_als: Option<Raw>,
    #[serde(alias = "envoy_tcp_als")]
    pub envoy_tcp_als: Option<Raw>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct OpenTelemetryProvider {
    pub service: String,
    pub port: u32,
    #[serde(alias = "max_tag_length")]
    pub max_tag_length: Option<u32>,
    #[serde(alias = "resource_detectors")]
    pub resource_detectors: Option<ResourceDetectors>,
    pub http: Option<Raw>,
    pub grpc: Option<Raw>,
    #[serde(alias = "dynatrace_sampler")]
    pub dynatrace_sampler: Option<Raw>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct ResourceDetectors {
    pub environment: Option<Raw>,
    pub dynatrace: Option<Raw>,
}

impl ResourceDetectors {
    /// The environment detector is on when present, unless `enabled: false` is given.
    pub fn environment_enabled(&self) -> bool {
        match &self.environment {
            None => false,
            Some(v) => v.get("enabled").and_then(|e| e.as_bool()).unwrap_or(true),
        }
    }
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct FileAccessLogProvider {
    pub path: String,
    #[serde(alias = "log_format")]
    pub log_format: Option<LogFormat>,
}

#[derive(Debug, Clone, PartialEq, Default, Serialize, Deserialize)]
#[serde(default, rename_all = "camelCase")]
pub struct LogFormat {
    pub text: Option<String>,
    pub labels: BTreeMap<String, String>,
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn defaults_and_snake_case_fields() {
        let (o, warnings) = MeshConfigOverlay::from_yaml(
            "extensionProviders:\n- name: otel\n  opentelemetry:\n    port: 4317\n    service: c.o.svc\n    max_tag_length: 99\n    resource_detectors:\n      environment:\n        enabled: true\n",
        )
        .unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let m = MeshConfig::from_overlays([&o]);
        assert_eq!(m.trust_domain, "cluster.local");
        assert_eq!(m.root_namespace, "istio-system");
        let otel = m.extension_providers[0].opentelemetry.as_ref().unwrap();
        assert_eq!(otel.port, 4317);
        assert_eq!(otel.max_tag_length, Some(99));
        assert!(otel
            .resource_detectors
            .as_ref()
            .unwrap()
            .environment_enabled());
    }

    /// The Meshwork-only opt-in is off unless a document sets it; a later document that
    /// does not mention it keeps it, one that sets `false` turns it off.
    #[test]
    fn ztunnel_policy_fail_closed_opt_in() {
        assert!(!MeshConfig::default().ztunnel_policy_fail_closed);
        let (on, warnings) =
            MeshConfigOverlay::from_yaml("meshwork:\n  ztunnelPolicyFailClosed: true\n").unwrap();
        assert!(warnings.is_empty(), "{warnings:?}");
        let (other, _) = MeshConfigOverlay::from_yaml("trustDomain: example.org\n").unwrap();
        let (off, _) =
            MeshConfigOverlay::from_yaml("meshwork:\n  ztunnelPolicyFailClosed: false\n").unwrap();
        assert!(MeshConfig::from_overlays([&on]).ztunnel_policy_fail_closed);
        assert!(MeshConfig::from_overlays([&on, &other]).ztunnel_policy_fail_closed);
        assert!(!MeshConfig::from_overlays([&on, &off]).ztunnel_policy_fail_closed);
        let (_, warnings) =
            MeshConfigOverlay::from_yaml("meshwork:\n  ztunnelPolicyFailClose: true\n").unwrap();
        assert_eq!(warnings.len(), 1, "a misspelt setting is reported");
    }

    #[test]
    fn later_overlays_override_by_name() {
        let (a, _) = MeshConfigOverlay::from_yaml(
            "trustDomain: a.local\nextensionProviders:\n- name: p\n  prometheus: {}\n- name: otel\n  opentelemetry: {service: x, port: 1}\n",
        )
        .unwrap();
        let (b, _) = MeshConfigOverlay::from_yaml(
            "extensionProviders:\n- name: otel\n  opentelemetry: {service: y, port: 2}\n",
        )
        .unwrap();
        let m = MeshConfig::from_overlays([&a, &b]);
        assert_eq!(m.trust_domain, "a.local");
        assert_eq!(m.extension_providers.len(), 2);
        assert_eq!(
            m.extension_providers[1]
                .opentelemetry
                .as_ref()
                .unwrap()
                .service,
            "y"
        );
    }

    #[test]
    fn path_normalization_values() {
        assert_eq!(
            MeshConfig::default().path_normalization,
            NormalizationType::Base
        );
        for (text, want) in [
            ("NONE", NormalizationType::None),
            ("BASE", NormalizationType::Base),
            ("DEFAULT", NormalizationType::Base),
            ("MERGE_SLASHES", NormalizationType::MergeSlashes),
            (
                "DECODE_AND_MERGE_SLASHES",
                NormalizationType::DecodeAndMergeSlashes,
            ),
        ] {
            let (o, warnings) = MeshConfigOverlay::from_yaml(&format!(
                "pathNormalization:\n  normalization: {text}\n"
            ))
            .unwrap();
            assert!(warnings.is_empty(), "{warnings:?}");
            assert_eq!(MeshConfig::from_overlays([&o]).path_normalization, want);
        }
        // A later overlay without the field keeps the earlier value.
        let (a, _) =
            MeshConfigOverlay::from_yaml("path_normalization: {normalization: NONE}\n").unwrap();
        let (b, _) = MeshConfigOverlay::from_yaml("trustDomain: b.local\n").unwrap();
        assert_eq!(
            MeshConfig::from_overlays([&a, &b]).path_normalization,
            NormalizationType::None
        );
        let e = MeshConfigOverlay::from_yaml("pathNormalization:\n  normalization: MERGE\n")
            .unwrap_err();
        assert_eq!(e.field(), "pathNormalization.normalization");
        assert!(e.message().contains("DECODE_AND_MERGE_SLASHES"), "{e}");
    }

    #[test]
    fn errors_name_the_field() {
        let e = MeshConfigOverlay::from_yaml(
            "extensionProviders:\n- name: otel\n  opentelemetry: {service: y, port: abc}\n",
        )
        .unwrap_err();
        assert_eq!(e.field(), "extensionProviders[0].opentelemetry.port");
        let e = MeshConfigOverlay::from_yaml(
            "extensionProviders:\n- name: otel\n  opentelemetry: {port: 4}\n",
        )
        .unwrap_err();
        assert_eq!(e.field(), "extensionProviders[0].opentelemetry.service");
    }

    #[test]
    fn deeply_nested_mesh_config_is_refused_before_parsing() {
        let text = format!(
            "defaultConfig: {}{}\n",
            "[".repeat(100_000),
            "]".repeat(100_000)
        );
        let start = std::time::Instant::now();
        let e = MeshConfigOverlay::from_yaml(&text).unwrap_err();
        assert!(start.elapsed() < std::time::Duration::from_secs(5));
        assert_eq!(
            e.message(),
            "invalid YAML: collections nested deeper than 1000 levels"
        );
    }
}

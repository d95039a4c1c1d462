//! Mesh config → `MeshSettings`.

use meshwork_api::mesh::{ExtensionProvider as ApiProvider, NormalizationType};
use meshwork_api::MeshConfig;
use meshwork_model::pb::config::{
    extension_provider::Provider, ExtensionProvider, FileAccessLogProvider, MeshSettings,
    OpenTelemetryProvider, PathNormalization, PrometheusProvider,
};

fn provider(p: &ApiProvider) -> ExtensionProvider {
    let provider = if let Some(o) = &p.opentelemetry {
        Some(Provider::Opentelemetry(OpenTelemetryProvider {
            service: o.service.clone(),
            port: o.port,
            max_tag_length: o.max_tag_length.unwrap_or(0),
            environment_resource_detector: o
                .resource_detectors
                .as_ref()
                .is_some_and(|r| r.environment_enabled()),
        }))
    } else if let Some(f) = &p.envoy_file_access_log {
        let fmt = f.log_format.clone().unwrap_or_default();
        Some(Provider::FileAccessLog(FileAccessLogProvider {
            path: f.path.clone(),
            text_format: fmt.text.unwrap_or_default(),
            json_labels: fmt.labels,
        }))
    } else if p.prometheus.is_some() {
        Some(Provider::Prometheus(PrometheusProvider {}))
    } else {
        // Provider types Meshwork does not implement are listed by name only.
        None
    };
    ExtensionProvider {
        name: p.name.clone(),
        provider,
    }
}

/// The model's view of the effective mesh config.
pub fn mesh_settings(m: &MeshConfig) -> MeshSettings {
    MeshSettings {
        trust_domain: m.trust_domain.clone(),
        root_namespace: m.root_namespace.clone(),
        extension_providers: m.extension_providers.iter().map(provider).collect(),
        path_normalization: path_normalization(m.path_normalization).into(),
        ztunnel_policy_fail_closed: m.ztunnel_policy_fail_closed,
        // Filled in by the translator from the CA.
        ca_roots_pem: String::new(),
    }
}

fn path_normalization(n: NormalizationType) -> PathNormalization {
    match n {
        NormalizationType::Base => PathNormalization::Base,
        NormalizationType::None => PathNormalization::None,
        NormalizationType::MergeSlashes => PathNormalization::MergeSlashes,
        NormalizationType::DecodeAndMergeSlashes => PathNormalization::DecodeAndMergeSlashes,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_api::MeshConfigOverlay;

    #[test]
    fn path_normalization_reaches_the_model() {
        assert_eq!(
            mesh_settings(&MeshConfig::default()).path_normalization(),
            PathNormalization::Base
        );
        let (o, _) = MeshConfigOverlay::from_yaml(
            "pathNormalization:\n  normalization: DECODE_AND_MERGE_SLASHES\n",
        )
        .unwrap();
        let m = MeshConfig::from_overlays([&o]);
        assert_eq!(
            mesh_settings(&m).path_normalization(),
            PathNormalization::DecodeAndMergeSlashes
        );
    }
}

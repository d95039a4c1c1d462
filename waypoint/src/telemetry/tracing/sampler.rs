//! The effective Telemetry tracing settings for a request and the sampling decision.
//!
//! Precedence is Istio's: root namespace, then the destination's namespace, then
//! selector-scoped resources (the translator lists them per workload in
//! `Workload.telemetry`, most specific last). A more specific level overrides providers and
//! the sampling percentage when it sets them, and merges custom tags by name.

use std::collections::BTreeMap;

use meshwork_model::pb::config::{custom_tag, extension_provider::Provider, TelemetryConfig};
use meshwork_model::snapshot::Snapshot;
use rand::Rng;

/// Istio's sampling default (`meshConfig.defaultConfig.tracing.sampling`) when a tracing
/// provider is configured without `randomSamplingPercentage`.
pub const DEFAULT_SAMPLING_PERCENT: f64 = 1.0;

/// Istio's default `maxTagLength` for the OpenTelemetry provider.
pub const DEFAULT_MAX_TAG_LENGTH: usize = 256;

/// Where a custom tag takes its value from. Environment tags are read when the config is
/// compiled and become literals (the process environment does not change).
#[derive(Debug, Clone, PartialEq)]
pub enum TagSource {
    Literal(String),
    Header { name: String, default: String },
}

/// The tracing settings that apply to one request.
#[derive(Debug, Clone, PartialEq)]
pub struct Effective {
    /// The OpenTelemetry provider: (`service`, `port`).
    pub collector: (String, u16),
    pub provider: String,
    pub sampling_percent: f64,
    pub custom_tags: BTreeMap<String, TagSource>,
    pub disable_span_reporting: bool,
    /// Longest path tag reported (the provider's `maxTagLength`).
    pub max_tag_length: usize,
}

pub use crate::telemetry::policy::resolve::{applicable, Gateway};

/// Merges the tracing settings of `telemetries` (least specific first) and resolves the
/// provider against the mesh's extension providers. `None`: no tracing for this request.
pub fn effective(snap: &Snapshot, telemetries: &[&TelemetryConfig]) -> Option<Effective> {
    let mut providers: Vec<String> = Vec::new();
    let mut percent: Option<f64> = None;
    let mut tags = BTreeMap::new();
    let mut disable = false;
    let mut any = false;
    for t in telemetries {
        let Some(tr) = t.tracing.first() else {
            continue;
        };
        any = true;
        if !tr.providers.is_empty() {
            providers = tr.providers.clone();
        }
        if tr.has_sampling {
            percent = Some(tr.random_sampling_percentage);
        }
        disable = tr.disable_span_reporting;
        for tag in &tr.custom_tags {
            let src = match &tag.value {
                Some(custom_tag::Value::Literal(v)) => TagSource::Literal(v.clone()),
                Some(custom_tag::Value::Environment(n)) => TagSource::Literal(
                    std::env::var(n).unwrap_or_else(|_| tag.default_value.clone()),
                ),
                Some(custom_tag::Value::Header(n)) => TagSource::Header {
                    name: n.to_ascii_lowercase(),
                    default: tag.default_value.clone(),
                },
                None => continue,
            };
            tags.insert(tag.name.clone(), src);
        }
    }
    if !any {
        return None;
    }
    let mesh = snap.mesh()?;
    let (provider, otel) = providers.iter().find_map(|name| {
        mesh.extension_providers
            .iter()
            .find(|p| &p.name == name)
            .and_then(|p| match &p.provider {
                Some(Provider::Opentelemetry(o)) => Some((name.clone(), o)),
                _ => None,
            })
    })?;
    Some(Effective {
        collector: (otel.service.clone(), otel.port as u16),
        provider,
        sampling_percent: percent
            .unwrap_or(DEFAULT_SAMPLING_PERCENT)
            .clamp(0.0, 100.0),
        custom_tags: tags,
        disable_span_reporting: disable,
        max_tag_length: match otel.max_tag_length {
            0 => DEFAULT_MAX_TAG_LENGTH,
            n => n as usize,
        },
    })
}

/// The sampling decision: the caller's when it made one, else `percent` at random.
pub fn decide(parent: Option<bool>, percent: f64, rng: &mut impl Rng) -> bool {
    match parent {
        Some(s) => s,
        None => percent >= 100.0 || (percent > 0.0 && rng.random_range(0.0..100.0) < percent),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::keys::{make_resource, Kind};
    use meshwork_model::pb::config::{
        self as pb, CustomTag, ExtensionProvider, MeshSettings, OpenTelemetryProvider, Tracing,
    };
    use meshwork_model::pb::config::{resource, PolicyScope, Service, Workload};
    use rand::SeedableRng;
    use std::sync::Arc;

    fn tel(ns: &str, name: &str, scope: PolicyScope, tr: Tracing) -> TelemetryConfig {
        TelemetryConfig {
            name: name.into(),
            namespace: ns.into(),
            scope: scope as i32,
            tracing: vec![tr],
            ..Default::default()
        }
    }

    fn header_tag(name: &str, header: &str) -> CustomTag {
        CustomTag {
            name: name.into(),
            value: Some(custom_tag::Value::Header(header.into())),
            default_value: "none".into(),
        }
    }

    fn snap(tels: Vec<TelemetryConfig>, workload_keys: Option<Vec<String>>) -> Snapshot {
        let mut r = std::collections::BTreeMap::new();
        let mesh = MeshSettings {
            root_namespace: "istio-system".into(),
            extension_providers: vec![ExtensionProvider {
                name: "otel".into(),
                provider: Some(Provider::Opentelemetry(OpenTelemetryProvider {
                    service: "collector.obs.svc.cluster.local".into(),
                    port: 4317,
                    ..Default::default()
                })),
            }],
            ..Default::default()
        };
        r.insert(
            "mesh".to_string(),
            Arc::new(make_resource("mesh".into(), resource::Kind::Mesh(mesh))),
        );
        for t in tels {
            let k = Kind::Telemetry.key(&t.namespace, &t.name);
            r.insert(
                k.clone(),
                Arc::new(make_resource(k, resource::Kind::Telemetry(t))),
            );
        }
        if let Some(keys) = workload_keys {
            let w = Workload {
                name: "order-v1".into(),
                namespace: "shop".into(),
                addresses: vec!["10.0.0.1".into()],
                services: vec![pb::ServicePorts {
                    service: "shop/order.shop.svc.cluster.local".into(),
                    ports: Default::default(),
                }],
                telemetry: keys,
                ..Default::default()
            };
            let k = Kind::Workload.key("shop", "order-v1");
            r.insert(
                k.clone(),
                Arc::new(make_resource(k, resource::Kind::Workload(w))),
            );
        }
        Snapshot::new(1, r)
    }

    const WP: Gateway<'static> = ("shop", "waypoint");

    fn svc() -> Service {
        Service {
            name: "order".into(),
            namespace: "shop".into(),
            hostname: "order.shop.svc.cluster.local".into(),
            ..Default::default()
        }
    }

    fn root() -> TelemetryConfig {
        tel(
            "istio-system",
            "default",
            PolicyScope::Global,
            Tracing {
                providers: vec!["otel".into()],
                random_sampling_percentage: 10.0,
                has_sampling: true,
                custom_tags: vec![header_tag("user_id", "X-User-Id")],
                ..Default::default()
            },
        )
    }

    #[test]
    fn root_namespace_default_applies() {
        let s = snap(vec![root()], None);
        let e = effective(&s, &applicable(&s, WP, &svc())).unwrap();
        assert_eq!(e.sampling_percent, 10.0);
        assert_eq!(e.provider, "otel");
        assert_eq!(e.max_tag_length, DEFAULT_MAX_TAG_LENGTH);
        assert_eq!(
            e.collector,
            ("collector.obs.svc.cluster.local".to_string(), 4317)
        );
        assert_eq!(
            e.custom_tags["user_id"],
            TagSource::Header {
                name: "x-user-id".into(),
                default: "none".into()
            }
        );
    }

    #[test]
    fn namespace_overrides_percentage_and_merges_tags() {
        let ns = tel(
            "shop",
            "ns",
            PolicyScope::Namespace,
            Tracing {
                random_sampling_percentage: 50.0,
                has_sampling: true,
                custom_tags: vec![CustomTag {
                    name: "team".into(),
                    value: Some(custom_tag::Value::Literal("shop".into())),
                    default_value: String::new(),
                }],
                ..Default::default()
            },
        );
        let s = snap(vec![root(), ns], None);
        let e = effective(&s, &applicable(&s, WP, &svc())).unwrap();
        assert_eq!(e.sampling_percent, 50.0);
        assert_eq!(e.provider, "otel", "inherited from the root level");
        assert_eq!(e.custom_tags.len(), 2);

        // The workload's own list (as the translator computed it) wins over the fallback:
        // here it names only the root resource.
        let ns2 = tel("shop", "ns", PolicyScope::Namespace, Tracing::default());
        let s = snap(
            vec![root(), ns2],
            Some(vec!["telemetry/istio-system/default".into()]),
        );
        let e = effective(&s, &applicable(&s, WP, &svc())).unwrap();
        assert_eq!(e.sampling_percent, 10.0);
    }

    #[test]
    fn target_refs_to_the_waypoint_then_the_service_are_most_specific() {
        let at = |name: &str, kind: &str, target: &str, pct: f64| {
            let mut t = tel(
                "shop",
                name,
                PolicyScope::TargetRef,
                Tracing {
                    random_sampling_percentage: pct,
                    has_sampling: true,
                    ..Default::default()
                },
            );
            t.target_refs = vec![pb::TargetRef {
                group: String::new(),
                kind: kind.into(),
                name: target.into(),
                namespace: "shop".into(),
            }];
            t
        };
        let s = snap(
            vec![
                root(),
                at("svc", "Service", "order", 30.0),
                at("gw", "Gateway", "waypoint", 20.0),
                at("other", "Service", "payment", 90.0),
            ],
            Some(vec!["telemetry/istio-system/default".into()]),
        );
        let names: Vec<&str> = applicable(&s, WP, &svc())
            .iter()
            .map(|t| t.name.as_str())
            .collect();
        assert_eq!(names, ["default", "gw", "svc"]);
        assert_eq!(
            effective(&s, &applicable(&s, WP, &svc()))
                .unwrap()
                .sampling_percent,
            30.0
        );
        let s = snap(vec![root(), at("gw", "Gateway", "waypoint", 20.0)], None);
        let e = effective(&s, &applicable(&s, WP, &svc())).unwrap();
        assert_eq!(e.sampling_percent, 20.0);
        assert_eq!(e.provider, "otel");
        assert!(applicable(&s, ("shop", "other-waypoint"), &svc()).len() == 1);
    }

    #[test]
    fn default_percentage_and_no_provider() {
        let mut t = root();
        t.tracing[0].has_sampling = false;
        t.tracing[0].random_sampling_percentage = 0.0;
        let s = snap(vec![t.clone()], None);
        let e = effective(&s, &applicable(&s, WP, &svc())).unwrap();
        assert_eq!(e.sampling_percent, DEFAULT_SAMPLING_PERCENT);

        t.tracing[0].providers = vec!["zipkin".into()];
        let s = snap(vec![t], None);
        assert!(effective(&s, &applicable(&s, WP, &svc())).is_none());
        let s = snap(vec![], None);
        assert!(effective(&s, &applicable(&s, WP, &svc())).is_none());
    }

    #[test]
    fn decision_follows_parent_else_percentage() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        assert!(decide(Some(true), 0.0, &mut rng));
        assert!(!decide(Some(false), 100.0, &mut rng));
        assert!(decide(None, 100.0, &mut rng));
        assert!(!decide(None, 0.0, &mut rng));
        let n = (0..10_000).filter(|_| decide(None, 10.0, &mut rng)).count();
        assert!((900..1100).contains(&n), "{n}");
    }
}

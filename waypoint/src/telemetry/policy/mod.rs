//! Telemetry `metrics` and `accessLogging` settings for a request, resolved with the same
//! precedence as tracing ([`resolve::applicable`]: root namespace,
//! namespace, selector, then `targetRefs` to the waypoint and the Service; a more specific
//! level applies after a less specific one).
//!
//! Metrics: overrides of the Prometheus provider (entries naming only other providers are
//! ignored) whose `mode` includes SERVER (the waypoint reports as the server side, as
//! Istio's waypoints do) may disable a metric or override its tags. Label sets of the
//! Prometheus families are fixed, so `REMOVE` records the label as `""` and `UPSERT` may
//! only overwrite one of Istio's standard labels; a new label name is a
//! [`TelemetryError::UnknownTag`] (logged, the rest of the resource still applies).
//!
//! Access logging: the last level with an `accessLogging` entry for the server side and
//! the waypoint's JSON log (no provider, `envoy`, or an `envoyFileAccessLog` provider)
//! decides; the sink itself is the process's [`crate::telemetry::access_log::AccessLog`]; `disabled` turns the waypoint's access log off (or back on), `filter` keeps
//! only the requests it matches. An expression outside the supported CEL subset
//! ([`cel`]) is logged once per config version and the log then records every request
//! (fail open: losing logs is worse than extra lines).

pub mod cel;
pub mod resolve;

use meshwork_runtime::sync::LockExt;
use std::collections::{BTreeMap, HashSet};
use std::sync::{Arc, Mutex};

use meshwork_model::pb::config::extension_provider::Provider;
use meshwork_model::pb::config::{ExtensionProvider, Service, TelemetryConfig};
use meshwork_model::snapshot::Snapshot;
use tracing::warn;

use crate::config::service_cache::{ServiceCache, WaypointId};
use crate::telemetry::metrics::{Metric, RequestLabels};
use cel::{CelError, Context, Expr};

/// Istio's built-in metrics provider.
pub const PROMETHEUS: &str = "prometheus";
/// Istio's built-in access log provider (stdout).
pub const ENVOY: &str = "envoy";

#[derive(Debug, Clone, thiserror::Error, PartialEq)]
pub enum TelemetryError {
    #[error("Telemetry {resource}: {field} expression {expression:?} is not supported ({source}); access log records every request")]
    Filter {
        resource: String,
        field: &'static str,
        expression: String,
        source: CelError,
    },
    #[error("Telemetry {resource}: metrics.overrides.tagOverrides[{tag}] value {expression:?} is not supported ({source}); tag left unchanged")]
    TagValue {
        resource: String,
        tag: String,
        expression: String,
        source: CelError,
    },
    #[error("Telemetry {resource}: metrics.overrides.tagOverrides: {tag:?} is not a standard Istio label (the waypoint's label sets are fixed); ignored")]
    UnknownTag { resource: String, tag: String },
    #[error("Telemetry {resource}: metrics.overrides.match.metric {metric:?} is not a known metric; ignored")]
    UnknownMetric { resource: String, metric: String },
}

/// How one tag of one metric is overridden.
#[derive(Debug, Clone)]
pub enum TagOp {
    Remove,
    Upsert(Expr),
}

/// Settings of one metric.
#[derive(Debug, Clone, Default)]
pub struct MetricSettings {
    pub disabled: bool,
    pub tags: BTreeMap<String, TagOp>,
}

/// The metrics and access log settings for traffic to one service.
#[derive(Debug, Clone)]
pub struct TelemetryPolicy {
    metrics: [MetricSettings; 4],
    /// `false`: an `accessLogging` entry disabled the access log.
    pub access_log: bool,
    /// Only requests matching this are logged.
    pub filter: Option<Expr>,
    pub errors: Vec<TelemetryError>,
}

impl Default for TelemetryPolicy {
    fn default() -> Self {
        TelemetryPolicy {
            metrics: Default::default(),
            access_log: true,
            filter: None,
            errors: Vec::new(),
        }
    }
}

fn applies_to_server(mode: &str) -> bool {
    !mode.eq_ignore_ascii_case("CLIENT")
}

/// Whether an entry naming `names` configures the waypoint's own sink: no provider named,
/// the built-in provider `builtin`, or a mesh provider of the kind `is_kind` accepts.
fn selects(
    names: &[String],
    builtin: &str,
    mesh: &[ExtensionProvider],
    is_kind: fn(&Provider) -> bool,
) -> bool {
    names.is_empty()
        || names.iter().any(|n| {
            n == builtin
                || mesh
                    .iter()
                    .any(|p| &p.name == n && p.provider.as_ref().is_some_and(is_kind))
        })
}

impl TelemetryPolicy {
    /// Merges `telemetries`, least specific first. Entries naming providers apply when one
    /// of them is the built-in (`prometheus`, `envoy`) or a mesh provider of the matching
    /// kind in `mesh` (`prometheus`, `envoyFileAccessLog`); others configure sinks the
    /// waypoint does not have.
    pub fn compile(
        telemetries: &[&TelemetryConfig],
        mesh: &[ExtensionProvider],
    ) -> TelemetryPolicy {
        let prom: fn(&Provider) -> bool = |p| matches!(p, Provider::Prometheus(_));
        let file: fn(&Provider) -> bool = |p| matches!(p, Provider::FileAccessLog(_));
        let mut p = TelemetryPolicy::default();
        for t in telemetries {
            let resource = format!("{}/{}", t.namespace, t.name);
            for m in t
                .metrics
                .iter()
                .filter(|m| selects(&m.providers, PROMETHEUS, mesh, prom))
            {
                for o in m.overrides.iter().filter(|o| applies_to_server(&o.mode)) {
                    p.apply_override(&resource, o);
                }
            }
            if let Some(a) = t
                .access_logging
                .iter()
                .rfind(|a| applies_to_server(&a.mode) && selects(&a.providers, ENVOY, mesh, file))
            {
                p.access_log = !(a.has_disabled && a.disabled);
                p.filter = None;
                if !a.filter.is_empty() {
                    match cel::parse(&a.filter) {
                        Ok(e) => p.filter = Some(e),
                        Err(source) => p.errors.push(TelemetryError::Filter {
                            resource: resource.clone(),
                            field: "accessLogging.filter",
                            expression: a.filter.clone(),
                            source,
                        }),
                    }
                }
            }
        }
        p
    }

    fn apply_override(&mut self, resource: &str, o: &meshwork_model::pb::config::MetricOverride) {
        let targets = match Metric::from_istio(&o.metric) {
            Some(t) => t,
            None => {
                self.errors.push(TelemetryError::UnknownMetric {
                    resource: resource.into(),
                    metric: o.metric.clone(),
                });
                return;
            }
        };
        let mut ops = Vec::new();
        for tag in &o.tag_remove {
            ops.push((tag.clone(), TagOp::Remove));
        }
        for (tag, value) in &o.tag_upsert {
            match cel::parse(value) {
                Ok(e) => ops.push((tag.clone(), TagOp::Upsert(e))),
                Err(source) => self.errors.push(TelemetryError::TagValue {
                    resource: resource.into(),
                    tag: tag.clone(),
                    expression: value.clone(),
                    source,
                }),
            }
        }
        ops.retain(|(tag, _)| {
            let known = RequestLabels::has_label(tag);
            if !known {
                self.errors.push(TelemetryError::UnknownTag {
                    resource: resource.into(),
                    tag: tag.clone(),
                });
            }
            known
        });
        for m in targets {
            let s = &mut self.metrics[m as usize];
            s.disabled = o.disabled;
            for (tag, op) in &ops {
                s.tags.insert(tag.clone(), op.clone());
            }
        }
    }

    pub fn metric(&self, m: Metric) -> &MetricSettings {
        &self.metrics[m as usize]
    }

    /// Whether every metric is reported with the standard labels (no override applies).
    pub fn standard_metrics(&self) -> bool {
        self.metrics
            .iter()
            .all(|m| !m.disabled && m.tags.is_empty())
    }

    /// Whether requests need a [`Context`] (some expression or override to evaluate).
    pub fn needs_context(&self) -> bool {
        self.filter.is_some() || self.metrics.iter().any(|m| !m.tags.is_empty())
    }

    /// The labels of each metric for a request (`None`: the metric is disabled).
    pub fn labels(
        &self,
        base: &Arc<RequestLabels>,
        cx: Option<&Context>,
    ) -> [Option<Arc<RequestLabels>>; 4] {
        Metric::ALL.map(|m| {
            let s = self.metric(m);
            if s.disabled {
                return None;
            }
            if s.tags.is_empty() {
                return Some(base.clone());
            }
            let mut l = RequestLabels::clone(base);
            for (tag, op) in &s.tags {
                let v = match op {
                    TagOp::Remove => String::new(),
                    TagOp::Upsert(e) => match cx {
                        Some(cx) => e.eval(cx).to_label(),
                        None => continue,
                    },
                };
                l.set_label(tag, v);
            }
            Some(Arc::new(l))
        })
    }

    /// Whether the access log records this request.
    pub fn should_log(&self, cx: Option<&Context>) -> bool {
        if !self.access_log {
            return false;
        }
        match (&self.filter, cx) {
            (Some(f), Some(cx)) => f.truthy(cx),
            _ => true,
        }
    }
}

/// The policies of one config version, per (waypoint, service), with each configuration
/// error logged once.
#[derive(Debug, Default)]
pub struct TelemetryCache {
    by_service: ServiceCache<Arc<TelemetryPolicy>>,
    logged: Mutex<HashSet<String>>,
}

impl TelemetryCache {
    pub fn get(
        &self,
        snap: &Snapshot,
        waypoint: &WaypointId,
        service: &Service,
    ) -> Arc<TelemetryPolicy> {
        self.by_service
            .get_or_insert_with(waypoint, &service.namespace, &service.hostname, || {
                let gw = (waypoint.namespace.as_str(), waypoint.name.as_str());
                let tels = resolve::applicable(snap, gw, service);
                let providers = snap
                    .mesh()
                    .map(|m| m.extension_providers.as_slice())
                    .unwrap_or_default();
                let p = Arc::new(TelemetryPolicy::compile(&tels, providers));
                let mut logged = self.logged.lock_or_recover();
                for e in &p.errors {
                    let msg = e.to_string();
                    if logged.insert(msg.clone()) {
                        warn!("{msg}");
                    }
                }
                p
            })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::pb::config::{AccessLogging, MetricOverride, Metrics};

    fn tel(
        name: &str,
        metrics: Vec<MetricOverride>,
        log: Option<AccessLogging>,
    ) -> TelemetryConfig {
        TelemetryConfig {
            name: name.into(),
            namespace: "shop".into(),
            metrics: vec![Metrics {
                providers: vec![],
                overrides: metrics,
            }],
            access_logging: log.into_iter().collect(),
            ..Default::default()
        }
    }

    fn base() -> RequestLabels {
        RequestLabels {
            response_code: "200".into(),
            request_protocol: "http".into(),
            peers: meshwork_metrics::PeerLabels {
                destination_service: "orders".into(),
                ..Default::default()
            },
            ..Default::default()
        }
    }

    #[test]
    fn disables_metrics_and_all_metrics() {
        let t = tel(
            "t",
            vec![MetricOverride {
                metric: "REQUEST_COUNT".into(),
                disabled: true,
                ..Default::default()
            }],
            None,
        );
        let p = TelemetryPolicy::compile(&[&t], &[]);
        let l = p.labels(&Arc::new(base()), None);
        assert!(l[Metric::RequestCount as usize].is_none());
        assert!(l[Metric::RequestDuration as usize].is_some());
        let all = tel(
            "all",
            vec![MetricOverride {
                metric: "ALL_METRICS".into(),
                disabled: true,
                ..Default::default()
            }],
            None,
        );
        let p = TelemetryPolicy::compile(&[&t, &all], &[]);
        assert!(p
            .labels(&Arc::new(base()), None)
            .iter()
            .all(Option::is_none));
        // A more specific level re-enables.
        let on = tel(
            "on",
            vec![MetricOverride {
                metric: "REQUEST_COUNT".into(),
                disabled: false,
                ..Default::default()
            }],
            None,
        );
        let p = TelemetryPolicy::compile(&[&all, &on], &[]);
        assert!(p.labels(&Arc::new(base()), None)[Metric::RequestCount as usize].is_some());
        assert!(p.labels(&Arc::new(base()), None)[Metric::RequestSize as usize].is_none());
    }

    #[test]
    fn tag_remove_and_upsert() {
        let t = tel(
            "t",
            vec![MetricOverride {
                metric: "REQUEST_COUNT".into(),
                tag_remove: vec!["request_protocol".into()],
                tag_upsert: [
                    (
                        "destination_service".to_string(),
                        "request.headers['x-svc']".to_string(),
                    ),
                    ("response_code".to_string(), "'all'".to_string()),
                    ("brand_new".to_string(), "'x'".to_string()),
                    ("source_app".to_string(), "request.size".to_string()),
                ]
                .into(),
                ..Default::default()
            }],
            None,
        );
        let p = TelemetryPolicy::compile(&[&t], &[]);
        assert_eq!(p.errors.len(), 2, "{:?}", p.errors);
        assert!(p
            .errors
            .iter()
            .any(|e| matches!(e, TelemetryError::UnknownTag { tag, .. } if tag == "brand_new")));
        assert!(p.errors[..]
            .iter()
            .any(|e| e.to_string().contains("shop/t") && e.to_string().contains("request.size")));
        let mut cx = Context::default();
        cx.headers.insert("x-svc", "v2".parse().unwrap());
        let l = p.labels(&Arc::new(base()), Some(&cx));
        let count = l[Metric::RequestCount as usize].as_ref().unwrap();
        assert_eq!(count.request_protocol, "");
        assert_eq!(count.peers.destination_service, "v2");
        assert_eq!(count.response_code, "all");
        // Other metrics keep the standard labels.
        let dur = l[Metric::RequestDuration as usize].as_ref().unwrap();
        assert_eq!(dur.request_protocol, "http");
    }

    #[test]
    fn client_mode_and_other_providers_do_not_apply() {
        let mut t = tel(
            "t",
            vec![MetricOverride {
                metric: "REQUEST_COUNT".into(),
                mode: "CLIENT".into(),
                disabled: true,
                ..Default::default()
            }],
            None,
        );
        let p = TelemetryPolicy::compile(&[&t], &[]);
        assert!(p.labels(&Arc::new(base()), None)[0].is_some());
        t.metrics[0].overrides[0].mode = "SERVER".into();
        t.metrics[0].providers = vec!["stackdriver".into()];
        let p = TelemetryPolicy::compile(&[&t], &[]);
        assert!(p.labels(&Arc::new(base()), None)[0].is_some());
        t.metrics[0].providers = vec!["prometheus".into()];
        let p = TelemetryPolicy::compile(&[&t], &[]);
        assert!(p.labels(&Arc::new(base()), None)[0].is_none());
    }

    #[test]
    fn access_log_entries_for_other_providers_do_not_apply() {
        let off = |providers: Vec<&str>| {
            let mut t = tel(
                "off",
                vec![],
                Some(AccessLogging {
                    disabled: true,
                    has_disabled: true,
                    ..Default::default()
                }),
            );
            t.access_logging[0].providers = providers.into_iter().map(String::from).collect();
            t
        };
        let mesh = vec![
            ExtensionProvider {
                name: "otel".into(),
                provider: Some(Provider::Opentelemetry(Default::default())),
            },
            ExtensionProvider {
                name: "stdout-json".into(),
                provider: Some(Provider::FileAccessLog(Default::default())),
            },
        ];
        let logs = |t: &TelemetryConfig| TelemetryPolicy::compile(&[t], &mesh).should_log(None);
        assert!(logs(&off(vec!["otel"])));
        assert!(!logs(&off(vec!["stdout-json"])));
        assert!(!logs(&off(vec!["envoy"])));
        assert!(!logs(&off(vec![])));
    }

    #[test]
    fn access_log_disable_and_filter() {
        let off = tel(
            "off",
            vec![],
            Some(AccessLogging {
                disabled: true,
                has_disabled: true,
                ..Default::default()
            }),
        );
        assert!(!TelemetryPolicy::compile(&[&off], &[]).should_log(None));
        let on = tel(
            "on",
            vec![],
            Some(AccessLogging {
                disabled: false,
                has_disabled: true,
                filter: "response.code >= 400".into(),
                ..Default::default()
            }),
        );
        let p = TelemetryPolicy::compile(&[&off, &on], &[]);
        let cx = |code| Context {
            response_code: code,
            ..Default::default()
        };
        assert!(p.needs_context());
        assert!(p.should_log(Some(&cx(503))));
        assert!(!p.should_log(Some(&cx(200))));
    }

    #[test]
    fn bad_filter_fails_open_with_a_named_error() {
        let t = tel(
            "bad",
            vec![],
            Some(AccessLogging {
                filter: "response.code >= 400 && request.size > 3".into(),
                ..Default::default()
            }),
        );
        let p = TelemetryPolicy::compile(&[&t], &[]);
        assert!(p.should_log(Some(&Context::default())));
        let msg = p.errors[0].to_string();
        assert!(
            msg.contains("shop/bad") && msg.contains("request.size > 3"),
            "{msg}"
        );
    }

    #[test]
    fn cache_reports_each_error_once_per_config_version() {
        use meshwork_model::keys::{make_resource, Kind};
        use meshwork_model::pb::config::{resource, MeshSettings, PolicyScope};
        let mut r = BTreeMap::new();
        let mesh = MeshSettings {
            root_namespace: "istio-system".into(),
            ..Default::default()
        };
        r.insert(
            "mesh".to_string(),
            Arc::new(make_resource("mesh".into(), resource::Kind::Mesh(mesh))),
        );
        let mut mesh_wide = tel(
            "mesh-default",
            vec![],
            Some(AccessLogging {
                filter: "size(request.headers) > 3".into(),
                ..Default::default()
            }),
        );
        mesh_wide.namespace = "istio-system".into();
        mesh_wide.scope = PolicyScope::Global as i32;
        let k = Kind::Telemetry.key("istio-system", "mesh-default");
        r.insert(
            k.clone(),
            Arc::new(make_resource(k, resource::Kind::Telemetry(mesh_wide))),
        );
        let svc = |name: &str| Service {
            name: name.into(),
            namespace: "shop".into(),
            hostname: format!("{name}.shop.svc.cluster.local"),
            ..Default::default()
        };
        let snap = Snapshot::new(1, r);
        let cache = TelemetryCache::default();
        let wp = WaypointId {
            namespace: "shop".into(),
            name: "waypoint".into(),
        };
        let a = cache.get(&snap, &wp, &svc("orders"));
        let b = cache.get(&snap, &wp, &svc("payments"));
        assert_eq!(a.errors.len(), 1);
        assert_eq!(b.errors.len(), 1);
        assert!(a.errors[0]
            .to_string()
            .contains("istio-system/mesh-default"));
        assert_eq!(cache.logged.lock().unwrap().len(), 1);
        // Cached: the same policy for the same service.
        assert!(Arc::ptr_eq(&a, &cache.get(&snap, &wp, &svc("orders"))));
    }
}

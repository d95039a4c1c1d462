//! Distributed tracing driven by the Telemetry API: W3C/B3 context propagation, Istio's
//! sampling precedence, server and client spans, OTLP/gRPC export.

pub mod export;
pub mod sampler;
pub mod span;
pub mod tracecontext;

/// The OTLP messages and `TraceService` (generated once, in the model crate).
pub use meshwork_model::pb::otlp;

use meshwork_runtime::sync::LockExt;
use std::collections::HashMap;
use std::sync::Mutex;
use std::time::SystemTime;

use http::HeaderMap;
use meshwork_model::snapshot::Snapshot;
use prometheus_client::registry::Registry;
use tracing::warn;

use export::{ExportMetrics, ExportSettings, Exporter};
use sampler::{Effective, TagSource};
use span::{Kind, Span};
use tracecontext::{Formats, SpanId, TraceId};

/// The tags `maxTagLength` bounds (Istio: "currently only the path tag").
const PATH_TAGS: &[&str] = &["http.url", "url.path"];

/// Tracing options of the waypoint process.
#[derive(Debug, Clone, Default)]
pub struct TracingOptions {
    /// Send spans here (`host:port` or URL) instead of the provider's service (tests).
    pub otlp_endpoint: Option<String>,
    pub export: ExportSettings,
}

/// Starts traces for requests and owns one exporter per collector.
pub struct Tracer {
    opts: TracingOptions,
    service_name: String,
    metrics: ExportMetrics,
    exporters: Mutex<HashMap<String, Option<Exporter>>>,
}

/// The collector address for a provider: the service's VIP when it is a mesh service,
/// else its `service` as a host name (Istio also accepts `namespace/hostname`).
pub fn collector_endpoint(snap: &Snapshot, service: &str, port: u16) -> String {
    let host = service.rsplit('/').next().unwrap_or(service);
    match snap.service_by_host(host, "").and_then(|s| {
        s.vips
            .iter()
            .find_map(|v| v.parse::<std::net::IpAddr>().ok())
    }) {
        Some(ip) => std::net::SocketAddr::new(ip, port).to_string(),
        None => format!("{host}:{port}"),
    }
}

impl Tracer {
    /// `service_name` is the OTLP resource's `service.name` (`<waypoint>.<namespace>`).
    pub fn new(opts: TracingOptions, service_name: String, registry: &mut Registry) -> Self {
        Tracer {
            opts,
            service_name,
            metrics: ExportMetrics::new(registry),
            exporters: Mutex::new(HashMap::new()),
        }
    }

    pub fn metrics(&self) -> &ExportMetrics {
        &self.metrics
    }

    fn exporter(&self, snap: &Snapshot, eff: &Effective) -> Option<Exporter> {
        let endpoint = match &self.opts.otlp_endpoint {
            Some(e) => e.clone(),
            None => collector_endpoint(snap, &eff.collector.0, eff.collector.1),
        };
        let mut map = self.exporters.lock_or_recover();
        map.entry(endpoint.clone())
            .or_insert_with(|| {
                match Exporter::spawn(
                    &endpoint,
                    &eff.provider,
                    &self.service_name,
                    self.opts.export.clone(),
                    self.metrics.clone(),
                ) {
                    Ok(e) => Some(e),
                    Err(e) => {
                        warn!("tracing disabled for this collector: {e}");
                        None
                    }
                }
            })
            .clone()
    }

    /// Starts the trace of a request under the tracing settings `eff` (see
    /// [`crate::config::Compiled::tracing`]); the server span starts at `arrived`.
    pub fn start(
        &self,
        snap: &Snapshot,
        eff: &Effective,
        headers: &HeaderMap,
        arrived: SystemTime,
    ) -> Active {
        let (incoming, parent_sampled, formats) = tracecontext::extract(headers);
        let sampled = sampler::decide(parent_sampled, eff.sampling_percent, &mut rand::rng());
        let exporter = (sampled && !eff.disable_span_reporting)
            .then(|| self.exporter(snap, eff))
            .flatten();
        let tags = eff
            .custom_tags
            .iter()
            .filter_map(|(name, src)| {
                let v = match src {
                    TagSource::Literal(v) => v.clone(),
                    TagSource::Header { name, default } => headers
                        .get(name.as_str())
                        .and_then(|v| v.to_str().ok())
                        .map(String::from)
                        .unwrap_or_else(|| default.clone()),
                };
                (!v.is_empty()).then(|| (name.clone(), v))
            })
            .collect();
        Active {
            trace_id: incoming
                .as_ref()
                .map(|i| i.trace_id)
                .unwrap_or_else(tracecontext::new_trace_id),
            span_id: tracecontext::new_span_id(),
            parent: incoming.as_ref().and_then(|i| i.parent),
            tracestate: incoming.and_then(|i| i.tracestate),
            sampled,
            formats,
            tags,
            exporter,
            max_tag_length: eff.max_tag_length,
            start: arrived,
        }
    }
}

/// A request being traced: its server span, and the client spans of its upstream tries.
#[derive(Debug)]
pub struct Active {
    pub trace_id: TraceId,
    /// The server span.
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub tracestate: Option<String>,
    pub sampled: bool,
    formats: Formats,
    tags: Vec<(String, String)>,
    /// Set when the span is sampled and reported.
    exporter: Option<Exporter>,
    max_tag_length: usize,
    start: SystemTime,
}

/// One upstream try.
#[derive(Debug)]
pub struct ClientSpan {
    pub span_id: SpanId,
    start: SystemTime,
}

impl Active {
    /// Starts a client span and writes the propagation headers of the upstream request.
    pub fn begin_client(&self, headers: &mut HeaderMap) -> ClientSpan {
        let span_id = tracecontext::new_span_id();
        tracecontext::inject(
            headers,
            &self.trace_id,
            &span_id,
            Some(&self.span_id),
            self.sampled,
            self.formats,
        );
        ClientSpan {
            span_id,
            start: SystemTime::now(),
        }
    }

    fn span(&self, kind: Kind, name: String, span_id: SpanId, parent: Option<SpanId>) -> Span {
        let mut s = Span {
            trace_id: self.trace_id,
            span_id,
            parent,
            tracestate: self.tracestate.clone(),
            name,
            kind,
            start: self.start,
            end: SystemTime::now(),
            attributes: Vec::new(),
            status: 0,
        };
        s.attr("component", "proxy");
        s
    }

    /// Reports a finished upstream try (`status` 0: no response).
    pub fn end_client(
        &self,
        c: ClientSpan,
        cluster: &str,
        peer: &str,
        status: u16,
        attrs: &Attributes,
    ) {
        let Some(e) = &self.exporter else {
            return;
        };
        let mut s = self.span(
            Kind::Client,
            format!("router {cluster} egress"),
            c.span_id,
            Some(self.span_id),
        );
        s.start = c.start;
        s.status = status;
        s.attr("upstream_cluster", cluster);
        s.attr("peer.address", peer);
        attrs.apply(&mut s);
        for (k, v) in &self.tags {
            s.attr(k, v.clone());
        }
        s.limit_values(PATH_TAGS, self.max_tag_length);
        e.submit(s.to_otlp());
    }

    /// Reports the server span when the response is done.
    pub fn end_server(&self, name: String, status: u16, attrs: &Attributes) {
        let Some(e) = &self.exporter else {
            return;
        };
        let mut s = self.span(Kind::Server, name, self.span_id, self.parent);
        s.status = status;
        s.attr("upstream_cluster", attrs.upstream_cluster.clone());
        attrs.apply(&mut s);
        for (k, v) in &self.tags {
            s.attr(k, v.clone());
        }
        s.limit_values(PATH_TAGS, self.max_tag_length);
        e.submit(s.to_otlp());
    }

    pub fn is_reported(&self) -> bool {
        self.exporter.is_some()
    }
}

/// The request's attributes shared by its spans.
#[derive(Debug, Clone, Default)]
pub struct Attributes {
    pub method: String,
    pub path: String,
    pub url: String,
    pub request_id: String,
    pub user_agent: String,
    pub protocol: String,
    pub mesh_id: String,
    pub upstream_cluster: String,
    pub response_flags: String,
    pub source_workload: String,
    pub source_namespace: String,
    pub source_principal: String,
    pub destination_workload: String,
    pub destination_namespace: String,
    pub destination_principal: String,
    pub destination_service: String,
}

impl Attributes {
    fn apply(&self, s: &mut Span) {
        let pairs: [(&str, &String); 17] = [
            ("http.method", &self.method),
            ("http.request.method", &self.method),
            ("url.path", &self.path),
            ("http.url", &self.url),
            ("guid:x-request-id", &self.request_id),
            ("user_agent", &self.user_agent),
            ("http.protocol", &self.protocol),
            ("istio.mesh_id", &self.mesh_id),
            ("response_flags", &self.response_flags),
            ("istio.source_workload", &self.source_workload),
            ("istio.source_namespace", &self.source_namespace),
            ("istio.source_principal", &self.source_principal),
            ("istio.destination_workload", &self.destination_workload),
            ("istio.destination_namespace", &self.destination_namespace),
            ("istio.destination_principal", &self.destination_principal),
            ("istio.destination_service", &self.destination_service),
            ("istio.namespace", &self.destination_namespace),
        ];
        for (k, v) in pairs {
            if !v.is_empty() {
                s.attr(k, v.clone());
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::keys::{make_resource, Kind};
    use meshwork_model::pb::config::{resource, Service};
    use std::collections::BTreeMap;
    use std::sync::Arc;

    #[test]
    fn collector_address_resolves_mesh_services_to_their_vip() {
        let svc = Service {
            name: "otel-collector".into(),
            namespace: "observability".into(),
            hostname: "otel-collector.observability.svc.cluster.local".into(),
            vips: vec!["10.96.7.7".into()],
            ..Default::default()
        };
        let key = Kind::Service.key(&svc.namespace, &svc.hostname);
        let snap = Snapshot::new(
            1,
            BTreeMap::from([(
                key.clone(),
                Arc::new(make_resource(key, resource::Kind::Service(svc))),
            )]),
        );
        let host = "otel-collector.observability.svc.cluster.local";
        assert_eq!(collector_endpoint(&snap, host, 4317), "10.96.7.7:4317");
        assert_eq!(
            collector_endpoint(&snap, &format!("observability/{host}"), 4317),
            "10.96.7.7:4317"
        );
        assert_eq!(
            collector_endpoint(&snap, "collector.example.com", 4317),
            "collector.example.com:4317"
        );
    }
}

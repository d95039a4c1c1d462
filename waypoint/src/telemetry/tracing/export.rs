//! OTLP/gRPC export with bounded memory: spans go into a bounded channel; one task per
//! collector batches them (every `flush_interval` or `max_batch` spans) and calls
//! `TraceService/Export`. A full channel or a failed export drops spans and counts them;
//! request handling never waits on the collector.

use std::time::Duration;

use prometheus_client::metrics::counter::Counter;
use prometheus_client::registry::Registry;
use tokio::sync::mpsc;
use tokio::time::Instant;
use tracing::{debug, warn};

use super::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use super::otlp::collector::trace::v1::ExportTraceServiceRequest;
use super::otlp::common::v1::{any_value, InstrumentationScope};
use super::otlp::resource::v1::Resource;
use super::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};
use super::span::kv;

#[derive(Debug, thiserror::Error)]
pub enum ExportError {
    #[error("OTLP endpoint {endpoint:?} (tracing provider {provider:?}): {source}")]
    Endpoint {
        endpoint: String,
        provider: String,
        source: tonic::transport::Error,
    },
}

/// Batching and buffering limits.
#[derive(Debug, Clone)]
pub struct ExportSettings {
    /// Spans buffered before new ones are dropped.
    pub queue: usize,
    pub max_batch: usize,
    pub flush_interval: Duration,
    /// Bound on one Export call (connecting included).
    pub timeout: Duration,
}

impl Default for ExportSettings {
    fn default() -> Self {
        ExportSettings {
            queue: 4096,
            max_batch: 512,
            flush_interval: Duration::from_secs(1),
            timeout: Duration::from_secs(5),
        }
    }
}

/// `meshwork_tracing_spans_{exported,dropped}_total`.
#[derive(Debug, Clone, Default)]
pub struct ExportMetrics {
    pub exported: Counter,
    pub dropped: Counter,
}

impl ExportMetrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = ExportMetrics::default();
        registry.register(
            "meshwork_tracing_spans_exported",
            "Spans accepted by the OTLP collector",
            m.exported.clone(),
        );
        registry.register(
            "meshwork_tracing_spans_dropped",
            "Spans dropped because the export queue was full or the collector failed",
            m.dropped.clone(),
        );
        m
    }
}

/// The sending side for one collector. Cheap to clone.
#[derive(Debug, Clone)]
pub struct Exporter {
    tx: mpsc::Sender<Span>,
    metrics: ExportMetrics,
}

/// `host:port` or a URL → a gRPC URL.
pub fn grpc_url(endpoint: &str) -> String {
    if endpoint.contains("://") {
        endpoint.to_string()
    } else {
        format!("http://{endpoint}")
    }
}

impl Exporter {
    /// Starts the batching task for `endpoint`. Must be called within a Tokio runtime.
    pub fn spawn(
        endpoint: &str,
        provider: &str,
        service_name: &str,
        settings: ExportSettings,
        metrics: ExportMetrics,
    ) -> Result<Self, ExportError> {
        let channel = tonic::transport::Endpoint::from_shared(grpc_url(endpoint))
            .map_err(|source| ExportError::Endpoint {
                endpoint: endpoint.to_string(),
                provider: provider.to_string(),
                source,
            })?
            .connect_timeout(settings.timeout)
            .timeout(settings.timeout)
            .connect_lazy();
        let (tx, rx) = mpsc::channel(settings.queue.max(1));
        let resource = Resource {
            attributes: vec![kv(
                "service.name",
                any_value::Value::StringValue(service_name.to_string()),
            )],
            dropped_attributes_count: 0,
        };
        let task = Batcher {
            client: TraceServiceClient::new(channel),
            resource,
            settings,
            metrics: metrics.clone(),
            endpoint: endpoint.to_string(),
            failing: false,
        };
        tokio::spawn(task.run(rx));
        Ok(Exporter { tx, metrics })
    }

    /// Queues a span; drops (and counts) it when the queue is full. Never waits.
    pub fn submit(&self, span: Span) {
        if self.tx.try_send(span).is_err() {
            self.metrics.dropped.inc();
        }
    }
}

struct Batcher {
    client: TraceServiceClient<tonic::transport::Channel>,
    resource: Resource,
    settings: ExportSettings,
    metrics: ExportMetrics,
    endpoint: String,
    failing: bool,
}

impl Batcher {
    async fn run(mut self, mut rx: mpsc::Receiver<Span>) {
        let max = self.settings.max_batch.max(1);
        while let Some(first) = rx.recv().await {
            let mut batch = vec![first];
            let deadline = Instant::now() + self.settings.flush_interval;
            let mut closed = false;
            while batch.len() < max {
                tokio::select! {
                    s = rx.recv() => match s {
                        Some(s) => batch.push(s),
                        None => { closed = true; break; }
                    },
                    _ = tokio::time::sleep_until(deadline) => break,
                }
            }
            self.export(batch).await;
            if closed {
                return;
            }
        }
    }

    async fn export(&mut self, spans: Vec<Span>) {
        let n = spans.len() as u64;
        let req = ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                resource: Some(self.resource.clone()),
                scope_spans: vec![ScopeSpans {
                    scope: Some(InstrumentationScope {
                        name: "meshwork-waypoint".into(),
                        version: env!("CARGO_PKG_VERSION").into(),
                        ..Default::default()
                    }),
                    spans,
                    schema_url: String::new(),
                }],
                schema_url: String::new(),
            }],
        };
        let result = tokio::time::timeout(self.settings.timeout, self.client.export(req)).await;
        match result {
            Ok(Ok(resp)) => {
                let rejected = resp
                    .into_inner()
                    .partial_success
                    .map(|p| p.rejected_spans.max(0) as u64)
                    .unwrap_or(0)
                    .min(n);
                self.metrics.exported.inc_by(n - rejected);
                self.metrics.dropped.inc_by(rejected);
                if self.failing {
                    debug!(endpoint = %self.endpoint, "OTLP export recovered");
                }
                self.failing = false;
            }
            Ok(Err(status)) => self.failed(n, &status.to_string()),
            Err(_) => self.failed(n, "timed out"),
        }
    }

    fn failed(&mut self, n: u64, why: &str) {
        self.metrics.dropped.inc_by(n);
        if !self.failing {
            warn!(endpoint = %self.endpoint, dropped = n, "OTLP export failed: {why}");
        } else {
            debug!(endpoint = %self.endpoint, dropped = n, "OTLP export failed: {why}");
        }
        self.failing = true;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn urls() {
        assert_eq!(grpc_url("127.0.0.1:4317"), "http://127.0.0.1:4317");
        assert_eq!(grpc_url("https://c:4317"), "https://c:4317");
    }

    #[tokio::test(start_paused = true)]
    async fn full_queue_drops_without_waiting() {
        let metrics = ExportMetrics::default();
        let settings = ExportSettings {
            queue: 2,
            max_batch: 512,
            flush_interval: Duration::from_secs(3600),
            timeout: Duration::from_millis(100),
        };
        // Nothing listens on port 1 of 127.0.0.1; the batcher holds the queue open.
        let e = Exporter::spawn("127.0.0.1:1", "otel", "wp.ns", settings, metrics.clone()).unwrap();
        for _ in 0..10 {
            e.submit(Span::default());
        }
        // The batcher takes at most the first span plus the queue (2) before flushing.
        assert!(metrics.dropped.get() >= 7, "{}", metrics.dropped.get());
    }

    #[test]
    fn bad_endpoint_names_the_provider() {
        let err = tokio::runtime::Builder::new_current_thread()
            .enable_all()
            .build()
            .unwrap()
            .block_on(async {
                Exporter::spawn(
                    "bad host:4317",
                    "otel",
                    "wp.ns",
                    ExportSettings::default(),
                    ExportMetrics::default(),
                )
                .unwrap_err()
            });
        assert!(err.to_string().contains("otel"), "{err}");
    }
}

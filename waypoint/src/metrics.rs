//! Istio standard metrics, reported by the waypoint.

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

/// Istio's labels for request metrics.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: String,
    pub source_workload: String,
    pub source_workload_namespace: String,
    pub source_principal: String,
    pub source_app: String,
    pub source_version: String,
    pub destination_workload: String,
    pub destination_workload_namespace: String,
    pub destination_principal: String,
    pub destination_app: String,
    pub destination_version: String,
    pub destination_service: String,
    pub destination_service_name: String,
    pub destination_service_namespace: String,
    pub request_protocol: String,
    pub response_code: String,
    pub grpc_response_status: String,
    pub response_flags: String,
    pub connection_security_policy: String,
}

const DURATION_BUCKETS_MS: [f64; 19] = [
    0.5, 1.0, 5.0, 10.0, 25.0, 50.0, 100.0, 250.0, 500.0, 1000.0, 2500.0, 5000.0, 10000.0, 30000.0,
    60000.0, 300000.0, 600000.0, 1800000.0, 3600000.0,
];

fn duration_histogram() -> Histogram {
    Histogram::new(DURATION_BUCKETS_MS)
}

fn bytes_histogram() -> Histogram {
    Histogram::new((0..10).map(|i| 10f64.powi(i)))
}

type Hist = Family<RequestLabels, Histogram, fn() -> Histogram>;

#[derive(Debug, Clone)]
pub struct Metrics {
    pub requests: Family<RequestLabels, Counter>,
    pub duration: Hist,
    pub request_bytes: Hist,
    pub response_bytes: Hist,
}

impl Metrics {
    pub fn new(registry: &mut Registry) -> Self {
        let m = Metrics {
            requests: Family::default(),
            duration: Family::new_with_constructor(duration_histogram as fn() -> Histogram),
            request_bytes: Family::new_with_constructor(bytes_histogram as fn() -> Histogram),
            response_bytes: Family::new_with_constructor(bytes_histogram as fn() -> Histogram),
        };
        registry.register("istio_requests", "Requests handled", m.requests.clone());
        registry.register(
            "istio_request_duration_milliseconds",
            "Request duration",
            m.duration.clone(),
        );
        registry.register(
            "istio_request_bytes",
            "Request body size",
            m.request_bytes.clone(),
        );
        registry.register(
            "istio_response_bytes",
            "Response body size",
            m.response_bytes.clone(),
        );
        m
    }

    pub fn record(
        &self,
        labels: &RequestLabels,
        duration_ms: f64,
        req_bytes: u64,
        resp_bytes: u64,
    ) {
        self.requests.get_or_create(labels).inc();
        self.duration.get_or_create(labels).observe(duration_ms);
        self.request_bytes
            .get_or_create(labels)
            .observe(req_bytes as f64);
        self.response_bytes
            .get_or_create(labels)
            .observe(resp_bytes as f64);
    }
}

/// Renders the registry in the Prometheus text format.
/// The Prometheus text exposition (format 0.0.4, served with
/// [`meshwork_metrics::CONTENT_TYPE`]).
pub fn render(registry: &Registry) -> String {
    let mut out = String::new();
    if prometheus_client::encoding::text::encode(&mut out, registry).is_err() {
        out.clear();
    }
    meshwork_metrics::from_openmetrics(&out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn exposes_istio_names() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg);
        let labels = RequestLabels {
            reporter: "waypoint".into(),
            response_code: "503".into(),
            response_flags: "UO".into(),
            ..Default::default()
        };
        m.record(&labels, 3.0, 10, 20);
        let text = render(&reg);
        assert!(text.contains("istio_requests_total{"), "{text}");
        assert!(text.contains("response_flags=\"UO\""));
        assert!(text.contains("istio_request_duration_milliseconds_bucket"));
        assert!(text.contains("istio_request_bytes_sum"));
        assert!(text.contains("istio_response_bytes_count"));
    }
}

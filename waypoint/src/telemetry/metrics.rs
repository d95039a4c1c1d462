//! Istio standard metrics, reported by the waypoint.

use std::sync::Arc;

use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::metrics::histogram::Histogram;
use prometheus_client::registry::Registry;

use meshwork_metrics::PeerLabels;

/// Istio's labels for request metrics: the peers (shared with the ztunnel's TCP series,
/// [`PeerLabels`]) and what the request did.
#[derive(Debug, Clone, Default, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct RequestLabels {
    pub reporter: String,
    #[prometheus(flatten)]
    pub peers: PeerLabels,
    pub request_protocol: String,
    pub response_code: String,
    pub grpc_response_status: String,
    pub response_flags: String,
    pub connection_security_policy: String,
}

/// The labels of [`RequestLabels`] that are not peer labels.
const OWN_LABELS: [&str; 6] = [
    "reporter",
    "request_protocol",
    "response_code",
    "grpc_response_status",
    "response_flags",
    "connection_security_policy",
];

impl RequestLabels {
    fn field(&mut self, name: &str) -> Option<&mut String> {
        Some(match name {
            "reporter" => &mut self.reporter,
            "request_protocol" => &mut self.request_protocol,
            "response_code" => &mut self.response_code,
            "grpc_response_status" => &mut self.grpc_response_status,
            "response_flags" => &mut self.response_flags,
            "connection_security_policy" => &mut self.connection_security_policy,
            _ => return self.peers.field_mut(name),
        })
    }

    /// Whether `name` is one of the standard labels.
    pub fn has_label(name: &str) -> bool {
        OWN_LABELS.contains(&name) || PeerLabels::NAMES.contains(&name)
    }

    /// Overwrites a standard label; `false` when `name` is not one.
    pub fn set_label(&mut self, name: &str, value: String) -> bool {
        match self.field(name) {
            Some(f) => {
                *f = value;
                true
            }
            None => false,
        }
    }
}

/// The request metrics Telemetry overrides can select.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Metric {
    RequestCount = 0,
    RequestDuration = 1,
    RequestSize = 2,
    ResponseSize = 3,
}

impl Metric {
    pub const ALL: [Metric; 4] = [
        Metric::RequestCount,
        Metric::RequestDuration,
        Metric::RequestSize,
        Metric::ResponseSize,
    ];

    /// The metrics an override's `match.metric` selects (`ALL_METRICS`, or the whole
    /// match left empty, selects all); `None` for metrics the waypoint does not report.
    pub fn from_istio(name: &str) -> Option<Vec<Metric>> {
        Some(match name {
            "" | "ALL_METRICS" => Metric::ALL.to_vec(),
            "REQUEST_COUNT" => vec![Metric::RequestCount],
            "REQUEST_DURATION" => vec![Metric::RequestDuration],
            "REQUEST_SIZE" => vec![Metric::RequestSize],
            "RESPONSE_SIZE" => vec![Metric::ResponseSize],
            _ => return None,
        })
    }
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
        let l = Some(Arc::new(labels.clone()));
        self.record_each(
            &[l.clone(), l.clone(), l.clone(), l],
            duration_ms,
            req_bytes,
            resp_bytes,
        );
    }

    /// Records each metric of [`Metric::ALL`] with its own labels; `None` skips it (a
    /// Telemetry override disabled it).
    pub fn record_each(
        &self,
        labels: &[Option<Arc<RequestLabels>>; 4],
        duration_ms: f64,
        req_bytes: u64,
        resp_bytes: u64,
    ) {
        let get = |m: Metric| labels[m as usize].as_ref();
        if let Some(l) = get(Metric::RequestCount) {
            self.requests.get_or_create(l).inc();
        }
        if let Some(l) = get(Metric::RequestDuration) {
            self.duration.get_or_create(l).observe(duration_ms);
        }
        if let Some(l) = get(Metric::RequestSize) {
            self.request_bytes
                .get_or_create(l)
                .observe(req_bytes as f64);
        }
        if let Some(l) = get(Metric::ResponseSize) {
            self.response_bytes
                .get_or_create(l)
                .observe(resp_bytes as f64);
        }
    }
}

/// The four request metrics' series of one label set, resolved once: recording into
/// them neither hashes nor compares labels.
#[derive(Debug, Clone)]
pub struct Series {
    requests: Counter,
    duration: Histogram,
    request_bytes: Histogram,
    response_bytes: Histogram,
}

impl Series {
    pub fn record(&self, duration_ms: f64, req_bytes: u64, resp_bytes: u64) {
        self.requests.inc();
        self.duration.observe(duration_ms);
        self.request_bytes.observe(req_bytes as f64);
        self.response_bytes.observe(resp_bytes as f64);
    }
}

impl Metrics {
    /// The series of `labels` in each metric family (created when new).
    pub fn series(&self, labels: &RequestLabels) -> Series {
        Series {
            requests: self.requests.get_or_create(labels).clone(),
            duration: self.duration.get_or_create(labels).clone(),
            request_bytes: self.request_bytes.get_or_create(labels).clone(),
            response_bytes: self.response_bytes.get_or_create(labels).clone(),
        }
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

    #[test]
    fn series_record_into_the_families() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg);
        let labels = RequestLabels {
            response_code: "200".into(),
            ..Default::default()
        };
        let s = m.series(&labels);
        s.record(2.0, 5, 7);
        s.record(2.0, 5, 7);
        m.record(&labels, 2.0, 5, 7);
        assert_eq!(m.requests.get_or_create(&labels).get(), 3);
        let text = render(&reg);
        let sum = text
            .lines()
            .find(|l| l.starts_with("istio_request_bytes_sum{"))
            .unwrap_or_else(|| panic!("{text}"));
        assert!(sum.ends_with(" 15.0"), "{sum}");
    }

    #[test]
    fn labels_by_name() {
        let mut l = RequestLabels::default();
        for name in OWN_LABELS.iter().chain(&PeerLabels::NAMES) {
            assert!(RequestLabels::has_label(name));
            assert!(l.set_label(name, name.to_string()));
        }
        assert_eq!(l.response_code, "response_code");
        assert_eq!(l.connection_security_policy, "connection_security_policy");
        assert!(!l.set_label("brand_new", "x".into()));
    }

    #[test]
    fn disabled_metrics_are_not_recorded() {
        let mut reg = Registry::default();
        let m = Metrics::new(&mut reg);
        let l = Arc::new(RequestLabels::default());
        m.record_each(&[None, Some(l.clone()), None, Some(l)], 1.0, 1, 1);
        let text = render(&reg);
        assert!(!text.contains("istio_requests_total{"), "{text}");
        assert!(!text.contains("istio_request_bytes_count{"), "{text}");
        assert!(text.contains("istio_request_duration_milliseconds_count{"));
        assert!(text.contains("istio_response_bytes_count{"));
    }
}

//! Turns one finished exchange into what is reported about it: Istio's request metrics
//! (through the label cache, or per metric when a Telemetry resource changes them), the
//! access log line and the server span, all recorded when the response body ends.

use std::borrow::Cow;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;

use http::Response;
use http_body_util::BodyExt;
use meshwork_metrics::{security_policy, Peer, PeerLabels};
use meshwork_model::view::PeerName;
use tokio::time::Instant;

use crate::body::Body;
use crate::config::Compiled;
use crate::request::conn::ConnContext;
use crate::request::exchange::{Exchange, LoggedRequest};
use crate::telemetry::access_log::{humantime, AccessLog, Entry};
use crate::telemetry::label_cache::LabelQuery;
use crate::telemetry::metrics::{Metrics, RequestLabels, Series};
use crate::telemetry::tracing::{Active, Attributes};
use crate::tracked::Tracked;

/// How a request's metrics are recorded.
enum Record {
    /// The standard labels' cached series.
    Series(Series),
    /// Each metric with its own labels (`None`: disabled).
    PerMetric(Metrics, [Option<Arc<RequestLabels>>; 4]),
}

/// The request as it arrived, for its report.
pub(crate) struct Arrival {
    pub start: Instant,
    pub wall: std::time::SystemTime,
    /// Request body bytes received so far (complete when the response ends).
    pub received: Arc<AtomicU64>,
    /// The access log's request fields, when a log line may be written.
    pub logged: Option<LoggedRequest>,
    pub request_id: String,
    pub grpc: bool,
}

/// Where a finished exchange is reported.
pub(crate) struct Sinks<'s> {
    pub metrics: &'s Metrics,
    pub access_log: &'s AccessLog,
}

/// Wraps `resp`'s body so that, when it ends, the exchange's metrics, access log line and
/// server span are recorded.
pub(crate) fn on_response_end(
    resp: Response<Body>,
    mut ex: Exchange<'_>,
    cfg: &Compiled,
    conn: &ConnContext,
    sinks: Sinks<'_>,
    arrival: Arrival,
) -> Response<Body> {
    let status = resp.status().as_u16();
    if arrival.grpc {
        ex.grpc_status = resp
            .headers()
            .get(&crate::request::headers::GRPC_STATUS)
            .and_then(|v| v.to_str().ok())
            .unwrap_or("")
            .to_string();
    }
    let protocol = if arrival.grpc { "grpc" } else { "http" };
    let (labels, series) = labels_and_series(cfg, conn, &ex, sinks.metrics, status, protocol);
    let trace = ex.trace.take().filter(Active::is_reported).map(|t| {
        let (attrs, name) = server_span(&mut ex, &labels);
        (t, attrs, name)
    });
    let mut cel = ex.cel.take();
    if let Some(c) = cel.as_mut() {
        c.response_code = status;
    }
    let log = match &ex.telemetry {
        Some(t) if !t.should_log(cel.as_ref()) => AccessLog::Off,
        _ => sinks.access_log.clone(),
    };
    let record = match (&ex.telemetry, series) {
        (Some(t), _) if !t.standard_metrics() => {
            Record::PerMetric(sinks.metrics.clone(), t.labels(&labels, cel.as_ref()))
        }
        (_, Some(s)) => Record::Series(s),
        (_, None) => Record::PerMetric(
            sinks.metrics.clone(),
            std::array::from_fn(|_| Some(labels.clone())),
        ),
    };
    let Arrival {
        start,
        wall,
        received,
        logged,
        request_id,
        ..
    } = arrival;
    let mut entry = match (logged, log.enabled()) {
        (Some(r), true) => Some(log_entry(r, &mut ex, conn, status, wall, request_id)),
        _ => None,
    };
    let (parts, b) = resp.into_parts();
    let b = Tracked::new(b).on_done(move |sent, _complete| {
        let elapsed = start.elapsed();
        let received = received.load(Ordering::Relaxed);
        let ms = elapsed.as_secs_f64() * 1000.0;
        match &record {
            Record::Series(s) => s.record(ms, received, sent),
            Record::PerMetric(m, labels) => m.record_each(labels, ms, received, sent),
        }
        if let Some(entry) = entry.as_mut() {
            entry.bytes_received = received;
            entry.bytes_sent = sent;
            entry.duration_ms = elapsed.as_millis() as u64;
            log.write(entry);
        }
        if let Some((t, attrs, name)) = &trace {
            t.end_server(name.clone(), status, attrs);
        }
    });
    Response::from_parts(parts, b.boxed())
}

/// The exchange's metric labels, shared by the four metrics (a Telemetry tag override
/// copies only what it changes), with their cached series when every metric is reported
/// with the standard labels, unless the service was made up for this one request.
fn labels_and_series(
    cfg: &Compiled,
    conn: &ConnContext,
    ex: &Exchange<'_>,
    metrics: &Metrics,
    status: u16,
    protocol: &'static str,
) -> (Arc<RequestLabels>, Option<Series>) {
    let make_labels = || request_labels(cfg, conn, ex, status, protocol);
    let standard = ex.telemetry.as_ref().is_none_or(|t| t.standard_metrics());
    let query = match &ex.service {
        Some(Cow::Owned(_)) => None,
        _ if !standard => None,
        s => Some(LabelQuery {
            source: conn.source.map(|s| s.ip()),
            source_identity: conn.source_identity.as_deref(),
            upstream: ex.upstream.as_ref(),
            service: s.as_deref(),
            protocol,
            status,
            grpc_status: &ex.grpc_status,
            flags: &ex.flags,
        }),
    };
    match query {
        Some(q) => {
            let l = cfg
                .labels
                .get_or_insert_with(q, make_labels, |l| metrics.series(l));
            (l.labels, Some(l.series))
        }
        None => (Arc::new(make_labels()), None),
    }
}

/// The standard Istio labels of a finished exchange.
fn request_labels(
    cfg: &Compiled,
    conn: &ConnContext,
    ex: &Exchange,
    status: u16,
    protocol: &str,
) -> RequestLabels {
    let src = conn
        .source
        .and_then(|s| cfg.snapshot.workload_by_ip(s.ip()))
        .map(PeerName::of);
    let dst = ex.upstream.as_ref();
    let peers = PeerLabels::new(
        Peer {
            name: src.as_ref(),
            principal: conn.source_identity.as_deref(),
        },
        Peer {
            name: dst.map(|d| &d.name),
            principal: dst.and_then(|d| d.identity.as_deref()),
        },
        ex.service.as_deref(),
    );
    RequestLabels {
        reporter: "waypoint".into(),
        peers,
        request_protocol: protocol.into(),
        response_code: status.to_string(),
        grpc_response_status: ex.grpc_status.clone(),
        response_flags: ex.flags.render(),
        connection_security_policy: security_policy(conn.source_identity.is_some()).into(),
    }
}

/// The server span's attributes (the request's, completed with the metric labels) and
/// its name, `<service hostname>:<port>/*`.
fn server_span(ex: &mut Exchange<'_>, labels: &RequestLabels) -> (Attributes, String) {
    let mut attrs = std::mem::take(&mut ex.span_attrs);
    attrs.response_flags = labels.response_flags.clone();
    attrs.upstream_cluster = ex
        .cluster
        .as_ref()
        .map(|c| c.name.clone())
        .unwrap_or_default();
    attrs.source_workload = labels.peers.source_workload.clone();
    attrs.source_namespace = labels.peers.source_workload_namespace.clone();
    attrs.source_principal = labels.peers.source_principal.clone();
    attrs.destination_workload = labels.peers.destination_workload.clone();
    attrs.destination_namespace = labels.peers.destination_workload_namespace.clone();
    attrs.destination_principal = labels.peers.destination_principal.clone();
    attrs.destination_service = labels.peers.destination_service.clone();
    let host = ex.service.as_ref().map_or("", |s| s.hostname.as_str());
    (attrs, format!("{host}:{}/*", ex.port))
}

/// The access log entry of a finished exchange (its byte counts and duration are added
/// when the response body ends).
fn log_entry(
    r: LoggedRequest,
    ex: &mut Exchange<'_>,
    conn: &ConnContext,
    status: u16,
    wall: std::time::SystemTime,
    request_id: String,
) -> Entry {
    // The path that was authorized and routed; the received one beside it when different.
    let (path, original_path) = match ex.normalized_path.take() {
        Some(n) if n != r.path => (n, r.path),
        _ => (r.path, String::new()),
    };
    Entry {
        start_time: humantime(wall),
        method: r.method,
        path,
        original_path,
        protocol: r.protocol.to_string(),
        response_code: status,
        response_flags: ex.flags.render(),
        response_code_details: ex.details.clone(),
        upstream_host: ex
            .upstream
            .as_ref()
            .map(|u| u.addr.to_string())
            .unwrap_or_default(),
        upstream_cluster: ex
            .cluster
            .as_ref()
            .map(|c| c.name.clone())
            .unwrap_or_default(),
        route_name: std::mem::take(&mut ex.route),
        authority: r.authority,
        downstream_remote_address: conn.source.map(|s| s.to_string()).unwrap_or_default(),
        source_principal: conn.source_identity.clone().unwrap_or_default(),
        request_id,
        user_agent: r.user_agent,
        attempts: ex.attempts,
        authz_policy: ex.policy.clone(),
        ..Default::default()
    }
}

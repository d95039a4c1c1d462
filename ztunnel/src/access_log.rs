//! One access-log line per connection (target `access`), rendered by the configured log
//! format (plain key=value or JSON). Inbound HBONE lines also carry `trace_id`, `span_id`
//! and `sampled` when the CONNECT had a valid W3C `traceparent` (see [`crate::tracecontext`]).

use std::net::SocketAddr;
use std::time::Duration;

use crate::tracecontext::TraceContext;

/// Everything logged about one connection.
#[derive(Debug, Clone, Default)]
pub struct Record {
    pub direction: &'static str,
    pub src_addr: Option<SocketAddr>,
    pub dst_addr: String,
    pub src_identity: Option<String>,
    pub dst_identity: Option<String>,
    pub src_workload: Option<String>,
    pub dst_workload: Option<String>,
    pub dst_service: Option<String>,
    pub via: &'static str,
    pub sent: u64,
    pub received: u64,
    pub duration: Duration,
    /// allow / deny, with reason and policy.
    pub decision: String,
    pub error: Option<String>,
    /// W3C trace context the peer sent with the HBONE CONNECT (inbound only).
    pub trace: Option<TraceContext>,
}

#[derive(Debug, Clone, Copy)]
pub struct AccessLog {
    pub enabled: bool,
}

fn opt(s: &Option<String>) -> &str {
    s.as_deref().unwrap_or("-")
}

impl AccessLog {
    pub fn log(&self, r: &Record) {
        if !self.enabled {
            return;
        }
        tracing::info!(
            target: "access",
            direction = r.direction,
            src.addr = %r.src_addr.map(|a| a.to_string()).unwrap_or_else(|| "-".into()),
            src.identity = opt(&r.src_identity),
            src.workload = opt(&r.src_workload),
            dst.addr = %r.dst_addr,
            dst.identity = opt(&r.dst_identity),
            dst.workload = opt(&r.dst_workload),
            dst.service = opt(&r.dst_service),
            via = r.via,
            bytes_sent = r.sent,
            bytes_received = r.received,
            duration_ms = r.duration.as_millis() as u64,
            decision = %r.decision,
            error = opt(&r.error),
            // Recorded only when the CONNECT carried a valid `traceparent`.
            trace_id = r.trace.as_ref().map(|t| t.trace_id.as_str()),
            span_id = r.trace.as_ref().map(|t| t.span_id.as_str()),
            sampled = r.trace.as_ref().map(|t| t.sampled),
            tracestate = r.trace.as_ref().map(|t| t.has_tracestate),
            baggage = r.trace.as_ref().map(|t| t.has_baggage),
            "connection complete"
        );
    }
}

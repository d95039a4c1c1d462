//! Spans the waypoint records, and their OTLP form.

use std::time::{SystemTime, UNIX_EPOCH};

use super::otlp::common::v1::{any_value, AnyValue, KeyValue};
use super::otlp::trace::v1::{span::SpanKind, status::StatusCode, Span as OtlpSpan, Status};
use super::tracecontext::{SpanId, TraceId};

#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Kind {
    Server,
    Client,
}

/// A finished (or finishing) span.
#[derive(Debug, Clone)]
pub struct Span {
    pub trace_id: TraceId,
    pub span_id: SpanId,
    pub parent: Option<SpanId>,
    pub tracestate: Option<String>,
    pub name: String,
    pub kind: Kind,
    pub start: SystemTime,
    pub end: SystemTime,
    pub attributes: Vec<(String, String)>,
    /// HTTP status (0: none); 5xx (or none) marks the span as an error.
    pub status: u16,
}

impl Span {
    pub fn attr(&mut self, k: &str, v: impl Into<String>) {
        self.attributes.push((k.to_string(), v.into()));
    }

    /// Cuts the values of the attributes named `keys` to at most `max` bytes (on a
    /// character boundary).
    pub fn limit_values(&mut self, keys: &[&str], max: usize) {
        for (k, v) in &mut self.attributes {
            if keys.contains(&k.as_str()) && v.len() > max {
                let mut end = max;
                while !v.is_char_boundary(end) {
                    end -= 1;
                }
                v.truncate(end);
            }
        }
    }

    pub fn to_otlp(&self) -> OtlpSpan {
        let nanos = |t: SystemTime| {
            t.duration_since(UNIX_EPOCH)
                .map(|d| d.as_nanos() as u64)
                .unwrap_or(0)
        };
        let mut attributes: Vec<KeyValue> = self
            .attributes
            .iter()
            .map(|(k, v)| kv(k, any_value::Value::StringValue(v.clone())))
            .collect();
        if self.status != 0 {
            for k in ["http.status_code", "http.response.status_code"] {
                attributes.push(kv(k, any_value::Value::IntValue(i64::from(self.status))));
            }
        }
        let error = self.status == 0 || self.status >= 500;
        OtlpSpan {
            trace_id: self.trace_id.to_vec(),
            span_id: self.span_id.to_vec(),
            trace_state: self.tracestate.clone().unwrap_or_default(),
            parent_span_id: self.parent.map(|p| p.to_vec()).unwrap_or_default(),
            // W3C sampled flag.
            flags: 1,
            name: self.name.clone(),
            kind: match self.kind {
                Kind::Server => SpanKind::Server,
                Kind::Client => SpanKind::Client,
            } as i32,
            start_time_unix_nano: nanos(self.start),
            end_time_unix_nano: nanos(self.end.max(self.start)),
            attributes,
            status: Some(Status {
                message: String::new(),
                code: if error {
                    StatusCode::Error
                } else {
                    StatusCode::Unset
                } as i32,
            }),
            ..Default::default()
        }
    }
}

pub fn kv(k: &str, v: any_value::Value) -> KeyValue {
    KeyValue {
        key: k.to_string(),
        value: Some(AnyValue { value: Some(v) }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::time::Duration;

    #[test]
    fn otlp_form() {
        let start = UNIX_EPOCH + Duration::from_secs(10);
        let mut s = Span {
            trace_id: [1; 16],
            span_id: [2; 8],
            parent: Some([3; 8]),
            tracestate: Some("a=b".into()),
            name: "order.shop.svc.cluster.local:80/*".into(),
            kind: Kind::Server,
            start,
            end: start + Duration::from_millis(5),
            attributes: vec![],
            status: 503,
        };
        s.attr("component", "proxy");
        let o = s.to_otlp();
        assert_eq!(o.trace_id, vec![1; 16]);
        assert_eq!(o.parent_span_id, vec![3; 8]);
        assert_eq!(o.kind, SpanKind::Server as i32);
        assert_eq!(o.end_time_unix_nano - o.start_time_unix_nano, 5_000_000);
        assert_eq!(o.status.unwrap().code, StatusCode::Error as i32);
        assert_eq!(o.trace_state, "a=b");
        let code = o
            .attributes
            .iter()
            .find(|a| a.key == "http.response.status_code")
            .and_then(|a| a.value.clone())
            .and_then(|v| v.value);
        assert_eq!(code, Some(any_value::Value::IntValue(503)));
        s.attr("url.path", "é".repeat(10));
        s.limit_values(&["url.path", "component"], 5);
        assert_eq!(s.attributes.last().unwrap().1, "éé");
        assert_eq!(s.attributes[0].1, "proxy");
        s.limit_values(&["other"], 1);
        assert_eq!(s.attributes.last().unwrap().1, "éé");
        s.status = 200;
        s.parent = None;
        let o = s.to_otlp();
        assert!(o.parent_span_id.is_empty());
        assert_eq!(o.status.unwrap().code, StatusCode::Unset as i32);
    }
}

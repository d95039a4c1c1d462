//! W3C Trace Context seen on inbound HBONE CONNECTs, for the access log.
//!
//! A waypoint (or any HBONE client) may send `traceparent`, `tracestate` and `baggage`
//! on the CONNECT request. The ztunnel records the trace id, parent span id and sampled
//! flag of a well-formed `traceparent` in that connection's access-log line, so an L4
//! hop can be joined with the waypoint's spans.
//!
//! Scope, on purpose:
//! - Inbound only. The ztunnel is L4: outbound connections come from applications as
//!   plain TCP (captured or SOCKS5) and it does not parse HTTP, so there is no context to
//!   read or propagate on outbound. Inbound HBONE ends at the pod as plain TCP, so there
//!   is no later HBONE hop on which to relay headers either.
//! - The ztunnel does not start spans of its own; it only reports what it was given.
//! - A malformed `traceparent` is ignored (logged at debug); it never refuses the
//!   connection. `tracestate` and `baggage` are only meaningful with a valid
//!   `traceparent`, so their presence is reported only then.

use http::HeaderMap;

pub use meshwork_runtime::tracecontext::TraceparentError;
use meshwork_runtime::tracecontext::{hex, parse_traceparent};

/// Trace context parsed from CONNECT request headers.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct TraceContext {
    /// 32 lowercase hex digits, not all zero.
    pub trace_id: String,
    /// The caller's span (the parent of anything done for this request): 16 lowercase
    /// hex digits, not all zero.
    pub span_id: String,
    /// The `sampled` bit of the trace flags.
    pub sampled: bool,
    /// A `tracestate` header was present.
    pub has_tracestate: bool,
    /// A `baggage` header was present.
    pub has_baggage: bool,
}

/// Reads the trace context of CONNECT request `headers`: `Ok(None)` when there is no
/// `traceparent`, an error when it is malformed.
pub fn from_headers(headers: &HeaderMap) -> Result<Option<TraceContext>, TraceparentError> {
    let mut values = headers.get_all("traceparent").iter();
    let Some(first) = values.next() else {
        return Ok(None);
    };
    let rest = values.count();
    if rest > 0 {
        return Err(TraceparentError::Repeated(rest + 1));
    }
    let v = first.to_str().map_err(|_| TraceparentError::NotAscii)?;
    let tp = parse_traceparent(v)?;
    Ok(Some(TraceContext {
        trace_id: hex(&tp.trace_id),
        span_id: hex(&tp.parent_id),
        sampled: tp.sampled(),
        has_tracestate: headers.contains_key("tracestate"),
        has_baggage: headers.contains_key("baggage"),
    }))
}

/// [`from_headers`] for the access log: a malformed header is logged at debug and
/// ignored.
pub fn for_access_log(headers: &HeaderMap, authority: &str) -> Option<TraceContext> {
    match from_headers(headers) {
        Ok(tc) => tc,
        Err(e) => {
            tracing::debug!(%authority, error = %e, "hbone: ignoring malformed trace context");
            None
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn reads_headers() {
        let mut h = HeaderMap::new();
        assert_eq!(from_headers(&h), Ok(None));
        h.insert("tracestate", "vendor=x".parse().unwrap());
        assert_eq!(from_headers(&h), Ok(None), "tracestate alone is no context");
        h.insert("traceparent", GOOD.replace("-01", "-00").parse().unwrap());
        let tc = from_headers(&h).unwrap().unwrap();
        assert_eq!(tc.trace_id, "4bf92f3577b34da6a3ce929d0e0e4736");
        assert!(!tc.sampled);
        assert!(tc.has_tracestate);
        assert!(!tc.has_baggage);
        h.insert("baggage", "k=v".parse().unwrap());
        assert!(from_headers(&h).unwrap().unwrap().has_baggage);
        h.append("traceparent", GOOD.parse().unwrap());
        assert_eq!(from_headers(&h), Err(TraceparentError::Repeated(2)));
        assert_eq!(for_access_log(&h, "10.0.0.1:80"), None);
        let mut h = HeaderMap::new();
        h.insert("traceparent", "garbage".parse().unwrap());
        assert_eq!(for_access_log(&h, "10.0.0.1:80"), None);
    }
}

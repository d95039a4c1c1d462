//! Header operations from VirtualService `headers`: remove, then set, then add.

use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use meshwork_model::pb::config as pb;
use tracing::warn;

/// The request id header the waypoint adds when a request has none.
pub const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
/// gRPC's status, in a response's headers or trailers.
pub const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

/// Whether the request (or response) is gRPC, by its content type.
pub fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

/// The `User-Agent` header as text (`""` when absent or not text).
pub fn user_agent(headers: &HeaderMap) -> String {
    headers
        .get(header::USER_AGENT)
        .and_then(|v| v.to_str().ok())
        .unwrap_or("")
        .to_string()
}

/// Applies one set of operations. Invalid names or values are skipped with a warning.
pub fn apply(ops: Option<&pb::HeaderOps>, headers: &mut HeaderMap) {
    let Some(ops) = ops else { return };
    for name in &ops.remove {
        headers.remove(name.as_str());
    }
    let parse = |k: &str, v: &str| -> Option<(HeaderName, HeaderValue)> {
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(n), Ok(v)) => Some((n, v)),
            _ => {
                warn!(
                    header = k,
                    "skipping header operation with an invalid name or value"
                );
                None
            }
        }
    };
    for (k, v) in &ops.set {
        if let Some((n, v)) = parse(k, v) {
            headers.insert(n, v);
        }
    }
    for (k, v) in &ops.add {
        if let Some((n, v)) = parse(k, v) {
            headers.append(n, v);
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn order_remove_set_add() {
        let mut h = HeaderMap::new();
        h.insert("x-a", "1".parse().unwrap());
        h.insert("x-b", "1".parse().unwrap());
        h.insert("x-c", "1".parse().unwrap());
        let ops = pb::HeaderOps {
            set: [("x-a".to_string(), "2".to_string())].into(),
            add: [
                ("x-b".to_string(), "2".to_string()),
                ("bad header".to_string(), "v".to_string()),
            ]
            .into(),
            remove: vec!["x-c".into()],
        };
        apply(Some(&ops), &mut h);
        assert_eq!(h.get_all("x-a").iter().count(), 1);
        assert_eq!(h["x-a"], "2");
        assert_eq!(h.get_all("x-b").iter().count(), 2);
        assert!(h.get("x-c").is_none());
        apply(None, &mut h);
    }
}

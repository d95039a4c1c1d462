//! The WasmPlugin stage: the plugins [`crate::wasm::select`] picked run their request
//! callbacks (headers, then the body) in order, and, once the rest of the path has answered,
//! their response callbacks in reverse order, as Envoy runs its decoder and encoder filters.
//!
//! The callbacks are async and take owned data: the request's headers as a proxy-wasm
//! header map (pseudo-headers first) and its body bytes; they return the changed map and
//! body, or the reply that ends the request. [`apply_request`] and [`apply_response`] write
//! the changes back outside the plugin calls.
//!
//! Bodies are buffered: a body whose size is known and at most the waypoint's buffer limit
//! is read in full and handed to `on_http_request_body` / `on_http_response_body` once,
//! with end of stream. A larger or unsized body streams through without body callbacks.
//! Trailers are not given to plugins.
//!
//! Failures follow `failStrategy`: a plugin that did not load, could not start a stream or
//! trapped fails its request with 503 (Envoy's `wasm_fail_stream`) under FAIL_CLOSE, and is
//! skipped for that request under FAIL_OPEN. A trapped instance is replaced by the host, so
//! the next request runs again.

// A stage that answers the request itself returns the reply as its `Err`: once per request,
// moved, never copied in a loop, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::collections::HashMap;
use std::sync::Arc;

use bytes::Bytes;
use futures::StreamExt;
use http::request::Parts;
use http::{HeaderName, HeaderValue, Method, Response, StatusCode, Uri};
use http_body_util::{BodyExt, Limited};
use meshwork_wasm::host::{HeaderMap, LocalResponse, Stream, Value, Verdict};
use tracing::debug;

use crate::body::{self, Body};
use crate::config::WaypointId;
use crate::request::conn::ConnContext;
use crate::request::exchange::Exchange;
use crate::tracked::Tracked;
use crate::wasm::{Loaded, FAIL_STATUS};

/// A plugin whose request callbacks ran: its stream takes the response callbacks.
pub(crate) struct Running {
    name: String,
    fail_open: bool,
    stream: Stream,
}

/// Why the stage ended the request: the reply, and the access log's response details.
pub(crate) struct Stop {
    pub response: Response<Body>,
    pub details: String,
}

impl Stop {
    /// The reply, with its details noted for the access log.
    pub fn reply(self, ex: &mut Exchange<'_>) -> Response<Body> {
        ex.details = self.details;
        self.response
    }
}

/// A request body as the stage holds it.
pub(crate) enum ReqBody {
    /// None at all (the headers ended the stream).
    Empty,
    /// Read in full.
    Buffered(Bytes),
    /// Larger than the limit (or ending in trailers): passed on without body callbacks.
    Streamed(Box<Tracked>),
}

fn body_failed(e: impl std::fmt::Display) -> Stop {
    Stop {
        response: crate::request::local_reply::text(
            StatusCode::BAD_REQUEST,
            "request body failed\n",
        ),
        details: format!("downstream_body_failed: {e}"),
    }
}

impl ReqBody {
    /// Reads `b` in full when it is at most `max` bytes. A body without a declared size
    /// (chunked HTTP/1.1, HTTP/2 without content-length) is read up to `max` too, so a
    /// client cannot keep a small body from the plugins by leaving its length out.
    pub async fn read(b: Tracked, max: usize) -> Result<ReqBody, Stop> {
        use hyper::body::Body as _;
        if b.is_end_stream() {
            return Ok(ReqBody::Empty);
        }
        match b.size_hint().upper() {
            Some(n) if n <= max as u64 => match Limited::new(b, max).collect().await {
                Ok(c) => Ok(ReqBody::Buffered(c.to_bytes())),
                Err(e) => Err(body_failed(e)),
            },
            Some(_) => Ok(ReqBody::Streamed(Box::new(b))),
            None => Self::read_unsized(b, max).await,
        }
    }

    /// Up to `max` bytes of an unsized body; past that (or at trailers) the frames read so
    /// far go on ahead of the rest of the stream.
    async fn read_unsized(mut b: Tracked, max: usize) -> Result<ReqBody, Stop> {
        use hyper::body::Frame;
        let mut buf = bytes::BytesMut::new();
        loop {
            let Some(frame) = b.frame().await else {
                return Ok(ReqBody::Buffered(buf.freeze()));
            };
            let frame = frame.map_err(body_failed)?;
            let mut head: Vec<Result<Frame<Bytes>, crate::body::BoxError>> = Vec::new();
            match frame.into_data() {
                Ok(d) => {
                    buf.extend_from_slice(&d);
                    if buf.len() <= max {
                        continue;
                    }
                    head.push(Ok(Frame::data(buf.freeze())));
                }
                Err(trailers) => {
                    head.push(Ok(Frame::data(buf.freeze())));
                    head.push(Ok(trailers));
                }
            }
            let rest = http_body_util::BodyStream::new(b);
            let chained = http_body_util::StreamBody::new(futures::stream::iter(head).chain(rest));
            return Ok(ReqBody::Streamed(Box::new(Tracked::new(body::boxed(
                chained,
            )))));
        }
    }

    /// The body for the rest of the path.
    pub fn into_tracked(self) -> Tracked {
        match self {
            ReqBody::Empty => Tracked::new(body::empty()),
            ReqBody::Buffered(b) => Tracked::new(body::full(b)),
            ReqBody::Streamed(t) => *t,
        }
    }
}

/// What the request callbacks of one group of plugins decided.
pub(crate) enum Outcome {
    Continue { headers: HeaderMap, body: ReqBody },
    Stop(Stop),
}

/// The properties a stream knows about its connection (`source.*`, `destination.*`,
/// `connection.*`); `request.*` comes from the headers.
pub(crate) fn attributes(
    conn: &ConnContext,
    port: u16,
    request_id: &str,
) -> Arc<HashMap<String, Value>> {
    let mut a = HashMap::new();
    if let Some(s) = conn.source {
        a.insert("source.address".into(), Value::Str(s.to_string()));
        a.insert("source.port".into(), Value::Int(i64::from(s.port())));
    }
    if let Some(d) = conn.destination {
        a.insert("destination.address".into(), Value::Str(d.to_string()));
    }
    a.insert("destination.port".into(), Value::Int(i64::from(port)));
    if let Some(p) = &conn.source_identity {
        a.insert("source.principal".into(), Value::Str(p.clone()));
        a.insert(
            "connection.uri_san_peer_certificate".into(),
            Value::Str(p.clone()),
        );
    }
    a.insert(
        "connection.mtls".into(),
        Value::Bool(conn.source_identity.is_some()),
    );
    a.insert("request.id".into(), Value::Str(request_id.to_string()));
    Arc::new(a)
}

/// `node.*` properties: the waypoint's proxy id and its Gateway.
pub(crate) fn node_properties(w: &WaypointId) -> HashMap<String, Value> {
    HashMap::from([
        (
            "node.id".to_string(),
            Value::Str(format!("waypoint~{}~{}", w.namespace, w.name)),
        ),
        (
            "node.metadata.NAMESPACE".to_string(),
            Value::Str(w.namespace.clone()),
        ),
        (
            "node.metadata.WORKLOAD_NAME".to_string(),
            Value::Str(w.name.clone()),
        ),
    ])
}

/// One group of plugins (those before, or after, the waypoint's authorization) on the
/// request: its head as a header map, its body read when it fits `max`, the callbacks
/// ([`on_request`]), then the changes written back. Owned in, owned out: the plugins that
/// ran join `chain`.
pub(crate) async fn extend(
    plugins: Vec<Arc<Loaded>>,
    attrs: Option<Arc<HashMap<String, Value>>>,
    mut parts: Parts,
    body: Tracked,
    authority: String,
    max: usize,
    chain: Vec<Running>,
) -> (Vec<Running>, Result<(Parts, Tracked), Stop>) {
    let (false, Some(attrs)) = (plugins.is_empty(), attrs) else {
        return (chain, Ok((parts, body)));
    };
    let body = match ReqBody::read(body, max).await {
        Ok(b) => b,
        Err(stop) => return (chain, Err(stop)),
    };
    let before = request_headers(&parts, &authority);
    let (chain, outcome) = on_request(plugins, attrs, before.clone(), body, chain).await;
    match outcome {
        Outcome::Stop(stop) => (chain, Err(stop)),
        Outcome::Continue { headers, body } => {
            let changed_len = matches!(&body, ReqBody::Buffered(_));
            apply_request(&mut parts, &before, &headers);
            if changed_len {
                // The plugin may have changed the body: the length is the new body's.
                parts.headers.remove(http::header::CONTENT_LENGTH);
            }
            (chain, Ok((parts, body.into_tracked())))
        }
    }
}

/// The reply of a FAIL_CLOSE plugin that cannot run: 503, no body, as Envoy's.
fn failed(name: &str, why: &str) -> Stop {
    debug!(plugin = %name, "wasm plugin failed the request: {why}");
    let mut r = Response::new(body::empty());
    *r.status_mut() = StatusCode::from_u16(FAIL_STATUS).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
    Stop {
        response: r,
        details: "wasm_fail_stream".into(),
    }
}

/// A plugin's `send_local_response` as the reply.
fn local(name: &str, l: LocalResponse) -> Stop {
    let mut r = Response::new(body::full(l.body.clone()));
    *r.status_mut() = StatusCode::from_u16(l.status).unwrap_or(StatusCode::INTERNAL_SERVER_ERROR);
    let h = r.headers_mut();
    for (k, v) in &l.headers {
        if let (Ok(k), Ok(v)) = (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            h.append(k, v);
        }
    }
    if !l.body.is_empty() && !h.contains_key(http::header::CONTENT_TYPE) {
        h.insert(
            http::header::CONTENT_TYPE,
            HeaderValue::from_static("text/plain"),
        );
    }
    let details = if l.details.is_empty() {
        format!("wasm_local_reply: {name}")
    } else {
        l.details
    };
    Stop {
        response: r,
        details,
    }
}

/// Runs the request callbacks of `plugins` (headers for each, then the buffered body for
/// each), appending the plugins that ran to `chain`. Owned in, owned out.
pub(crate) async fn on_request(
    plugins: Vec<Arc<Loaded>>,
    attrs: Arc<HashMap<String, Value>>,
    mut headers: HeaderMap,
    mut body: ReqBody,
    mut chain: Vec<Running>,
) -> (Vec<Running>, Outcome) {
    let first = chain.len();
    for l in plugins {
        let name = l.name();
        let fail_open = l.fail_open();
        let stream = match &l.plugin {
            Ok(p) => p.stream(attrs.clone()).map_err(|e| e.to_string()),
            Err(e) => Err(e.clone()),
        };
        let mut stream = match stream {
            Ok(s) => s,
            Err(_) if fail_open => continue,
            Err(e) => return (chain, Outcome::Stop(failed(&name, &e))),
        };
        let eos = matches!(body, ReqBody::Empty);
        match stream.request_headers(headers.clone(), eos).await {
            Ok(Verdict::Continue(h)) => headers = h,
            Ok(Verdict::Respond(r)) => return (chain, Outcome::Stop(local(&name, r))),
            Err(_) if fail_open => continue,
            Err(e) => return (chain, Outcome::Stop(failed(&name, &e.to_string()))),
        }
        chain.push(Running {
            name,
            fail_open,
            stream,
        });
    }
    if let ReqBody::Buffered(bytes) = &mut body {
        let mut i = first;
        while i < chain.len() {
            let r = &mut chain[i];
            match r.stream.request_body(bytes.to_vec(), true).await {
                Ok(Verdict::Continue(b)) => *bytes = Bytes::from(b),
                Ok(Verdict::Respond(resp)) => {
                    let name = r.name.clone();
                    chain.truncate(i);
                    return (chain, Outcome::Stop(local(&name, resp)));
                }
                Err(_) if r.fail_open => {
                    chain.remove(i);
                    continue;
                }
                Err(e) => {
                    let name = r.name.clone();
                    chain.truncate(i);
                    return (chain, Outcome::Stop(failed(&name, &e.to_string())));
                }
            }
            i += 1;
        }
    }
    (chain, Outcome::Continue { headers, body })
}

/// Runs the response callbacks of `chain`, last plugin first, over the response; a plugin
/// that answers or fails closed replaces it.
pub(crate) async fn on_response(
    chain: Vec<Running>,
    resp: Response<Body>,
    max: usize,
) -> Response<Body> {
    use hyper::body::Body as _;
    let (mut parts, b) = resp.into_parts();
    let before = response_headers(&parts);
    let mut headers = before.clone();
    let eos = b.is_end_stream();
    let mut chain = chain;
    let mut ran: Vec<Running> = Vec::with_capacity(chain.len());
    while let Some(mut r) = chain.pop() {
        match r.stream.response_headers(headers.clone(), eos).await {
            Ok(Verdict::Continue(h)) => headers = h,
            Ok(Verdict::Respond(l)) => return local(&r.name, l).response,
            Err(_) if r.fail_open => continue,
            Err(e) => return failed(&r.name, &e.to_string()).response,
        }
        ran.push(r);
    }
    if headers != before {
        apply_response(&mut parts, &headers);
    }
    let fits = b.size_hint().upper().is_some_and(|n| n <= max as u64);
    if eos || !fits || ran.is_empty() {
        return Response::from_parts(parts, b);
    }
    // Through `Tracked`, whose error type is concrete: a boxed body's error inside this
    // future makes the compiler fail to prove the connection's future `Send`.
    let mut bytes = match Limited::new(Tracked::new(b), max).collect().await {
        Ok(c) => c.to_bytes(),
        Err(e) => {
            debug!("response body failed before the plugins' body callbacks: {e}");
            let mut r = Response::from_parts(parts, body::empty());
            *r.status_mut() = StatusCode::BAD_GATEWAY;
            return r;
        }
    };
    let before_len = bytes.len();
    for r in &mut ran {
        match r.stream.response_body(bytes.to_vec(), true).await {
            Ok(Verdict::Continue(b)) => bytes = Bytes::from(b),
            Ok(Verdict::Respond(l)) => return local(&r.name, l).response,
            Err(_) if r.fail_open => {}
            Err(e) => return failed(&r.name, &e.to_string()).response,
        }
    }
    if bytes.len() != before_len {
        parts.headers.remove(http::header::CONTENT_LENGTH);
    }
    Response::from_parts(parts, body::full(bytes))
}

/// The request head as a proxy-wasm header map: `:method`, `:scheme`, `:authority`,
/// `:path`, then the headers in order but `Host` (values that are not text are left out).
pub(crate) fn request_headers(parts: &Parts, authority: &str) -> HeaderMap {
    let mut m = Vec::with_capacity(parts.headers.len() + 4);
    m.push((":method".into(), parts.method.to_string()));
    m.push((
        ":scheme".into(),
        parts.uri.scheme_str().unwrap_or("http").to_string(),
    ));
    m.push((":authority".into(), authority.to_string()));
    m.push((
        ":path".into(),
        parts
            .uri
            .path_and_query()
            .map_or_else(|| "/".to_string(), |p| p.to_string()),
    ));
    push_headers(&mut m, &parts.headers, true);
    m
}

/// `skip_host`: `Host` is the `:authority` pseudo-header (Envoy shows plugins no `host`).
fn push_headers(m: &mut HeaderMap, h: &http::HeaderMap, skip_host: bool) {
    for (k, v) in h {
        if skip_host && k == http::header::HOST {
            continue;
        }
        if let Ok(v) = v.to_str() {
            m.push((k.as_str().to_string(), v.to_string()));
        }
    }
}

fn response_headers(parts: &http::response::Parts) -> HeaderMap {
    let mut m = Vec::with_capacity(parts.headers.len() + 1);
    m.push((":status".into(), parts.status.as_str().to_string()));
    push_headers(&mut m, &parts.headers, false);
    m
}

/// Headers of `m` (pseudo-headers left out) as an http header map; names or values HTTP
/// does not allow are dropped.
fn header_map(m: &HeaderMap) -> http::HeaderMap {
    let mut h = http::HeaderMap::with_capacity(m.len());
    for (k, v) in m {
        if k.starts_with(':') {
            continue;
        }
        match (
            HeaderName::from_bytes(k.as_bytes()),
            HeaderValue::from_str(v),
        ) {
            (Ok(k), Ok(v)) => {
                h.append(k, v);
            }
            _ => debug!(header = %k, "wasm plugin set a header HTTP does not allow; dropped"),
        }
    }
    h
}

fn pseudo<'m>(m: &'m HeaderMap, name: &str) -> Option<&'m str> {
    m.iter().find(|(k, _)| k == name).map(|(_, v)| v.as_str())
}

/// Writes a plugin-changed header map back into the request: method, path, authority
/// (`Host`) and the headers. Headers that were not text before stay as they were when
/// the plugin left the map's text headers alone.
pub(crate) fn apply_request(parts: &mut Parts, before: &HeaderMap, after: &HeaderMap) {
    if before == after {
        return;
    }
    if let Some(m) = pseudo(after, ":method").filter(|m| Some(*m) != pseudo(before, ":method")) {
        if let Ok(m) = Method::from_bytes(m.as_bytes()) {
            parts.method = m;
        }
    }
    if let Some(p) = pseudo(after, ":path").filter(|p| Some(*p) != pseudo(before, ":path")) {
        let mut up = parts.uri.clone().into_parts();
        match p.parse() {
            Ok(pq) => {
                up.path_and_query = Some(pq);
                if let Ok(u) = Uri::from_parts(up) {
                    parts.uri = u;
                }
            }
            Err(_) => debug!(path = %p, "wasm plugin set a :path that does not parse; ignored"),
        }
    }
    let authority =
        pseudo(after, ":authority").filter(|a| Some(*a) != pseudo(before, ":authority"));
    let strip = |m: &HeaderMap| -> Vec<(String, String)> {
        m.iter()
            .filter(|(k, _)| !k.starts_with(':'))
            .cloned()
            .collect()
    };
    if strip(before) != strip(after) {
        // Headers that were not text (not in the map) and Host are kept.
        let kept: Vec<(HeaderName, HeaderValue)> = parts
            .headers
            .iter()
            .filter(|(k, v)| v.to_str().is_err() || *k == http::header::HOST)
            .map(|(k, v)| (k.clone(), v.clone()))
            .collect();
        parts.headers = header_map(after);
        for (k, v) in kept {
            parts.headers.append(k, v);
        }
    }
    if let Some(a) = authority {
        if let Ok(v) = HeaderValue::from_str(a) {
            parts.headers.insert(http::header::HOST, v);
        }
        if parts.uri.authority().is_some() {
            let mut up = parts.uri.clone().into_parts();
            if let Ok(a) = a.parse() {
                up.authority = Some(a);
                if let Ok(u) = Uri::from_parts(up) {
                    parts.uri = u;
                }
            }
        }
    }
}

/// Writes a plugin-changed response header map back: `:status` and the headers.
fn apply_response(parts: &mut http::response::Parts, after: &HeaderMap) {
    if let Some(s) = pseudo(after, ":status").and_then(|s| s.parse::<u16>().ok()) {
        if let Ok(s) = StatusCode::from_u16(s) {
            parts.status = s;
        }
    }
    parts.headers = header_map(after);
}

#[cfg(test)]
mod tests {
    use super::*;

    fn parts(uri: &str, headers: &[(&str, &str)]) -> Parts {
        let mut b = http::Request::builder().uri(uri);
        for (k, v) in headers {
            b = b.header(*k, *v);
        }
        b.body(()).unwrap().into_parts().0
    }

    #[test]
    fn headers_round_trip_and_changes_apply() {
        let mut p = parts(
            "/old/x?q=1",
            &[("host", "orders"), ("x-a", "1"), ("x-drop", "y")],
        );
        let before = request_headers(&p, "orders");
        assert_eq!(
            &before[..4],
            &[
                (":method".to_string(), "GET".to_string()),
                (":scheme".to_string(), "http".to_string()),
                (":authority".to_string(), "orders".to_string()),
                (":path".to_string(), "/old/x?q=1".to_string()),
            ]
        );
        // Unchanged: nothing touched.
        apply_request(&mut p, &before, &before.clone());
        assert_eq!(p.uri, "/old/x?q=1");
        let mut after: HeaderMap = before
            .iter()
            .filter(|(k, _)| k != "x-drop")
            .cloned()
            .collect();
        for (k, v) in after.iter_mut() {
            if k == ":path" {
                *v = "/new/x?q=1".into();
            }
        }
        after.push(("x-added".into(), "1".into()));
        after.push(("bad header".into(), "1".into()));
        apply_request(&mut p, &before, &after);
        assert_eq!(p.uri, "/new/x?q=1");
        assert_eq!(p.headers["x-added"], "1");
        assert_eq!(p.headers["host"], "orders");
        assert!(p.headers.get("x-drop").is_none());
        assert_eq!(p.headers.len(), 3);
    }

    #[test]
    fn binary_headers_survive_a_change() {
        let mut p = parts("/", &[("x-a", "1")]);
        p.headers
            .insert("x-bin", HeaderValue::from_bytes(b"\xff\xfe").unwrap());
        let before = request_headers(&p, "h");
        assert!(!before.iter().any(|(k, _)| k == "x-bin"));
        let mut after = before.clone();
        after.push(("x-b".into(), "2".into()));
        apply_request(&mut p, &before, &after);
        assert_eq!(p.headers["x-b"], "2");
        assert_eq!(p.headers["x-bin"].as_bytes(), b"\xff\xfe");
    }

    #[test]
    fn local_replies() {
        let s = local(
            "ns/p",
            LocalResponse {
                status: 401,
                details: String::new(),
                headers: vec![("www-authenticate".into(), "ApiKey".into())],
                body: b"no\n".to_vec(),
                grpc_status: -1,
            },
        );
        assert_eq!(s.response.status(), 401);
        assert_eq!(s.response.headers()["www-authenticate"], "ApiKey");
        assert_eq!(s.response.headers()["content-type"], "text/plain");
        assert_eq!(s.details, "wasm_local_reply: ns/p");
        let f = failed("ns/p", "trap");
        assert_eq!(f.response.status(), 503);
        assert_eq!(f.details, "wasm_fail_stream");
    }

    /// A body of `chunks` with no declared size (chunked HTTP/1.1, HTTP/2 without
    /// content-length).
    fn no_length(chunks: &[&'static str]) -> Tracked {
        let frames: Vec<Result<hyper::body::Frame<Bytes>, crate::body::BoxError>> = chunks
            .iter()
            .map(|c| Ok(hyper::body::Frame::data(Bytes::from_static(c.as_bytes()))))
            .collect();
        Tracked::new(body::boxed(http_body_util::StreamBody::new(
            futures::stream::iter(frames),
        )))
    }

    #[tokio::test]
    async fn an_unsized_body_reaches_the_plugins_up_to_the_limit() {
        use hyper::body::Body as _;
        let b = no_length(&["hello ", "world"]);
        assert_eq!(b.size_hint().upper(), None);
        match ReqBody::read(b, 64).await {
            Ok(ReqBody::Buffered(bytes)) => assert_eq!(&bytes[..], b"hello world"),
            _ => panic!("a small unsized body is buffered for the plugins"),
        }
        // Past the limit it streams on, whole and in order.
        let body = match ReqBody::read(no_length(&["0123456789", "abcdef", "XYZ"]), 12).await {
            Ok(ReqBody::Streamed(t)) => *t,
            _ => panic!("a body past the limit streams"),
        };
        let all = body.collect().await.unwrap().to_bytes();
        assert_eq!(&all[..], b"0123456789abcdefXYZ");
    }
}

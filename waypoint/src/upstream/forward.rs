//! One request's trip upstream: the cluster of its destination, an endpoint picked by the
//! load balancer among the healthy ones (outlier detection), a try over a pooled
//! connection under the per-try timeout, retries by the route's policy, and the local reply
//! of a failed last try. Also the request body as it is sent (buffered when small, so a
//! retry or the mirror can replay it) and mirroring.

// A stage that answers the request itself returns the reply as its `Err`: once per request,
// moved, never copied in a loop, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use meshwork_model::pb::config as pb;
use rand::Rng;
use tokio::time::Instant;
use tracing::debug;

use crate::body::{self, Body};
use crate::config::Compiled;
use crate::request::conn::ConnContext;
use crate::request::exchange::Exchange;
use crate::request::flags;
use crate::request::headers::{is_grpc, GRPC_STATUS};
use crate::request::local_reply;
use crate::request::request_end::RequestEnd;
use crate::tracked::Tracked;
use crate::upstream::cluster::{self, Cluster, ClusterKey, Clusters};
use crate::upstream::endpoint::Endpoint;
use crate::upstream::outlier::Observation;
use crate::upstream::pool::{PoolError, Proto};
use crate::upstream::retry::{Attempt, RetryPolicy};

/// The request body, replayable when it was small enough to buffer.
pub(crate) enum ReqBody {
    Buffered(Bytes),
    Stream(Option<Body>),
}

impl ReqBody {
    fn take(&mut self) -> Option<Body> {
        match self {
            ReqBody::Buffered(b) => Some(body::full(b.clone())),
            ReqBody::Stream(s) => s.take(),
        }
    }

    fn replayable(&self) -> bool {
        matches!(self, ReqBody::Buffered(_))
    }
}

/// Outcome of the upstream phase.
pub(crate) struct Upstream {
    pub response: Response<Body>,
}

/// The request body, buffered when small, and when it has been received in full (now
/// when buffered; a streamed body is watched as it is sent upstream).
pub(crate) async fn buffer(b: Tracked, max_buffered_body: usize) -> (ReqBody, RequestEnd) {
    use hyper::body::Body as _;
    if b.is_end_stream() {
        return (ReqBody::Buffered(Bytes::new()), RequestEnd::now());
    }
    let max = max_buffered_body as u64;
    match b.size_hint().upper() {
        Some(n) if n <= max => match Limited::new(b, max as usize).collect().await {
            Ok(c) => (ReqBody::Buffered(c.to_bytes()), RequestEnd::now()),
            Err(e) => {
                debug!("request body failed: {e}");
                (ReqBody::Stream(None), RequestEnd::now())
            }
        },
        _ => {
            let end = RequestEnd::pending();
            (ReqBody::Stream(Some(b.with_end(end.clone()).boxed())), end)
        }
    }
}

/// What one request's tries share.
pub(crate) struct Trip<'r> {
    pub parts: &'r http::request::Parts,
    pub port: u16,
    pub end: &'r RequestEnd,
    pub retry: &'r RetryPolicy,
    pub conn: &'r ConnContext,
}

/// Sends the request to `dest`, retrying as the route's policy allows, and answers with
/// the upstream's response or the local reply of the last try's failure.
pub(crate) async fn forward<'a>(
    clusters: &Clusters,
    cfg: &'a Compiled,
    dest: &pb::Destination,
    trip: &Trip<'_>,
    reqbody: &mut ReqBody,
    ex: &mut Exchange<'a>,
) -> Upstream {
    let (cl, all) = match cluster_for(clusters, cfg, dest, trip.port, trip.parts, ex) {
        Ok(c) => c,
        Err(why) => return local(StatusCode::SERVICE_UNAVAILABLE, why),
    };
    let hash = affinity_hash(&cl, trip.parts, trip.conn, ex);
    let retry = trip.retry;
    let mut tried: Vec<SocketAddr> = Vec::new();
    let mut retry_slot = None;
    let retries = if reqbody.replayable() {
        retry.retries
    } else {
        0
    };
    let mut n = 0u32;
    loop {
        let ep = match pick_endpoint(&cl, &all, &tried, hash, ex) {
            Ok(ep) => ep,
            Err(reply) => return reply,
        };
        tried.push(ep.addr);
        ex.upstream = Some(ep.clone());
        ex.attempts = n + 1;
        let (attempt, resp) = match try_once(&cl, &ep, all.len(), trip, reqbody, ex).await {
            Ok(tried) => tried,
            Err(reply) => return reply,
        };
        let can_retry = n < retries && retry.on.should_retry(attempt);
        if can_retry {
            if retry_slot.is_none() {
                retry_slot = cl.pool.try_retry();
            }
            if retry_slot.is_some() {
                n += 1;
                debug!(attempt = n, ?attempt, upstream = %ep.addr, "retrying");
                drop(resp);
                let pause = retry.backoff(n, &mut rand::rng());
                tokio::time::sleep(pause).await;
                continue;
            }
            ex.flags.add(flags::RETRY_LIMIT);
        } else if n > 0 && retry.on.should_retry(attempt) {
            ex.flags.add(flags::RETRY_LIMIT);
        }
        return last_try(attempt, resp, ex);
    }
}

/// The endpoint of the next try: among the healthy ones (outlier detection), preferring
/// hosts not tried yet (Istio's previous-hosts retry predicate). `Err`: a 503.
fn pick_endpoint(
    cl: &Cluster,
    all: &cluster::Endpoints,
    tried: &[SocketAddr],
    hash: Option<u64>,
    ex: &mut Exchange<'_>,
) -> Result<Arc<Endpoint>, Upstream> {
    cl.lb.observe(&all[..]);
    let healthy: Cow<'_, [Arc<Endpoint>]> = match &cl.outlier {
        Some(o) => Cow::Owned(o.filter(all.to_vec(), |e| e.addr)),
        None => Cow::Borrowed(&all[..]),
    };
    if healthy.is_empty() {
        ex.flags.add(flags::NO_HEALTHY_UPSTREAM);
        ex.details = "no_healthy_upstream".into();
        return Err(local(
            StatusCode::SERVICE_UNAVAILABLE,
            "no healthy upstream",
        ));
    }
    let fresh: Vec<_> = if tried.is_empty() {
        Vec::new()
    } else {
        healthy
            .iter()
            .filter(|e| !tried.contains(&e.addr))
            .cloned()
            .collect()
    };
    let candidates = if fresh.is_empty() {
        healthy
    } else {
        Cow::Owned(fresh)
    };
    match cl.lb.pick(
        &candidates,
        hash,
        |a| cl.pool.active_on(a),
        &mut rand::rng(),
    ) {
        Some(ep) => Ok(ep),
        None => {
            ex.flags.add(flags::NO_HEALTHY_UPSTREAM);
            Err(local(
                StatusCode::SERVICE_UNAVAILABLE,
                "no healthy upstream",
            ))
        }
    }
}

/// One try against `ep`, with its client span and what outlier detection learns from it.
/// `Err`: the body is gone (streamed by an earlier try), a 503.
async fn try_once(
    cl: &Cluster,
    ep: &Endpoint,
    hosts: usize,
    trip: &Trip<'_>,
    reqbody: &mut ReqBody,
    ex: &mut Exchange<'_>,
) -> Result<(Attempt, Result<Response<Body>, String>), Upstream> {
    let Some(b) = reqbody.take() else {
        ex.flags.add(flags::UPSTREAM_RESET);
        return Err(local(
            StatusCode::SERVICE_UNAVAILABLE,
            "request body unavailable for retry",
        ));
    };
    let mut upstream_req = build_upstream(trip.parts, b, cl.proto, ep);
    let client_span = ex
        .trace
        .as_ref()
        .map(|t| t.begin_client(upstream_req.headers_mut()));
    let (attempt, resp) = attempt(cl, ep, upstream_req, trip.retry.per_try_timeout, trip.end).await;
    if let (Some(t), Some(c)) = (&ex.trace, client_span) {
        let status = match attempt {
            Attempt::Response { status, .. } => status,
            _ => 0,
        };
        let mut attrs = ex.span_attrs.clone();
        attrs.destination_workload = ep.name.workload.clone();
        attrs.destination_namespace = ep.name.namespace.clone();
        attrs.destination_principal = ep.identity.clone().unwrap_or_default();
        let cluster = ex.cluster.as_ref().map_or("", |c| c.name.as_str());
        t.end_client(c, cluster, &ep.addr.to_string(), status, &attrs);
    }
    if let Some(o) = &cl.outlier {
        let obs = match attempt {
            Attempt::Response { status, .. } => Some(Observation::Status(status)),
            Attempt::Overflow => None,
            _ => Some(Observation::LocalFailure),
        };
        if let Some(obs) = obs {
            o.record(ep.addr, obs, hosts);
        }
    }
    Ok((attempt, resp))
}

/// The answer of the last try: the upstream's response, or Envoy's local reply for its
/// failure.
fn last_try(
    attempt: Attempt,
    resp: Result<Response<Body>, String>,
    ex: &mut Exchange<'_>,
) -> Upstream {
    match resp {
        Ok(r) => Upstream { response: r },
        Err(e) => {
            let (status, flag, msg) = failure(attempt, &e);
            ex.flags.add(flag);
            ex.details = msg.clone();
            let mut response = local_reply::text(status, msg);
            if flag == flags::UPSTREAM_OVERFLOW {
                response
                    .headers_mut()
                    .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
            }
            Upstream { response }
        }
    }
}

/// The cluster a request to `dest` goes to, and its endpoints: the workload itself
/// for a request addressed to a pod IP, else the destination service's (subset)
/// cluster. `Err`: why there is none (a 503's body).
fn cluster_for<'a>(
    clusters: &Clusters,
    cfg: &'a Compiled,
    dest: &pb::Destination,
    port: u16,
    parts: &http::request::Parts,
    ex: &mut Exchange<'a>,
) -> Result<(Arc<Cluster>, cluster::Endpoints), &'static str> {
    let snap = &cfg.snapshot;
    if let Some(ep) = ex.direct.clone() {
        // Addressed to a pod IP: no service, straight to that workload.
        let key = ClusterKey {
            namespace: ep.name.namespace.clone(),
            hostname: ep.addr.ip().to_string(),
            port: ep.addr.port(),
            subset: String::new(),
        };
        let proto = if is_grpc(&parts.headers) {
            Proto::Http2
        } else {
            Proto::Http1
        };
        let cl = clusters.get(key, None, proto);
        ex.cluster = Some(cl.clone());
        return Ok((cl, Arc::new(vec![ep])));
    }
    // The routed service's namespace (a synthetic pod service is handled above).
    let ns: Cow<'a, str> = match &ex.service {
        Some(Cow::Borrowed(s)) => {
            let s: &'a pb::Service = s;
            Cow::Borrowed(s.namespace.as_str())
        }
        Some(Cow::Owned(s)) => Cow::Owned(s.namespace.clone()),
        None => Cow::Borrowed(""),
    };
    let Some(svc) = snap.service_by_host(&dest.host, &ns) else {
        ex.flags.add(flags::NO_ROUTE);
        ex.details = "cluster_not_found".into();
        return Err("no cluster for destination\n");
    };
    let dport = if dest.port != 0 {
        dest.port as u16
    } else {
        port
    };
    let route_cfg = cfg.route_config(&svc.namespace, &svc.hostname);
    let (policy, subset_labels) = cluster::traffic_policy(route_cfg, &dest.subset);
    if !dest.subset.is_empty() && subset_labels.is_none() {
        ex.flags.add(flags::NO_ROUTE);
        ex.details = format!("subset {:?} not defined for {}", dest.subset, svc.hostname);
        return Err("no cluster for destination subset\n");
    }
    let key = ClusterKey {
        namespace: svc.namespace.clone(),
        hostname: svc.hostname.clone(),
        port: dport,
        subset: dest.subset.clone(),
    };
    let proto = cluster::upstream_proto(svc, dport, policy, is_grpc(&parts.headers));
    let cl = clusters.get(key, policy, proto);
    ex.cluster = Some(cl.clone());
    let all = cl.endpoints(snap, svc, subset_labels);
    Ok((cl, all))
}

/// One try against one endpoint. Its `per_try` timeout starts when the try does, or
/// when the request has been received in full (`end`) if that is later.
async fn attempt(
    cl: &Cluster,
    ep: &Endpoint,
    req: Request<Body>,
    per_try: Option<Duration>,
    end: &RequestEnd,
) -> (Attempt, Result<Response<Body>, String>) {
    let started = Instant::now();
    let fut = async {
        let mut lease = match cl.pool.acquire(&ep.target(), cl.proto).await {
            Ok(l) => l,
            Err(PoolError::Overflow(what)) => {
                return (Attempt::Overflow, Err(format!("upstream overflow: {what}")));
            }
            Err(e) => return (Attempt::ConnectFailure, Err(e.to_string())),
        };
        match lease.send(req).await {
            Ok(resp) => {
                let status = resp.status().as_u16();
                let grpc_status = resp
                    .headers()
                    .get(&GRPC_STATUS)
                    .and_then(|v| v.to_str().ok())
                    .and_then(|v| v.parse().ok());
                let (parts, b) = resp.into_parts();
                let b = Tracked::new(body::boxed(b)).with_lease(lease);
                (
                    Attempt::Response {
                        status,
                        grpc_status,
                    },
                    Ok(Response::from_parts(parts, b.boxed())),
                )
            }
            Err(e) => {
                let refused = refused_stream(&e);
                let a = if refused {
                    Attempt::RefusedStream
                } else {
                    Attempt::Reset
                };
                (a, Err(format!("upstream reset: {e}")))
            }
        }
    };
    match per_try {
        Some(t) => tokio::select! {
            r = fut => r,
            () = end.timer(started, t) => (
                Attempt::PerTryTimeout,
                Err("upstream per-try timeout".into()),
            ),
        },
        None => fut.await,
    }
}

pub(crate) fn mirror(
    clusters: &Clusters,
    cfg: &Compiled,
    dest: &pb::Destination,
    percentage: f64,
    parts: &http::request::Parts,
    reqbody: &ReqBody,
    port: u16,
) {
    let ReqBody::Buffered(bytes) = reqbody else {
        return;
    };
    if percentage < 100.0 && rand::rng().random_range(0.0..100.0) >= percentage {
        return;
    }
    let Some((cl, ep)) =
        cluster_endpoint(clusters, &cfg.snapshot, dest, port, is_grpc(&parts.headers))
    else {
        return;
    };
    let proto = cl.proto;
    let mut parts = parts.clone();
    if let Some(h) = parts
        .headers
        .get(header::HOST)
        .and_then(|h| h.to_str().ok())
    {
        if let Ok(v) = HeaderValue::from_str(&format!("{h}-shadow")) {
            parts.headers.insert(header::HOST, v);
        }
    }
    let req = build_upstream(&parts, body::full(bytes.clone()), proto, &ep);
    tokio::spawn(async move {
        if let Ok(mut lease) = cl.pool.acquire(&ep.target(), cl.proto).await {
            if let Ok(resp) = lease.send(req).await {
                let _ = Tracked::new(body::boxed(resp.into_body()))
                    .with_lease(lease)
                    .collect()
                    .await;
            }
        }
    });
}

/// The cluster of `dest` (the service's port `port` unless the destination names one) and
/// one endpoint its load balancer picks: for requests outside a route (the mirror, plugin
/// calls). `None`: no such service, or no endpoint.
pub(crate) fn cluster_endpoint(
    clusters: &Clusters,
    snap: &meshwork_model::snapshot::Snapshot,
    dest: &pb::Destination,
    port: u16,
    grpc: bool,
) -> Option<(Arc<Cluster>, Arc<Endpoint>)> {
    let svc = snap.service_by_host(&dest.host, "")?;
    let dport = if dest.port != 0 {
        dest.port as u16
    } else {
        port
    };
    let route_cfg = snap.route(&svc.namespace, &svc.hostname);
    let (policy, subset) = cluster::traffic_policy(route_cfg, &dest.subset);
    let proto = cluster::upstream_proto(svc, dport, policy, grpc);
    let cl = clusters.get(
        ClusterKey {
            namespace: svc.namespace.clone(),
            hostname: svc.hostname.clone(),
            port: dport,
            subset: dest.subset.clone(),
        },
        policy,
        proto,
    );
    let eps = cluster::endpoints(snap, svc, dport, subset);
    let ep = cl
        .lb
        .pick(&eps, None, |a| cl.pool.active_on(a), &mut rand::rng())?;
    Some((cl, ep))
}

/// Sends one request outside any route (a plugin's call) to `dest` and reads its answer in
/// full, at most `max_body` bytes of body. No retries: the caller's timeout bounds it.
pub(crate) async fn call(
    clusters: &Clusters,
    snap: &meshwork_model::snapshot::Snapshot,
    dest: &pb::Destination,
    port: u16,
    parts: &http::request::Parts,
    reqbody: Bytes,
    max_body: usize,
) -> Result<Response<Bytes>, String> {
    let (cl, ep) = cluster_endpoint(clusters, snap, dest, port, is_grpc(&parts.headers))
        .ok_or_else(|| format!("no endpoint for {}:{port}", dest.host))?;
    let req = build_upstream(parts, body::full(reqbody), cl.proto, &ep);
    let mut lease = cl
        .pool
        .acquire(&ep.target(), cl.proto)
        .await
        .map_err(|e| format!("{}: {e}", cl.name))?;
    let resp = lease
        .send(req)
        .await
        .map_err(|e| format!("{}: {e}", cl.name))?;
    let (rparts, b) = resp.into_parts();
    let bytes = Limited::new(Tracked::new(body::boxed(b)).with_lease(lease), max_body)
        .collect()
        .await
        .map_err(|e| format!("{}: response body: {e}", cl.name))?
        .to_bytes();
    Ok(Response::from_parts(rparts, bytes))
}

/// The consistent-hash key of a request for `cl`'s load balancer, if it hashes. Cookie
/// affinity without the cookie generates one, as Envoy does, to be set on the response.
fn affinity_hash(
    cl: &Cluster,
    parts: &http::request::Parts,
    conn: &ConnContext,
    ex: &mut Exchange<'_>,
) -> Option<u64> {
    let hash = cl
        .lb
        .policy
        .request_hash(parts, conn.source.map(|s| s.ip()));
    if hash.is_some() {
        return hash;
    }
    let cookie = cl.lb.policy.cookie_to_generate()?;
    let value = format!("{:016x}", rand::random::<u64>());
    ex.set_cookie = Some(cookie.set_cookie(&value));
    Some(crate::upstream::lb::hash_str(&value))
}

fn local(status: StatusCode, msg: &str) -> Upstream {
    Upstream {
        response: local_reply::text(status, msg.to_string()),
    }
}

/// Maps a failed final attempt to Envoy's local reply.
fn failure(attempt: Attempt, msg: &str) -> (StatusCode, &'static str, String) {
    match attempt {
        Attempt::Overflow => (
            StatusCode::SERVICE_UNAVAILABLE,
            flags::UPSTREAM_OVERFLOW,
            "upstream connect error or disconnect/reset before headers. reset reason: overflow".into(),
        ),
        Attempt::ConnectFailure => (
            StatusCode::SERVICE_UNAVAILABLE,
            flags::UPSTREAM_CONNECT_FAILURE,
            format!("upstream connect error or disconnect/reset before headers. reset reason: connection failure: {msg}"),
        ),
        Attempt::PerTryTimeout => (
            StatusCode::GATEWAY_TIMEOUT,
            flags::UPSTREAM_TIMEOUT,
            "upstream request timeout".into(),
        ),
        Attempt::RefusedStream | Attempt::Reset | Attempt::Response { .. } => (
            StatusCode::SERVICE_UNAVAILABLE,
            flags::UPSTREAM_RESET,
            format!("upstream connect error or disconnect/reset before headers. reset reason: connection termination: {msg}"),
        ),
    }
}

fn refused_stream(e: &hyper::Error) -> bool {
    let mut src: Option<&(dyn std::error::Error + 'static)> = std::error::Error::source(e);
    for _ in 0..8 {
        let Some(s) = src else { return false };
        if let Some(h2e) = s.downcast_ref::<h2_reason::H2Error>() {
            return h2e.reason() == Some(h2_reason::REFUSED_STREAM);
        }
        src = s.source();
    }
    false
}

mod h2_reason {
    pub use h2::Error as H2Error;
    pub const REFUSED_STREAM: h2::Reason = h2::Reason::REFUSED_STREAM;
}

/// Parsed once: removing by `&str` parses the name on every call.
const HOP_BY_HOP: [HeaderName; 8] = [
    header::CONNECTION,
    HeaderName::from_static("keep-alive"),
    HeaderName::from_static("proxy-connection"),
    header::TRANSFER_ENCODING,
    header::UPGRADE,
    header::TE,
    header::TRAILER,
    header::PROXY_AUTHORIZATION,
];

/// The request sent upstream: origin-form + Host for HTTP/1.1, absolute URI for HTTP/2.
fn build_upstream(
    parts: &http::request::Parts,
    b: Body,
    proto: Proto,
    ep: &Endpoint,
) -> Request<Body> {
    let mut headers: HeaderMap = parts.headers.clone();
    for h in HOP_BY_HOP {
        headers.remove(h);
    }
    // The Host header when it is text, else the URI's authority, else the endpoint.
    let host = parts
        .headers
        .get(header::HOST)
        .filter(|h| h.to_str().is_ok());
    let authority = || match host.and_then(|h| h.to_str().ok()) {
        Some(h) => h.to_string(),
        None => parts
            .uri
            .authority()
            .map(|a| a.to_string())
            .unwrap_or_else(|| ep.addr.to_string()),
    };
    let pq = parts
        .uri
        .path_and_query()
        .map(|p| p.as_str())
        .unwrap_or("/");
    let mut req = Request::new(b);
    *req.method_mut() = parts.method.clone();
    match proto {
        Proto::Http1 => {
            *req.uri_mut() = origin_form(&parts.uri)
                .unwrap_or_else(|| pq.parse().unwrap_or_else(|_| Uri::from_static("/")));
            let v = match host {
                Some(h) => Some(h.clone()),
                None => HeaderValue::from_str(&authority()).ok(),
            };
            if let Some(v) = v {
                headers.insert(header::HOST, v);
            }
            *req.version_mut() = Version::HTTP_11;
        }
        Proto::Http2 => {
            headers.remove(header::HOST);
            let uri = format!("http://{}{pq}", authority());
            *req.uri_mut() = uri.parse().unwrap_or_else(|_| Uri::from_static("/"));
            if is_grpc(&parts.headers) {
                headers.insert(header::TE, HeaderValue::from_static("trailers"));
            }
            *req.version_mut() = Version::HTTP_2;
        }
    }
    *req.headers_mut() = headers;
    req
}

/// `uri`'s path and query alone (no parsing: the parts are shared).
fn origin_form(uri: &Uri) -> Option<Uri> {
    let mut parts = http::uri::Parts::default();
    parts.path_and_query = Some(uri.path_and_query()?.clone());
    Uri::from_parts(parts).ok()
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn origin_form_keeps_path_and_query_only() {
        for (uri, want) in [
            ("http://a.example:8080/x/y?q=1&r", "/x/y?q=1&r"),
            ("/only/path", "/only/path"),
            ("http://a.example", "/"),
        ] {
            let u: Uri = uri.parse().unwrap();
            let o = origin_form(&u).unwrap();
            assert_eq!(o.to_string(), want, "{uri}");
            assert_eq!(o, want.parse::<Uri>().unwrap(), "{uri}");
            assert!(o.authority().is_none() && o.scheme().is_none());
        }
    }
}

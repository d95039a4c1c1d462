//! The L7 request path: service resolution, authorization, routing, faults, retries with
//! timeouts over pooled upstream connections, response decoration, metrics and access log.

use std::borrow::Cow;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{self, HeaderMap, HeaderName, HeaderValue};
use http::{Request, Response, StatusCode, Uri, Version};
use http_body_util::{BodyExt, Limited};
use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config as pb;
use prometheus_client::registry::Registry;
use rand::Rng;
use tokio::time::Instant;
use tracing::{debug, warn};

use crate::access_log::{AccessLog, Entry};
use crate::authority;
use crate::authz;
use crate::body::{self, Body, BoxError};
use crate::cluster::{self, Cluster, ClusterKey, Clusters};
use crate::config::{Compiled, ConfigCache, WaypointId};
use crate::connector::Connector;
use crate::cors;
use crate::endpoint::Endpoint;
use crate::fault;
use crate::flags::{self, Flags};
use crate::headers;
use crate::label_cache::LabelQuery;
use crate::metrics::{Metrics, RequestLabels, Series};
use crate::normalize;
use crate::outlier::Observation;
use crate::pool::{PoolError, Proto};
use crate::request_end::RequestEnd;
use crate::retry::{Attempt, RetryPolicy};
use crate::rewrite;
use crate::routing::{pick_weighted, MatchInput};
use crate::target::{self, Target};
use crate::telemetry_policy::{cel, TelemetryPolicy};
use crate::tracing::{Active, Attributes, Tracer, TracingOptions};
use crate::tracked::Tracked;

/// Facts about the downstream connection a request arrived on.
#[derive(Debug, Clone, Default)]
pub struct ConnContext {
    /// Verified peer identity (`spiffe://td/ns/x/sa/y`), `None` for plaintext.
    pub source_identity: Option<String>,
    pub source: Option<SocketAddr>,
    /// Original destination (service VIP and port), e.g. the HBONE CONNECT target.
    pub destination: Option<SocketAddr>,
}

#[derive(Debug, Clone)]
pub struct Options {
    pub waypoint: WaypointId,
    pub access_log: AccessLog,
    /// Largest request body buffered for retries and mirroring.
    pub max_buffered_body: usize,
    /// A request whose body sends nothing for this long is ended with 408 (or reset,
    /// once the response has started): Envoy's `stream_idle_timeout`, 5 min by default.
    /// Zero disables it.
    pub stream_idle_timeout: Duration,
    pub tracing: TracingOptions,
}

/// Envoy's default `stream_idle_timeout`.
pub const DEFAULT_STREAM_IDLE_TIMEOUT: Duration = Duration::from_secs(300);

impl Default for Options {
    fn default() -> Self {
        Options {
            waypoint: WaypointId::default(),
            access_log: AccessLog::Off,
            max_buffered_body: 1 << 20,
            stream_idle_timeout: DEFAULT_STREAM_IDLE_TIMEOUT,
            tracing: TracingOptions::default(),
        }
    }
}

struct Inner {
    cache: ConfigCache,
    clusters: Clusters,
    connector: Arc<dyn Connector>,
    metrics: Metrics,
    tracer: Tracer,
    opts: Options,
}

/// The transport-independent L7 proxy. Cheap to clone.
#[derive(Clone)]
pub struct L7Service {
    inner: Arc<Inner>,
}

/// What is known about a request while it is handled, for metrics and the access log.
/// Borrows the service from the compiled config the request is handled with.
#[derive(Debug, Default)]
struct Exchange<'a> {
    flags: Flags,
    details: String,
    /// The route's name, filled only when an access log may be written.
    route: String,
    cluster: Option<Arc<Cluster>>,
    upstream: Option<Arc<Endpoint>>,
    service: Option<Cow<'a, pb::Service>>,
    attempts: u32,
    policy: String,
    grpc_status: String,
    /// When the request arrived (the server span's start).
    arrived: Option<std::time::SystemTime>,
    /// The service port the request was routed on (the server span's name is
    /// `<service hostname>:<port>/*`).
    port: u16,
    /// The request was addressed to this workload directly (pod IP), not to a service.
    direct: Option<Arc<Endpoint>>,
    /// A generated affinity cookie to set on the response.
    set_cookie: Option<String>,
    /// The request's trace, when a Telemetry resource enables tracing for its service.
    trace: Option<Active>,
    /// Attributes of the request's spans.
    span_attrs: Attributes,
    /// The Telemetry metrics/access log settings of the request's service.
    telemetry: Option<Arc<TelemetryPolicy>>,
    /// What the settings' expressions see, when they have any.
    cel: Option<cel::Context>,
    /// The path and query after normalisation, kept for the access log only.
    normalized_path: Option<String>,
}

/// How a request's metrics are recorded.
enum Record {
    /// The standard labels' cached series.
    Series(Series),
    /// Each metric with its own labels (`None`: disabled).
    PerMetric(Metrics, [Option<Arc<RequestLabels>>; 4]),
}

/// The request fields the access log records, read before the request is consumed.
struct LoggedRequest {
    method: String,
    path: String,
    authority: String,
    protocol: &'static str,
    user_agent: String,
}

impl LoggedRequest {
    fn of<B>(req: &Request<B>) -> Self {
        LoggedRequest {
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            authority: authority_of(req),
            protocol: match req.version() {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            user_agent: req
                .headers()
                .get(header::USER_AGENT)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string(),
        }
    }
}

/// The request body, replayable when it was small enough to buffer.
enum ReqBody {
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
struct Upstream {
    response: Response<Body>,
}

impl L7Service {
    pub fn new(
        config: ConfigHandle,
        connector: Arc<dyn Connector>,
        opts: Options,
        registry: &mut Registry,
    ) -> Self {
        L7Service {
            inner: Arc::new(Inner {
                cache: ConfigCache::new(config),
                clusters: Clusters::new(connector.clone()),
                connector,
                metrics: Metrics::new(registry),
                tracer: Tracer::new(
                    opts.tracing.clone(),
                    format!("{}.{}", opts.waypoint.name, opts.waypoint.namespace),
                    registry,
                ),
                opts,
            }),
        }
    }

    /// The current compiled config.
    pub fn config(&self) -> Arc<Compiled> {
        self.inner.cache.get()
    }

    pub fn connector(&self) -> &Arc<dyn Connector> {
        &self.inner.connector
    }

    /// The upstream clusters created so far (admin state).
    pub fn clusters(&self) -> &Clusters {
        &self.inner.clusters
    }

    pub fn options(&self) -> &Options {
        &self.inner.opts
    }

    pub fn tracer(&self) -> &Tracer {
        &self.inner.tracer
    }

    /// Handles one request. Never fails: errors become local replies with response flags.
    pub async fn handle<B>(&self, req: Request<B>, conn: &ConnContext) -> Response<Body>
    where
        B: hyper::body::Body<Data = Bytes> + Send + Sync + 'static,
        B::Error: Into<BoxError>,
    {
        let start = Instant::now();
        let wall = std::time::SystemTime::now();
        let cfg = self.inner.cache.get();
        let req_bytes = Arc::new(AtomicU64::new(0));
        let body_idle = Arc::new(AtomicBool::new(false));
        let (parts, b) = req.into_parts();
        let req = Request::from_parts(
            parts,
            Tracked::new(body::boxed(b))
                .counting(req_bytes.clone())
                .with_idle_timeout(self.inner.opts.stream_idle_timeout, body_idle.clone()),
        );
        // The access log's request fields, read only when a log line may be written.
        let logged = self
            .inner
            .opts
            .access_log
            .enabled()
            .then(|| LoggedRequest::of(&req));
        let request_id = req
            .headers()
            .get(&X_REQUEST_ID)
            .and_then(|v| v.to_str().ok())
            .map(String::from)
            .unwrap_or_else(new_request_id);
        let grpc = is_grpc(req.headers());

        let mut ex = Exchange {
            arrived: Some(wall),
            ..Default::default()
        };
        let mut resp = self.proxy(req, conn, &cfg, &mut ex, &request_id).await;
        if body_idle.load(Ordering::Acquire) {
            // The try failed because the client stopped sending its body: Envoy's answer.
            ex.flags = Flags::default();
            ex.flags.add(flags::STREAM_IDLE_TIMEOUT);
            ex.details = "stream_idle_timeout".into();
            resp = authz::reply(StatusCode::REQUEST_TIMEOUT, "stream timeout\n");
        }

        let status = resp.status().as_u16();
        if grpc {
            ex.grpc_status = resp
                .headers()
                .get(&GRPC_STATUS)
                .and_then(|v| v.to_str().ok())
                .unwrap_or("")
                .to_string();
        }
        // Shared by the four metrics; a Telemetry tag override copies only what it changes.
        let protocol = if grpc { "grpc" } else { "http" };
        let make_labels = || self.labels(&cfg, conn, &ex, status, protocol);
        // Label sets repeat: cached with their series when every metric is reported with
        // them, unless the service was made up for this one request.
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
        let (labels, series) = match query {
            Some(q) => {
                let l = cfg
                    .labels
                    .get_or_insert_with(q, make_labels, |l| self.inner.metrics.series(l));
                (l.labels, Some(l.series))
            }
            None => (Arc::new(make_labels()), None),
        };
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
            _ => self.inner.opts.access_log.clone(),
        };
        let record = match (&ex.telemetry, series) {
            (Some(t), _) if !t.standard_metrics() => {
                Record::PerMetric(self.inner.metrics.clone(), t.labels(&labels, cel.as_ref()))
            }
            (_, Some(s)) => Record::Series(s),
            (_, None) => Record::PerMetric(
                self.inner.metrics.clone(),
                std::array::from_fn(|_| Some(labels.clone())),
            ),
        };
        let mut entry = match (logged, log.enabled()) {
            (Some(r), true) => Some(log_entry(r, &mut ex, conn, status, wall, request_id)),
            _ => None,
        };
        let (parts, b) = resp.into_parts();
        let b = Tracked::new(b).on_done(move |sent, _complete| {
            let elapsed = start.elapsed();
            let received = req_bytes.load(Ordering::Relaxed);
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

    async fn proxy<'a>(
        &self,
        mut req: Request<Tracked>,
        conn: &ConnContext,
        cfg: &'a Compiled,
        ex: &mut Exchange<'a>,
        request_id: &str,
    ) -> Response<Body> {
        // One authority for every stage and the upstream: the target URI's wins over Host.
        if let Err(e) = authority::canonicalize(&mut req) {
            ex.flags.add(flags::DOWNSTREAM_PROTOCOL_ERROR);
            ex.details = "ambiguous_authority".into();
            return authz::reply(StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
        let snap = &cfg.snapshot;
        // Path normalisation first: authorization, routing, rewrites and the upstream
        // request all see the one normalised path (Istio `meshConfig.pathNormalization`).
        let mut req = req;
        if let Err(e) = normalize::apply(&mut req, normalize::Mode::of(snap.mesh())) {
            ex.details = "path_normalization_failed".into();
            return authz::reply(StatusCode::BAD_REQUEST, format!("{e}\n"));
        }
        if self.inner.opts.access_log.enabled() {
            ex.normalized_path = req.uri().path_and_query().map(|p| p.to_string());
        }
        let authority = authority_of(&req);
        let (host, host_port) = split_host(&authority);
        let Some(Target {
            service,
            port,
            direct,
        }) = target::resolve(snap, &self.inner.opts.waypoint, conn, host, host_port)
        else {
            ex.flags.add(flags::NO_ROUTE);
            ex.details = "route_not_found".into();
            return authz::reply(
                StatusCode::NOT_FOUND,
                format!("no service for host {host:?}\n"),
            );
        };
        ex.direct = direct;
        ex.service = Some(service.clone());
        ex.port = port;
        let telemetry = cfg.telemetry(&self.inner.opts.waypoint, &service);
        if telemetry.needs_context() {
            ex.cel = Some(cel::Context {
                headers: req.headers().clone(),
                method: req.method().to_string(),
                path: req
                    .uri()
                    .path_and_query()
                    .map_or_else(|| req.uri().path().to_string(), |p| p.to_string()),
                host: host.to_string(),
                response_code: 0,
                destination_port: port,
                source_principal: conn.source_identity.clone().unwrap_or_default(),
                mtls: conn.source_identity.is_some(),
            });
        }
        ex.telemetry = Some(telemetry);
        // Without a Telemetry enabling tracing, trace headers pass through untouched.
        ex.trace = cfg.tracing(&self.inner.opts.waypoint, &service).map(|eff| {
            let arrived = ex.arrived.unwrap_or_else(std::time::SystemTime::now);
            self.inner.tracer.start(snap, &eff, req.headers(), arrived)
        });
        if ex.trace.is_some() {
            ex.span_attrs = Attributes {
                method: req.method().to_string(),
                path: req.uri().path().to_string(),
                url: format!(
                    "http://{authority}{}",
                    req.uri()
                        .path_and_query()
                        .map(|p| p.as_str())
                        .unwrap_or("/")
                ),
                request_id: request_id.to_string(),
                user_agent: req
                    .headers()
                    .get(header::USER_AGENT)
                    .and_then(|v| v.to_str().ok())
                    .unwrap_or("")
                    .to_string(),
                protocol: format!("{:?}", req.version()),
                mesh_id: snap
                    .mesh()
                    .map(|m| m.trust_domain.clone())
                    .unwrap_or_default(),
                ..Default::default()
            };
        }

        // Authorization.
        let (mut parts, b) = req.into_parts();
        let policies = cfg.policies(&self.inner.opts.waypoint, &service);
        if !policies.is_empty() {
            let ctx = authz::context(
                &parts,
                &authority,
                conn.source_identity.as_deref(),
                conn.source,
                conn.destination,
                port,
            );
            let (decision, rejection) = authz::check(&policies, &ctx);
            ex.policy = decision.policy.clone().unwrap_or_default();
            if let Some((resp, flag)) = rejection {
                if flag != flags::NONE {
                    ex.flags.add(flag);
                }
                ex.details = format!("rbac_access_denied: {}", decision.reason);
                return resp;
            }
        }

        // Routing: the service's own routes (VirtualService, Service-attached routes), then
        // the routes bound to this waypoint's Gateway. The implicit default route to the
        // service exists only when the service has no HTTP routes of its own.
        let route_cfg = cfg.route(&service).filter(|rc| !rc.routes.is_empty());
        let gateway_cfg = cfg.gateway_routes(&self.inner.opts.waypoint);
        let source_wl = conn.source.and_then(|s| snap.workload_by_ip(s.ip()));
        let scheme = parts.uri.scheme_str().unwrap_or("http").to_string();
        let input = MatchInput {
            method: &parts.method,
            uri: &parts.uri,
            headers: &parts.headers,
            authority: &authority,
            scheme: &scheme,
            port,
            source_labels: source_wl.map(|w| &w.labels),
            source_namespace: source_wl
                .map(|w| w.namespace.as_str())
                .or(Some(target::source_namespace(conn))),
        };
        let default_route;
        let found = route_cfg
            .as_ref()
            .and_then(|rc| rc.find(&input))
            .or_else(|| gateway_cfg.and_then(|g| g.find(&input)));
        let (route, matched_prefix, route_cors, route_rewrite) = match found {
            Some(r) => (
                &r.route,
                r.matched_prefix(&input),
                r.cors.as_ref(),
                r.rewrite.as_ref(),
            ),
            None if route_cfg.is_some() => {
                ex.flags.add(flags::NO_ROUTE);
                ex.details = "route_not_found".into();
                return authz::reply(StatusCode::NOT_FOUND, "");
            }
            None => {
                default_route = implicit_route(&service, port);
                (&default_route, None, None, None)
            }
        };
        let route_name = || {
            if route.name.is_empty() {
                format!("{}.{}", service.hostname, port)
            } else {
                route.name.clone()
            }
        };
        if self.inner.opts.access_log.enabled() {
            ex.route = route_name();
        }

        // CORS, redirects, direct responses.
        let cors_origin = route_cors.and_then(|c| cors::allowed_origin(c, &parts.headers));
        if let Some(c) = route_cors {
            if let Some(resp) = cors::preflight(c, &parts.method, &parts.headers) {
                ex.details = "cors_response".into();
                return resp;
            }
        }
        if let Some(r) = &route.redirect {
            ex.details = "redirect".into();
            return rewrite::redirect(r, &parts.uri, &authority, &scheme);
        }
        if let Some(d) = &route.direct_response {
            ex.details = "direct_response".into();
            return rewrite::direct(d);
        }

        if let Some(f) = &route.fault {
            if let Some(resp) = inject_fault(f, ex).await {
                return resp;
            }
        }

        // Request transformation.
        let mut req = Request::from_parts(parts, ());
        if let Some(rw) = route_rewrite {
            if let Err(e) = rewrite::apply(rw, &mut req, matched_prefix.as_ref()) {
                warn!("route {}: {e}", route_name());
            }
        }
        let (p, ()) = req.into_parts();
        parts = p;
        headers::apply(
            route.headers.as_ref().and_then(|h| h.request.as_ref()),
            &mut parts.headers,
        );
        if !parts.headers.contains_key(&X_REQUEST_ID) {
            if let Ok(v) = HeaderValue::from_str(request_id) {
                parts.headers.insert(X_REQUEST_ID, v);
            }
        }

        let Some(wd) = pick_weighted(&route.route, &mut rand::rng()) else {
            ex.flags.add(flags::NO_ROUTE);
            ex.details = "no_route_destination".into();
            return authz::reply(StatusCode::SERVICE_UNAVAILABLE, "no destination\n");
        };
        headers::apply(
            wd.headers.as_ref().and_then(|h| h.request.as_ref()),
            &mut parts.headers,
        );
        let no_dest = pb::Destination::default();
        let dest = wd.destination.as_ref().unwrap_or(&no_dest);

        // Body: buffer when small so retries and mirroring can replay it.
        let (mut reqbody, end) = self.buffer(b).await;
        let (retry, unknown) = RetryPolicy::from_pb(route.retries.as_ref());
        if !unknown.is_empty() {
            debug!(?unknown, "ignoring unknown retryOn values");
        }
        if let Some(m) = &route.mirror {
            self.mirror(cfg, m, route.mirror_percentage, &parts, &reqbody, port);
        }

        let overall = (route.has_timeout && route.timeout_ms > 0)
            .then(|| Duration::from_millis(route.timeout_ms));
        let started = Instant::now();
        let work = self.forward(
            cfg,
            dest,
            port,
            &parts,
            &mut reqbody,
            &end,
            &retry,
            conn,
            ex,
        );
        let result = match overall {
            // As in Envoy, the route timeout starts once the request has been received in
            // full: a slow upload is not cut while it is arriving.
            Some(t) => tokio::select! {
                r = work => r,
                () = end.timer(started, t) => {
                    ex.flags.add(flags::UPSTREAM_TIMEOUT);
                    ex.details = "upstream_response_timeout".into();
                    return authz::reply(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout");
                }
            },
            None => work.await,
        };
        let mut resp = result.response;
        if let Some(t) = overall {
            // The route timeout also bounds the response body, as in Envoy (counted from the
            // response headers when they came before the request's end).
            let from = end.at().unwrap_or_else(Instant::now).max(started);
            resp = resp.map(|b| Tracked::new(b).with_deadline(from + t).boxed());
        }
        headers::apply(
            route.headers.as_ref().and_then(|h| h.response.as_ref()),
            resp.headers_mut(),
        );
        headers::apply(
            wd.headers.as_ref().and_then(|h| h.response.as_ref()),
            resp.headers_mut(),
        );
        if let Some(c) = ex.set_cookie.take() {
            if let Ok(v) = HeaderValue::from_str(&c) {
                resp.headers_mut().append(header::SET_COOKIE, v);
            }
        }
        if let (Some(c), Some(origin)) = (route_cors, &cors_origin) {
            cors::decorate(c, origin, resp.headers_mut());
        }
        resp
    }

    /// The request body, buffered when small, and when it has been received in full (now
    /// when buffered; a streamed body is watched as it is sent upstream).
    async fn buffer(&self, b: Tracked) -> (ReqBody, RequestEnd) {
        use hyper::body::Body as _;
        if b.is_end_stream() {
            return (ReqBody::Buffered(Bytes::new()), RequestEnd::now());
        }
        let max = self.inner.opts.max_buffered_body as u64;
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

    #[allow(clippy::too_many_arguments)]
    async fn forward<'a>(
        &self,
        cfg: &'a Compiled,
        dest: &pb::Destination,
        port: u16,
        parts: &http::request::Parts,
        reqbody: &mut ReqBody,
        end: &RequestEnd,
        retry: &RetryPolicy,
        conn: &ConnContext,
        ex: &mut Exchange<'a>,
    ) -> Upstream {
        let (cl, all) = match self.cluster_for(cfg, dest, port, parts, ex) {
            Ok(c) => c,
            Err(why) => return local(StatusCode::SERVICE_UNAVAILABLE, why),
        };
        let hash = affinity_hash(&cl, parts, conn, ex);

        let mut tried: Vec<SocketAddr> = Vec::new();
        let mut retry_slot = None;
        let retries = if reqbody.replayable() {
            retry.retries
        } else {
            0
        };
        let mut n = 0u32;
        loop {
            let healthy: Cow<'_, [Arc<Endpoint>]> = match &cl.outlier {
                Some(o) => Cow::Owned(o.filter(all.to_vec(), |e| e.addr)),
                None => Cow::Borrowed(&all[..]),
            };
            if healthy.is_empty() {
                ex.flags.add(flags::NO_HEALTHY_UPSTREAM);
                ex.details = "no_healthy_upstream".into();
                return local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
            }
            // Prefer hosts not tried yet (Istio's previous-hosts retry predicate).
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
            let Some(ep) = cl.lb.pick(
                &candidates,
                hash,
                |a| cl.pool.active_on(a),
                &mut rand::rng(),
            ) else {
                ex.flags.add(flags::NO_HEALTHY_UPSTREAM);
                return local(StatusCode::SERVICE_UNAVAILABLE, "no healthy upstream");
            };
            tried.push(ep.addr);
            ex.upstream = Some(ep.clone());
            ex.attempts = n + 1;
            let Some(b) = reqbody.take() else {
                ex.flags.add(flags::UPSTREAM_RESET);
                return local(
                    StatusCode::SERVICE_UNAVAILABLE,
                    "request body unavailable for retry",
                );
            };
            let mut upstream_req = build_upstream(parts, b, cl.proto, &ep);
            let client_span = ex
                .trace
                .as_ref()
                .map(|t| t.begin_client(upstream_req.headers_mut()));
            let (attempt, resp) = self
                .attempt(&cl, &ep, upstream_req, retry.per_try_timeout, end)
                .await;
            if let (Some(t), Some(c)) = (&ex.trace, client_span) {
                let status = match attempt {
                    Attempt::Response { status, .. } => status,
                    _ => 0,
                };
                let mut attrs = ex.span_attrs.clone();
                attrs.destination_workload = ep.workload.clone();
                attrs.destination_namespace = ep.namespace.clone();
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
                    o.record(ep.addr, obs, all.len());
                }
            }
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
            return match resp {
                Ok(r) => Upstream { response: r },
                Err(e) => {
                    let (status, flag, msg) = failure(attempt, &e);
                    ex.flags.add(flag);
                    ex.details = msg.clone();
                    let mut response = authz::reply(status, msg);
                    if flag == flags::UPSTREAM_OVERFLOW {
                        response
                            .headers_mut()
                            .insert("x-envoy-overloaded", HeaderValue::from_static("true"));
                    }
                    Upstream { response }
                }
            };
        }
    }

    /// The cluster a request to `dest` goes to, and its endpoints: the workload itself
    /// for a request addressed to a pod IP, else the destination service's (subset)
    /// cluster. `Err`: why there is none (a 503's body).
    fn cluster_for<'a>(
        &self,
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
                namespace: ep.namespace.clone(),
                hostname: ep.addr.ip().to_string(),
                port: ep.addr.port(),
                subset: String::new(),
            };
            let proto = if is_grpc(&parts.headers) {
                Proto::Http2
            } else {
                Proto::Http1
            };
            let cl = self.inner.clusters.get(key, None, proto);
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
        let cl = self.inner.clusters.get(key, policy, proto);
        ex.cluster = Some(cl.clone());
        let all = cl.endpoints(snap, svc, subset_labels);
        Ok((cl, all))
    }

    /// One try against one endpoint. Its `per_try` timeout starts when the try does, or
    /// when the request has been received in full (`end`) if that is later.
    async fn attempt(
        &self,
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

    fn mirror(
        &self,
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
        let snap = cfg.snapshot.clone();
        let Some(svc) = snap.service_by_host(&dest.host, "").cloned() else {
            return;
        };
        let dport = if dest.port != 0 {
            dest.port as u16
        } else {
            port
        };
        let route_cfg = snap.route(&svc.namespace, &svc.hostname);
        let (policy, subset) = cluster::traffic_policy(route_cfg, &dest.subset);
        let proto = cluster::upstream_proto(&svc, dport, policy, is_grpc(&parts.headers));
        let cl = self.inner.clusters.get(
            ClusterKey {
                namespace: svc.namespace.clone(),
                hostname: svc.hostname.clone(),
                port: dport,
                subset: dest.subset.clone(),
            },
            policy,
            proto,
        );
        let eps = cluster::endpoints(&snap, &svc, dport, subset);
        let Some(ep) = cl
            .lb
            .pick(&eps, None, |a| cl.pool.active_on(a), &mut rand::rng())
        else {
            return;
        };
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

    fn labels(
        &self,
        cfg: &Compiled,
        conn: &ConnContext,
        ex: &Exchange,
        status: u16,
        protocol: &str,
    ) -> RequestLabels {
        let snap = &cfg.snapshot;
        let src = conn.source.and_then(|s| snap.workload_by_ip(s.ip()));
        let unknown = || "unknown".to_string();
        let label = |w: Option<&pb::Workload>, k: &str| {
            w.and_then(|w| w.labels.get(k).cloned())
                .unwrap_or_else(unknown)
        };
        let dst = ex.upstream.as_ref();
        let svc = ex.service.as_deref();
        RequestLabels {
            reporter: "waypoint".into(),
            source_workload: src.map(canonical).unwrap_or_else(unknown),
            source_workload_namespace: src.map(|w| w.namespace.clone()).unwrap_or_else(unknown),
            source_principal: conn.source_identity.clone().unwrap_or_else(unknown),
            source_app: label(src, "app"),
            source_version: label(src, "version"),
            destination_workload: dst.map(|d| d.workload.clone()).unwrap_or_else(unknown),
            destination_workload_namespace: dst
                .map(|d| d.namespace.clone())
                .unwrap_or_else(unknown),
            destination_principal: dst.and_then(|d| d.identity.clone()).unwrap_or_else(unknown),
            destination_app: dst
                .and_then(|d| d.labels.get("app").cloned())
                .unwrap_or_else(unknown),
            destination_version: dst
                .and_then(|d| d.labels.get("version").cloned())
                .unwrap_or_else(unknown),
            destination_service: svc.map(|s| s.hostname.clone()).unwrap_or_else(unknown),
            destination_service_name: svc.map(|s| s.name.clone()).unwrap_or_else(unknown),
            destination_service_namespace: svc.map(|s| s.namespace.clone()).unwrap_or_else(unknown),
            request_protocol: protocol.into(),
            response_code: status.to_string(),
            grpc_response_status: ex.grpc_status.clone(),
            response_flags: ex.flags.render(),
            connection_security_policy: if conn.source_identity.is_some() {
                "mutual_tls".into()
            } else {
                "none".into()
            },
        }
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
    attrs.source_workload = labels.source_workload.clone();
    attrs.source_namespace = labels.source_workload_namespace.clone();
    attrs.source_principal = labels.source_principal.clone();
    attrs.destination_workload = labels.destination_workload.clone();
    attrs.destination_namespace = labels.destination_workload_namespace.clone();
    attrs.destination_principal = labels.destination_principal.clone();
    attrs.destination_service = labels.destination_service.clone();
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
    let (name, ttl) = cl.lb.policy.cookie_to_generate()?;
    let value = format!("{:016x}", rand::random::<u64>());
    let max_age = if ttl.is_zero() {
        String::new()
    } else {
        format!("; Max-Age={}", ttl.as_secs().max(1))
    };
    ex.set_cookie = Some(format!("{name}={value}{max_age}; HttpOnly"));
    Some(crate::lb::hash_str(&value))
}

/// The route to the service itself, for a service without HTTP routes of its own.
fn implicit_route(service: &pb::Service, port: u16) -> pb::HttpRoute {
    pb::HttpRoute {
        name: "default".into(),
        route: vec![pb::WeightedDestination {
            destination: Some(pb::Destination {
                host: service.hostname.clone(),
                subset: String::new(),
                port: u32::from(port),
            }),
            weight: 100,
            headers: None,
        }],
        ..Default::default()
    }
}

/// Applies a route's fault injection: waits out an injected delay, and returns the
/// response of an injected abort (`None`: the request goes on).
async fn inject_fault(f: &pb::Fault, ex: &mut Exchange<'_>) -> Option<Response<Body>> {
    let injected = fault::decide(f, &mut rand::rng());
    if let Some(d) = injected.delay {
        ex.flags.add(flags::DELAY_INJECTED);
        tokio::time::sleep(d).await;
    }
    if let Some(status) = injected.abort_status {
        ex.flags.add(flags::FAULT_INJECTED);
        ex.details = "fault_filter_abort".into();
        let s = StatusCode::from_u16(status).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return Some(authz::reply(s, "fault filter abort"));
    }
    if let Some(g) = injected.abort_grpc {
        ex.flags.add(flags::FAULT_INJECTED);
        ex.details = "fault_filter_abort".into();
        let mut r = Response::new(body::empty());
        r.headers_mut().insert(
            header::CONTENT_TYPE,
            HeaderValue::from_static("application/grpc"),
        );
        if let Ok(v) = HeaderValue::from_str(&g.to_string()) {
            r.headers_mut().insert(GRPC_STATUS, v);
        }
        return Some(r);
    }
    None
}

fn canonical(w: &pb::Workload) -> String {
    if w.canonical_name.is_empty() {
        w.name.clone()
    } else {
        w.canonical_name.clone()
    }
}

fn local(status: StatusCode, msg: &str) -> Upstream {
    Upstream {
        response: authz::reply(status, msg.to_string()),
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

const X_REQUEST_ID: HeaderName = HeaderName::from_static("x-request-id");
const GRPC_STATUS: HeaderName = HeaderName::from_static("grpc-status");

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

fn is_grpc(h: &HeaderMap) -> bool {
    h.get(header::CONTENT_TYPE)
        .and_then(|v| v.to_str().ok())
        .is_some_and(|v| v.starts_with("application/grpc"))
}

fn authority_of<B>(req: &Request<B>) -> String {
    req.uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(String::from)
        })
        .unwrap_or_default()
}

/// `host:port` → (host, Some(port)).
fn split_host(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            return (h, p.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

/// A random (version 4) UUID in its 36-character text form.
fn new_request_id() -> String {
    let mut rng = rand::rng();
    let a: u64 = rng.random();
    let b: u64 = rng.random();
    let mut bytes = [0u8; 16];
    bytes[..8].copy_from_slice(&a.to_be_bytes());
    bytes[8..].copy_from_slice(&b.to_be_bytes());
    bytes[6] = 0x40 | (bytes[6] & 0x0f);
    bytes[8] = 0x80 | (bytes[8] & 0x3f);
    const HEX: &[u8; 16] = b"0123456789abcdef";
    let mut out = String::with_capacity(36);
    for (i, byte) in bytes.iter().enumerate() {
        if matches!(i, 4 | 6 | 8 | 10) {
            out.push('-');
        }
        out.push(HEX[usize::from(byte >> 4)] as char);
        out.push(HEX[usize::from(byte & 0x0f)] as char);
    }
    out
}

pub(crate) fn humantime(t: std::time::SystemTime) -> String {
    let d = t.duration_since(std::time::UNIX_EPOCH).unwrap_or_default();
    format!("{}.{:03}", d.as_secs(), d.subsec_millis())
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

    #[test]
    fn host_splitting() {
        assert_eq!(split_host("a:80"), ("a", Some(80)));
        assert_eq!(split_host("a"), ("a", None));
        assert_eq!(split_host("[::1]:8080"), ("::1", Some(8080)));
        assert_eq!(split_host("a:bad"), ("a:bad", None));
    }

    #[test]
    fn request_ids_look_like_uuids() {
        let id = new_request_id();
        assert_eq!(id.len(), 36, "{id}");
        assert_eq!(id.as_bytes()[14], b'4');
        let groups: Vec<usize> = id.split('-').map(str::len).collect();
        assert_eq!(groups, [8, 4, 4, 4, 12], "{id}");
        assert!(
            matches!(id.as_bytes()[19], b'8' | b'9' | b'a' | b'b'),
            "{id}"
        );
        assert!(id
            .bytes()
            .all(|c| c == b'-' || c.is_ascii_digit() || (b'a'..=b'f').contains(&c)));
        assert_ne!(id, new_request_id());
    }
}

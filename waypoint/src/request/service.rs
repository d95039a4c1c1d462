//! The L7 request path, top-down: [`L7Service::handle`] wraps the request's body,
//! runs [`L7Service::proxy`] (the stages below, each one a function; a stage that answers
//! itself returns its reply as `Err`) and has the exchange reported when the response
//! body ends ([`crate::telemetry::record`]):
//!
//! 1. `prepare`: one authority, then path normalisation;
//! 2. `resolve`: the service (or pod) the request is for;
//! 3. `observe`: the Telemetry settings and the trace of the service;
//! 4. `extend` ([`wasm::extend`]) with the AUTHN/AUTHZ WasmPlugins, `authorize`: the
//!    waypoint's AuthorizationPolicies, `extend` with the STATS/UNSPECIFIED plugins (their
//!    response callbacks run, last first, on whatever answered);
//! 5. [`route::select`], [`route::answer_locally`], [`route::transform`],
//!    [`route::pick_destination`];
//! 6. `send`: the upstream trip ([`forward`]) under the route timeout, then
//!    [`route::decorate`].

// A stage that answers the request itself returns the reply as its `Err`: once per request,
// moved, never copied in a loop, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::request::Parts;
use http::{Request, Response, StatusCode};
use http_body_util::BodyExt;
use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config as pb;
use prometheus_client::registry::Registry;
use rand::Rng;
use tokio::time::Instant;
use tracing::debug;

use crate::body::{self, Body, BoxError};
use crate::config::{Compiled, ConfigCache, WaypointId};
use crate::request::authority::{self, authority_of, split_host};
use crate::request::authz;
use crate::request::conn::ConnContext;
use crate::request::exchange::{Exchange, LoggedRequest};
use crate::request::flags::{self, Flags};
use crate::request::headers::{is_grpc, user_agent, X_REQUEST_ID};
use crate::request::local_reply;
use crate::request::normalize;
use crate::request::route::{self, Chosen};
use crate::request::target::{self, Target};
use crate::request::wasm;
use crate::telemetry::access_log::AccessLog;
use crate::telemetry::metrics::Metrics;
use crate::telemetry::policy::cel;
use crate::telemetry::record::{self, Arrival, Sinks};
use crate::telemetry::tracing::{Attributes, Tracer, TracingOptions};
use crate::tracked::Tracked;
use crate::upstream::cluster::Clusters;
use crate::upstream::connector::Connector;
use crate::upstream::forward::{self, Trip};
use crate::upstream::retry::RetryPolicy;
use crate::wasm::caller::MeshCaller;
use crate::wasm::select::{self, Selected};
use crate::wasm::{Plugins, WasmOptions};

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
    /// How WasmPlugins are fetched and run.
    pub wasm: WasmOptions,
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
            wasm: WasmOptions::default(),
        }
    }
}

struct Inner {
    cache: ConfigCache,
    clusters: Arc<Clusters>,
    connector: Arc<dyn Connector>,
    plugins: Arc<Plugins>,
    metrics: Metrics,
    tracer: Tracer,
    opts: Options,
}

/// The transport-independent L7 proxy. Cheap to clone.
#[derive(Clone)]
pub struct L7Service {
    inner: Arc<Inner>,
}

/// Where a request goes, once resolved.
struct Resolved<'a> {
    service: Cow<'a, pb::Service>,
    port: u16,
    authority: String,
}

impl L7Service {
    pub fn new(
        config: ConfigHandle,
        connector: Arc<dyn Connector>,
        opts: Options,
        registry: &mut Registry,
    ) -> Self {
        let clusters = Arc::new(Clusters::new(connector.clone()));
        let plugin_cx = meshwork_wasm::host::HostContext {
            caller: Arc::new(MeshCaller {
                clusters: clusters.clone(),
                config: config.clone(),
            }),
            node: Arc::new(wasm::node_properties(&opts.waypoint)),
            ..Default::default()
        };
        let plugins = Arc::new(Plugins::new(
            opts.waypoint.clone(),
            plugin_cx,
            opts.wasm.clone(),
        ));
        plugins.follow(config.watch());
        L7Service {
            inner: Arc::new(Inner {
                cache: ConfigCache::new(config),
                clusters,
                connector,
                plugins,
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

    /// The metrics WasmPlugins define, in the Prometheus text format.
    pub fn wasm_metrics(&self) -> String {
        self.inner.plugins.metrics().render()
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
        let received = Arc::new(AtomicU64::new(0));
        let body_idle = Arc::new(AtomicBool::new(false));
        let (parts, b) = req.into_parts();
        let req = Request::from_parts(
            parts,
            Tracked::new(body::boxed(b))
                .counting(received.clone())
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
        let mut resp = match self.proxy(req, conn, &cfg, &mut ex, &request_id).await {
            Ok(r) | Err(r) => r,
        };
        if body_idle.load(Ordering::Acquire) {
            // The try failed because the client stopped sending its body: Envoy's answer.
            ex.flags = Flags::default();
            ex.flags.add(flags::STREAM_IDLE_TIMEOUT);
            ex.details = "stream_idle_timeout".into();
            resp = local_reply::text(StatusCode::REQUEST_TIMEOUT, "stream timeout\n");
        }
        let sinks = Sinks {
            metrics: &self.inner.metrics,
            access_log: &self.inner.opts.access_log,
        };
        let arrival = Arrival {
            start,
            wall,
            received,
            logged,
            request_id,
            grpc,
        };
        record::on_response_end(resp, ex, &cfg, conn, sinks, arrival)
    }

    /// The request path's stages, in order. `Err`: a stage answered the request itself.
    ///
    /// Across its awaits this future holds owned values only (the plugin calls take and
    /// return owned data), never a reference made inside it: such references make the
    /// compiler fail to prove the connection's future `Send`.
    async fn proxy<'a>(
        &self,
        req: Request<Tracked>,
        conn: &ConnContext,
        cfg: &'a Compiled,
        ex: &mut Exchange<'a>,
        request_id: &str,
    ) -> Result<Response<Body>, Response<Body>> {
        let req = self.prepare(req, cfg, ex)?;
        let Resolved {
            service,
            port,
            authority,
        } = self.resolve(&req, cfg, conn, ex)?;
        self.observe(&req, cfg, conn, &service, port, &authority, request_id, ex);
        let plugins = match self.inner.plugins.current(&cfg.snapshot) {
            None => Selected::default(),
            Some(pending) => {
                let set = pending.await;
                select::select(&set, &self.inner.opts.waypoint, &service, port)
            }
        };
        let (parts, body) = req.into_parts();
        let attrs = (!plugins.is_empty()).then(|| wasm::attributes(conn, port, request_id));
        let max = self.inner.opts.max_buffered_body;
        // WasmPlugins of the AUTHN and AUTHZ phases (none: at once).
        let (mut chain, before) = wasm::extend(
            plugins.before_authz,
            attrs.clone(),
            parts,
            body,
            authority.clone(),
            max,
            Vec::new(),
        )
        .await;
        let result = 'path: {
            let (parts, body) = match before {
                Ok(pb) => pb,
                Err(stop) => break 'path Err(stop.reply(ex)),
            };
            if let Err(denied) = self.authorize(&parts, cfg, conn, &service, port, &authority, ex) {
                break 'path Err(denied);
            }
            // WasmPlugins of the STATS and UNSPECIFIED phases.
            let (c, after) = wasm::extend(
                plugins.after_authz,
                attrs,
                parts,
                body,
                authority.clone(),
                max,
                std::mem::take(&mut chain),
            )
            .await;
            chain = c;
            let (parts, body) = match after {
                Ok(pb) => pb,
                Err(stop) => break 'path Err(stop.reply(ex)),
            };
            let waypoint = &self.inner.opts.waypoint;
            let mut chosen =
                match route::select(cfg, waypoint, &parts, conn, &authority, &service, port, ex) {
                    Ok(c) => c,
                    Err(r) => break 'path Err(r),
                };
            if self.inner.opts.access_log.enabled() {
                ex.route = chosen.name(&service, port);
            }
            if let Err(r) = route::answer_locally(&mut chosen, &parts, &authority, ex).await {
                break 'path Err(r);
            }
            let mut parts =
                route::transform(&chosen, parts, request_id, || chosen.name(&service, port));
            let wd = match route::pick_destination(&chosen.route, &mut parts, ex) {
                Ok(wd) => wd,
                Err(r) => break 'path Err(r),
            };
            match self
                .send(cfg, &chosen, wd, parts, body, port, conn, ex)
                .await
            {
                Ok(resp) => Ok(route::decorate(resp, &chosen, wd, ex)),
                Err(r) => Err(r),
            }
        };
        if chain.is_empty() {
            return result;
        }
        // The plugins' response callbacks, last first, on whatever answered.
        match result {
            Ok(r) => Ok(wasm::on_response(chain, r, max).await),
            Err(r) => Err(wasm::on_response(chain, r, max).await),
        }
    }

    /// One authority for every stage and the upstream (the target URI's wins over Host),
    /// then path normalisation: authorization, routing, rewrites and the upstream request
    /// all see the one normalised path (Istio `meshConfig.pathNormalization`).
    fn prepare(
        &self,
        mut req: Request<Tracked>,
        cfg: &Compiled,
        ex: &mut Exchange<'_>,
    ) -> Result<Request<Tracked>, Response<Body>> {
        if let Err(e) = authority::canonicalize(&mut req) {
            ex.flags.add(flags::DOWNSTREAM_PROTOCOL_ERROR);
            ex.details = "ambiguous_authority".into();
            return Err(local_reply::text(StatusCode::BAD_REQUEST, format!("{e}\n")));
        }
        if let Err(e) = normalize::apply(&mut req, normalize::Mode::of(cfg.snapshot.mesh())) {
            ex.details = "path_normalization_failed".into();
            return Err(local_reply::text(StatusCode::BAD_REQUEST, format!("{e}\n")));
        }
        if self.inner.opts.access_log.enabled() {
            ex.normalized_path = req.uri().path_and_query().map(|p| p.to_string());
        }
        Ok(req)
    }

    /// The service (or pod) the request is for. `Err`: none, a 404.
    fn resolve<'a>(
        &self,
        req: &Request<Tracked>,
        cfg: &'a Compiled,
        conn: &ConnContext,
        ex: &mut Exchange<'a>,
    ) -> Result<Resolved<'a>, Response<Body>> {
        let authority = authority_of(req);
        let (host, host_port) = split_host(&authority);
        let waypoint = &self.inner.opts.waypoint;
        let Some(Target {
            service,
            port,
            direct,
        }) = target::resolve(&cfg.snapshot, waypoint, conn, host, host_port)
        else {
            ex.flags.add(flags::NO_ROUTE);
            ex.details = "route_not_found".into();
            return Err(local_reply::text(
                StatusCode::NOT_FOUND,
                format!("no service for host {host:?}\n"),
            ));
        };
        ex.direct = direct;
        ex.service = Some(service.clone());
        ex.port = port;
        Ok(Resolved {
            service,
            port,
            authority,
        })
    }

    /// The service's Telemetry settings (and what their expressions see), and its trace
    /// when a Telemetry resource enables tracing; otherwise trace headers pass untouched.
    #[allow(clippy::too_many_arguments)]
    fn observe(
        &self,
        req: &Request<Tracked>,
        cfg: &Compiled,
        conn: &ConnContext,
        service: &pb::Service,
        port: u16,
        authority: &str,
        request_id: &str,
        ex: &mut Exchange<'_>,
    ) {
        let waypoint = &self.inner.opts.waypoint;
        let telemetry = cfg.telemetry(waypoint, service);
        if telemetry.needs_context() {
            let (host, _) = split_host(authority);
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
        let snap = &cfg.snapshot;
        ex.trace = cfg.tracing(waypoint, service).map(|eff| {
            let arrived = ex.arrived.unwrap_or_else(std::time::SystemTime::now);
            self.inner.tracer.start(snap, &eff, req.headers(), arrived)
        });
        if ex.trace.is_some() {
            ex.span_attrs = span_attributes(req, cfg, authority, request_id);
        }
    }

    /// The waypoint's AuthorizationPolicies for the service. `Err`: denied (403).
    #[allow(clippy::too_many_arguments)]
    fn authorize(
        &self,
        parts: &Parts,
        cfg: &Compiled,
        conn: &ConnContext,
        service: &pb::Service,
        port: u16,
        authority: &str,
        ex: &mut Exchange<'_>,
    ) -> Result<(), Response<Body>> {
        let policies = cfg.policies(&self.inner.opts.waypoint, service);
        if policies.is_empty() {
            return Ok(());
        }
        let ctx = authz::context(
            parts,
            authority,
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
            return Err(resp);
        }
        Ok(())
    }

    /// The upstream trip: the body (buffered when small so retries and mirroring can replay
    /// it), the mirror, then the tries under the route timeout, which as in Envoy starts once
    /// the request has been received in full and also bounds the response body. `Err`: the
    /// route timeout fired first (504).
    #[allow(clippy::too_many_arguments)]
    async fn send<'a>(
        &self,
        cfg: &'a Compiled,
        chosen: &Chosen<'_>,
        wd: &pb::WeightedDestination,
        parts: Parts,
        body: Tracked,
        port: u16,
        conn: &ConnContext,
        ex: &mut Exchange<'a>,
    ) -> Result<Response<Body>, Response<Body>> {
        let route = &chosen.route;
        let no_dest = pb::Destination::default();
        let dest = wd.destination.as_ref().unwrap_or(&no_dest);
        let (mut reqbody, end) = forward::buffer(body, self.inner.opts.max_buffered_body).await;
        let (retry, unknown) = RetryPolicy::from_pb(route.retries.as_ref());
        if !unknown.is_empty() {
            debug!(?unknown, "ignoring unknown retryOn values");
        }
        if let Some(m) = &route.mirror {
            let clusters = &self.inner.clusters;
            forward::mirror(
                clusters,
                cfg,
                m,
                route.mirror_percentage,
                &parts,
                &reqbody,
                port,
            );
        }
        let overall = (route.has_timeout && route.timeout_ms > 0)
            .then(|| Duration::from_millis(route.timeout_ms));
        let started = Instant::now();
        let trip = Trip {
            parts: &parts,
            port,
            end: &end,
            retry: &retry,
            conn,
        };
        let work = forward::forward(&self.inner.clusters, cfg, dest, &trip, &mut reqbody, ex);
        let result = match overall {
            Some(t) => tokio::select! {
                r = work => r,
                () = end.timer(started, t) => {
                    ex.flags.add(flags::UPSTREAM_TIMEOUT);
                    ex.details = "upstream_response_timeout".into();
                    return Err(local_reply::text(StatusCode::GATEWAY_TIMEOUT, "upstream request timeout"));
                }
            },
            None => work.await,
        };
        let mut resp = result.response;
        if let Some(t) = overall {
            // Counted from the response headers when they came before the request's end.
            let from = end.at().unwrap_or_else(Instant::now).max(started);
            resp = resp.map(|b| Tracked::new(b).with_deadline(from + t).boxed());
        }
        Ok(resp)
    }
}

/// The attributes of a traced request's spans, from the request as received.
fn span_attributes(
    req: &Request<Tracked>,
    cfg: &Compiled,
    authority: &str,
    request_id: &str,
) -> Attributes {
    Attributes {
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
        user_agent: user_agent(req.headers()),
        protocol: format!("{:?}", req.version()),
        mesh_id: cfg
            .snapshot
            .mesh()
            .map(|m| m.trust_domain.clone())
            .unwrap_or_default(),
        ..Default::default()
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

#[cfg(test)]
mod tests {
    use super::*;

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

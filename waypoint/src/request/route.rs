//! The routing stages of the request path, in order: [`select`] the route (the service's
//! own, the waypoint Gateway's, or the implicit route to the service), [`answer_locally`]
//! when the route says so (CORS preflight, redirect, direct response, fault), [`transform`]
//! the request (rewrite, header operations, request id), [`pick_destination`] by weight,
//! and, once the upstream has answered, [`decorate`] the response.

// A stage that answers the request itself returns the reply as its `Err`: once per request,
// moved, never copied in a loop, so its size does not matter.
#![allow(clippy::result_large_err)]

use std::borrow::Cow;

use http::header::{self, HeaderValue};
use http::request::Parts;
use http::{Request, Response, StatusCode};
use meshwork_model::pb::config as pb;
use tracing::warn;

use crate::body::{self, Body};
use crate::config::{Compiled, WaypointId};
use crate::request::conn::ConnContext;
use crate::request::cors::{self, Cors};
use crate::request::exchange::Exchange;
use crate::request::fault;
use crate::request::flags;
use crate::request::headers::{self, GRPC_STATUS, X_REQUEST_ID};
use crate::request::local_reply;
use crate::request::rewrite::{self, Rewrite};
use crate::request::routing::{pick_weighted, MatchInput, MatchedPrefix};
use crate::request::target;

/// The route a request takes, with what it needs of the match.
pub(crate) struct Chosen<'a> {
    pub route: Cow<'a, pb::HttpRoute>,
    matched_prefix: Option<MatchedPrefix>,
    cors: Option<&'a Cors>,
    rewrite: Option<&'a Rewrite>,
    /// The CORS origin allowed for this request, echoed on the response.
    cors_origin: Option<String>,
}

impl Chosen<'_> {
    /// The route's name, or `<service host>.<port>` for an unnamed one.
    pub fn name(&self, service: &pb::Service, port: u16) -> String {
        if self.route.name.is_empty() {
            format!("{}.{}", service.hostname, port)
        } else {
            self.route.name.clone()
        }
    }
}

/// The request's route: the service's own routes (VirtualService, Service-attached
/// routes), then the routes bound to this waypoint's Gateway. The implicit default route to
/// the service exists only when the service has no HTTP routes of its own; a service with
/// routes of its own answers 404 when none matches.
#[allow(clippy::too_many_arguments)]
pub(crate) fn select<'a>(
    cfg: &'a Compiled,
    waypoint: &WaypointId,
    parts: &Parts,
    conn: &ConnContext,
    authority: &str,
    service: &pb::Service,
    port: u16,
    ex: &mut Exchange<'_>,
) -> Result<Chosen<'a>, Response<Body>> {
    let snap = &cfg.snapshot;
    let route_cfg = cfg.route(service).filter(|rc| !rc.routes.is_empty());
    let gateway_cfg = cfg.gateway_routes(waypoint);
    let source_wl = conn.source.and_then(|s| snap.workload_by_ip(s.ip()));
    let scheme = parts.uri.scheme_str().unwrap_or("http");
    let input = MatchInput {
        method: &parts.method,
        uri: &parts.uri,
        headers: &parts.headers,
        authority,
        scheme,
        port,
        source_labels: source_wl.map(|w| &w.labels),
        source_namespace: source_wl
            .map(|w| w.namespace.as_str())
            .or(Some(target::source_namespace(conn))),
    };
    let found = route_cfg
        .as_ref()
        .and_then(|rc| rc.find(&input))
        .or_else(|| gateway_cfg.and_then(|g| g.find(&input)));
    let chosen = match found {
        Some(r) => Chosen {
            route: Cow::Borrowed(&r.route),
            matched_prefix: r.matched_prefix(&input),
            cors: r.cors.as_ref(),
            rewrite: r.rewrite.as_ref(),
            cors_origin: None,
        },
        None if route_cfg.is_some() => {
            ex.flags.add(flags::NO_ROUTE);
            ex.details = "route_not_found".into();
            return Err(local_reply::text(StatusCode::NOT_FOUND, ""));
        }
        None => Chosen {
            route: Cow::Owned(implicit_route(service, port)),
            matched_prefix: None,
            cors: None,
            rewrite: None,
            cors_origin: None,
        },
    };
    Ok(chosen)
}

/// Answers what the route answers itself: a CORS preflight, a redirect, a direct response
/// or an injected fault (after an injected delay). Remembers the allowed CORS origin.
pub(crate) async fn answer_locally(
    chosen: &mut Chosen<'_>,
    parts: &Parts,
    authority: &str,
    ex: &mut Exchange<'_>,
) -> Result<(), Response<Body>> {
    chosen.cors_origin = chosen
        .cors
        .and_then(|c| cors::allowed_origin(c, &parts.headers));
    if let Some(c) = chosen.cors {
        if let Some(resp) = cors::preflight(c, &parts.method, &parts.headers) {
            ex.details = "cors_response".into();
            return Err(resp);
        }
    }
    let route = &chosen.route;
    if let Some(r) = &route.redirect {
        ex.details = "redirect".into();
        let scheme = parts.uri.scheme_str().unwrap_or("http");
        return Err(rewrite::redirect(
            r,
            &parts.uri,
            authority,
            scheme,
            chosen.matched_prefix.as_ref(),
        ));
    }
    if let Some(d) = &route.direct_response {
        ex.details = "direct_response".into();
        return Err(rewrite::direct(d));
    }
    if let Some(f) = &route.fault {
        if let Some(resp) = inject_fault(f, ex).await {
            return Err(resp);
        }
    }
    Ok(())
}

/// The request as the upstream will see it: the route's rewrite, its request header
/// operations, and an `x-request-id` when it had none.
pub(crate) fn transform(
    chosen: &Chosen<'_>,
    parts: Parts,
    request_id: &str,
    route_name: impl Fn() -> String,
) -> Parts {
    let mut req = Request::from_parts(parts, ());
    if let Some(rw) = chosen.rewrite {
        if let Err(e) = rewrite::apply(rw, &mut req, chosen.matched_prefix.as_ref()) {
            warn!("route {}: {e}", route_name());
        }
    }
    let (mut parts, ()) = req.into_parts();
    headers::apply(
        chosen
            .route
            .headers
            .as_ref()
            .and_then(|h| h.request.as_ref()),
        &mut parts.headers,
    );
    if !parts.headers.contains_key(&X_REQUEST_ID) {
        if let Ok(v) = HeaderValue::from_str(request_id) {
            parts.headers.insert(X_REQUEST_ID, v);
        }
    }
    parts
}

/// The destination, by weight, with its request header operations applied. `Err`: the
/// route has none, a 503.
pub(crate) fn pick_destination<'r>(
    route: &'r pb::HttpRoute,
    parts: &mut Parts,
    ex: &mut Exchange<'_>,
) -> Result<&'r pb::WeightedDestination, Response<Body>> {
    let Some(wd) = pick_weighted(&route.route, &mut rand::rng()) else {
        ex.flags.add(flags::NO_ROUTE);
        ex.details = "no_route_destination".into();
        return Err(local_reply::text(
            StatusCode::SERVICE_UNAVAILABLE,
            "no destination\n",
        ));
    };
    headers::apply(
        wd.headers.as_ref().and_then(|h| h.request.as_ref()),
        &mut parts.headers,
    );
    Ok(wd)
}

/// The upstream's response as the route says: response header operations (route, then
/// destination), a generated affinity cookie, CORS headers.
pub(crate) fn decorate(
    mut resp: Response<Body>,
    chosen: &Chosen<'_>,
    wd: &pb::WeightedDestination,
    ex: &mut Exchange<'_>,
) -> Response<Body> {
    headers::apply(
        chosen
            .route
            .headers
            .as_ref()
            .and_then(|h| h.response.as_ref()),
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
    if let (Some(c), Some(origin)) = (chosen.cors, &chosen.cors_origin) {
        cors::decorate(c, origin, resp.headers_mut());
    }
    resp
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
            weight: meshwork_model::rules::weights::WHOLE,
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
        return Some(local_reply::text(s, "fault filter abort"));
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

//! The control plane's admin HTTP endpoint: readiness, validation errors, connected
//! proxies and the model, as JSON for people and the CLI.
//!
//! | path | answer |
//! |---|---|
//! | `/ready` | 200 once the first full load is done, 503 before |
//! | `/debug/errors` | `{"errors": [...], "warnings": [...]}` from the config sources |
//! | `/debug/proxies` | connected proxies with their ACK/NACK state |
//! | `/debug/model?prefix=workload/` | model resources (all, or those whose key starts with prefix) |
//! | `/debug/canaries` | every Canary: Flagger-shaped `status`, routing, last checks and decision |
//! | `POST /canary/promote?namespace=NS&name=NAME` | promote a running canary now (`meshwork rollout promote`) |
//! | `POST /canary/abort?namespace=NS&name=NAME` | roll a running canary back now (`meshwork rollout abort`) |
//!
//! None of it is authenticated: the endpoint belongs on loopback (the chart binds it
//! there; `kubectl port-forward` reaches it). [`serve_probes`] answers `/ready` alone, for
//! kubelet on the pod IP.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::{Request, Response, StatusCode};
use hyper_util::rt::{TokioExecutor, TokioIo};
use tokio::net::TcpListener;
use tokio::sync::watch;
use tracing::{debug, info};

use crate::distribute::{ModelHub, Registry};

/// Supplies the current validation errors and warnings as JSON.
pub type ErrorReport = Arc<dyn Fn() -> serde_json::Value + Send + Sync>;

#[derive(Clone)]
pub struct AdminState {
    pub hub: Arc<ModelHub>,
    pub registry: Arc<Registry>,
    pub errors: ErrorReport,
    pub ready: watch::Receiver<bool>,
    /// The canary controller's board (status, promote/abort), if it runs.
    pub canaries: Option<Arc<crate::canary::Board>>,
}

/// Serves the admin endpoint on an already bound listener until the task is dropped.
pub async fn serve(listener: TcpListener, state: AdminState) {
    info!(addr = ?listener.local_addr().ok(), "admin endpoint listening");
    loop {
        let (stream, peer) = meshwork_runtime::accept::accept(&listener, "admin").await;
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(route(&state, req, peer)) }
            });
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn.serve_connection(TokioIo::new(stream), svc).await {
                debug!(%peer, error = %e, "admin connection ended with an error");
            }
        });
    }
}

/// Serves `/ready` only (kubelet's probes) until the task is dropped.
pub async fn serve_probes(listener: TcpListener, ready: watch::Receiver<bool>) {
    info!(addr = ?listener.local_addr().ok(), "probe endpoint listening");
    loop {
        let (stream, peer) = meshwork_runtime::accept::accept(&listener, "probe").await;
        let ready = ready.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req: Request<Incoming>| {
                let ready = *ready.borrow();
                async move { Ok::<_, Infallible>(probe_route(ready, req.uri().path())) }
            });
            let conn = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new());
            if let Err(e) = conn.serve_connection(TokioIo::new(stream), svc).await {
                debug!(%peer, error = %e, "probe connection ended with an error");
            }
        });
    }
}

fn probe_route(ready: bool, path: &str) -> Response<Full<Bytes>> {
    match path {
        "/ready" => ready_answer(ready),
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; only /ready is served here\n",
        ),
    }
}

fn ready_answer(ready: bool) -> Response<Full<Bytes>> {
    if ready {
        text(StatusCode::OK, "ready\n")
    } else {
        text(StatusCode::SERVICE_UNAVAILABLE, "loading\n")
    }
}

fn route(state: &AdminState, req: Request<Incoming>, _peer: SocketAddr) -> Response<Full<Bytes>> {
    let query = req.uri().query().unwrap_or("");
    if let Some(r) = canary_route(state, &req, query) {
        return r;
    }
    match req.uri().path() {
        "/ready" => ready_answer(*state.ready.borrow()),
        "/debug/errors" => json(&(state.errors)()),
        "/debug/proxies" => json(&serde_json::to_value(state.registry.list()).unwrap_or_default()),
        "/debug/model" => {
            let prefix = query_param(query, "prefix").unwrap_or_default();
            let hub = state.hub.read();
            let mut items: Vec<_> = hub
                .resources
                .iter()
                .filter(|(k, _)| k.starts_with(&prefix))
                .collect();
            items.sort_by(|a, b| a.0.cmp(b.0));
            let resources: Vec<_> = items.into_iter().map(|(_, r)| r.as_ref()).collect();
            json(&serde_json::json!({
                "version": hub.generation,
                "resources": resources,
            }))
        }
        _ => text(
            StatusCode::NOT_FOUND,
            "not found; try /ready /debug/errors /debug/proxies /debug/model\n",
        ),
    }
}

/// The canary endpoints; `None` for other paths.
fn canary_route(
    state: &AdminState,
    req: &Request<Incoming>,
    query: &str,
) -> Option<Response<Full<Bytes>>> {
    use crate::canary::machine::Command;
    let method = req.method();
    let command = match req.uri().path() {
        "/debug/canaries" => None,
        "/canary/promote" => Some(Command::Promote),
        "/canary/abort" => Some(Command::Abort),
        _ => return None,
    };
    let Some(board) = &state.canaries else {
        return Some(text(
            StatusCode::NOT_FOUND,
            "the canary controller is not running\n",
        ));
    };
    let Some(command) = command else {
        let list = board.list();
        return Some(json(&serde_json::json!({ "canaries": list })));
    };
    if method != hyper::Method::POST {
        return Some(text(StatusCode::METHOD_NOT_ALLOWED, "use POST\n"));
    }
    if let Some(refused) = refuse_browser(req.headers()) {
        return Some(refused);
    }
    let (Some(ns), Some(name)) = (query_param(query, "namespace"), query_param(query, "name"))
    else {
        return Some(text(
            StatusCode::BAD_REQUEST,
            "namespace and name query parameters required\n",
        ));
    };
    Some(match board.command(&ns, &name, command) {
        Ok(()) => json(
            &serde_json::json!({"accepted": format!("{command:?}"), "canary": format!("{ns}/{name}")}),
        ),
        Err(e @ crate::canary::CommandError::NotFound(_)) => {
            text(StatusCode::NOT_FOUND, &format!("{e}\n"))
        }
        Err(e) => text(StatusCode::CONFLICT, &format!("{e}\n")),
    })
}

/// Refuses a state-changing request a web browser sent: any page the operator has open can
/// make the browser POST to a loopback port (no CORS preflight for a bodiless POST), but
/// browsers always say where such a request comes from (`Origin`, `Sec-Fetch-Site`); the
/// CLI sends neither.
fn refuse_browser(headers: &hyper::HeaderMap) -> Option<Response<Full<Bytes>>> {
    let from_browser = headers.contains_key(hyper::header::ORIGIN)
        || headers
            .get("sec-fetch-site")
            .is_some_and(|v| v.as_bytes() != b"none");
    from_browser.then(|| {
        text(
            StatusCode::FORBIDDEN,
            "requests from web pages are refused; use `meshwork rollout`\n",
        )
    })
}

fn query_param(query: &str, name: &str) -> Option<String> {
    query.split('&').find_map(|kv| {
        let (k, v) = kv.split_once('=')?;
        (k == name).then(|| v.replace("%2F", "/").replace("%2f", "/"))
    })
}

fn text(status: StatusCode, body: &str) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(Bytes::from(body.to_string())));
    *r.status_mut() = status;
    r
}

fn json(v: &serde_json::Value) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec_pretty(v).unwrap_or_default();
    let mut r = Response::new(Full::new(Bytes::from(body)));
    r.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    r
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn a_browsers_cross_site_post_cannot_promote_or_abort() {
        let mut h = hyper::HeaderMap::new();
        assert!(refuse_browser(&h).is_none(), "the CLI sends no Origin");
        h.insert("sec-fetch-site", "none".parse().unwrap());
        assert!(refuse_browser(&h).is_none(), "typed into the address bar");
        h.insert("sec-fetch-site", "cross-site".parse().unwrap());
        assert_eq!(refuse_browser(&h).unwrap().status(), StatusCode::FORBIDDEN);
        let mut h = hyper::HeaderMap::new();
        h.insert(
            hyper::header::ORIGIN,
            "https://evil.example".parse().unwrap(),
        );
        assert_eq!(refuse_browser(&h).unwrap().status(), StatusCode::FORBIDDEN);
    }

    #[test]
    fn the_probe_endpoint_serves_readiness_only() {
        assert_eq!(probe_route(true, "/ready").status(), StatusCode::OK);
        assert_eq!(
            probe_route(false, "/ready").status(),
            StatusCode::SERVICE_UNAVAILABLE
        );
        for path in ["/debug/model", "/debug/proxies", "/debug/errors", "/"] {
            assert_eq!(probe_route(true, path).status(), StatusCode::NOT_FOUND);
        }
    }
}

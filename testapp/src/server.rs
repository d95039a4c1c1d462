//! The HTTP/1.1 server.
use std::collections::BTreeMap;
use std::convert::Infallible;
use std::sync::Arc;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::body::Incoming;
use hyper::{Method, Request, Response, StatusCode};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpListener;

use crate::faults::{self, FaultConfig, Faults};

/// Who this instance is.
#[derive(Clone, Debug, PartialEq, Eq, Serialize)]
pub struct Identity {
    pub service: String,
    pub version: String,
    pub pod: String,
}

pub struct State {
    pub identity: Identity,
    pub faults: Faults,
}

impl State {
    pub fn new(identity: Identity, faults: FaultConfig) -> Arc<Self> {
        Arc::new(Self {
            identity,
            faults: Faults::new(faults),
        })
    }
}

/// Body of a normal answer.
#[derive(Debug, Serialize)]
struct Echo<'a> {
    service: &'a str,
    version: &'a str,
    pod: &'a str,
    path: &'a str,
    method: &'a str,
    /// The address the connection came from, as this pod sees it.
    client: String,
    headers: BTreeMap<String, String>,
    #[serde(skip_serializing_if = "String::is_empty")]
    padding: String,
}

/// Largest `size` padding accepted.
const MAX_PADDING: usize = 1 << 20;

fn json(status: StatusCode, value: &impl Serialize) -> Response<Full<Bytes>> {
    let body = serde_json::to_vec(value).unwrap_or_else(|_| b"{}".to_vec());
    let mut resp = Response::new(Full::new(Bytes::from(body)));
    *resp.status_mut() = status;
    resp.headers_mut().insert(
        hyper::header::CONTENT_TYPE,
        hyper::header::HeaderValue::from_static("application/json"),
    );
    resp
}

fn error(status: StatusCode, id: &Identity, message: String) -> Response<Full<Bytes>> {
    json(
        status,
        &serde_json::json!({
            "error": message,
            "service": id.service,
            "version": id.version,
            "pod": id.pod,
        }),
    )
}

fn query_param<'a>(query: &'a str, key: &str) -> Option<&'a str> {
    query
        .split('&')
        .filter_map(|p| p.split_once('='))
        .find(|(k, _)| *k == key)
        .map(|(_, v)| v)
}

/// Answers one request.
pub async fn handle(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    let id = &state.identity;
    let path = req.uri().path().to_string();
    let query = req.uri().query().unwrap_or("").to_string();
    let method = req.method().clone();
    match (&method, path.as_str()) {
        (&Method::GET, "/health") => {
            return json(StatusCode::OK, &serde_json::json!({"status": "ok"}))
        }
        (&Method::POST, "/admin/fail") => {
            return match state.faults.get().with_query(&query) {
                Ok(cfg) => {
                    state.faults.set(cfg);
                    tracing::info!(?cfg, "fault setting changed");
                    json(StatusCode::OK, &fault_json(cfg))
                }
                Err(e) => error(StatusCode::BAD_REQUEST, id, e.to_string()),
            };
        }
        (&Method::GET, "/admin/fail") => {
            return json(StatusCode::OK, &fault_json(state.faults.get()))
        }
        _ => {}
    }
    let header = |name: &str| req.headers().get(name).and_then(|v| v.to_str().ok());
    let decision = match faults::decide(
        state.faults.get(),
        header(faults::HEADER_FAIL),
        header(faults::HEADER_DELAY),
        rand::random::<f64>(),
    ) {
        Ok(d) => d,
        Err(e) => return error(StatusCode::BAD_REQUEST, id, e.to_string()),
    };
    let headers: BTreeMap<String, String> = req
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let padding = match query_param(&query, "size").map(str::parse::<usize>) {
        None => 0,
        Some(Ok(n)) if n <= MAX_PADDING => n,
        Some(_) => {
            return error(
                StatusCode::BAD_REQUEST,
                id,
                format!("query size: must be a byte count up to {MAX_PADDING}"),
            )
        }
    };
    // Drain the request body (bounded by the client; errors just end the request).
    let _ = req.into_body().collect().await;
    if !decision.delay.is_zero() {
        tokio::time::sleep(decision.delay).await;
    }
    if let Some(code) = decision.fail {
        let status = StatusCode::from_u16(code).unwrap_or(StatusCode::SERVICE_UNAVAILABLE);
        return error(status, id, format!("injected failure {code}"));
    }
    json(
        StatusCode::OK,
        &Echo {
            service: &id.service,
            version: &id.version,
            pod: &id.pod,
            path: &path,
            method: method.as_str(),
            client: peer.ip().to_string(),
            headers,
            padding: "x".repeat(padding),
        },
    )
}

fn fault_json(cfg: FaultConfig) -> serde_json::Value {
    serde_json::json!({
        "rate": cfg.rate,
        "code": cfg.code,
        "delay_ms": cfg.delay.as_millis() as u64,
    })
}

/// Header naming the pod that answered.
pub const HEADER_SERVED_BY: &str = "x-served-by";

/// One access log line (JSON) for a request and its answer.
pub fn access_line(
    id: &Identity,
    method: &str,
    path: &str,
    peer: std::net::SocketAddr,
    status: u16,
    elapsed: std::time::Duration,
) -> String {
    serde_json::json!({
        "pod": id.pod,
        "service": id.service,
        "version": id.version,
        "method": method,
        "path": path,
        "client": peer.ip().to_string(),
        "status": status,
        "ms": elapsed.as_millis() as u64,
    })
    .to_string()
}

/// [`handle`], plus the `x-served-by` header and one access log line on stdout.
pub async fn answer(
    state: Arc<State>,
    req: Request<Incoming>,
    peer: std::net::SocketAddr,
) -> Response<Full<Bytes>> {
    let started = std::time::Instant::now();
    let method = req.method().to_string();
    let path = req.uri().path().to_string();
    let id = state.identity.clone();
    let mut resp = handle(state, req, peer).await;
    if let Ok(v) = hyper::header::HeaderValue::from_str(&id.pod) {
        resp.headers_mut().insert(HEADER_SERVED_BY, v);
    }
    let line = access_line(
        &id,
        &method,
        &path,
        peer,
        resp.status().as_u16(),
        started.elapsed(),
    );
    {
        use std::io::Write;
        // A closed stdout must not fail the request.
        let _ = writeln!(std::io::stdout().lock(), "{line}");
    }
    resp
}

/// Accepts connections until the listener fails; each connection is served on its own task.
pub async fn serve(listener: TcpListener, state: Arc<State>) -> std::io::Result<()> {
    loop {
        let (stream, peer) = listener.accept().await?;
        let state = state.clone();
        tokio::spawn(async move {
            let svc = hyper::service::service_fn(move |req| {
                let state = state.clone();
                async move { Ok::<_, Infallible>(answer(state, req, peer).await) }
            });
            if let Err(e) = hyper::server::conn::http1::Builder::new()
                .keep_alive(true)
                .serve_connection(TokioIo::new(stream), svc)
                .await
            {
                tracing::debug!(%peer, error = %e, "connection ended");
            }
        });
    }
}

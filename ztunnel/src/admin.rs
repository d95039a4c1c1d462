//! HTTP endpoints: readiness (15021 `/healthz/ready`), metrics (15020 `/metrics`) and
//! admin (15000 `/config_dump`, `/certs`, `/logging?level=`, `/redirect`, `/inpod`).
//!
//! Reading endpoints answer GET (and HEAD); the one that changes state, `/logging`, only
//! POST, so a link, a redirect or a cross-site GET cannot change the process. Any other
//! method gets 405 with an `allow` header.

use std::convert::Infallible;
use std::sync::{Arc, Weak};

use bytes::Bytes;
use http::{Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use serde_json::json;
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

use crate::exposition::CONTENT_TYPE;
use crate::inpod::InPod;
use crate::proxy::Proxy;
use crate::state::workload_ref;

#[derive(Debug, Clone, Copy)]
pub enum Endpoint {
    Readiness,
    Metrics,
    Admin,
}

type Resp = Response<Full<Bytes>>;

fn text(status: StatusCode, body: impl Into<Bytes>) -> Resp {
    Response::builder()
        .status(status)
        .header("content-type", "text/plain; charset=utf-8")
        .body(Full::new(body.into()))
        .expect("static response")
}

fn json_resp(v: serde_json::Value) -> Resp {
    Response::builder()
        .header("content-type", "application/json")
        .body(Full::new(Bytes::from(
            serde_json::to_vec_pretty(&v).unwrap_or_default(),
        )))
        .expect("static response")
}

/// Serves `endpoint` on `listener` until `stop`.
/// `inpod` is the in-pod capture (`--redirect inpod`), held weakly: it holds the proxy.
pub async fn serve(
    proxy: Arc<Proxy>,
    inpod: Option<Weak<InPod>>,
    listener: TcpListener,
    endpoint: Endpoint,
    stop: CancellationToken,
) {
    loop {
        let (sock, _) = tokio::select! {
            c = meshwork_runtime::accept::accept(&listener, "admin") => c,
            _ = stop.cancelled() => return,
        };
        let proxy = proxy.clone();
        let inpod = inpod.clone();
        tokio::spawn(async move {
            let svc = service_fn(move |req| {
                let proxy = proxy.clone();
                let inpod = inpod.clone();
                async move {
                    if matches!(endpoint, Endpoint::Admin)
                        && req.uri().path() == "/inpod"
                        && allowed(endpoint, "/inpod").contains(req.method())
                    {
                        return Ok::<_, Infallible>(json_resp(inpod_status(&proxy, inpod).await));
                    }
                    Ok::<_, Infallible>(route(&proxy, endpoint, req))
                }
            });
            let _ = hyper::server::conn::http1::Builder::new()
                .serve_connection(TokioIo::new(sock), svc)
                .await;
        });
    }
}

/// Methods an endpoint answers: state changes only on POST.
fn allowed(endpoint: Endpoint, path: &str) -> &'static [Method] {
    match (endpoint, path) {
        (Endpoint::Admin, "/logging") => &[Method::POST],
        _ => &[Method::GET, Method::HEAD],
    }
}

fn method_not_allowed(allow: &[Method]) -> Resp {
    let list: Vec<&str> = allow.iter().map(Method::as_str).collect();
    let mut r = text(
        StatusCode::METHOD_NOT_ALLOWED,
        format!("method not allowed; use {}\n", list.join(" or ")),
    );
    if let Ok(v) = list.join(", ").parse() {
        r.headers_mut().insert(http::header::ALLOW, v);
    }
    r
}

fn route(proxy: &Proxy, endpoint: Endpoint, req: Request<Incoming>) -> Resp {
    let path = req.uri().path();
    let allow = allowed(endpoint, path);
    if !allow.contains(req.method()) {
        return method_not_allowed(allow);
    }
    match (endpoint, path) {
        (Endpoint::Readiness, "/healthz/ready") => match proxy.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        (Endpoint::Metrics, "/metrics") | (Endpoint::Admin, "/metrics") => Response::builder()
            .header("content-type", CONTENT_TYPE)
            .body(Full::new(Bytes::from(proxy.metrics.encode())))
            .expect("static response"),
        (Endpoint::Admin, "/config_dump") => json_resp(config_dump(proxy)),
        (Endpoint::Admin, "/certs") => json_resp(json!({ "certificates": proxy.certs.dump() })),
        (Endpoint::Admin, "/logging") => logging(proxy, &req),
        (Endpoint::Admin, "/redirect") => json_resp(match proxy.redirect.get() {
            Some(r) => r.report(),
            None => json!({ "mode": "off" }),
        }),
        (Endpoint::Admin, "/healthz/ready") => match proxy.readiness() {
            Ok(()) => text(StatusCode::OK, "ready\n"),
            Err(why) => text(
                StatusCode::SERVICE_UNAVAILABLE,
                format!("not ready: {why}\n"),
            ),
        },
        _ => text(StatusCode::NOT_FOUND, format!("no such endpoint: {path}\n")),
    }
}

/// `GET /inpod`: the pods handed over (`--redirect inpod`) and the capture counters.
async fn inpod_status(proxy: &Proxy, inpod: Option<Weak<InPod>>) -> serde_json::Value {
    match inpod.as_ref().and_then(Weak::upgrade) {
        Some(p) => p.status().await,
        None => json!({ "mode": format!("{:?}", proxy.cfg.redirect).to_lowercase() }),
    }
}

/// `POST /logging?level=<filter>` (the method is checked by `route`).
fn logging(proxy: &Proxy, req: &Request<Incoming>) -> Resp {
    let level = req
        .uri()
        .query()
        .unwrap_or("")
        .split('&')
        .find_map(|kv| kv.strip_prefix("level="));
    let Some(level) = level.filter(|l| !l.is_empty()) else {
        return text(
            StatusCode::BAD_REQUEST,
            "missing query parameter level (e.g. level=debug)\n",
        );
    };
    let Some(ctl) = &proxy.log_control else {
        return text(
            StatusCode::NOT_IMPLEMENTED,
            "log level control is not available in this process\n",
        );
    };
    match ctl(level) {
        Ok(()) => {
            tracing::info!(level, "log level set through the admin endpoint");
            text(StatusCode::OK, format!("log level set to {level}\n"))
        }
        Err(e) => text(
            StatusCode::BAD_REQUEST,
            format!("invalid level {level:?}: {e}\n"),
        ),
    }
}

fn config_dump(proxy: &Proxy) -> serde_json::Value {
    let cur = proxy.current();
    let st = &cur.state;
    let workloads: Vec<_> = st
        .snapshot
        .workloads()
        .map(|w| {
            json!({
                "workload": workload_ref(w),
                "uid": w.uid,
                "node": w.node,
                "local": st.is_local(w),
                // The compact remote view: no labels, policies or mTLS mode (docs/architecture.md).
                "compact": w.compact,
                "addresses": w.addresses,
                "identity": st.identity(w).map(|i| i.to_string()).unwrap_or_default(),
                "captured": w.captured,
                "healthy": w.healthy,
                "waypoint": st.waypoint_of(w).map(|g| format!("{}/{} {}", g.namespace, g.name, g.address)),
                "mtls_mode": format!("{:?}", crate::state::State::mtls_mode(w, 0)),
                "authorization_policies": w.authorization_policies,
            })
        })
        .collect();
    let services: Vec<_> = st
        .snapshot
        .services()
        .map(|s| {
            json!({
                "hostname": s.hostname,
                "namespace": s.namespace,
                "vips": s.vips,
                "ports": s.ports.iter().map(|p| json!({"port": p.port, "target_port": p.target_port})).collect::<Vec<_>>(),
                "waypoint": s.waypoint.as_ref().map(|g| format!("{}/{} {}", g.namespace, g.name, g.address)),
            })
        })
        .collect();
    let policies: Vec<_> = st
        .snapshot
        .authorizations()
        .map(|a| format!("{}/{}", a.namespace, a.name))
        .collect();
    let status = proxy.xds.status();
    let pool = proxy.pool_stats();
    json!({
        "node": st.node,
        "config_version": st.snapshot.version,
        "xds": {
            "connected": status.connected,
            "synced": status.synced,
            "last_error": status.last_error,
            "acks": status.acks,
            "nacks": status.nacks,
        },
        "workloads": workloads,
        "services": services,
        "authorizations": policies,
        "certificates": proxy.certs.dump().into_iter().map(|c| json!({"identity": c.identity, "serial": c.serial, "not_after": c.not_after})).collect::<Vec<_>>(),
        "inbound_connections": proxy.registry.len(),
        "hbone_pool": {
            "connections_opened": pool.connections_opened,
            "connections_open": pool.connections_open,
            "streams_opened": pool.streams_opened,
        },
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn only_post_changes_the_log_level_and_reads_are_get() {
        assert_eq!(allowed(Endpoint::Admin, "/logging"), &[Method::POST]);
        for path in [
            "/config_dump",
            "/certs",
            "/redirect",
            "/inpod",
            "/metrics",
            "/nope",
        ] {
            assert!(
                !allowed(Endpoint::Admin, path).contains(&Method::POST),
                "{path}"
            );
            assert!(
                allowed(Endpoint::Admin, path).contains(&Method::GET),
                "{path}"
            );
        }
        let r = method_not_allowed(&[Method::POST]);
        assert_eq!(r.status(), StatusCode::METHOD_NOT_ALLOWED);
        assert_eq!(r.headers()[http::header::ALLOW], "POST");
    }
}

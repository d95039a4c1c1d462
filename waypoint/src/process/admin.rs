//! Admin endpoints, on three listeners as in the ztunnel (and Envoy, Istio):
//! - admin (`--admin-addr`, loopback by default, as Envoy's `127.0.0.1:15000`): everything
//!   below, including `/config_dump` (text: `version N` then `key version` lines;
//!   `?format=json`: the same plus the route configs), `/clusters` (JSON: clusters,
//!   endpoints with health and outlier state, pool occupancy) and `/certs` (JSON: the
//!   certificate the waypoint presents). The JSON views are in [`crate::process::admin_state`];
//! - metrics (`--metrics-addr`, the pod IP): `/metrics` (Prometheus) and `/stats/prometheus`;
//! - readiness (`--readiness-addr`, the pod IP): `/healthz/ready`.
//!
//! Every endpoint only reads: they answer GET and HEAD, and any other method 405. (A
//! state-changing endpoint, should one be added, must take POST on the admin listener.)

use std::convert::Infallible;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::Arc;

use http::{Method, Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_model::client::ConfigHandle;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::debug;

use meshwork_identity::tls::RotatingCert;

use crate::body::{self, Body};
use crate::process::admin_state;
use crate::request::service::L7Service;
use crate::telemetry::metrics::render;

/// Which endpoints a listener serves.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    /// All of them (loopback only by default).
    Admin,
    /// `/metrics`, `/stats/prometheus`.
    Metrics,
    /// `/healthz/ready`.
    Readiness,
}

/// A listener address flag: `ip:port`, or `off` for none.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Listen(pub Option<SocketAddr>);

#[derive(Debug, thiserror::Error)]
#[error("listener address {value:?}: want ip:port or off")]
pub struct ListenError {
    value: String,
}

impl FromStr for Listen {
    type Err = ListenError;
    fn from_str(s: &str) -> Result<Self, Self::Err> {
        if s.eq_ignore_ascii_case("off") {
            return Ok(Listen(None));
        }
        s.parse().map(|a| Listen(Some(a))).map_err(|_| ListenError {
            value: s.to_string(),
        })
    }
}

/// What the admin endpoint reports on.
#[derive(Clone)]
pub struct Admin {
    pub registry: Arc<Registry>,
    pub config: ConfigHandle,
    /// Ready once a certificate is loaded, unready again once draining (set by the binary).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
    /// The proxy, for cluster and endpoint state (`/clusters`).
    pub service: Option<L7Service>,
    /// The certificate the waypoint presents (`/certs`); `None` when insecure.
    pub cert: Option<Arc<RotatingCert>>,
}

impl Admin {
    /// The answer to `method path?query` on a listener of `scope`.
    fn answer(
        &self,
        scope: Scope,
        method: &Method,
        path: &str,
        query: Option<&str>,
    ) -> Response<Body> {
        let text = |status: StatusCode, s: String| {
            let mut r = Response::new(body::full(s));
            *r.status_mut() = status;
            r
        };
        let served = match scope {
            Scope::Admin => true,
            Scope::Metrics => matches!(path, "/metrics" | "/stats/prometheus"),
            Scope::Readiness => path == "/healthz/ready",
        };
        if !served {
            return text(StatusCode::NOT_FOUND, "not found\n".into());
        }
        if method != Method::GET && method != Method::HEAD {
            let mut r = text(
                StatusCode::METHOD_NOT_ALLOWED,
                format!("{path} only reads: use GET\n"),
            );
            r.headers_mut().insert(
                http::header::ALLOW,
                http::HeaderValue::from_static("GET, HEAD"),
            );
            return r;
        }
        let json = |v: serde_json::Value| {
            let mut r = Response::new(body::full(format!("{v:#}\n")));
            r.headers_mut().insert(
                http::header::CONTENT_TYPE,
                http::HeaderValue::from_static("application/json"),
            );
            r
        };
        let want_json = query.unwrap_or("").split('&').any(|kv| kv == "format=json");
        match path {
            "/metrics" | "/stats/prometheus" => {
                let mut out = render(&self.registry);
                // Metrics the WasmPlugins defined (proxy_define_metric), as Envoy exports them.
                if let Some(svc) = &self.service {
                    out.push_str(&svc.wasm_metrics());
                }
                let mut r = text(StatusCode::OK, out);
                r.headers_mut().insert(
                    http::header::CONTENT_TYPE,
                    http::HeaderValue::from_static(meshwork_metrics::CONTENT_TYPE),
                );
                r
            }
            "/healthz/ready" => {
                let synced = self.config.status().synced;
                let ready = self.ready.load(std::sync::atomic::Ordering::Acquire);
                if synced && ready {
                    text(StatusCode::OK, "ready\n".into())
                } else {
                    text(
                        StatusCode::SERVICE_UNAVAILABLE,
                        format!("not ready: config synced={synced}, serving={ready} (false: no certificate yet, or draining)\n"),
                    )
                }
            }
            "/config_dump" if want_json => json(admin_state::config_dump(&self.config.snapshot())),
            "/clusters" => match &self.service {
                Some(svc) => json(admin_state::clusters(
                    svc.clusters(),
                    &self.config.snapshot(),
                    &svc.options().waypoint,
                )),
                None => text(StatusCode::NOT_FOUND, "no proxy attached\n".into()),
            },
            "/certs" => {
                let cert = self.cert.as_ref().map(|c| c.current());
                json(admin_state::certs(cert.as_ref()))
            }
            "/config_dump" => {
                let snap = self.config.snapshot();
                let mut out = format!("version {}\n", snap.version);
                for r in snap.resources() {
                    out.push_str(&format!("{} {}\n", r.key, r.version));
                }
                text(StatusCode::OK, out)
            }
            _ => text(StatusCode::NOT_FOUND, "not found\n".into()),
        }
    }

    /// Serves the endpoints of `scope` until the task is dropped.
    pub async fn serve(self, listener: TcpListener, scope: Scope) {
        loop {
            let (s, _) = meshwork_runtime::accept::accept(&listener, "admin").await;
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let resp =
                        admin.answer(scope, req.method(), req.uri().path(), req.uri().query());
                    async move { Ok::<_, Infallible>(resp) }
                });
                if let Err(e) = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await
                {
                    debug!("admin connection: {e}");
                }
            });
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::snapshot::Snapshot;

    #[test]
    fn endpoints() {
        let admin = Admin {
            registry: Arc::new(Registry::default()),
            config: ConfigHandle::fixed(Snapshot::default()),
            ready: Arc::new(false.into()),
            service: None,
            cert: None,
        };
        let get = |path| {
            admin
                .answer(Scope::Admin, &Method::GET, path, None)
                .status()
        };
        assert_eq!(get("/metrics"), 200);
        assert_eq!(get("/healthz/ready"), 503);
        admin
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(get("/healthz/ready"), 200);
        assert_eq!(get("/config_dump"), 200);
        assert_eq!(get("/nope"), 404);
        assert_eq!(get("/clusters"), 404, "no proxy");
    }

    #[test]
    fn each_listener_serves_its_own_endpoints_and_only_reads() {
        let admin = Admin {
            registry: Arc::new(Registry::default()),
            config: ConfigHandle::fixed(Snapshot::default()),
            ready: Arc::new(true.into()),
            service: None,
            cert: None,
        };
        let status = |scope, method: Method, path| {
            admin.answer(scope, &method, path, None).status().as_u16()
        };
        for (scope, path, want) in [
            (Scope::Metrics, "/metrics", 200),
            (Scope::Metrics, "/stats/prometheus", 200),
            (Scope::Metrics, "/healthz/ready", 404),
            (Scope::Metrics, "/config_dump", 404),
            (Scope::Metrics, "/certs", 404),
            (Scope::Readiness, "/healthz/ready", 200),
            (Scope::Readiness, "/metrics", 404),
            (Scope::Readiness, "/config_dump", 404),
            (Scope::Admin, "/certs", 200),
        ] {
            assert_eq!(status(scope, Method::GET, path), want, "{scope:?} {path}");
        }
        assert_eq!(status(Scope::Admin, Method::HEAD, "/config_dump"), 200);
        for m in [Method::POST, Method::PUT, Method::DELETE, Method::PATCH] {
            assert_eq!(status(Scope::Admin, m.clone(), "/config_dump"), 405, "{m}");
        }
        assert_eq!("off".parse::<Listen>().unwrap(), Listen(None));
        assert_eq!(
            "127.0.0.1:15000".parse::<Listen>().unwrap(),
            Listen(Some("127.0.0.1:15000".parse().unwrap()))
        );
        assert!("localhost:15000".parse::<Listen>().is_err());
    }

    async fn body_of(r: Response<Body>) -> (Option<String>, String) {
        use http_body_util::BodyExt;
        let ct = r
            .headers()
            .get(http::header::CONTENT_TYPE)
            .and_then(|v| v.to_str().ok())
            .map(str::to_string);
        let b = r.into_body().collect().await.unwrap().to_bytes();
        (ct, String::from_utf8(b.to_vec()).unwrap())
    }

    #[tokio::test]
    async fn json_views() {
        let mut registry = Registry::default();
        let config = ConfigHandle::fixed(Snapshot::default());
        let svc = L7Service::new(
            config.clone(),
            Arc::new(crate::upstream::connector::TcpConnector),
            crate::request::service::Options::default(),
            &mut registry,
        );
        let admin = Admin {
            registry: Arc::new(registry),
            config,
            ready: Arc::new(true.into()),
            service: Some(svc),
            cert: None,
        };
        let (ct, text) =
            body_of(admin.answer(Scope::Admin, &Method::GET, "/config_dump", None)).await;
        assert_ne!(ct.as_deref(), Some("application/json"));
        assert!(text.starts_with("version 0\n"), "{text}");
        for (path, query, field) in [
            ("/config_dump", Some("format=json"), "routes"),
            ("/clusters", None, "clusters"),
            ("/certs", None, "certificates"),
        ] {
            let (ct, text) = body_of(admin.answer(Scope::Admin, &Method::GET, path, query)).await;
            assert_eq!(ct.as_deref(), Some("application/json"), "{path}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(v[field].is_array(), "{path}: {v}");
        }
    }
}

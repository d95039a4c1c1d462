//! Admin endpoint: `/metrics` (Prometheus), `/healthz/ready`, `/config_dump` (text: `version
//! N` then `key version` lines; `?format=json`: the same plus the route configs), `/clusters`
//! (JSON: clusters, endpoints with health and outlier state, pool occupancy) and `/certs`
//! (JSON: the certificate the waypoint presents). The JSON views are in
//! [`crate::admin_state`].

use std::convert::Infallible;
use std::sync::Arc;

use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_model::client::ConfigHandle;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::debug;

use meshwork_identity::tls::RotatingCert;

use crate::admin_state;
use crate::body::{self, Body};
use crate::metrics::render;
use crate::service::L7Service;

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
    fn answer(&self, path: &str, query: Option<&str>) -> Response<Body> {
        let text = |status: StatusCode, s: String| {
            let mut r = Response::new(body::full(s));
            *r.status_mut() = status;
            r
        };
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
                let mut r = text(StatusCode::OK, render(&self.registry));
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

    /// Serves until the task is dropped.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let (s, _) = meshwork_runtime::accept::accept(&listener, "admin").await;
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let resp = admin.answer(req.uri().path(), req.uri().query());
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
        assert_eq!(admin.answer("/metrics", None).status(), 200);
        assert_eq!(admin.answer("/healthz/ready", None).status(), 503);
        admin
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(admin.answer("/healthz/ready", None).status(), 200);
        assert_eq!(admin.answer("/config_dump", None).status(), 200);
        assert_eq!(admin.answer("/nope", None).status(), 404);
        assert_eq!(admin.answer("/clusters", None).status(), 404, "no proxy");
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
            Arc::new(crate::connector::TcpConnector),
            crate::service::Options::default(),
            &mut registry,
        );
        let admin = Admin {
            registry: Arc::new(registry),
            config,
            ready: Arc::new(true.into()),
            service: Some(svc),
            cert: None,
        };
        let (ct, text) = body_of(admin.answer("/config_dump", None)).await;
        assert_ne!(ct.as_deref(), Some("application/json"));
        assert!(text.starts_with("version 0\n"), "{text}");
        for (path, query, field) in [
            ("/config_dump", Some("format=json"), "routes"),
            ("/clusters", None, "clusters"),
            ("/certs", None, "certificates"),
        ] {
            let (ct, text) = body_of(admin.answer(path, query)).await;
            assert_eq!(ct.as_deref(), Some("application/json"), "{path}");
            let v: serde_json::Value = serde_json::from_str(&text).unwrap();
            assert!(v[field].is_array(), "{path}: {v}");
        }
    }
}

//! Admin endpoint: `/metrics` (Prometheus), `/healthz/ready`, `/config_dump` (resource keys).

use std::convert::Infallible;
use std::sync::Arc;

use http::{Response, StatusCode};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_model::client::ConfigHandle;
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;
use tracing::debug;

use crate::body::{self, Body};
use crate::metrics::render;

/// What the admin endpoint reports on.
#[derive(Clone)]
pub struct Admin {
    pub registry: Arc<Registry>,
    pub config: ConfigHandle,
    /// Ready once a certificate is loaded (set by the binary).
    pub ready: Arc<std::sync::atomic::AtomicBool>,
}

impl Admin {
    fn answer(&self, path: &str) -> Response<Body> {
        let text = |status: StatusCode, s: String| {
            let mut r = Response::new(body::full(s));
            *r.status_mut() = status;
            r
        };
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
                        format!("not ready: config synced={synced}, certificate={ready}\n"),
                    )
                }
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

    /// Serves until the listener fails.
    pub async fn serve(self, listener: TcpListener) {
        loop {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let admin = self.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let resp = admin.answer(req.uri().path());
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
        };
        assert_eq!(admin.answer("/metrics").status(), 200);
        assert_eq!(admin.answer("/healthz/ready").status(), 503);
        admin
            .ready
            .store(true, std::sync::atomic::Ordering::Release);
        assert_eq!(admin.answer("/healthz/ready").status(), 200);
        assert_eq!(admin.answer("/config_dump").status(), 200);
        assert_eq!(admin.answer("/nope").status(), 404);
    }
}

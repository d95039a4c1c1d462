//! The live service-graph page: `/` (one self-contained HTML page: inline CSS, JS and an
//! SVG drawing, no external assets) and `/api/graph` (the latest [`Graph`] as JSON), with
//! a background task scraping the targets every interval.
//!
//! Who may reach it: the listener binds loopback only unless the caller passes
//! `allow_remote`, and then requests naming another host in `Host:` are still served; on
//! loopback, a request whose `Host:` is not a loopback name or address is refused (403) so
//! a web page elsewhere cannot read the mesh through DNS rebinding.

use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::{header, Method, Request, Response, StatusCode};
use http_body_util::Full;
use hyper::body::Incoming;
use hyper::service::service_fn;
use hyper_util::rt::TokioIo;
use tokio::net::TcpListener;
use tokio::sync::watch;
use tokio::task::JoinHandle;

use crate::graph::Target;
use crate::scrape::Monitor;

const PAGE: &str = include_str!("page.html");

#[derive(Debug, thiserror::Error)]
pub enum ServeError {
    #[error(
        "refusing to serve the service graph on {addr}: not a loopback address (it shows the \
         mesh's workloads and identities); pass the explicit remote flag to allow it"
    )]
    NotLoopback { addr: SocketAddr },
    #[error("binding the service graph listener {addr}: {source}")]
    Bind {
        addr: SocketAddr,
        source: std::io::Error,
    },
}

#[derive(Debug, Clone)]
pub struct ServeOptions {
    pub listen: SocketAddr,
    /// Allows a non-loopback `listen` (and any `Host:`).
    pub allow_remote: bool,
    /// Scrape interval, also the page's refresh interval.
    pub interval: Duration,
    /// Per-target scrape timeout.
    pub timeout: Duration,
}

impl Default for ServeOptions {
    fn default() -> Self {
        ServeOptions {
            listen: SocketAddr::from(([127, 0, 0, 1], 15090)),
            allow_remote: false,
            interval: Duration::from_secs(2),
            timeout: Duration::from_secs(2),
        }
    }
}

/// A running page server; dropping it stops the server and the scrapes.
pub struct GraphServer {
    pub addr: SocketAddr,
    tasks: Vec<JoinHandle<()>>,
}

impl GraphServer {
    pub fn url(&self) -> String {
        format!("http://{}/", self.addr)
    }
}

impl Drop for GraphServer {
    fn drop(&mut self) {
        for t in &self.tasks {
            t.abort();
        }
    }
}

/// Whether a `Host:` header names this machine by a loopback name or address.
fn loopback_host(host: &str) -> bool {
    let name = if let Some(rest) = host.strip_prefix('[') {
        rest.split(']').next().unwrap_or("")
    } else {
        host.rsplit_once(':').map_or(
            host,
            |(h, p)| {
                if p.parse::<u16>().is_ok() {
                    h
                } else {
                    host
                }
            },
        )
    };
    name.eq_ignore_ascii_case("localhost")
        || name.to_ascii_lowercase().ends_with(".localhost")
        || name
            .parse::<std::net::IpAddr>()
            .is_ok_and(|ip| ip.is_loopback())
}

fn respond(status: StatusCode, ctype: &str, body: Bytes) -> Response<Full<Bytes>> {
    let mut r = Response::new(Full::new(body));
    *r.status_mut() = status;
    if let Ok(v) = header::HeaderValue::from_str(ctype) {
        r.headers_mut().insert(header::CONTENT_TYPE, v);
    }
    r.headers_mut().insert(
        header::CACHE_CONTROL,
        header::HeaderValue::from_static("no-store"),
    );
    r
}

fn route(
    req: &Request<Incoming>,
    page: &Bytes,
    graph: &watch::Receiver<Bytes>,
    allow_remote: bool,
) -> Response<Full<Bytes>> {
    let text = "text/plain; charset=utf-8";
    if !allow_remote {
        let host = req
            .headers()
            .get(header::HOST)
            .and_then(|h| h.to_str().ok())
            .or_else(|| req.uri().authority().map(|a| a.as_str()))
            .unwrap_or("");
        if !loopback_host(host) {
            return respond(
                StatusCode::FORBIDDEN,
                text,
                Bytes::from(format!(
                    "the service graph answers loopback names only, not Host: {host:?}\n"
                )),
            );
        }
    }
    if req.method() != Method::GET && req.method() != Method::HEAD {
        return respond(
            StatusCode::METHOD_NOT_ALLOWED,
            text,
            Bytes::from_static(b"GET only\n"),
        );
    }
    match req.uri().path() {
        "/" | "/index.html" => respond(StatusCode::OK, "text/html; charset=utf-8", page.clone()),
        "/api/graph" => respond(StatusCode::OK, "application/json", graph.borrow().clone()),
        _ => respond(
            StatusCode::NOT_FOUND,
            text,
            Bytes::from_static(b"not found: try / or /api/graph\n"),
        ),
    }
}

/// Binds `opts.listen` and serves the page, scraping `targets` every `opts.interval`.
pub async fn serve(targets: Vec<Target>, opts: ServeOptions) -> Result<GraphServer, ServeError> {
    if !opts.listen.ip().is_loopback() && !opts.allow_remote {
        return Err(ServeError::NotLoopback { addr: opts.listen });
    }
    let listener = TcpListener::bind(opts.listen)
        .await
        .map_err(|source| ServeError::Bind {
            addr: opts.listen,
            source,
        })?;
    let addr = listener.local_addr().map_err(|source| ServeError::Bind {
        addr: opts.listen,
        source,
    })?;
    let page = Bytes::from(PAGE.replace(
        "__REFRESH_MS__",
        &opts.interval.as_millis().max(100).to_string(),
    ));
    let (tx, rx) = watch::channel(Bytes::from_static(
        b"{\"window_secs\":null,\"nodes\":[],\"edges\":[],\"services\":[],\"proxies\":[],\"width\":800,\"height\":400}",
    ));
    let mut monitor = Monitor::new(targets, opts.timeout);
    let interval = opts.interval;
    let scraper = tokio::spawn(async move {
        let mut tick = tokio::time::interval(interval);
        tick.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        loop {
            tick.tick().await;
            let g = monitor.step().await;
            match serde_json::to_vec(&g) {
                Ok(json) => {
                    if tx.send(Bytes::from(json)).is_err() {
                        return;
                    }
                }
                Err(e) => tracing::warn!(error = %e, "encoding the service graph"),
            }
        }
    });
    let allow_remote = opts.allow_remote;
    let acceptor = tokio::spawn(async move {
        let page = Arc::new(page);
        loop {
            let (stream, _) = match listener.accept().await {
                Ok(s) => s,
                Err(e) => {
                    tracing::warn!(error = %e, "accepting a service graph connection");
                    tokio::time::sleep(Duration::from_millis(50)).await;
                    continue;
                }
            };
            let (page, rx) = (page.clone(), rx.clone());
            tokio::spawn(async move {
                let svc = service_fn(move |req: Request<Incoming>| {
                    let resp = route(&req, &page, &rx, allow_remote);
                    async move { Ok::<_, Infallible>(resp) }
                });
                let _ = hyper::server::conn::http1::Builder::new()
                    .timer(hyper_util::rt::TokioTimer::new())
                    .header_read_timeout(Duration::from_secs(10))
                    .serve_connection(TokioIo::new(stream), svc)
                    .await;
            });
        }
    });
    Ok(GraphServer {
        addr,
        tasks: vec![scraper, acceptor],
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn loopback_hosts() {
        for h in [
            "localhost",
            "localhost:8080",
            "127.0.0.1:15090",
            "127.0.0.2",
            "[::1]:80",
            "[::1]",
            "app.localhost:1",
        ] {
            assert!(loopback_host(h), "{h}");
        }
        for h in [
            "",
            "example.com",
            "10.0.0.1:80",
            "evil.test:15090",
            "[::2]:1",
        ] {
            assert!(!loopback_host(h), "{h}");
        }
    }

    #[test]
    fn page_is_self_contained() {
        // No external scripts, styles, images or fonts: the only URL is the SVG namespace.
        for needle in ["src=", "<link", "@import", "url(http", "https://"] {
            assert!(
                !PAGE.contains(needle),
                "page references an external asset: {needle}"
            );
        }
        assert_eq!(
            PAGE.matches("http://").count(),
            2,
            "only the SVG namespace URIs"
        );
    }

    #[tokio::test]
    async fn refuses_non_loopback_bind_without_the_flag() {
        let opts = ServeOptions {
            listen: "0.0.0.0:0".parse().unwrap(),
            ..Default::default()
        };
        let e = serve(vec![], opts).await.err().expect("must refuse");
        assert!(matches!(e, ServeError::NotLoopback { .. }), "{e}");
        assert!(e.to_string().contains("0.0.0.0:0"));
    }
}

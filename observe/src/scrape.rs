//! Fetching `/metrics` from many proxies at once over plain HTTP/1.1, and keeping the last
//! two snapshots so each step yields a [`Graph`] with rates.

use std::sync::Arc;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::net::TcpStream;

use crate::graph::{compute, wanted, Graph, Snapshot, Target, TargetScrape};
use crate::parse::parse_filtered;

/// The largest metrics body read from one target.
pub const MAX_BODY: usize = 64 << 20;
/// Scrapes running at once.
const PARALLEL: usize = 32;

#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("{url}: not an http:// URL with a host")]
    Url { url: String },
    #[error("{url}: connecting: {source}")]
    Connect { url: String, source: std::io::Error },
    #[error("{url}: {source}")]
    Http { url: String, source: hyper::Error },
    #[error("{url}: building the request: {source}")]
    Request { url: String, source: http::Error },
    #[error("{url}: answered {status}")]
    Status { url: String, status: u16 },
    #[error("{url}: reading the body (at most {MAX_BODY} bytes): {reason}")]
    Body { url: String, reason: String },
    #[error("{url}: no answer within {limit:?}")]
    Timeout { url: String, limit: Duration },
}

/// `http://host:port/path?query` → (`host:port`, `host`, `/path?query`).
fn split_url(url: &str) -> Option<(String, String, String)> {
    let rest = url.strip_prefix("http://")?;
    let (authority, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, "/"),
    };
    if authority.is_empty() {
        return None;
    }
    let addr = if authority
        .rsplit_once(':')
        .is_some_and(|(_, p)| p.parse::<u16>().is_ok())
        && !authority.ends_with(']')
    {
        authority.to_string()
    } else {
        format!("{authority}:80")
    };
    Some((addr, authority.to_string(), path.to_string()))
}

/// GET `url`: status and body (an HTTP/1.1 client on its own connection).
pub async fn get(url: &str, limit: Duration) -> Result<(u16, Bytes), FetchError> {
    match tokio::time::timeout(limit, get_inner(url)).await {
        Ok(r) => r,
        Err(_) => Err(FetchError::Timeout {
            url: url.to_string(),
            limit,
        }),
    }
}

async fn get_inner(url: &str) -> Result<(u16, Bytes), FetchError> {
    let (addr, host, path) = split_url(url).ok_or_else(|| FetchError::Url { url: url.into() })?;
    let stream = TcpStream::connect(&addr)
        .await
        .map_err(|source| FetchError::Connect {
            url: url.into(),
            source,
        })?;
    let http_err = |source| FetchError::Http {
        url: url.into(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http_err)?;
    let driver = tokio::spawn(conn);
    let req = http::Request::get(path)
        .header(http::header::HOST, host)
        .header(http::header::ACCEPT, "text/plain")
        .body(Empty::<Bytes>::new())
        .map_err(|source| FetchError::Request {
            url: url.into(),
            source,
        })?;
    let resp = sender.send_request(req).await.map_err(http_err)?;
    let status = resp.status().as_u16();
    let body = Limited::new(resp.into_body(), MAX_BODY)
        .collect()
        .await
        .map_err(|e| FetchError::Body {
            url: url.into(),
            reason: e.to_string(),
        })?
        .to_bytes();
    driver.abort();
    Ok((status, body))
}

/// Scrapes one target: its Istio samples or the error.
pub async fn scrape_one(target: Target, limit: Duration) -> TargetScrape {
    let start = Instant::now();
    let result = match get(&target.url, limit).await {
        Ok((200, body)) => match std::str::from_utf8(&body) {
            Ok(text) => parse_filtered(text, wanted).map_err(|e| format!("{}: {e}", target.url)),
            Err(e) => Err(format!("{}: body is not UTF-8: {e}", target.url)),
        },
        Ok((status, _)) => Err(FetchError::Status {
            url: target.url.clone(),
            status,
        }
        .to_string()),
        Err(e) => Err(e.to_string()),
    };
    TargetScrape {
        target,
        result,
        elapsed_ms: start.elapsed().as_secs_f64() * 1e3,
    }
}

/// Scrapes every target (at most [`PARALLEL`] at once), in the targets' order.
pub async fn scrape_all(targets: &[Target], limit: Duration, at_secs: f64) -> Snapshot {
    let sem = Arc::new(tokio::sync::Semaphore::new(PARALLEL));
    let tasks: Vec<_> = targets
        .iter()
        .cloned()
        .map(|t| {
            let sem = sem.clone();
            tokio::spawn(async move {
                let _permit = sem.acquire_owned().await;
                scrape_one(t, limit).await
            })
        })
        .collect();
    let mut out = Vec::with_capacity(tasks.len());
    for (t, task) in targets.iter().zip(tasks) {
        out.push(task.await.unwrap_or_else(|e| TargetScrape {
            target: t.clone(),
            result: Err(format!("{}: scrape task failed: {e}", t.url)),
            elapsed_ms: 0.0,
        }));
    }
    Snapshot {
        at_secs,
        targets: out,
    }
}

/// Scrapes the targets on each [`Monitor::step`] and keeps the previous snapshot.
pub struct Monitor {
    targets: Vec<Target>,
    timeout: Duration,
    epoch: Instant,
    prev: Option<Snapshot>,
}

impl Monitor {
    pub fn new(targets: Vec<Target>, timeout: Duration) -> Monitor {
        Monitor {
            targets,
            timeout,
            epoch: Instant::now(),
            prev: None,
        }
    }

    pub fn targets(&self) -> &[Target] {
        &self.targets
    }

    /// Scrapes now; the graph's rates cover the time since the previous step.
    pub async fn step(&mut self) -> Graph {
        let at = self.epoch.elapsed().as_secs_f64();
        let snap = scrape_all(&self.targets, self.timeout, at).await;
        let g = compute(self.prev.as_ref(), &snap);
        self.prev = Some(snap);
        g
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn splits_urls() {
        assert_eq!(
            split_url("http://127.0.0.1:15020/metrics"),
            Some((
                "127.0.0.1:15020".into(),
                "127.0.0.1:15020".into(),
                "/metrics".into()
            ))
        );
        assert_eq!(
            split_url("http://localhost"),
            Some(("localhost:80".into(), "localhost".into(), "/".into()))
        );
        assert_eq!(
            split_url("http://[::1]:9/x?y=1").map(|u| u.2),
            Some("/x?y=1".into())
        );
        assert_eq!(split_url("https://a/"), None);
        assert_eq!(split_url("http:///x"), None);
    }
}

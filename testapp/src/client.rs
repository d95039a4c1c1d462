//! Client mode: N sequential GETs over keep-alive HTTP/1.1, summarised.
use std::collections::BTreeMap;
use std::time::{Duration, Instant};

use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper::client::conn::http1::SendRequest;
use hyper::{Request, Uri};
use hyper_util::rt::TokioIo;
use serde::Serialize;
use tokio::net::TcpStream;

#[derive(Debug, thiserror::Error)]
pub enum ClientError {
    #[error("url {url:?}: {reason}")]
    Url { url: String, reason: String },
    #[error("header {header:?}: expected NAME:VALUE")]
    Header { header: String },
}

/// What a run saw.
#[derive(Debug, Default, Serialize, PartialEq)]
pub struct Summary {
    pub total: u64,
    /// Status code → count.
    pub status: BTreeMap<String, u64>,
    /// `version` field of JSON answers → count.
    pub versions: BTreeMap<String, u64>,
    /// `pod` field of JSON answers → count.
    pub pods: BTreeMap<String, u64>,
    /// `client` field of JSON answers (the source address the server saw) → count.
    pub clients: BTreeMap<String, u64>,
    /// Requests that got no HTTP answer (connect refused, reset, timeout).
    pub errors: u64,
    pub p50_ms: f64,
    pub p99_ms: f64,
}

#[derive(Debug)]
pub struct Target {
    authority: String,
    uri: Uri,
}

pub fn parse_url(url: &str) -> Result<Target, ClientError> {
    let err = |reason: &str| ClientError::Url {
        url: url.to_string(),
        reason: reason.to_string(),
    };
    let uri: Uri = url.parse().map_err(|_| err("not a URL"))?;
    if uri.scheme_str() != Some("http") {
        return Err(err("only http:// is supported"));
    }
    let authority = uri.authority().ok_or_else(|| err("missing host"))?;
    let port = authority.port_u16().unwrap_or(80);
    Ok(Target {
        authority: format!("{}:{port}", authority.host()),
        uri,
    })
}

pub fn parse_header(h: &str) -> Result<(String, String), ClientError> {
    match h.split_once(':') {
        Some((k, v)) if !k.trim().is_empty() => Ok((k.trim().to_string(), v.trim().to_string())),
        _ => Err(ClientError::Header {
            header: h.to_string(),
        }),
    }
}

async fn connect(authority: &str) -> std::io::Result<SendRequest<Empty<Bytes>>> {
    let stream = TcpStream::connect(authority).await?;
    stream.set_nodelay(true)?;
    let (sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(std::io::Error::other)?;
    tokio::spawn(async move {
        let _ = conn.await;
    });
    Ok(sender)
}

async fn one(
    sender: &mut Option<SendRequest<Empty<Bytes>>>,
    target: &Target,
    headers: &[(String, String)],
) -> std::io::Result<(u16, Bytes)> {
    if sender.as_ref().is_none_or(|s| s.is_closed()) {
        *sender = Some(connect(&target.authority).await?);
    }
    let Some(s) = sender.as_mut() else {
        return Err(std::io::Error::other("no connection"));
    };
    s.ready().await.map_err(std::io::Error::other)?;
    let mut req = Request::get(target.uri.clone()).header(hyper::header::HOST, &target.authority);
    for (k, v) in headers {
        req = req.header(k.as_str(), v.as_str());
    }
    let req = req.body(Empty::new()).map_err(std::io::Error::other)?;
    let resp = s.send_request(req).await.map_err(std::io::Error::other)?;
    let status = resp.status().as_u16();
    let body = resp
        .into_body()
        .collect()
        .await
        .map_err(std::io::Error::other)?
        .to_bytes();
    Ok((status, body))
}

/// Sends `count` GETs (each bounded by `timeout`) and summarises them.
pub async fn run(
    target: &Target,
    headers: &[(String, String)],
    count: u64,
    timeout: Duration,
) -> Summary {
    let mut summary = Summary::default();
    let mut latencies = Vec::with_capacity(count as usize);
    let mut sender = None;
    for _ in 0..count {
        summary.total += 1;
        let start = Instant::now();
        match tokio::time::timeout(timeout, one(&mut sender, target, headers)).await {
            Ok(Ok((status, body))) => {
                latencies.push(start.elapsed());
                *summary.status.entry(status.to_string()).or_default() += 1;
                if let Ok(v) = serde_json::from_slice::<serde_json::Value>(&body) {
                    if let Some(ver) = v.get("version").and_then(|x| x.as_str()) {
                        *summary.versions.entry(ver.to_string()).or_default() += 1;
                    }
                    if let Some(pod) = v.get("pod").and_then(|x| x.as_str()) {
                        *summary.pods.entry(pod.to_string()).or_default() += 1;
                    }
                    if let Some(c) = v.get("client").and_then(|x| x.as_str()) {
                        *summary.clients.entry(c.to_string()).or_default() += 1;
                    }
                }
            }
            _ => {
                summary.errors += 1;
                sender = None;
            }
        }
    }
    latencies.sort();
    summary.p50_ms = percentile(&latencies, 50.0);
    summary.p99_ms = percentile(&latencies, 99.0);
    summary
}

fn percentile(sorted: &[Duration], p: f64) -> f64 {
    if sorted.is_empty() {
        return 0.0;
    }
    let idx = ((p / 100.0) * (sorted.len() - 1) as f64).round() as usize;
    sorted[idx.min(sorted.len() - 1)].as_secs_f64() * 1000.0
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parses_urls_and_headers() {
        let t = parse_url("http://10.96.0.1:8080/api/orders").unwrap();
        assert_eq!(t.authority, "10.96.0.1:8080");
        assert_eq!(parse_url("http://svc/x").unwrap().authority, "svc:80");
        assert!(parse_url("https://x/")
            .unwrap_err()
            .to_string()
            .contains("http://"));
        assert!(parse_url("nope").is_err());
        assert_eq!(
            parse_header("x-canary: true").unwrap(),
            ("x-canary".into(), "true".into())
        );
        assert!(parse_header("novalue")
            .unwrap_err()
            .to_string()
            .contains("novalue"));
    }

    #[test]
    fn percentiles() {
        let v: Vec<Duration> = (1..=100).map(Duration::from_millis).collect();
        assert_eq!(percentile(&v, 50.0), 51.0);
        assert_eq!(percentile(&v, 99.0), 99.0);
        assert_eq!(percentile(&[], 99.0), 0.0);
    }
}

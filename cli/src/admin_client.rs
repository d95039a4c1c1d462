//! A minimal HTTP GET client for the control plane's and proxies' admin endpoints.

use anyhow::{anyhow, Context};
use bytes::Bytes;
use http_body_util::{BodyExt, Empty};
use hyper_util::client::legacy::Client;
use hyper_util::rt::TokioExecutor;

/// GETs `base` + `path` and parses the JSON answer.
pub async fn get_json(base: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    request_json(hyper::Method::GET, base, path).await
}

/// POSTs (empty body) to `base` + `path` and parses the JSON answer.
pub async fn post_json(base: &str, path: &str) -> anyhow::Result<serde_json::Value> {
    request_json(hyper::Method::POST, base, path).await
}

/// GETs a plain-text admin page (the waypoint's `/config_dump`).
pub async fn get_text(base: &str, path: &str) -> anyhow::Result<String> {
    let (_, body) = request(hyper::Method::GET, base, path).await?;
    Ok(String::from_utf8_lossy(&body).into_owned())
}

async fn request_json(
    method: hyper::Method,
    base: &str,
    path: &str,
) -> anyhow::Result<serde_json::Value> {
    let (url, body) = request(method, base, path).await?;
    serde_json::from_slice(&body).with_context(|| format!("{url}: answer is not JSON"))
}

/// One request with an empty body, at most 5 s; a status other than 2xx is an error that
/// quotes the answer. Returns the URL (for messages) and the body.
async fn request(method: hyper::Method, base: &str, path: &str) -> anyhow::Result<(String, Bytes)> {
    let url = format!("{}{}", base.trim_end_matches('/'), path);
    let uri: hyper::Uri = url
        .parse()
        .with_context(|| format!("invalid address {url}"))?;
    let client = Client::builder(TokioExecutor::new()).build_http::<Empty<Bytes>>();
    let req = hyper::Request::builder()
        .method(method)
        .uri(uri)
        .body(Empty::new())
        .with_context(|| format!("request to {url}"))?;
    let resp = tokio::time::timeout(std::time::Duration::from_secs(5), client.request(req))
        .await
        .map_err(|_| anyhow!("{url}: no answer within 5s"))?
        .map_err(|e| anyhow!("cannot reach {url}: {}", root_cause(&e)))?;
    let status = resp.status();
    let body = resp
        .into_body()
        .collect()
        .await
        .with_context(|| format!("{url}: reading the answer"))?
        .to_bytes();
    if !status.is_success() {
        return Err(anyhow!(
            "{url}: {status}: {}",
            String::from_utf8_lossy(&body).trim()
        ));
    }
    Ok((url, body))
}

fn root_cause(e: &(dyn std::error::Error + 'static)) -> String {
    let mut cur = e;
    while let Some(next) = cur.source() {
        cur = next;
    }
    cur.to_string()
}

//! Webhooks: Flagger's payload POSTed to `analysis.webhooks[].url`. A 2xx answer is a
//! success (an open gate for `confirm-*`, "roll back now" for `rollback`).

use std::collections::BTreeMap;

use futures::future::BoxFuture;
use hyper::Method;
use meshwork_api::canary::CanaryWebhook;
use serde::Serialize;

use super::http::HttpClient;

/// Flagger's `CanaryWebhookPayload`.
#[derive(Debug, Clone, PartialEq, Serialize)]
pub struct Payload {
    pub name: String,
    pub namespace: String,
    pub phase: String,
    /// The canary revision under analysis.
    pub checksum: String,
    #[serde(rename = "type")]
    pub type_: String,
    pub metadata: BTreeMap<String, String>,
}

/// Calls webhooks; a trait so tests of the state machine can count calls without a
/// network (the HTTP caller itself is tested against a loopback server).
pub trait Hooks: Send + Sync {
    /// `Ok(())` on 2xx, else why not.
    fn call<'a>(
        &'a self,
        hook: &'a CanaryWebhook,
        payload: &'a Payload,
    ) -> BoxFuture<'a, Result<(), String>>;
}

/// POSTs the payload as JSON, within the hook's `timeout` (default 10s), retrying
/// `retries` times on failure.
#[derive(Default)]
pub struct HttpHooks {
    client: HttpClient,
}

impl Hooks for HttpHooks {
    fn call<'a>(
        &'a self,
        hook: &'a CanaryWebhook,
        payload: &'a Payload,
    ) -> BoxFuture<'a, Result<(), String>> {
        Box::pin(async move {
            let body = serde_json::to_vec(payload).map_err(|e| e.to_string())?;
            let mut last = String::new();
            for _ in 0..=hook.retries.unwrap_or(0).min(10) {
                match self
                    .client
                    .send(
                        Method::POST,
                        &hook.url,
                        Some(body.clone()),
                        hook.timeout_or_default(),
                    )
                    .await
                {
                    Ok((s, _)) if s.is_success() => return Ok(()),
                    Ok((s, b)) => {
                        last = format!(
                            "HTTP {s}: {}",
                            String::from_utf8_lossy(&b[..b.len().min(200)]).trim()
                        )
                    }
                    Err(e) => last = e,
                }
            }
            Err(format!("webhook {} ({}): {last}", hook.name, hook.url))
        })
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::{Arc, Mutex};
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    /// A loopback HTTP/1.1 server answering `status` and keeping the request bodies.
    async fn server(status: u16) -> (String, Arc<Mutex<Vec<String>>>) {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        tokio::spawn(async move {
            loop {
                let Ok((mut c, _)) = l.accept().await else {
                    return;
                };
                let mut buf = Vec::new();
                let mut chunk = [0u8; 4096];
                // Read headers and a Content-Length body.
                loop {
                    let n = c.read(&mut chunk).await.unwrap_or(0);
                    if n == 0 {
                        break;
                    }
                    buf.extend_from_slice(&chunk[..n]);
                    let text = String::from_utf8_lossy(&buf).to_string();
                    if let Some(h) = text.find("\r\n\r\n") {
                        let len = text[..h]
                            .lines()
                            .find_map(|l| {
                                l.to_ascii_lowercase()
                                    .strip_prefix("content-length:")
                                    .map(|v| v.trim().parse::<usize>().unwrap_or(0))
                            })
                            .unwrap_or(0);
                        if buf.len() >= h + 4 + len {
                            s.lock().unwrap().push(text[h + 4..h + 4 + len].to_string());
                            break;
                        }
                    }
                }
                let resp = format!(
                    "HTTP/1.1 {status} X\r\ncontent-length: 2\r\nconnection: close\r\n\r\nok"
                );
                let _ = c.write_all(resp.as_bytes()).await;
            }
        });
        (format!("http://{addr}/hook"), seen)
    }

    fn hook(url: &str) -> CanaryWebhook {
        CanaryWebhook {
            name: "gate".into(),
            url: url.into(),
            metadata: [("cmd".to_string(), "x".to_string())].into(),
            ..Default::default()
        }
    }

    fn payload() -> Payload {
        Payload {
            name: "web".into(),
            namespace: "shop".into(),
            phase: "Progressing".into(),
            checksum: "abc".into(),
            type_: "confirm-promotion".into(),
            metadata: [("cmd".to_string(), "x".to_string())].into(),
        }
    }

    #[tokio::test]
    async fn posts_flaggers_payload_and_reads_the_status() {
        let (url, seen) = server(200).await;
        HttpHooks::default()
            .call(&hook(&url), &payload())
            .await
            .unwrap();
        let body: serde_json::Value = serde_json::from_str(&seen.lock().unwrap()[0]).unwrap();
        assert_eq!(
            body,
            serde_json::json!({"name":"web","namespace":"shop","phase":"Progressing",
                "checksum":"abc","type":"confirm-promotion","metadata":{"cmd":"x"}})
        );
        let (url, _) = server(403).await;
        let e = HttpHooks::default()
            .call(&hook(&url), &payload())
            .await
            .unwrap_err();
        assert!(e.contains("HTTP 403"), "{e}");
        // Nothing listens: the error says so, within the timeout.
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let dead = format!("http://{}/", l.local_addr().unwrap());
        drop(l);
        assert!(HttpHooks::default()
            .call(&hook(&dead), &payload())
            .await
            .is_err());
    }
}

//! Trace context on inbound HBONE: a CONNECT's `traceparent` shows up in the JSON access
//! log line of that connection; a malformed one is ignored and the connection works.

mod common;

use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http::HeaderMap;
use meshwork_hbone::{Pool, PoolKey, PoolSettings};
use meshwork_identity::tls::client_config;
use meshwork_identity::SpiffeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// Collects everything the JSON formatter writes.
#[derive(Clone, Default)]
struct Captured(Arc<Mutex<Vec<u8>>>);

impl Write for Captured {
    fn write(&mut self, buf: &[u8]) -> std::io::Result<usize> {
        self.0.lock().unwrap().extend_from_slice(buf);
        Ok(buf.len())
    }
    fn flush(&mut self) -> std::io::Result<()> {
        Ok(())
    }
}

impl Captured {
    /// Parsed JSON access-log lines (target `access`).
    fn access_lines(&self) -> Vec<serde_json::Value> {
        let text = String::from_utf8(self.0.lock().unwrap().clone()).unwrap();
        text.lines()
            .filter_map(|l| serde_json::from_str::<serde_json::Value>(l).ok())
            .filter(|v| v["target"] == "access")
            .collect()
    }

    /// Waits (bounded) for the `n`-th inbound access line; returns its fields.
    async fn inbound_line(&self, n: usize) -> serde_json::Value {
        for _ in 0..200 {
            let lines: Vec<_> = self
                .access_lines()
                .into_iter()
                .filter(|v| v["fields"]["direction"] == "inbound")
                .collect();
            if let Some(l) = lines.get(n) {
                return l["fields"].clone();
            }
            tokio::time::sleep(Duration::from_millis(25)).await;
        }
        panic!("no inbound access line #{n}; got {:?}", self.access_lines());
    }
}

#[tokio::test]
async fn traceparent_on_connect_is_in_the_json_access_log() {
    let captured = Captured::default();
    let writer = captured.clone();
    tracing_subscriber::fmt()
        .json()
        .with_env_filter("info,meshwork_ztunnel::tracecontext=debug")
        .with_writer(move || writer.clone())
        .init();

    let (s, echo) = setup(30).await;
    let ca = s.ca.clone();
    let p = s.start(echo).await;
    let hbone = p.b.addrs.hbone[0];

    let client: SpiffeId = "spiffe://cluster.local/ns/prod/sa/client".parse().unwrap();
    let server: SpiffeId = "spiffe://cluster.local/ns/prod/sa/server".parse().unwrap();
    let cert = ca.issue(&client, Duration::from_secs(3600));
    let pool = Pool::new(PoolSettings::default());
    let key = PoolKey {
        src_identity: client.to_string(),
        dst: hbone,
        dst_identity: server.to_string(),
        from: Default::default(),
    };
    let tls = || client_config(&cert, cert.roots(), [server.clone()]).unwrap();
    let echo_once = |headers: HeaderMap, msg: &'static [u8]| {
        let pool = pool.clone();
        let key = key.clone();
        async move {
            let mut t = pool
                .connect(&key, tls, &echo.to_string(), headers)
                .await
                .expect("CONNECT accepted");
            t.write_all(msg).await.unwrap();
            let mut got = vec![0u8; msg.len()];
            tokio::time::timeout(Duration::from_secs(10), t.read_exact(&mut got))
                .await
                .expect("echo in time")
                .unwrap();
            assert_eq!(got, msg);
            t.shutdown().await.unwrap();
            let mut rest = Vec::new();
            let _ = tokio::time::timeout(Duration::from_secs(10), t.read_to_end(&mut rest)).await;
        }
    };

    // 1. A valid traceparent (sampled) with tracestate and baggage.
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    h.insert("tracestate", "vendor=opaque".parse().unwrap());
    h.insert("baggage", "user=alice".parse().unwrap());
    echo_once(h, b"traced").await;
    let line = captured.inbound_line(0).await;
    assert_eq!(
        line["trace_id"], "4bf92f3577b34da6a3ce929d0e0e4736",
        "{line}"
    );
    assert_eq!(line["span_id"], "00f067aa0ba902b7", "{line}");
    assert_eq!(line["sampled"], true, "{line}");
    assert_eq!(line["tracestate"], true, "{line}");
    assert_eq!(line["baggage"], true, "{line}");
    assert!(line["decision"].as_str().unwrap().starts_with("allow"));

    // 2. Malformed (uppercase hex): no trace fields, connection still served.
    let mut h = HeaderMap::new();
    h.insert(
        "traceparent",
        "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01"
            .parse()
            .unwrap(),
    );
    h.insert("baggage", "user=bob".parse().unwrap());
    echo_once(h, b"malformed").await;
    let line = captured.inbound_line(1).await;
    for f in ["trace_id", "span_id", "sampled", "tracestate", "baggage"] {
        assert!(line.get(f).is_none(), "{f} in {line}");
    }
    assert!(line["decision"].as_str().unwrap().starts_with("allow"));
    assert_eq!(line["bytes_sent"].as_u64(), Some(9), "{line}");
    let ignored = String::from_utf8(captured.0.lock().unwrap().clone()).unwrap();
    assert!(
        ignored.contains("ignoring malformed trace context"),
        "debug line for the malformed header"
    );

    // 3. No trace headers at all (not sampled case covered by the unit tests): no fields.
    echo_once(HeaderMap::new(), b"plain").await;
    let line = captured.inbound_line(2).await;
    assert!(line.get("trace_id").is_none(), "{line}");
}

//! Attack: streams whose readers never read must not stall other streams of the same
//! (source identity, destination) key.
//!
//! Today's failure mode (issue #18 item 10): every stream of a key shared one pooled
//! connection whose receive window (16 MiB) a handful of unread 4 MiB stream windows
//! exhausted, so a fresh stream of the same identity got no byte back until the slow
//! readers went away.

mod common;

use std::net::SocketAddr;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use common::*;
use http::HeaderMap;
use meshwork_hbone::{ConnectHandler, ConnectRequest, H2Settings, Pool, PoolKey, PoolSettings};
use meshwork_hbone::{H2Stream, Responder, Server};
use meshwork_identity::testing::TestCa;
use meshwork_identity::tls::{server_config, RotatingCert};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpListener;
use tokio_util::sync::CancellationToken;

/// CONNECTs to this authority get a flood of data the client never reads.
const FLOOD: &str = "10.0.0.66:9";
/// CONNECTs to this authority are accepted and never read: the destination application
/// has stopped reading what the client uploads.
const SINK: &str = "10.0.0.67:9";
/// What the server tries to send on each flooded stream, and the client to upload on each
/// sink stream (more than any window).
const FLOOD_BYTES: usize = 2 * 1024 * 1024;

/// Floods `FLOOD` tunnels (counting what h2 accepted), echoes the others.
#[derive(Clone)]
struct FloodOrEcho {
    flooded: Arc<AtomicU64>,
}

impl ConnectHandler for FloodOrEcho {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        let Ok(mut stream) = responder.accept() else {
            return;
        };
        if req.authority == SINK {
            // Never read; hold the stream (bounded: the test ends long before).
            tokio::time::sleep(Duration::from_secs(60)).await;
            drop(stream);
            return;
        }
        if req.authority != FLOOD {
            let (mut r, mut w) = tokio::io::split(stream);
            let _ = tokio::io::copy(&mut r, &mut w).await;
            let _ = w.shutdown().await;
            return;
        }
        let chunk = vec![0x5a; 64 * 1024];
        let mut sent = 0;
        while sent < FLOOD_BYTES {
            if stream.write_all(&chunk).await.is_err() {
                return;
            }
            sent += chunk.len();
            self.flooded
                .fetch_add(chunk.len() as u64, Ordering::Relaxed);
        }
        // Hold the stream open until the client goes away.
        let mut buf = [0u8; 16];
        let _ = stream.read(&mut buf).await;
    }
}

async fn flood_server(ca: &TestCa, flooded: Arc<AtomicU64>) -> SocketAddr {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let c = cert(ca, &id("b", "server"));
    let tls = server_config(c.roots(), RotatingCert::new(c.clone())).unwrap();
    tokio::spawn(async move {
        let server = Server::new(H2Settings::default());
        // Bounded: the test opens a few connections at most.
        for _ in 0..64 {
            let Ok((sock, peer)) = listener.accept().await else {
                return;
            };
            let (server, tls) = (server.clone(), tls.clone());
            let handler = FloodOrEcho {
                flooded: flooded.clone(),
            };
            tokio::spawn(async move {
                let _ = server
                    .serve_tls(sock, tls, peer, addr, handler, CancellationToken::new())
                    .await;
            });
        }
    });
    addr
}

/// Waits (bounded) until the server stops making progress on the floods: every window the
/// client granted is full.
async fn until_windows_are_full(flooded: &AtomicU64) -> u64 {
    let mut last = u64::MAX;
    for _ in 0..100 {
        tokio::time::sleep(Duration::from_millis(100)).await;
        let now = flooded.load(Ordering::Relaxed);
        if now == last {
            return now;
        }
        last = now;
    }
    last
}

/// Echo of 64 KiB over a fresh stream of the same key, within a generous bound.
async fn fresh_echo(pool: &Pool, key: &PoolKey, dial: &impl Fn() -> Arc<rustls::ClientConfig>) {
    let mut s: H2Stream = pool
        .connect(key, dial, "10.0.0.5:8080", HeaderMap::new())
        .await
        .unwrap();
    let msg = Bytes::from(vec![7u8; 64 * 1024]);
    let echo = async {
        s.write_all(&msg).await.unwrap();
        let mut got = vec![0u8; msg.len()];
        s.read_exact(&mut got).await.unwrap();
        got
    };
    let got = tokio::time::timeout(Duration::from_secs(5), echo)
        .await
        .expect("a fresh stream stalled behind streams whose readers never read");
    assert_eq!(got, msg);
}

/// One client identity's pool to the server at an address, and the key its tunnels go by.
struct ClientSide {
    cert: meshwork_identity::WorkloadCertificate,
    server: meshwork_identity::SpiffeId,
    key: PoolKey,
    pool: Pool,
}

impl ClientSide {
    fn new(ca: &TestCa, addr: SocketAddr) -> Self {
        let (client, server) = (id("a", "client"), id("b", "server"));
        let key = PoolKey {
            src_identity: client.to_string(),
            dst: addr,
            dst_identity: server.to_string(),
            from: Default::default(),
        };
        ClientSide {
            cert: cert(ca, &client),
            server,
            key,
            pool: Pool::new(PoolSettings::default()),
        }
    }

    fn dial(&self) -> Arc<rustls::ClientConfig> {
        client_tls(&self.cert, &self.server)
    }
}

#[tokio::test]
async fn attack_unread_streams_do_not_stall_a_fresh_stream_of_the_same_identity() {
    let ca = TestCa::new(TD);
    let flooded = Arc::new(AtomicU64::new(0));
    let addr = flood_server(&ca, flooded.clone()).await;
    let c = ClientSide::new(&ca, addr);
    let (key, pool) = (&c.key, &c.pool);
    let dial = || c.dial();

    // 100 slow readers: tunnels whose data is never read. A fresh stream opened among them
    // (after 50) and one after all 100 must both echo promptly.
    let mut slow = Vec::new();
    for round in 0..2 {
        for _ in 0..50 {
            slow.push(
                pool.connect(key, dial, FLOOD, HeaderMap::new())
                    .await
                    .unwrap(),
            );
        }
        let held = until_windows_are_full(&flooded).await;
        assert!(held > 0, "the server flooded nothing");
        fresh_echo(pool, key, &dial).await;
        eprintln!(
            "round {round}: {} slow streams hold {held} bytes on {} connection(s)",
            slow.len(),
            pool.stats().connections_open
        );
    }
    // Every slow stream still holds what it was sent: nothing was read or dropped.
    assert_eq!(slow.len(), 100);
    assert!(pool.stats().connections_open > 1, "{:?}", pool.stats());
}

#[tokio::test]
async fn attack_unread_uploads_do_not_stall_a_fresh_stream_of_the_same_identity() {
    let ca = TestCa::new(TD);
    let addr = flood_server(&ca, Arc::new(AtomicU64::new(0))).await;
    let c = ClientSide::new(&ca, addr);
    let (key, pool) = (&c.key, &c.pool);
    let dial = || c.dial();

    // 50 uploads the destination never reads, each writing until flow control stops it.
    let uploaded = Arc::new(AtomicU64::new(0));
    let mut writers = Vec::new();
    for _ in 0..50 {
        let mut s = pool
            .connect(key, dial, SINK, HeaderMap::new())
            .await
            .unwrap();
        let uploaded = uploaded.clone();
        writers.push(tokio::spawn(async move {
            let chunk = vec![0xa5; 64 * 1024];
            for _ in 0..FLOOD_BYTES / chunk.len() {
                if s.write_all(&chunk).await.is_err() {
                    return;
                }
                uploaded.fetch_add(chunk.len() as u64, Ordering::Relaxed);
            }
            // Keep the stream until the test ends.
            tokio::time::sleep(Duration::from_secs(60)).await;
        }));
    }
    let held = until_windows_are_full(&uploaded).await;
    assert!(held > 0, "nothing was uploaded");
    fresh_echo(pool, key, &dial).await;
    eprintln!(
        "50 unread uploads hold {held} bytes on {} connection(s)",
        pool.stats().connections_open
    );
    for w in writers {
        w.abort();
    }
}

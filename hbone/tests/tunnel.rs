//! HBONE client pool against the HBONE server over loopback TCP with real mTLS.

mod common;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::{HeaderMap, StatusCode};
use meshwork_hbone::{
    ClientError, H2Stream, Pool, PoolKey, PoolSettings, DEFAULT_MAX_STREAMS_PER_CONN,
};
use meshwork_identity::testing::TestCa;
use meshwork_identity::{SpiffeId, WorkloadCertificate};
use tokio::io::{AsyncReadExt, AsyncWriteExt};

/// One CA, a client identity with its certificate, and an echo server with its own.
struct Peers {
    ca: TestCa,
    client: SpiffeId,
    server: SpiffeId,
    client_cert: WorkloadCertificate,
    srv: EchoServer,
}

impl Peers {
    async fn new() -> Self {
        let ca = TestCa::new(TD);
        let (client, server) = (id("a", "client"), id("b", "server"));
        let client_cert = cert(&ca, &client);
        let srv = echo_server(cert(&ca, &server)).await;
        Peers {
            ca,
            client,
            server,
            client_cert,
            srv,
        }
    }

    fn key(&self) -> PoolKey {
        PoolKey {
            src_identity: self.client.to_string(),
            dst: self.srv.addr,
            dst_identity: self.server.to_string(),
            from: Default::default(),
        }
    }

    /// A tunnel to `authority` through `pool`, as the client, expecting the server.
    async fn dial(&self, pool: &Pool, authority: &str) -> Result<H2Stream, ClientError> {
        let tls = || client_tls(&self.client_cert, &self.server);
        pool.connect(&self.key(), tls, authority, HeaderMap::new())
            .await
    }
}

async fn roundtrip(stream: &mut H2Stream, msg: &[u8]) -> Vec<u8> {
    stream.write_all(msg).await.unwrap();
    let mut got = vec![0; msg.len()];
    stream.read_exact(&mut got).await.unwrap();
    got
}

#[tokio::test]
async fn echo_with_mutual_identities() {
    let mut p = Peers::new().await;
    let pool = Pool::new(PoolSettings::default());
    let mut s = p.dial(&pool, "10.0.0.5:8080").await.unwrap();
    assert_eq!(roundtrip(&mut s, b"hello hbone").await, b"hello hbone");
    let (authority, peer) = p.srv.seen.recv().await.unwrap();
    assert_eq!(authority, "10.0.0.5:8080");
    assert_eq!(peer, p.client);
    // Half-close propagates: the echo side finishes and we read EOF.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn large_transfer_crosses_flow_control_windows() {
    let p = Peers::new().await;
    let pool = Pool::new(PoolSettings::default());
    let s = p.dial(&pool, "10.0.0.5:8080").await.unwrap();
    let (mut r, mut w) = tokio::io::split(s);
    let total = 40 * 1024 * 1024;
    let writer = tokio::spawn(async move {
        let chunk: Vec<u8> = (0..65536u32).map(|i| (i % 251) as u8).collect();
        let mut sent = 0;
        while sent < total {
            w.write_all(&chunk).await.unwrap();
            sent += chunk.len();
        }
        w.shutdown().await.unwrap();
    });
    let mut got = 0usize;
    let mut buf = vec![0; 65536];
    let mut pos = 0usize;
    loop {
        let n = r.read(&mut buf).await.unwrap();
        if n == 0 {
            break;
        }
        for b in &buf[..n] {
            assert_eq!(*b, ((pos % 65536) % 251) as u8);
            pos += 1;
        }
        got += n;
    }
    writer.await.unwrap();
    assert_eq!(got, total);
}

#[tokio::test]
async fn wrong_server_identity_is_refused() {
    let p = Peers::new().await;
    let other = id("b", "other");
    let pool = Pool::new(PoolSettings::default());
    let err = pool
        .connect(
            &PoolKey {
                dst_identity: other.to_string(),
                ..p.key()
            },
            || client_tls(&p.client_cert, &other),
            "10.0.0.5:8080",
            HeaderMap::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
}

#[tokio::test]
async fn client_from_another_root_is_refused() {
    let mut p = Peers::new().await;
    let rogue = TestCa::new(TD);
    let rogue_cert = cert(&rogue, &p.client);
    let pool = Pool::new(PoolSettings::default());
    // The rogue client trusts the real root, so it accepts the server; the server must not
    // accept it.
    let tls =
        meshwork_identity::tls::client_config(&rogue_cert, &p.ca.bundle(), [p.server.clone()])
            .unwrap();
    let r = pool
        .connect(&p.key(), || tls, "10.0.0.5:8080", HeaderMap::new())
        .await;
    assert!(r.is_err(), "rogue client got a tunnel");
    let e = p.srv.errors.recv().await.unwrap();
    assert!(e.contains("TLS handshake"), "{e}");
    assert!(p.srv.seen.try_recv().is_err());
}

#[tokio::test]
async fn refused_connect_reports_status() {
    let p = Peers::new().await;
    let pool = Pool::new(PoolSettings::default());
    let err = p.dial(&pool, REFUSED_AUTHORITY).await.unwrap_err();
    assert!(
        matches!(
            err,
            ClientError::Refused {
                status: StatusCode::BAD_REQUEST,
                ..
            }
        ),
        "{err}"
    );
}

/// Concurrent CONNECTs share connections (no connection per stream) up to the stream cap,
/// which spreads them over a few connections.
#[tokio::test]
async fn fifty_concurrent_streams_share_a_few_connections() {
    let p = Arc::new(Peers::new().await);
    let pool = Pool::new(PoolSettings::default());
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (pool, p) = (pool.clone(), p.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = p.dial(&pool, "10.0.0.5:80").await.unwrap();
            let msg = format!("stream {i}");
            assert_eq!(roundtrip(&mut s, msg.as_bytes()).await, msg.as_bytes());
            s
        }));
    }
    let mut streams = Vec::new();
    for t in tasks {
        streams.push(t.await.unwrap());
    }
    let st = pool.stats();
    let expected = 50usize.div_ceil(DEFAULT_MAX_STREAMS_PER_CONN);
    assert_eq!(st.connections_opened, expected as u64);
    assert_eq!(st.streams_opened, 50);
    assert_eq!(st.connections_open, expected);
}

#[tokio::test]
async fn full_connection_opens_another() {
    let p = Peers::new().await;
    let pool = Pool::new(PoolSettings {
        max_streams_per_conn: 2,
        ..Default::default()
    });
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = p.dial(&pool, "10.0.0.5:80").await.unwrap();
        assert_eq!(roundtrip(&mut s, b"x").await, b"x");
        held.push(s);
    }
    assert_eq!(pool.stats().connections_opened, 2);
    // Once streams end, the first connection has room again.
    held.clear();
    let mut s = p.dial(&pool, "10.0.0.5:80").await.unwrap();
    assert_eq!(roundtrip(&mut s, b"y").await, b"y");
    assert_eq!(pool.stats().connections_opened, 2);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let p = Peers::new().await;
    let pool = Pool::new(PoolSettings {
        idle_timeout: Duration::from_millis(100),
        ..Default::default()
    });
    let mut s = p.dial(&pool, "10.0.0.5:80").await.unwrap();
    assert_eq!(roundtrip(&mut s, b"x").await, b"x");
    drop(s);
    // Bounded wait for the idle reaper (not a timing assertion).
    for _ in 0..200 {
        if pool.stats().connections_open == 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(pool.stats().connections_open, 0);
    let mut s = p.dial(&pool, "10.0.0.5:80").await.unwrap();
    assert_eq!(roundtrip(&mut s, b"z").await, b"z");
    assert_eq!(pool.stats().connections_opened, 2);
}

#[tokio::test]
async fn drain_lets_open_stream_finish() {
    let p = Peers::new().await;
    let pool = Pool::new(PoolSettings::default());
    let mut s = p.dial(&pool, "10.0.0.5:80").await.unwrap();
    assert_eq!(roundtrip(&mut s, b"before").await, b"before");
    p.srv.drain.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(roundtrip(&mut s, b"after drain").await, b"after drain");
}

#[tokio::test]
async fn connection_closed_by_peer_is_replaced() {
    let p = Peers::new().await;
    let pool = Pool::new(PoolSettings::default());
    let mut s = p.dial(&pool, "10.0.0.5:80").await.unwrap();
    assert_eq!(roundtrip(&mut s, b"one").await, b"one");
    drop(s);
    // The server drains the pooled connection (GOAWAY) but accepts new ones.
    p.srv.drain_first.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut s = p.dial(&pool, "10.0.0.5:80").await.unwrap();
    assert_eq!(roundtrip(&mut s, b"two").await, b"two");
    assert_eq!(pool.stats().connections_opened, 2);
}

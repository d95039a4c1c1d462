//! HBONE client pool against the HBONE server over loopback TCP with real mTLS.

mod common;

use std::time::Duration;

use common::*;
use http::{HeaderMap, StatusCode};
use meshwork_hbone::{ClientError, Pool, PoolKey, PoolSettings};
use meshwork_identity::testing::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};

fn key(
    src: &meshwork_identity::SpiffeId,
    server: &EchoServer,
    dst: &meshwork_identity::SpiffeId,
) -> PoolKey {
    PoolKey {
        src_identity: src.to_string(),
        dst: server.addr,
        dst_identity: dst.to_string(),
    }
}

async fn roundtrip(stream: &mut meshwork_hbone::H2Stream, msg: &[u8]) -> Vec<u8> {
    stream.write_all(msg).await.unwrap();
    let mut got = vec![0; msg.len()];
    stream.read_exact(&mut got).await.unwrap();
    got
}

#[tokio::test]
async fn echo_with_mutual_identities() {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let client_cert = cert(&ca, &client);
    let mut srv = echo_server(cert(&ca, &server)).await;
    let pool = Pool::new(PoolSettings::default());
    let mut s = pool
        .connect(
            &key(&client, &srv, &server),
            || client_tls(&client_cert, &server),
            "10.0.0.5:8080",
            HeaderMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut s, b"hello hbone").await, b"hello hbone");
    let (authority, peer) = srv.seen.recv().await.unwrap();
    assert_eq!(authority, "10.0.0.5:8080");
    assert_eq!(peer, client);
    // Half-close propagates: the echo side finishes and we read EOF.
    s.shutdown().await.unwrap();
    let mut rest = Vec::new();
    s.read_to_end(&mut rest).await.unwrap();
    assert!(rest.is_empty());
}

#[tokio::test]
async fn large_transfer_crosses_flow_control_windows() {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let client_cert = cert(&ca, &client);
    let srv = echo_server(cert(&ca, &server)).await;
    let pool = Pool::new(PoolSettings::default());
    let s = pool
        .connect(
            &key(&client, &srv, &server),
            || client_tls(&client_cert, &server),
            "10.0.0.5:8080",
            HeaderMap::new(),
        )
        .await
        .unwrap();
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
    let ca = TestCa::new(TD);
    let (client, server, other) = (id("a", "client"), id("b", "server"), id("b", "other"));
    let client_cert = cert(&ca, &client);
    let srv = echo_server(cert(&ca, &server)).await;
    let pool = Pool::new(PoolSettings::default());
    let err = pool
        .connect(
            &PoolKey {
                src_identity: client.to_string(),
                dst: srv.addr,
                dst_identity: other.to_string(),
            },
            || client_tls(&client_cert, &other),
            "10.0.0.5:8080",
            HeaderMap::new(),
        )
        .await
        .unwrap_err();
    assert!(matches!(err, ClientError::Tls { .. }), "{err}");
}

#[tokio::test]
async fn client_from_another_root_is_refused() {
    let ca = TestCa::new(TD);
    let rogue = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let rogue_cert = cert(&rogue, &client);
    let mut srv = echo_server(cert(&ca, &server)).await;
    let pool = Pool::new(PoolSettings::default());
    // The rogue client trusts the real root, so it accepts the server; the server must not
    // accept it.
    let tls =
        meshwork_identity::tls::client_config(&rogue_cert, &ca.bundle(), [server.clone()]).unwrap();
    let r = pool
        .connect(
            &key(&client, &srv, &server),
            || tls,
            "10.0.0.5:8080",
            HeaderMap::new(),
        )
        .await;
    assert!(r.is_err(), "rogue client got a tunnel");
    let e = srv.errors.recv().await.unwrap();
    assert!(e.contains("TLS handshake"), "{e}");
    assert!(srv.seen.try_recv().is_err());
}

#[tokio::test]
async fn refused_connect_reports_status() {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let client_cert = cert(&ca, &client);
    let srv = echo_server(cert(&ca, &server)).await;
    let pool = Pool::new(PoolSettings::default());
    let err = pool
        .connect(
            &key(&client, &srv, &server),
            || client_tls(&client_cert, &server),
            REFUSED_AUTHORITY,
            HeaderMap::new(),
        )
        .await
        .unwrap_err();
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

#[tokio::test]
async fn fifty_concurrent_streams_share_one_connection() {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let client_cert = cert(&ca, &client);
    let srv = echo_server(cert(&ca, &server)).await;
    let pool = Pool::new(PoolSettings::default());
    let k = key(&client, &srv, &server);
    let mut tasks = Vec::new();
    for i in 0..50 {
        let (pool, k, cc, server) = (pool.clone(), k.clone(), client_cert.clone(), server.clone());
        tasks.push(tokio::spawn(async move {
            let mut s = pool
                .connect(
                    &k,
                    || client_tls(&cc, &server),
                    "10.0.0.5:80",
                    HeaderMap::new(),
                )
                .await
                .unwrap();
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
    assert_eq!(st.connections_opened, 1);
    assert_eq!(st.streams_opened, 50);
    assert_eq!(st.connections_open, 1);
}

#[tokio::test]
async fn full_connection_opens_another() {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let client_cert = cert(&ca, &client);
    let srv = echo_server(cert(&ca, &server)).await;
    let pool = Pool::new(PoolSettings {
        max_streams_per_conn: 2,
        ..Default::default()
    });
    let k = key(&client, &srv, &server);
    let mut held = Vec::new();
    for _ in 0..3 {
        let mut s = pool
            .connect(
                &k,
                || client_tls(&client_cert, &server),
                "10.0.0.5:80",
                HeaderMap::new(),
            )
            .await
            .unwrap();
        assert_eq!(roundtrip(&mut s, b"x").await, b"x");
        held.push(s);
    }
    assert_eq!(pool.stats().connections_opened, 2);
    // Once streams end, the first connection has room again.
    held.clear();
    let mut s = pool
        .connect(
            &k,
            || client_tls(&client_cert, &server),
            "10.0.0.5:80",
            HeaderMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut s, b"y").await, b"y");
    assert_eq!(pool.stats().connections_opened, 2);
}

#[tokio::test]
async fn idle_connections_are_closed() {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let client_cert = cert(&ca, &client);
    let srv = echo_server(cert(&ca, &server)).await;
    let pool = Pool::new(PoolSettings {
        idle_timeout: Duration::from_millis(100),
        ..Default::default()
    });
    let k = key(&client, &srv, &server);
    let mut s = pool
        .connect(
            &k,
            || client_tls(&client_cert, &server),
            "10.0.0.5:80",
            HeaderMap::new(),
        )
        .await
        .unwrap();
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
    let mut s = pool
        .connect(
            &k,
            || client_tls(&client_cert, &server),
            "10.0.0.5:80",
            HeaderMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut s, b"z").await, b"z");
    assert_eq!(pool.stats().connections_opened, 2);
}

#[tokio::test]
async fn drain_lets_open_stream_finish() {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let client_cert = cert(&ca, &client);
    let srv = echo_server(cert(&ca, &server)).await;
    let pool = Pool::new(PoolSettings::default());
    let mut s = pool
        .connect(
            &key(&client, &srv, &server),
            || client_tls(&client_cert, &server),
            "10.0.0.5:80",
            HeaderMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut s, b"before").await, b"before");
    srv.drain.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    assert_eq!(roundtrip(&mut s, b"after drain").await, b"after drain");
}

#[tokio::test]
async fn connection_closed_by_peer_is_replaced() {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let client_cert = cert(&ca, &client);
    let srv = echo_server(cert(&ca, &server)).await;
    let pool = Pool::new(PoolSettings::default());
    let k = key(&client, &srv, &server);
    let mut s = pool
        .connect(
            &k,
            || client_tls(&client_cert, &server),
            "10.0.0.5:80",
            HeaderMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut s, b"one").await, b"one");
    drop(s);
    // The server drains the pooled connection (GOAWAY) but accepts new ones.
    srv.drain_first.cancel();
    tokio::time::sleep(Duration::from_millis(50)).await;
    let mut s = pool
        .connect(
            &k,
            || client_tls(&client_cert, &server),
            "10.0.0.5:80",
            HeaderMap::new(),
        )
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut s, b"two").await, b"two");
    assert_eq!(pool.stats().connections_opened, 2);
}

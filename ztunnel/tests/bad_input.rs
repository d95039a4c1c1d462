//! Garbage and misdirected CONNECTs on a ztunnel's HBONE port: clean refusals, and the
//! ztunnel keeps serving.

mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::*;
use http::{HeaderMap, StatusCode};
use meshwork_hbone::{ClientError, Pool, PoolKey, PoolSettings};
use meshwork_identity::tls::client_config;
use meshwork_identity::SpiffeId;
use rand::rngs::StdRng;
use rand::{Rng, SeedableRng};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

#[tokio::test]
async fn garbage_and_foreign_connects_are_refused_and_service_continues() {
    let (s, echo) = setup(20).await;
    let ca = s.ca.clone();
    let p = s.start(echo).await;
    let hbone = p.b.addrs.hbone[0];

    let mut rng = StdRng::seed_from_u64(7);
    for i in 0..200 {
        let mut c = TcpStream::connect(hbone).await.unwrap();
        let len = rng.random_range(1..2048);
        let mut junk: Vec<u8> = (0..len).map(|_| rng.random()).collect();
        if i % 2 == 0 {
            junk[0] = 0x16; // looks like a TLS handshake record
        }
        let _ = c.write_all(&junk).await;
        let _ = c.shutdown().await;
        let mut sink = Vec::new();
        let _ = tokio::time::timeout(Duration::from_secs(5), c.read_to_end(&mut sink)).await;
    }

    // An authenticated peer asking for an address that is no workload on node-b.
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
    for authority in [
        SocketAddr::new(ip(20, 2), 80).to_string(),
        "not-an-address".to_string(),
    ] {
        let e = pool
            .connect(&key, tls, &authority, HeaderMap::new())
            .await
            .unwrap_err();
        assert!(
            matches!(
                e,
                ClientError::Refused {
                    status: StatusCode::BAD_REQUEST,
                    ..
                }
            ),
            "{authority}: {e}"
        );
    }
    // The real pod through the same pooled connection still works.
    let mut t = pool
        .connect(&key, tls, &echo.to_string(), HeaderMap::new())
        .await
        .unwrap();
    t.write_all(b"still fine").await.unwrap();
    let mut got = [0u8; 10];
    t.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"still fine");
    assert_eq!(pool.stats().connections_opened, 1);

    let mut c = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap();
    assert_eq!(
        roundtrip(&mut c, b"end to end").await.unwrap(),
        b"end to end"
    );
}

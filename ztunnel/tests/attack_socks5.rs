//! Attack: a local process uses the SOCKS5 entry to act as another workload or to reach
//! destinations outside the mesh (issue #18 item 3).
//!
//! SOCKS5 is a local-development entry: off unless asked for, loopback only, mesh
//! destinations only, and a username names a source only for this node's workloads (and
//! only with capture off, see `outbound::named_source`).

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use clap::Parser;
use common::*;
use meshwork_identity::testing::TestCa;
use meshwork_model::client::ConfigHandle;
use meshwork_ztunnel::{Config, Deps, StartError, Ztunnel};
use tokio::net::TcpListener;

const NOT_ALLOWED: u8 = 2;

/// Starts a ztunnel with `cfg` on an empty world.
async fn start(cfg: Config) -> Result<Ztunnel, StartError> {
    let (_tx, handle) = ConfigHandle::manual(World::default().snapshot(1));
    Ztunnel::start(
        cfg,
        Deps {
            config: handle,
            signer: Arc::new(TestSigner {
                ca: Arc::new(TestCa::new("cluster.local")),
                ttl: Duration::from_secs(3600),
            }),
            log_control: None,
        },
    )
    .await
}

/// The production flags (the chart's: nothing about SOCKS5), with the other listeners
/// moved to a loopback address so the test can run anywhere.
fn production_flags(net: u8) -> Config {
    let at = ip(net, 1).to_string();
    let a = |port: u16| format!("{at}:{port}");
    Config::parse_from([
        "ztunnel".to_string(),
        "--node".into(),
        "node-a".into(),
        "--outbound-addr".into(),
        a(0),
        "--inbound-plain-addr".into(),
        a(0),
        "--hbone-addr".into(),
        a(0),
        "--admin-addr".into(),
        a(0),
        "--metrics-addr".into(),
        a(0),
        "--readiness-addr".into(),
        a(0),
    ])
}

#[tokio::test]
async fn attack_socks5_is_not_listening_by_default() {
    let zt = start(production_flags(40)).await.unwrap();
    assert_eq!(
        zt.addrs.socks5, None,
        "a ztunnel started without --socks5-addr listens for SOCKS5"
    );
    assert!(zt.addrs.admin.is_some() && !zt.addrs.hbone.is_empty());
}

#[tokio::test]
async fn attack_socks5_on_a_non_loopback_address_refuses_to_start() {
    let mut cfg = production_flags(41);
    cfg.socks5_addr = "0.0.0.0:0".parse().unwrap();
    match start(cfg).await {
        Err(e) => {
            let e = e.to_string();
            assert!(
                e.contains("--socks5-addr 0.0.0.0:0") && e.contains("loopback"),
                "{e}"
            );
        }
        Ok(zt) => panic!("started with SOCKS5 on {:?}", zt.addrs.socks5),
    }
}

#[tokio::test]
async fn attack_socks5_does_not_relay_to_destinations_outside_the_mesh() {
    let (s, echo) = setup(42).await;
    // A listener the model does not know (a host service, the cloud metadata server...).
    let outside = TcpListener::bind(SocketAddr::new(ip(42, 50), 0))
        .await
        .unwrap();
    let target = outside.local_addr().unwrap();
    let p = s.start(echo).await;
    let socks = p.a.addrs.socks5.unwrap();
    let e = socks_connect(socks, target, None).await.unwrap_err();
    assert_eq!(e, NOT_ALLOWED, "SOCKS5 relayed to a non-mesh destination");
    // A hostname the mesh does not know is refused too (no DNS lookup, no relay).
    let mut h = tokio::net::TcpStream::connect(socks).await.unwrap();
    let mut req = vec![5, 1, 0, 5, 1, 0, 3, 9];
    req.extend(b"localhost");
    req.extend(target.port().to_be_bytes());
    tokio::io::AsyncWriteExt::write_all(&mut h, &req)
        .await
        .unwrap();
    let mut reply = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut h, &mut reply)
        .await
        .unwrap();
    assert_eq!(reply[3], NOT_ALLOWED, "SOCKS5 reply {reply:?}");
    // The mesh destination still works.
    let mut c = socks_connect(socks, echo, None).await.unwrap();
    assert_eq!(roundtrip(&mut c, b"in mesh").await.unwrap(), b"in mesh");
}

#[tokio::test]
async fn attack_socks5_username_naming_a_workload_on_another_node_is_refused() {
    let (s, echo) = setup(43).await;
    let p = s.start(echo).await;
    // prod/server runs on node-b: node-a's ztunnel must not speak as it.
    let e = socks_connect(p.a.addrs.socks5.unwrap(), echo, Some("prod/server"))
        .await
        .unwrap_err();
    assert_eq!(e, NOT_ALLOWED);
    assert_eq!(p.b.metrics().total("opened", |_| true), 0);
    // A workload of node-a may be named (capture off: local development).
    let mut c = socks_connect(p.a.addrs.socks5.unwrap(), echo, Some("prod/client"))
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut c, b"as client").await.unwrap(), b"as client");
}

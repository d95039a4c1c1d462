//! Two ztunnels over loopback: SOCKS5 entry on A → HBONE (mTLS) → B → echo pod.

mod common;

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use common::*;
use meshwork_model::pb::config::{
    Action, Authorization, GatewayAddress, MtlsMode, PolicyScope, Rule, Source,
};
use meshwork_ztunnel::exposition::validate;
use tokio::io::AsyncWriteExt;
use tokio::net::{TcpListener, TcpStream};

const NOT_ALLOWED: u8 = 2;
const REFUSED: u8 = 5;

fn deny_client() -> Authorization {
    Authorization {
        name: "deny-client".into(),
        namespace: "prod".into(),
        scope: PolicyScope::Namespace as i32,
        action: Action::Deny as i32,
        rules: vec![Rule {
            from: vec![Source {
                principals: vec!["cluster.local/ns/prod/sa/client".into()],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    }
}

#[tokio::test]
async fn socks5_to_pod_over_mtls_with_metrics_and_admin() {
    let (s, echo) = setup(10).await;
    let p = s.start(echo).await;
    let mut c = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap();
    assert_eq!(
        roundtrip(&mut c, b"hello mesh").await.unwrap(),
        b"hello mesh"
    );
    let big = vec![7u8; 3 * 1024 * 1024];
    assert_eq!(roundtrip(&mut c, &big).await.unwrap(), big);
    c.shutdown().await.unwrap();
    assert!(closed_within(&mut c, Duration::from_secs(10)).await);
    assert_eq!(p.a.pool_stats().connections_opened, 1);

    // B reports the mTLS connection with the client's principal once it closed.
    let mut closed = 0;
    for _ in 0..100 {
        closed =
            p.b.metrics()
                .total("closed", |l| l.reporter == "destination");
        if closed > 0 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(closed, 1);
    let (status, text) = http_get(p.b.addrs.metrics.unwrap(), "/metrics").await;
    assert_eq!(status, 200);
    validate(&text).unwrap();
    assert!(
        text.contains("source_principal=\"spiffe://cluster.local/ns/prod/sa/client\""),
        "{text}"
    );
    assert!(text.contains("connection_security_policy=\"mutual_tls\""));
    assert!(text.contains("reporter=\"destination\""));
    let received =
        p.b.metrics()
            .total("received", |l| l.reporter == "destination");
    assert_eq!(received, 10 + 3 * 1024 * 1024);
    let (_, a_text) = http_get(p.a.addrs.metrics.unwrap(), "/metrics").await;
    validate(&a_text).unwrap();
    assert!(a_text.contains("reporter=\"source\""));
    assert!(a_text.contains("destination_principal=\"spiffe://cluster.local/ns/prod/sa/server\""));

    let (status, body) = http_get(p.b.addrs.readiness.unwrap(), "/healthz/ready").await;
    assert_eq!((status, body.trim()), (200, "ready"));
    let (status, dump) = http_get(p.b.addrs.admin.unwrap(), "/config_dump").await;
    assert_eq!(status, 200);
    let dump: serde_json::Value = serde_json::from_str(&dump).unwrap();
    assert_eq!(dump["node"], "node-b");
    assert_eq!(dump["workloads"].as_array().unwrap().len(), 2);
    let (status, certs) = http_get(p.b.addrs.admin.unwrap(), "/certs").await;
    assert_eq!(status, 200);
    assert!(certs.contains("spiffe://cluster.local/ns/prod/sa/server"));
    let (status, _) = http_get(p.b.addrs.admin.unwrap(), "/logging?level=debug").await;
    assert_eq!(status, 405, "the log level changes on POST only");
}

#[tokio::test]
async fn peer_with_certificate_from_another_root_is_refused() {
    let (mut s, echo) = setup(11).await;
    s.a_ca = Some(Arc::new(meshwork_identity::testing::TestCa::new(
        "cluster.local",
    )));
    let p = s.start(echo).await;
    let e = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap_err();
    assert_eq!(e, REFUSED);
    assert_eq!(p.b.metrics().total("opened", |_| true), 0);
}

#[tokio::test]
async fn peer_with_wrong_identity_is_refused() {
    let (mut s, echo) = setup(12).await;
    // A believes the server runs as another service account: B's certificate must not pass.
    s.a_world.workload_mut("server").service_account = "payments".into();
    let p = s.start(echo).await;
    let e = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap_err();
    assert_eq!(e, REFUSED);
}

#[tokio::test]
async fn deny_policy_refuses_and_counts() {
    let (mut s, echo) = setup(13).await;
    s.b_world.policies.push(deny_client());
    let p = s.start(echo).await;
    let e = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap_err();
    assert_eq!(e, NOT_ALLOWED);
    assert_eq!(
        p.b.metrics()
            .total("opened", |l| l.response_flags == "DENY"),
        1
    );
    let (_, text) = http_get(p.b.addrs.metrics.unwrap(), "/metrics").await;
    validate(&text).unwrap();
    assert!(text.contains("response_flags=\"DENY\""));
}

#[tokio::test]
async fn waypoint_served_workload_admits_only_the_waypoint() {
    let (mut s, echo) = setup(14).await;
    let net = s.net;
    // A (the client's node) sends straight to the pod; B knows the pod is behind a waypoint.
    s.b_world.workload_mut("server").waypoint = Some(GatewayAddress {
        namespace: "prod".into(),
        name: "waypoint".into(),
        address: ip(net, 9).to_string(),
        hbone_port: 15008,
        identity: "spiffe://cluster.local/ns/prod/sa/waypoint".into(),
    });
    let mut wp = workload("prod", "waypoint", "node-a", ip(net, 9));
    wp.is_waypoint = true;
    s.a_world.workloads.push(wp.clone());
    s.b_world.workloads.push(wp);
    let p = s.start(echo).await;
    let e = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap_err();
    assert_eq!(e, NOT_ALLOWED);
    // The waypoint's identity (SOCKS5 username selects the source workload) is admitted.
    let mut c = socks_connect(p.a.addrs.socks5.unwrap(), echo, Some("prod/waypoint"))
        .await
        .unwrap();
    assert_eq!(
        roundtrip(&mut c, b"via waypoint").await.unwrap(),
        b"via waypoint"
    );
}

/// A capture stand-in: accepts on a loopback port and hands sockets to B's plaintext path.
async fn plaintext_via_b(p: &Pair) -> TcpStream {
    let l = TcpListener::bind(SocketAddr::new(ip(p.net, 5), 0))
        .await
        .unwrap();
    let addr = l.local_addr().unwrap();
    let c = TcpStream::connect(addr).await.unwrap();
    let (sock, _) = l.accept().await.unwrap();
    p.b.inbound_plain_conn(sock, p.echo);
    c
}

#[tokio::test]
async fn strict_refuses_plaintext_and_permissive_accepts() {
    let (mut s, echo) = setup(15).await;
    s.b_world.workload_mut("server").mtls_mode = MtlsMode::Strict as i32;
    let mut p = s.start(echo).await;
    let mut c = plaintext_via_b(&p).await;
    let _ = c.write_all(b"hi").await;
    assert!(closed_within(&mut c, Duration::from_secs(10)).await);
    assert_eq!(
        p.b.metrics()
            .total("opened", |l| l.response_flags == "DENY"),
        1
    );
    // mTLS still works under STRICT.
    let mut m = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut m, b"mtls").await.unwrap(), b"mtls");

    p.b_world.workload_mut("server").mtls_mode = MtlsMode::Permissive as i32;
    let n = p.b.applied_count();
    p.b_cfg.send(Arc::new(p.b_world.snapshot(2))).unwrap();
    p.b.wait_applied(n + 1).await;
    let mut c = plaintext_via_b(&p).await;
    assert_eq!(roundtrip(&mut c, b"plain ok").await.unwrap(), b"plain ok");
    let (_, text) = http_get(p.b.addrs.metrics.unwrap(), "/metrics").await;
    assert!(
        text.contains("connection_security_policy=\"none\""),
        "{text}"
    );
}

/// Concurrent connections share TLS connections up to the per-connection stream cap.
#[tokio::test]
async fn fifty_concurrent_connections_share_a_few_tls_connections() {
    let (s, echo) = setup(16).await;
    let cap = s.max_streams_per_conn;
    let p = Arc::new(s.start(echo).await);
    let _open = open_checked(&p, 50).await;
    let st = p.a.pool_stats();
    assert_eq!(st.streams_opened, 50);
    assert_eq!(st.connections_opened, 50usize.div_ceil(cap) as u64);
}

/// With data-path threads, each thread accepts on its own listener of the shared address
/// and dials its own HBONE connection: connections spread over both threads (two TLS
/// connections from A), and a drain still waits for the open streams on every thread.
#[tokio::test]
async fn data_path_threads_each_serve_their_share_and_drain() {
    let (mut s, echo) = setup(24).await;
    s.threads = 2;
    // Room for all 40 streams on one connection per thread.
    s.max_streams_per_conn = 40;
    let p = Arc::new(s.start(echo).await);
    let mut open = open_checked(&p, 40).await;
    let st = p.a.pool_stats();
    assert_eq!(st.streams_opened, 40);
    // One pooled connection per thread: both threads accepted some of the 40 (the kernel
    // hashes each connection to one listener of the group; all 40 on one is 2^-39).
    assert_eq!(st.connections_opened, 2);
    assert_eq!(p.b.inbound_connections(), 40);

    let p = Arc::into_inner(p).expect("tasks done");
    let drain = start_drain(p.b).await;
    for (i, c) in open.iter_mut().enumerate() {
        let msg = format!("drain {i}");
        assert_eq!(roundtrip(c, msg.as_bytes()).await.unwrap(), msg.as_bytes());
    }
    assert!(!drain.is_finished());
    finish_drain(open, drain).await;
}

#[tokio::test]
async fn certificate_rotation_keeps_open_streams() {
    let (mut s, echo) = setup(17).await;
    s.ttl = Duration::from_secs(2);
    let p = s.start(echo).await;
    let server_id = "spiffe://cluster.local/ns/prod/sa/server".parse().unwrap();
    let before =
        p.b.certs()
            .current(&server_id)
            .unwrap()
            .serial()
            .to_string();
    let mut c = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut c, b"before").await.unwrap(), b"before");
    let mut rotated = false;
    for _ in 0..100 {
        if p.b.certs().current(&server_id).unwrap().serial() != before {
            rotated = true;
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
    }
    assert!(rotated, "certificate was not renewed");
    assert_eq!(
        roundtrip(&mut c, b"after rotation").await.unwrap(),
        b"after rotation"
    );
    let mut c2 = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut c2, b"new conn").await.unwrap(), b"new conn");
}

#[tokio::test]
async fn drain_lets_an_open_stream_finish() {
    let (s, echo) = setup(18).await;
    let p = s.start(echo).await;
    let mut c = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap();
    assert_eq!(
        roundtrip(&mut c, b"before drain").await.unwrap(),
        b"before drain"
    );
    let drain = start_drain(p.b).await;
    assert_eq!(
        roundtrip(&mut c, b"during drain").await.unwrap(),
        b"during drain"
    );
    assert!(!drain.is_finished());
    finish_drain(vec![c], drain).await;
}

#[tokio::test]
async fn policy_change_closes_a_now_denied_connection() {
    let (s, echo) = setup(19).await;
    let mut p = s.start(echo).await;
    let mut c = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut c, b"allowed").await.unwrap(), b"allowed");
    assert_eq!(p.b.inbound_connections(), 1);
    p.b_world.policies.push(deny_client());
    let n = p.b.applied_count();
    p.b_cfg.send(Arc::new(p.b_world.snapshot(2))).unwrap();
    p.b.wait_applied(n + 1).await;
    assert!(closed_within(&mut c, Duration::from_secs(10)).await);
    let e = socks_connect(p.a.addrs.socks5.unwrap(), echo, None)
        .await
        .unwrap_err();
    assert_eq!(e, NOT_ALLOWED);
}

#[tokio::test]
async fn service_vip_and_hostname_reach_a_member_on_its_target_port() {
    use meshwork_model::pb::config::{Service, ServicePort, ServicePorts};
    let (mut s, echo) = setup(21).await;
    let vip = SocketAddr::new(ip(21, 100), 80);
    let svc = Service {
        name: "echo".into(),
        namespace: "prod".into(),
        hostname: "echo.prod.svc.cluster.local".into(),
        aliases: vec!["echo".into()],
        vips: vec![vip.ip().to_string()],
        ports: vec![ServicePort {
            port: 80,
            target_port: echo.port() as u32,
            ..Default::default()
        }],
        ..Default::default()
    };
    for w in [&mut s.a_world, &mut s.b_world] {
        w.services.push(svc.clone());
        w.workload_mut("server").services.push(ServicePorts {
            service: "prod/echo.prod.svc.cluster.local".into(),
            ports: [(80, echo.port() as u32)].into_iter().collect(),
        });
    }
    let p = s.start(echo).await;
    let mut c = socks_connect(p.a.addrs.socks5.unwrap(), vip, None)
        .await
        .unwrap();
    assert_eq!(roundtrip(&mut c, b"via vip").await.unwrap(), b"via vip");

    // SOCKS5 with a hostname (ATYP 3): the short alias resolves in the client's namespace.
    let mut h = TcpStream::connect(p.a.addrs.socks5.unwrap()).await.unwrap();
    let mut req = vec![5, 1, 0, 5, 1, 0, 3, 4];
    req.extend(b"echo");
    req.extend(80u16.to_be_bytes());
    h.write_all(&req).await.unwrap();
    let mut reply = [0u8; 12];
    tokio::io::AsyncReadExt::read_exact(&mut h, &mut reply)
        .await
        .unwrap();
    assert_eq!(reply[3], 0, "SOCKS5 reply {reply:?}");
    assert_eq!(
        roundtrip(&mut h, b"via hostname").await.unwrap(),
        b"via hostname"
    );

    let (_, text) = http_get(p.a.addrs.metrics.unwrap(), "/metrics").await;
    assert!(
        text.contains("destination_service=\"echo.prod.svc.cluster.local\""),
        "{text}"
    );
}

#[tokio::test]
async fn captured_outbound_identifies_the_source_by_ip() {
    let (mut s, echo) = setup(22).await;
    let net = s.net;
    s.add_second_client();
    let p = s.start(echo).await;
    // Capture stand-in: the pod (bound to its own address) connects, the socket is handed
    // to ztunnel A with the original destination, as REDIRECT/TPROXY would.
    let l = TcpListener::bind(SocketAddr::new(ip(net, 5), 0))
        .await
        .unwrap();
    let sock = tokio::net::TcpSocket::new_v4().unwrap();
    sock.bind(SocketAddr::new(ip(net, 6), 0)).unwrap();
    let mut c = sock.connect(l.local_addr().unwrap()).await.unwrap();
    let (captured, _) = l.accept().await.unwrap();
    p.a.outbound_conn(captured, echo);
    assert_eq!(roundtrip(&mut c, b"captured").await.unwrap(), b"captured");
    let (_, text) = http_get(p.b.addrs.metrics.unwrap(), "/metrics").await;
    assert!(text.contains("source_workload=\"client2\""), "{text}");
    assert!(text.contains("source_principal=\"spiffe://cluster.local/ns/prod/sa/client2\""));
}

#[tokio::test]
async fn ip_blocks_match_the_client_pod_not_the_tunnel_source() {
    // `source.ipBlocks` names pod addresses, as in Istio: through HBONE the client is the
    // pod behind the tunnel (vouched for by its identity), not the source ztunnel's address.
    let (mut s, echo) = setup(23).await;
    let net = s.net;
    s.add_second_client();
    s.b_world.policies.push(Authorization {
        name: "deny-client2-by-ip".into(),
        namespace: "prod".into(),
        scope: PolicyScope::Namespace as i32,
        action: Action::Deny as i32,
        rules: vec![Rule {
            from: vec![Source {
                ip_blocks: vec![format!("{}/32", ip(net, 6))],
                ..Default::default()
            }],
            ..Default::default()
        }],
        ..Default::default()
    });
    let p = s.start(echo).await;
    let connect_as = |host: u8| async move {
        let l = TcpListener::bind(SocketAddr::new(ip(net, 5), 0))
            .await
            .unwrap();
        let sock = tokio::net::TcpSocket::new_v4().unwrap();
        sock.bind(SocketAddr::new(ip(net, host), 0)).unwrap();
        let c = sock.connect(l.local_addr().unwrap()).await.unwrap();
        let (captured, _) = l.accept().await.unwrap();
        (c, captured)
    };
    // client2 (10.x.6) is denied by its address...
    let (mut c, captured) = connect_as(6).await;
    p.a.outbound_conn(captured, echo);
    assert!(roundtrip(&mut c, b"denied").await.is_err());
    assert_eq!(
        p.b.metrics()
            .total("opened", |l| l.response_flags == "DENY"),
        1
    );
    // ...and client (10.x.2), through the same tunnel, is not.
    let (mut c, captured) = connect_as(2).await;
    p.a.outbound_conn(captured, echo);
    assert_eq!(roundtrip(&mut c, b"allowed").await.unwrap(), b"allowed");
}

/// One row of `/proc/net/tcp`: the addresses, whether the socket timer is pending
/// (on an established socket, the keepalive timer), and in how many seconds it fires.
struct TcpRow {
    local: SocketAddr,
    remote: SocketAddr,
    keepalive_armed: bool,
    fires_in_secs: u64,
}

/// The kernel's IPv4 TCP sockets of this network namespace.
fn tcp_table() -> Vec<TcpRow> {
    // "0100007F:1F90": the address as a little-endian u32, the port big-endian.
    let addr = |s: &str| -> Option<SocketAddr> {
        let (ip, port) = s.split_once(':')?;
        let ip = std::net::Ipv4Addr::from(u32::from_str_radix(ip, 16).ok()?.to_le_bytes());
        Some(SocketAddr::new(
            ip.into(),
            u16::from_str_radix(port, 16).ok()?,
        ))
    };
    let table = std::fs::read_to_string("/proc/net/tcp").unwrap();
    table
        .lines()
        .skip(1)
        .filter_map(|line| {
            let f: Vec<&str> = line.split_whitespace().collect();
            // "tr:tm->when", `when` in USER_HZ (100 per second).
            let (tr, when) = f.get(5)?.split_once(':')?;
            Some(TcpRow {
                local: addr(f.get(1)?)?,
                remote: addr(f.get(2)?)?,
                keepalive_armed: tr == "02",
                fires_in_secs: u64::from_str_radix(when, 16).ok()? / 100,
            })
        })
        .collect()
}

/// Every socket the ztunnels proxy gets TCP keepalive: a peer that vanishes without a FIN
/// or RST does not hold the connection (and its tunnel) open forever.
#[tokio::test]
async fn proxied_connections_have_keepalive_armed() {
    let (s, echo) = setup(31).await;
    let p = Arc::new(s.start(echo).await);
    let client = open_checked(&p, 1).await.remove(0);
    let (client_local, entry_local) = (client.local_addr().unwrap(), client.peer_addr().unwrap());
    // A's side of the client connection (its SOCKS5 entry accepted it), and B's
    // connection to the pod (the only socket whose far end is the echo server).
    let proxied =
        |r: &TcpRow| (r.local == entry_local && r.remote == client_local) || r.remote == echo;
    // Just after data, the retransmission timer may still wait for a delayed ACK and hide
    // the keepalive timer: look again until the connections are idle (2 s at most).
    let mut table = tcp_table();
    for _ in 0..40 {
        if table
            .iter()
            .filter(|r| proxied(r))
            .all(|r| r.keepalive_armed)
        {
            break;
        }
        tokio::time::sleep(Duration::from_millis(50)).await;
        table = tcp_table();
    }
    let entry: Vec<&TcpRow> = table
        .iter()
        .filter(|r| r.local == entry_local && r.remote == client_local)
        .collect();
    let upstream: Vec<&TcpRow> = table.iter().filter(|r| r.remote == echo).collect();
    let idle = meshwork_runtime::socket::KEEPALIVE_IDLE.as_secs();
    for (what, rows) in [("entry", entry), ("upstream", upstream)] {
        assert_eq!(rows.len(), 1, "{what}: {} sockets", rows.len());
        let r = rows[0];
        assert!(r.keepalive_armed, "{what}: keepalive timer not armed");
        assert!(
            r.fires_in_secs <= idle && r.fires_in_secs + 60 > idle,
            "{what}: fires in {} s",
            r.fires_in_secs
        );
    }
}

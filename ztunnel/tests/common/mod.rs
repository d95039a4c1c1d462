//! Loopback test mesh: two in-process ztunnels (node-a, node-b) on 127.77.<net>.x, a
//! test CA, config fed directly as snapshots, an echo server as the destination pod.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr, SocketAddr};
use std::sync::Arc;
use std::time::Duration;

use meshwork_identity::testing::TestCa;
use meshwork_identity::SpiffeId;
use meshwork_model::client::ConfigHandle;
use meshwork_model::keys::make_resource;
use meshwork_model::pb::config::{resource, Authorization, MeshSettings, Service, Workload};
use meshwork_model::{Kind, Snapshot};
use meshwork_ztunnel::{CertSigner, Config, Deps, SignFuture, Ztunnel};
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::{TcpListener, TcpStream};
use tokio::sync::watch;

pub const HBONE_PORT: u16 = 15008;

/// Signs with a test CA.
pub struct TestSigner {
    pub ca: Arc<TestCa>,
    pub ttl: Duration,
}

impl CertSigner for TestSigner {
    fn sign<'a>(&'a self, identity: &'a SpiffeId) -> SignFuture<'a> {
        let cert = self.ca.issue(identity, self.ttl);
        Box::pin(async move { Ok(cert) })
    }
}

pub fn ip(net: u8, host: u8) -> IpAddr {
    IpAddr::V4(Ipv4Addr::new(127, 77, net, host))
}

pub fn workload(ns: &str, name: &str, node: &str, addr: IpAddr) -> Workload {
    Workload {
        uid: format!("{ns}/{name}"),
        name: name.into(),
        namespace: ns.into(),
        service_account: name.into(),
        node: node.into(),
        addresses: vec![addr.to_string()],
        captured: true,
        healthy: true,
        ..Default::default()
    }
}

/// The resources one ztunnel sees.
#[derive(Clone, Default)]
pub struct World {
    pub workloads: Vec<Workload>,
    pub services: Vec<Service>,
    pub policies: Vec<Authorization>,
}

impl World {
    pub fn snapshot(&self, version: u64) -> Snapshot {
        let mut m = BTreeMap::new();
        let mut put = |k: String, kind| {
            m.insert(k.clone(), Arc::new(make_resource(k, kind)));
        };
        put(
            "mesh".into(),
            resource::Kind::Mesh(MeshSettings {
                trust_domain: "cluster.local".into(),
                root_namespace: "istio-system".into(),
                ..Default::default()
            }),
        );
        for w in &self.workloads {
            put(
                Kind::Workload.key(&w.namespace, &w.name),
                resource::Kind::Workload(w.clone()),
            );
        }
        for s in &self.services {
            put(
                Kind::Service.key(&s.namespace, &s.hostname),
                resource::Kind::Service(s.clone()),
            );
        }
        for a in &self.policies {
            put(
                Kind::Authorization.key(&a.namespace, &a.name),
                resource::Kind::Authorization(a.clone()),
            );
        }
        Snapshot::new(version, m)
    }

    pub fn workload_mut(&mut self, name: &str) -> &mut Workload {
        self.workloads
            .iter_mut()
            .find(|w| w.name == name)
            .expect("workload")
    }
}

/// Echo server (the destination pod) on `addr`.
pub async fn echo_server(addr: SocketAddr) -> SocketAddr {
    let l = TcpListener::bind(addr).await.unwrap();
    let bound = l.local_addr().unwrap();
    tokio::spawn(async move {
        loop {
            let Ok((mut s, _)) = l.accept().await else {
                return;
            };
            tokio::spawn(async move {
                let (mut r, mut w) = s.split();
                let _ = tokio::io::copy(&mut r, &mut w).await;
                let _ = w.shutdown().await;
            });
        }
    });
    bound
}

pub struct Setup {
    pub net: u8,
    pub a_world: World,
    pub b_world: World,
    pub ca: Arc<TestCa>,
    /// CA signing node-a's certificates (another root to test refusal).
    pub a_ca: Option<Arc<TestCa>>,
    pub ttl: Duration,
    /// Data-path threads of both ztunnels (0: the test's runtime).
    pub threads: usize,
    /// A's HBONE streams per pooled connection (`--max-streams-per-conn`).
    pub max_streams_per_conn: usize,
}

pub struct Pair {
    pub a: Ztunnel,
    pub b: Ztunnel,
    pub a_cfg: watch::Sender<Arc<Snapshot>>,
    pub b_cfg: watch::Sender<Arc<Snapshot>>,
    pub echo: SocketAddr,
    pub net: u8,
    pub b_world: World,
}

/// client (prod/client, node-a, .2) and server (prod/server, node-b, .3, echo on .3).
pub async fn setup(net: u8) -> (Setup, SocketAddr) {
    let echo = echo_server(SocketAddr::new(ip(net, 3), 0)).await;
    let world = World {
        workloads: vec![
            workload("prod", "client", "node-a", ip(net, 2)),
            workload("prod", "server", "node-b", ip(net, 3)),
        ],
        ..Default::default()
    };
    (
        Setup {
            net,
            a_world: world.clone(),
            b_world: world,
            ca: Arc::new(TestCa::new("cluster.local")),
            a_ca: None,
            ttl: Duration::from_secs(3600),
            threads: 0,
            max_streams_per_conn: meshwork_hbone::DEFAULT_MAX_STREAMS_PER_CONN,
        },
        echo,
    )
}

async fn start(
    cfg: Config,
    world: &World,
    ca: Arc<TestCa>,
    ttl: Duration,
) -> (Ztunnel, watch::Sender<Arc<Snapshot>>) {
    let (tx, handle) = ConfigHandle::manual(world.snapshot(1));
    let zt = Ztunnel::start(
        cfg,
        Deps {
            config: handle,
            signer: Arc::new(TestSigner { ca, ttl }),
            log_control: None,
        },
    )
    .await
    .unwrap();
    zt.wait_ready(Duration::from_secs(10)).await.unwrap();
    (zt, tx)
}

impl Setup {
    /// A second client pod, prod/client2 on node-a at .6, known to both ztunnels.
    pub fn add_second_client(&mut self) {
        for w in [&mut self.a_world, &mut self.b_world] {
            w.workloads
                .push(workload("prod", "client2", "node-a", ip(self.net, 6)));
        }
    }

    pub async fn start(self, echo: SocketAddr) -> Pair {
        let mut a_cfg = Config::loopback("node-a", ip(self.net, 1));
        a_cfg.local_workload = Some("prod/client".into());
        a_cfg.hbone_port = HBONE_PORT;
        a_cfg.drain_timeout = Duration::from_secs(5);
        a_cfg.worker_threads = self.threads;
        a_cfg.max_streams_per_conn = self.max_streams_per_conn;
        let mut b_cfg = Config::loopback("node-b", ip(self.net, 4));
        b_cfg.hbone_addrs = vec![SocketAddr::new(ip(self.net, 3), HBONE_PORT)];
        b_cfg.hbone_port = HBONE_PORT;
        b_cfg.worker_threads = self.threads;
        let a_ca = self.a_ca.clone().unwrap_or(self.ca.clone());
        let (a, a_tx) = start(a_cfg, &self.a_world, a_ca, self.ttl).await;
        let (b, b_tx) = start(b_cfg, &self.b_world, self.ca.clone(), self.ttl).await;
        Pair {
            a,
            b,
            a_cfg: a_tx,
            b_cfg: b_tx,
            echo,
            net: self.net,
            b_world: self.b_world,
        }
    }
}

/// SOCKS5 CONNECT through `proxy`; `Err(reply code)` when refused.
pub async fn socks_connect(
    proxy: SocketAddr,
    dst: SocketAddr,
    user: Option<&str>,
) -> Result<TcpStream, u8> {
    let mut s = TcpStream::connect(proxy).await.unwrap();
    match user {
        Some(u) => {
            s.write_all(&[5, 1, 2]).await.unwrap();
            let mut m = [0u8; 2];
            s.read_exact(&mut m).await.unwrap();
            assert_eq!(m, [5, 2]);
            let mut auth = vec![1, u.len() as u8];
            auth.extend(u.as_bytes());
            auth.extend([1, b'x']);
            s.write_all(&auth).await.unwrap();
            s.read_exact(&mut m).await.unwrap();
        }
        None => {
            s.write_all(&[5, 1, 0]).await.unwrap();
            let mut m = [0u8; 2];
            s.read_exact(&mut m).await.unwrap();
            assert_eq!(m, [5, 0]);
        }
    }
    let mut req = vec![5, 1, 0];
    match dst {
        SocketAddr::V4(a) => {
            req.push(1);
            req.extend(a.ip().octets());
        }
        SocketAddr::V6(a) => {
            req.push(4);
            req.extend(a.ip().octets());
        }
    }
    req.extend(dst.port().to_be_bytes());
    s.write_all(&req).await.unwrap();
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.unwrap();
    if reply[1] == 0 {
        Ok(s)
    } else {
        Err(reply[1])
    }
}

/// Opens `n` SOCKS5 connections through A to the echo pod at once, each checked with one
/// round trip, and returns them open.
pub async fn open_checked(p: &Arc<Pair>, n: usize) -> Vec<TcpStream> {
    let mut tasks = Vec::new();
    for i in 0..n {
        let p = p.clone();
        tasks.push(tokio::spawn(async move {
            let mut c = socks_connect(p.a.addrs.socks5.unwrap(), p.echo, None)
                .await
                .unwrap();
            let msg = format!("conn {i}");
            assert_eq!(
                roundtrip(&mut c, msg.as_bytes()).await.unwrap(),
                msg.as_bytes()
            );
            c
        }));
    }
    let mut open = Vec::new();
    for t in tasks {
        open.push(t.await.unwrap());
    }
    open
}

pub async fn roundtrip(s: &mut TcpStream, msg: &[u8]) -> std::io::Result<Vec<u8>> {
    s.write_all(msg).await?;
    let mut got = vec![0; msg.len()];
    tokio::time::timeout(Duration::from_secs(10), s.read_exact(&mut got))
        .await
        .map_err(|_| std::io::Error::new(std::io::ErrorKind::TimedOut, "echo timed out"))??;
    Ok(got)
}

/// Minimal HTTP/1.1 GET; returns (status, body).
pub async fn http_get(addr: SocketAddr, path: &str) -> (u16, String) {
    let mut s = TcpStream::connect(addr).await.unwrap();
    s.write_all(format!("GET {path} HTTP/1.1\r\nHost: x\r\nConnection: close\r\n\r\n").as_bytes())
        .await
        .unwrap();
    let mut buf = Vec::new();
    s.read_to_end(&mut buf).await.unwrap();
    let text = String::from_utf8_lossy(&buf).into_owned();
    let status = text[9..12].parse().unwrap();
    let body = text
        .split_once("\r\n\r\n")
        .map(|(_, b)| b.to_string())
        .unwrap_or_default();
    (status, body)
}

/// Reads until EOF or error (bounded): true when the connection was closed.
pub async fn closed_within(s: &mut TcpStream, d: Duration) -> bool {
    let mut buf = [0u8; 64];
    matches!(
        tokio::time::timeout(d, async {
            loop {
                match s.read(&mut buf).await {
                    Ok(0) | Err(_) => return true,
                    Ok(_) => continue,
                }
            }
        })
        .await,
        Ok(true)
    )
}

/// Starts draining `zt` (30 s deadline) and returns once its HBONE listener refuses
/// connections: ten refusals in a row, since each data-path thread closes its own
/// listener (4 s at most).
pub async fn start_drain(zt: Ztunnel) -> tokio::task::JoinHandle<()> {
    let hbone = zt.addrs.hbone[0];
    let drain = tokio::spawn(async move { zt.shutdown(Duration::from_secs(30)).await });
    let mut refused_in_a_row = 0;
    for _ in 0..200 {
        if TcpStream::connect(hbone).await.is_err() {
            refused_in_a_row += 1;
            if refused_in_a_row == 10 {
                break;
            }
        } else {
            refused_in_a_row = 0;
            tokio::time::sleep(Duration::from_millis(20)).await;
        }
    }
    assert_eq!(refused_in_a_row, 10, "still accepting while draining");
    drain
}

/// Ends the connections still open through a draining ztunnel (each must see the far
/// side close within 10 s), then waits for the drain to finish (20 s at most).
pub async fn finish_drain(open: Vec<TcpStream>, drain: tokio::task::JoinHandle<()>) {
    for mut c in open {
        c.shutdown().await.unwrap();
        assert!(closed_within(&mut c, Duration::from_secs(10)).await);
    }
    tokio::time::timeout(Duration::from_secs(20), drain)
        .await
        .unwrap()
        .unwrap();
}

//! Shared helpers: a test CA, an echo HBONE server on loopback.
#![allow(dead_code)]

use std::net::SocketAddr;
use std::sync::Arc;
use std::time::Duration;

use http::StatusCode;
use meshwork_hbone::{ConnectHandler, ConnectRequest, H2Settings, Responder, Server};
use meshwork_identity::testing::TestCa;
use meshwork_identity::tls::{client_config, server_config, RotatingCert};
use meshwork_identity::{SpiffeId, WorkloadCertificate};
use tokio::net::TcpListener;
use tokio::sync::mpsc;
use tokio_util::sync::CancellationToken;

pub const TD: &str = "cluster.local";
/// Authority the echo handler refuses.
pub const REFUSED_AUTHORITY: &str = "127.0.0.1:1";

pub fn id(ns: &str, sa: &str) -> SpiffeId {
    SpiffeId::new(TD, ns, sa).unwrap()
}

pub fn cert(ca: &TestCa, who: &SpiffeId) -> WorkloadCertificate {
    ca.issue(who, Duration::from_secs(3600))
}

/// Echoes every accepted tunnel and reports (authority, peer identity).
#[derive(Clone)]
pub struct Echo {
    pub seen: mpsc::UnboundedSender<(String, SpiffeId)>,
}

impl ConnectHandler for Echo {
    async fn handle(&self, req: ConnectRequest, responder: Responder) {
        let _ = self
            .seen
            .send((req.authority.clone(), req.conn.peer_identity.clone()));
        if req.authority == REFUSED_AUTHORITY {
            responder.refuse(StatusCode::BAD_REQUEST);
            return;
        }
        let Ok(stream) = responder.accept() else {
            return;
        };
        let (mut r, mut w) = tokio::io::split(stream);
        let _ = tokio::io::copy(&mut r, &mut w).await;
        let _ = tokio::io::AsyncWriteExt::shutdown(&mut w).await;
    }
}

pub struct EchoServer {
    pub addr: SocketAddr,
    pub seen: mpsc::UnboundedReceiver<(String, SpiffeId)>,
    /// Errors of finished connections, as text.
    pub errors: mpsc::UnboundedReceiver<String>,
    pub drain: CancellationToken,
    /// Drains only the first accepted connection.
    pub drain_first: CancellationToken,
}

/// An HBONE echo server on 127.0.0.1 presenting `server_cert`.
pub async fn echo_server(server_cert: WorkloadCertificate) -> EchoServer {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let tls = server_config(server_cert.roots(), RotatingCert::new(server_cert.clone())).unwrap();
    let (tx, seen) = mpsc::unbounded_channel();
    let (etx, errors) = mpsc::unbounded_channel();
    let drain = CancellationToken::new();
    let drain_first = drain.child_token();
    let d = drain.clone();
    let first = drain_first.clone();
    tokio::spawn(async move {
        let server = Server::new(H2Settings::default());
        let mut accepted = 0;
        loop {
            let Ok((sock, peer)) = listener.accept().await else {
                return;
            };
            accepted += 1;
            let d = if accepted == 1 {
                first.clone()
            } else {
                d.child_token()
            };
            let (server, tls, tx, etx) = (server.clone(), tls.clone(), tx.clone(), etx.clone());
            tokio::spawn(async move {
                let r = server
                    .serve_tls(sock, tls, peer, addr, Echo { seen: tx }, d)
                    .await;
                if let Err(e) = r {
                    let _ = etx.send(e.to_string());
                }
            });
        }
    });
    EchoServer {
        addr,
        seen,
        errors,
        drain,
        drain_first,
    }
}

pub fn client_tls(own: &WorkloadCertificate, expect: &SpiffeId) -> Arc<rustls::ClientConfig> {
    client_config(own, own.roots(), [expect.clone()]).unwrap()
}

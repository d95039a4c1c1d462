//! Feeds arbitrary bytes, after the HTTP/2 client preface, to the HBONE server's HTTP/2
//! layer (the part reachable once mTLS succeeded). It must never panic or hang.
#![no_main]

use std::time::Duration;

use libfuzzer_sys::fuzz_target;
use meshwork_hbone::{ConnInfo, ConnectHandler, ConnectRequest, H2Settings, Responder, Server};
use meshwork_identity::SpiffeId;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio_util::sync::CancellationToken;

#[derive(Clone)]
struct Sink;

impl ConnectHandler for Sink {
    async fn handle(&self, _req: ConnectRequest, responder: Responder) {
        let _ = responder.accept();
    }
}

const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

fuzz_target!(|data: &[u8]| {
    let rt = tokio::runtime::Builder::new_current_thread()
        .enable_all()
        .build()
        .expect("runtime");
    rt.block_on(async {
        let (mut client, server_io) = tokio::io::duplex(64 * 1024);
        let server = Server::new(H2Settings {
            handshake_timeout: Duration::from_millis(200),
            ..Default::default()
        });
        let info = ConnInfo {
            peer_addr: "127.0.0.1:1000".parse().unwrap(),
            local_addr: "127.0.0.1:15008".parse().unwrap(),
            peer_identity: SpiffeId::new("cluster.local", "fuzz", "fuzz").unwrap(),
        };
        let task = tokio::spawn(async move {
            let _ = server.serve_h2(server_io, info, Sink, CancellationToken::new()).await;
        });
        let _ = client.write_all(PREFACE).await;
        let _ = client.write_all(data).await;
        let _ = client.shutdown().await;
        let mut buf = vec![0u8; 4096];
        let _ = tokio::time::timeout(Duration::from_secs(1), async {
            while let Ok(n) = client.read(&mut buf).await {
                if n == 0 {
                    break;
                }
            }
        })
        .await;
        drop(client);
        if let Ok(Err(e)) = tokio::time::timeout(Duration::from_secs(1), task).await {
            if e.is_panic() {
                std::panic::resume_unwind(e.into_panic());
            }
        }
    });
});

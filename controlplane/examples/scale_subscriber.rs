//! One process of ztunnel subscribers for `scale_fleet` (not meant to be run by hand).
//!
//! ```sh
//! scale_subscriber ENDPOINT FIRST COUNT MODE
//! ```
//!
//! Opens COUNT config streams over real gRPC, as the ztunnels of nodes `node-FIRST`…, one
//! HTTP/2 connection each. MODE `hold`: each stream is the real `meshwork_model::client`,
//! holding the indexed snapshot exactly as a ztunnel does (what a node pays in memory).
//! MODE `ack`: each stream decodes every update (and part) in full (prost, as the client
//! does) and ACKs it, but keeps only the count of resources — 1,000 full copies of a 100k-pod model do
//! not fit one machine, while 1,000 nodes each hold one.
//!
//! Reports on stdout, one line each: `applied <node-index> <version> <unix-nanos>` when an
//! update is applied (before its ACK is sent), `held <node-index> <resources>` after the
//! first one, and `retry <node-index>` when a stream broke and is opened again.

use meshwork_runtime::sync::LockExt;
use std::io::Write;
use std::sync::{Arc, Mutex};
use std::time::{SystemTime, UNIX_EPOCH};

use meshwork_model::client::{self, Subscription};
use meshwork_model::pb::config::{
    mesh_config_client::MeshConfigClient, proxy_message, Ack, ProxyKind, ProxyMessage, Subscribe,
};
use tokio::sync::mpsc;
use tokio_stream::wrappers::ReceiverStream;

type Out = Arc<Mutex<std::io::BufWriter<std::io::Stdout>>>;

/// How often a decode-and-ACK stream is opened again after it broke.
const MAX_ATTEMPTS: u64 = 10;

fn now_nanos() -> u128 {
    SystemTime::now()
        .duration_since(UNIX_EPOCH)
        .map(|d| d.as_nanos())
        .unwrap_or(0)
}

fn report(out: &Out, line: String) {
    let mut o = out.lock_or_recover();
    let _ = writeln!(o, "{line}");
    let _ = o.flush();
}

async fn hold(endpoint: String, i: usize, out: Out) {
    let h = client::spawn(
        endpoint,
        Subscription {
            kind: ProxyKind::Ztunnel,
            node: format!("node-{i}"),
            proxy_id: format!("fleet-{i}"),
            ..Default::default()
        },
        None,
    );
    let mut rx = h.watch();
    let mut first = true;
    while rx.changed().await.is_ok() {
        let (version, len) = {
            let s = rx.borrow_and_update();
            (s.version, s.len())
        };
        report(&out, format!("applied {i} {version} {}", now_nanos()));
        if first {
            report(&out, format!("held {i} {len}"));
            first = false;
        }
    }
}

async fn ack(
    endpoint: String,
    i: usize,
    out: Out,
) -> Result<(), Box<dyn std::error::Error + Send + Sync>> {
    let mut client = MeshConfigClient::connect(endpoint)
        .await?
        .max_decoding_message_size(1 << 30);
    let (tx, rx) = mpsc::channel(4);
    tx.send(ProxyMessage {
        msg: Some(proxy_message::Msg::Subscribe(Subscribe {
            kind: ProxyKind::Ztunnel as i32,
            node: format!("node-{i}"),
            proxy_id: format!("fleet-{i}"),
            accepts_parts: true,
            ..Default::default()
        })),
    })
    .await?;
    let mut inbound = client.stream(ReceiverStream::new(rx)).await?.into_inner();
    let mut held: i64 = 0;
    let mut first = true;
    while let Some(u) = inbound.message().await? {
        held += u.resources.len() as i64 - u.removed.len() as i64;
        if u.more {
            // A part: the update is applied and ACKed with its last part.
            continue;
        }
        report(&out, format!("applied {i} {} {}", u.version, now_nanos()));
        if first {
            report(&out, format!("held {i} {held}"));
            first = false;
        }
        drop(u.resources);
        tx.send(ProxyMessage {
            msg: Some(proxy_message::Msg::Ack(Ack {
                nonce: u.nonce,
                error: String::new(),
            })),
        })
        .await?;
    }
    Ok(())
}

#[tokio::main(flavor = "multi_thread", worker_threads = 2)]
async fn main() {
    let args: Vec<String> = std::env::args().collect();
    let [_, endpoint, first, count, mode] = args.as_slice() else {
        eprintln!("usage: scale_subscriber ENDPOINT FIRST COUNT hold|ack");
        std::process::exit(2);
    };
    let (first, count): (usize, usize) =
        (first.parse().expect("FIRST"), count.parse().expect("COUNT"));
    let out: Out = Arc::new(Mutex::new(std::io::BufWriter::new(std::io::stdout())));
    let mut tasks = Vec::new();
    for i in first..first + count {
        let (endpoint, out) = (endpoint.clone(), out.clone());
        tasks.push(match mode.as_str() {
            "hold" => tokio::spawn(hold(endpoint, i, out)),
            _ => tokio::spawn(async move {
                // Like a ztunnel, a broken stream is opened again (bounded here).
                for attempt in 1..=MAX_ATTEMPTS {
                    match ack(endpoint.clone(), i, out.clone()).await {
                        Ok(()) => break,
                        Err(e) => {
                            eprintln!("subscriber {i} (attempt {attempt}): {e}");
                            report(&out, format!("retry {i}"));
                            tokio::time::sleep(std::time::Duration::from_millis(250 * attempt))
                                .await;
                        }
                    }
                }
            }),
        });
    }
    // Runs until the driver kills the process.
    for t in tasks {
        let _ = t.await;
    }
}

//! HTTP/2 floods against the waypoint's HTTP/2 server (the protocol spoken inside an HBONE
//! tunnel, here over plain loopback TCP with prior knowledge): rapid reset
//! (CVE-2023-44487), CONTINUATION flood, SETTINGS and PING floods. Each must end or stall
//! the attacker's connection, forward (almost) nothing upstream, and leave the waypoint
//! serving other clients.

mod common;
#[path = "../../hbone/tests/support/h2raw.rs"]
mod h2raw;

use std::sync::atomic::Ordering;
use std::time::Duration;

use common::*;
use h2raw::*;
use tokio::io::AsyncWriteExt;
use tokio::net::tcp::OwnedWriteHalf;
use tokio::net::TcpStream;

async fn target() -> (Proxy, Backend) {
    let v1 = named("v1").await;
    let mut m = Mesh::default();
    m.service("order-service", "240.240.0.10").workload(
        "order-v1",
        "order-service",
        "v1",
        "order-service",
        v1.addr.port(),
    );
    (proxy(m.snapshot(), Some(ORDER_SA)).await, v1)
}

async fn assert_still_serving(p: &Proxy) {
    let (status, body, _) = tokio::time::timeout(
        Duration::from_secs(10),
        send(&client(), p.addr, "GET", "order-service", "/", &[]),
    )
    .await
    .expect("the waypoint answers another client in time");
    assert_eq!((status, body.as_str()), (200, "v1"));
}

fn get_headers(stream: u32, flags: u8) -> Vec<u8> {
    let block = hpack(&[
        (":method", "GET"),
        (":scheme", "http"),
        (":authority", "order-service"),
        (":path", "/"),
    ]);
    frame(HEADERS, flags, stream, &block)
}

/// CVE-2023-44487: thousands of requests each cancelled at once. The waypoint must answer
/// GOAWAY ENHANCE_YOUR_CALM, and only a small fraction may have been sent upstream.
#[tokio::test]
async fn attack_rapid_reset_gets_goaway_and_spares_the_backend() {
    let (p, backend) = target().await;
    let s = TcpStream::connect(p.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    const STREAMS: u32 = 5000;
    let mut burst = client_start();
    for i in 0..STREAMS {
        let stream = 1 + 2 * i;
        burst.extend(get_headers(stream, END_HEADERS | END_STREAM));
        burst.extend(rst_stream(stream, CANCEL));
    }
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&burst).await;
        wr
    });
    let (end, _) = read_until_end(&mut rd, Duration::from_secs(20)).await;
    assert!(
        matches!(end, End::GoAway(ENHANCE_YOUR_CALM, _)),
        "rapid reset must be answered with GOAWAY ENHANCE_YOUR_CALM, got {end:?}"
    );
    drop(writer.await);
    let hits = backend.hits.load(Ordering::SeqCst);
    assert!(
        hits < STREAMS as usize / 10,
        "{hits} of {STREAMS} cancelled requests were sent upstream"
    );
    assert_still_serving(&p).await;
}

/// Endless CONTINUATION frames after a HEADERS frame without END_HEADERS: GOAWAY after a
/// bounded number of frames (the header-list limit is 60 KiB, so within a few frames).
#[tokio::test]
async fn attack_continuation_flood_gets_goaway() {
    let (p, backend) = target().await;
    let s = TcpStream::connect(p.addr).await.unwrap();
    let (mut rd, mut wr) = s.into_split();
    let mut start = client_start();
    start.extend(get_headers(1, 0));
    let fragment = frame(CONTINUATION, 0, 1, &[b'a'; 64]);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&start).await;
        let chunk: Vec<u8> = (0..1000).flat_map(|_| fragment.clone()).collect();
        for _ in 0..100 {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let (end, _) = read_until_end(&mut rd, Duration::from_secs(20)).await;
    writer.abort();
    match &end {
        End::GoAway(code, _) => assert!(
            *code == ENHANCE_YOUR_CALM || *code == PROTOCOL_ERROR,
            "unexpected GOAWAY code {code:#x} ({end:?})"
        ),
        other => panic!("CONTINUATION flood must be answered with GOAWAY, got {other:?}"),
    }
    assert_eq!(backend.hits.load(Ordering::SeqCst), 0);
    assert_still_serving(&p).await;
}

/// Writes `unit` repeatedly, never reading, until the waypoint stops reading (3 s without
/// progress) or `max_bytes` are written; returns the bytes written.
async fn flood_until_stalled(wr: &mut OwnedWriteHalf, unit: &[u8], max_bytes: usize) -> usize {
    let mut chunk = Vec::with_capacity(64 * 1024);
    while chunk.len() + unit.len() <= 64 * 1024 {
        chunk.extend_from_slice(unit);
    }
    let mut written = 0;
    while written < max_bytes {
        match tokio::time::timeout(Duration::from_secs(3), wr.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            Ok(Err(_)) | Err(_) => return written,
        }
    }
    written
}

/// 64 MiB of frames that each need an answer, from a client that never reads: the
/// waypoint must stop reading once its answers back up rather than queue them.
async fn answer_flood_is_backpressured(unit: Vec<u8>) {
    let (p, _backend) = target().await;
    let s = TcpStream::connect(p.addr).await.unwrap();
    let (rd, mut wr) = s.into_split();
    wr.write_all(&client_start()).await.unwrap();
    const MAX: usize = 64 * 1024 * 1024;
    let written = flood_until_stalled(&mut wr, &unit, MAX).await;
    assert!(
        written < MAX,
        "the waypoint kept reading {written} bytes while nobody read its answers"
    );
    drop((rd, wr));
    assert_still_serving(&p).await;
}

#[tokio::test]
async fn attack_settings_flood_is_backpressured() {
    let setting = [0x00, 0x04, 0x00, 0x00, 0xff, 0xff];
    answer_flood_is_backpressured(frame(SETTINGS, 0, 0, &setting)).await;
}

#[tokio::test]
async fn attack_ping_flood_is_backpressured() {
    answer_flood_is_backpressured(frame(PING, 0, 0, b"pingpong")).await;
}

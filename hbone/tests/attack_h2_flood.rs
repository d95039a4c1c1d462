//! HTTP/2 floods against the HBONE server, sent by a peer holding a valid mesh certificate
//! (what any compromised workload has): rapid reset (CVE-2023-44487), CONTINUATION flood
//! (CVE-2024-27316 class), SETTINGS and PING floods. Each is written frame by frame over
//! real mTLS on loopback; each must end or stall the attacker's connection and leave the
//! server serving the next client.

mod common;
#[path = "support/h2raw.rs"]
mod h2raw;
#[path = "support/tls.rs"]
mod tls;

use std::time::Duration;

use bytes::Bytes;
use common::*;
use h2raw::*;
use http::{Method, Request, StatusCode};
use meshwork_identity::testing::TestCa;
use tokio::io::{AsyncWriteExt, ReadHalf, WriteHalf};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

type Tls = TlsStream<TcpStream>;

struct Target {
    ca: TestCa,
    server: EchoServer,
    server_id: meshwork_identity::SpiffeId,
}

async fn target() -> Target {
    let ca = TestCa::new(TD);
    let server_id = id("b", "server");
    let server = echo_server(cert(&ca, &server_id)).await;
    Target {
        ca,
        server,
        server_id,
    }
}

/// A TLS connection with a legitimately issued client certificate.
async fn attacker(t: &Target) -> (ReadHalf<Tls>, WriteHalf<Tls>) {
    let config = client_tls(&cert(&t.ca, &id("a", "attacker")), &t.server_id);
    let tls = tls::tls_connect(t.server.addr, config).await;
    tokio::io::split(tls)
}

/// A well-behaved client on a new connection still gets its tunnel echoed.
async fn assert_still_serving(t: &Target) {
    let config = client_tls(&cert(&t.ca, &id("a", "client")), &t.server_id);
    let tls = tls::tls_connect(t.server.addr, config).await;
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    let req = Request::builder()
        .method(Method::CONNECT)
        .uri("10.0.0.5:8080")
        .body(())
        .unwrap();
    let mut send = send.ready().await.unwrap();
    let (resp, mut body_tx) = send.send_request(req, false).unwrap();
    let resp = tokio::time::timeout(Duration::from_secs(10), resp)
        .await
        .expect("the server answers another client in time")
        .unwrap();
    assert_eq!(resp.status(), StatusCode::OK);
    body_tx
        .send_data(Bytes::from_static(b"still here"), true)
        .unwrap();
    let data = resp.into_body().data().await.unwrap().unwrap();
    assert_eq!(&data[..], b"still here");
}

fn connect_headers(stream: u32, end_headers: bool) -> Vec<u8> {
    let block = hpack(&[(":method", "CONNECT"), (":authority", "10.0.0.5:8080")]);
    let flags = if end_headers { END_HEADERS } else { 0 };
    frame(HEADERS, flags, stream, &block)
}

/// CVE-2023-44487: HEADERS immediately followed by RST_STREAM, thousands of times, in one
/// burst. The server must answer with GOAWAY ENHANCE_YOUR_CALM well before it has handed
/// every stream to the handler.
#[tokio::test]
async fn attack_rapid_reset_gets_goaway_enhance_your_calm() {
    let mut t = target().await;
    let (mut rd, mut wr) = attacker(&t).await;
    const STREAMS: u32 = 5000;
    let mut burst = client_start();
    for i in 0..STREAMS {
        let stream = 1 + 2 * i;
        burst.extend(connect_headers(stream, true));
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
    // The handler saw only a fraction of the streams the attacker opened.
    let mut handled = 0;
    while t.server.seen.try_recv().is_ok() {
        handled += 1;
    }
    assert!(
        handled < STREAMS as usize / 10,
        "{handled} of {STREAMS} reset streams reached the handler"
    );
    assert_still_serving(&t).await;
}

/// A HEADERS frame without END_HEADERS and then CONTINUATION frames forever: the server
/// must not buffer without end, but close the connection with ENHANCE_YOUR_CALM after a
/// bounded number of frames.
#[tokio::test]
async fn attack_continuation_flood_gets_goaway_enhance_your_calm() {
    let t = target().await;
    let (mut rd, mut wr) = attacker(&t).await;
    const FRAMES: usize = 100_000;
    let mut flood = client_start();
    flood.extend(connect_headers(1, false));
    // Each fragment adds one more (never finished) literal header field's bytes.
    let fragment = frame(CONTINUATION, 0, 1, &[b'a'; 64]);
    let writer = tokio::spawn(async move {
        let _ = wr.write_all(&flood).await;
        let mut chunk = Vec::new();
        for _ in 0..1000 {
            chunk.extend_from_slice(&fragment);
        }
        for _ in 0..FRAMES / 1000 {
            if wr.write_all(&chunk).await.is_err() {
                return;
            }
        }
    });
    let (end, _) = read_until_end(&mut rd, Duration::from_secs(20)).await;
    writer.abort();
    match &end {
        // Either the flood guard (too many CONTINUATION frames) or the header-list limit
        // fires first; both end the connection before the flood is through.
        End::GoAway(code, _) => assert!(
            *code == ENHANCE_YOUR_CALM || *code == PROTOCOL_ERROR,
            "unexpected GOAWAY code {code:#x} ({end:?})"
        ),
        other => panic!("CONTINUATION flood must be answered with GOAWAY, got {other:?}"),
    }
    assert_still_serving(&t).await;
}

/// Writes `unit` repeatedly (never reading what the server answers) until the server
/// stops reading or `max_bytes` are written; returns the bytes written.
async fn flood_until_stalled(wr: &mut WriteHalf<Tls>, unit: &[u8], max_bytes: usize) -> usize {
    let mut chunk = Vec::with_capacity(64 * 1024);
    while chunk.len() + unit.len() <= 64 * 1024 {
        chunk.extend_from_slice(unit);
    }
    let mut written = 0;
    while written < max_bytes {
        match tokio::time::timeout(Duration::from_secs(3), wr.write_all(&chunk)).await {
            Ok(Ok(())) => written += chunk.len(),
            // Stalled (the server stopped reading) or closed: either way it stopped.
            Ok(Err(_)) | Err(_) => return written,
        }
    }
    written
}

/// 64 MiB of frames the server must acknowledge (SETTINGS) or answer (PING), sent by a
/// client that never reads: the server must stop reading once its answers back up (so
/// its memory stays bounded) instead of queueing answers without end.
async fn answer_flood_is_backpressured(unit: Vec<u8>) {
    let t = target().await;
    let (rd, mut wr) = attacker(&t).await;
    wr.write_all(&client_start()).await.unwrap();
    const MAX: usize = 64 * 1024 * 1024;
    let written = flood_until_stalled(&mut wr, &unit, MAX).await;
    assert!(
        written < MAX,
        "the server kept reading {written} bytes of frames while nobody read its answers"
    );
    drop((rd, wr));
    assert_still_serving(&t).await;
}

#[tokio::test]
async fn attack_settings_flood_is_backpressured() {
    // SETTINGS_INITIAL_WINDOW_SIZE = 65535: valid, and must be acknowledged every time.
    let setting = [0x00, 0x04, 0x00, 0x00, 0xff, 0xff];
    answer_flood_is_backpressured(frame(SETTINGS, 0, 0, &setting)).await;
}

#[tokio::test]
async fn attack_ping_flood_is_backpressured() {
    answer_flood_is_backpressured(frame(PING, 0, 0, b"pingpong")).await;
}

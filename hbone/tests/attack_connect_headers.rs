//! Attack: oversized header blocks and malformed CONNECT targets on the HBONE port.
//!
//! The HBONE server (the ztunnel's and the waypoint's) limits a request's header list to
//! Envoy's default 60 KiB and accepts only `CONNECT ip:port`; anything else is refused
//! before it reaches the handler.

mod common;
#[path = "support/tls.rs"]
mod tls;

use std::sync::Arc;
use std::time::Duration;

use common::*;
use http::{HeaderMap, Method, Request, StatusCode};
use meshwork_hbone::{Pool, PoolKey, PoolSettings};
use meshwork_identity::testing::TestCa;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;
use tokio_rustls::client::TlsStream;

async fn tls_to(srv: &EchoServer, config: Arc<rustls::ClientConfig>) -> TlsStream<TcpStream> {
    tls::tls_connect(srv.addr, config).await
}

/// An echo server, and an HTTP/2 client to it over mTLS (its connection driven by a task).
async fn h2_to_echo_server() -> (EchoServer, h2::client::SendRequest<bytes::Bytes>) {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let srv = echo_server(cert(&ca, &server)).await;
    let tls = tls_to(&srv, client_tls(&cert(&ca, &client), &server)).await;
    let (send, conn) = h2::client::handshake(tls).await.unwrap();
    tokio::spawn(conn);
    (srv, send)
}

/// HPACK integer with an `n`-bit prefix whose high bits are `flags` (RFC 7541 §5.1).
fn hpack_int(out: &mut Vec<u8>, flags: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(flags | v as u8);
        return;
    }
    out.push(flags | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128 + 128) as u8);
        v /= 128;
    }
    out.push(v as u8);
}

/// Literal header field without indexing, name given by static-table index.
fn hpack_indexed_name(out: &mut Vec<u8>, index: usize, value: &[u8]) {
    hpack_int(out, 0x00, 4, index);
    hpack_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

/// Literal header field without indexing, new name.
fn hpack_literal(out: &mut Vec<u8>, name: &[u8], value: &[u8]) {
    out.push(0x00);
    hpack_int(out, 0x00, 7, name.len());
    out.extend_from_slice(name);
    hpack_int(out, 0x00, 7, value.len());
    out.extend_from_slice(value);
}

fn frame(out: &mut Vec<u8>, ty: u8, flags: u8, stream: u32, payload: &[u8]) {
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&stream.to_be_bytes());
    out.extend_from_slice(payload);
}

const HEADERS: u8 = 0x1;
const RST_STREAM: u8 = 0x3;
const SETTINGS: u8 = 0x4;
const GOAWAY: u8 = 0x7;
const CONTINUATION: u8 = 0x9;
const END_STREAM: u8 = 0x1;
const END_HEADERS: u8 = 0x4;
const ACK: u8 = 0x1;

/// A CONNECT on stream 1 carrying `extra` bytes in one header, split into HEADERS +
/// CONTINUATION frames of the default 16 KiB maximum frame size.
fn connect_with_big_header(extra: usize) -> Vec<u8> {
    let mut block = Vec::new();
    hpack_indexed_name(&mut block, 2, b"CONNECT"); // :method
    hpack_indexed_name(&mut block, 1, b"10.0.0.5:8080"); // :authority
    hpack_literal(&mut block, b"x-filler", &vec![b'a'; extra]);
    let mut out = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n".to_vec();
    frame(&mut out, SETTINGS, 0, 0, &[]);
    let chunks: Vec<&[u8]> = block.chunks(16 * 1024).collect();
    for (i, c) in chunks.iter().enumerate() {
        let ty = if i == 0 { HEADERS } else { CONTINUATION };
        let flags = if i + 1 == chunks.len() {
            END_HEADERS
        } else {
            0
        };
        frame(&mut out, ty, flags, 1, c);
    }
    out
}

/// What the server answered on stream 1.
#[derive(Debug, PartialEq, Eq)]
enum Answer {
    /// Response HEADERS that keep the stream open: a tunnel (200).
    Tunnel,
    /// Response HEADERS ending the stream (a refusal such as 431).
    Refused,
    Reset,
    GoAway,
    Closed,
}

async fn answer_on_stream_1(tls: &mut TlsStream<TcpStream>) -> Answer {
    let mut buf = Vec::new();
    let read = async {
        loop {
            // Parse complete frames so far.
            let mut pos = 0;
            while buf.len() >= pos + 9 {
                let len = u32::from_be_bytes([0, buf[pos], buf[pos + 1], buf[pos + 2]]) as usize;
                if buf.len() < pos + 9 + len {
                    break;
                }
                let (ty, flags) = (buf[pos + 3], buf[pos + 4]);
                let stream =
                    u32::from_be_bytes(buf[pos + 5..pos + 9].try_into().unwrap()) & 0x7fff_ffff;
                pos += 9 + len;
                match (ty, stream) {
                    (GOAWAY, _) => return Answer::GoAway,
                    (RST_STREAM, 1) => return Answer::Reset,
                    (HEADERS, 1) if flags & END_STREAM != 0 => return Answer::Refused,
                    (HEADERS, 1) => return Answer::Tunnel,
                    (SETTINGS, 0) if flags & ACK == 0 => {
                        let mut ack = Vec::new();
                        frame(&mut ack, SETTINGS, ACK, 0, &[]);
                        let _ = tls.write_all(&ack).await;
                    }
                    _ => {}
                }
            }
            let mut chunk = [0u8; 4096];
            match tls.read(&mut chunk).await {
                Ok(0) | Err(_) => return Answer::Closed,
                Ok(n) => buf.extend_from_slice(&chunk[..n]),
            }
        }
    };
    tokio::time::timeout(Duration::from_secs(10), read)
        .await
        .expect("the server answered nothing")
}

#[tokio::test]
async fn attack_a_200_kb_header_block_is_refused_and_normal_connect_still_works() {
    let ca = TestCa::new(TD);
    let (client, server) = (id("a", "client"), id("b", "server"));
    let client_cert = cert(&ca, &client);
    let mut srv = echo_server(cert(&ca, &server)).await;

    // Control: the same hand-built CONNECT with a small header is a tunnel.
    let mut tls = tls_to(&srv, client_tls(&client_cert, &server)).await;
    tls.write_all(&connect_with_big_header(100)).await.unwrap();
    assert_eq!(answer_on_stream_1(&mut tls).await, Answer::Tunnel);
    assert_eq!(srv.seen.recv().await.unwrap().0, "10.0.0.5:8080");

    let mut tls = tls_to(&srv, client_tls(&client_cert, &server)).await;
    tls.write_all(&connect_with_big_header(200 * 1000))
        .await
        .unwrap();
    let answer = answer_on_stream_1(&mut tls).await;
    assert_ne!(answer, Answer::Tunnel, "a 200 kB header block was accepted");
    assert!(
        srv.seen.try_recv().is_err(),
        "the handler saw the oversized request"
    );

    // A normal CONNECT through the pool still works.
    let pool = Pool::new(PoolSettings::default());
    let key = PoolKey {
        src_identity: client.to_string(),
        dst: srv.addr,
        dst_identity: server.to_string(),
        from: Default::default(),
    };
    let mut s = pool
        .connect(
            &key,
            || client_tls(&client_cert, &server),
            "10.0.0.5:8080",
            HeaderMap::new(),
        )
        .await
        .unwrap();
    s.write_all(b"still here").await.unwrap();
    let mut got = [0u8; 10];
    s.read_exact(&mut got).await.unwrap();
    assert_eq!(&got, b"still here");
}

#[tokio::test]
async fn attack_connect_targets_other_than_ip_and_port_are_refused() {
    let (mut srv, mut send) = h2_to_echo_server().await;
    for authority in [
        "payments.internal:443",
        "user@10.0.0.5:8080",
        "10.0.0.5:0",
        "10.0.0.5",
    ] {
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri(authority)
            .body(())
            .unwrap();
        send = send.ready().await.unwrap();
        let (resp, _) = send.send_request(req, false).unwrap();
        let status = resp.await.unwrap().status();
        assert_eq!(status, StatusCode::BAD_REQUEST, "{authority}");
    }
    assert!(
        srv.seen.try_recv().is_err(),
        "the handler saw a malformed CONNECT"
    );
}

/// Address spellings a resolver or `inet_aton` would read as some other address (octal or
/// hex parts, one integer, a zone index, no port) are refused; a plain IPv6 target with
/// brackets still reaches the handler, exactly as sent.
#[tokio::test]
async fn attack_ambiguous_address_spellings_are_refused_and_ipv6_still_works() {
    let (mut srv, mut send) = h2_to_echo_server().await;
    let mut connect = async |authority: &str| {
        // Spellings the `http` crate cannot hold never get past h2's own decoding either.
        let Ok(uri) = http::Uri::try_from(authority) else {
            return StatusCode::BAD_REQUEST;
        };
        let req = Request::builder()
            .method(Method::CONNECT)
            .uri(uri)
            .body(())
            .unwrap();
        send = send.clone().ready().await.unwrap();
        let (resp, _) = send.send_request(req, false).unwrap();
        resp.await.unwrap().status()
    };
    for authority in [
        "010.0.0.5:80",
        "0x0a.0.0.5:80",
        "167772165:80",
        "10.5:80",
        "[fe80::1%eth0]:80",
        "[::1]",
        "::1:80",
        "[::1]:99999",
    ] {
        assert_eq!(
            connect(authority).await,
            StatusCode::BAD_REQUEST,
            "{authority}"
        );
    }
    let seen = srv.seen.try_recv();
    assert!(seen.is_err(), "the handler saw {seen:?}");
    assert_eq!(connect("[::1]:8080").await, StatusCode::OK);
    let (seen, _) = srv.seen.recv().await.unwrap();
    assert_eq!(seen, "[::1]:8080");
}

//! A tiny HTTP/2 frame writer and reader for attack tests: the `h2` client refuses to
//! misbehave, so floods and malformed sequences are written frame by frame here.
//! HPACK is written as literals without indexing or Huffman coding (RFC 7541 §6.2.2), which
//! every decoder must accept.
#![allow(dead_code)]

use std::time::Duration;

use tokio::io::{AsyncRead, AsyncReadExt};

pub const PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

pub const DATA: u8 = 0x0;
pub const HEADERS: u8 = 0x1;
pub const RST_STREAM: u8 = 0x3;
pub const SETTINGS: u8 = 0x4;
pub const PING: u8 = 0x6;
pub const GOAWAY: u8 = 0x7;
pub const CONTINUATION: u8 = 0x9;

pub const END_STREAM: u8 = 0x1;
pub const ACK: u8 = 0x1;
pub const END_HEADERS: u8 = 0x4;

pub const CANCEL: u32 = 0x8;
pub const PROTOCOL_ERROR: u32 = 0x1;
pub const ENHANCE_YOUR_CALM: u32 = 0xb;

/// One frame: 9-byte header, then the payload.
pub fn frame(ty: u8, flags: u8, stream: u32, payload: &[u8]) -> Vec<u8> {
    let mut out = Vec::with_capacity(9 + payload.len());
    out.extend_from_slice(&(payload.len() as u32).to_be_bytes()[1..]);
    out.push(ty);
    out.push(flags);
    out.extend_from_slice(&(stream & 0x7fff_ffff).to_be_bytes());
    out.extend_from_slice(payload);
    out
}

/// HPACK integer with an `n`-bit prefix (RFC 7541 §5.1); `first` holds the high bits.
fn hpack_int(out: &mut Vec<u8>, first: u8, n: u32, mut v: usize) {
    let max = (1usize << n) - 1;
    if v < max {
        out.push(first | v as u8);
        return;
    }
    out.push(first | max as u8);
    v -= max;
    while v >= 128 {
        out.push((v % 128) as u8 | 0x80);
        v /= 128;
    }
    out.push(v as u8);
}

/// A header block of literal fields without indexing, new names, no Huffman coding.
pub fn hpack(headers: &[(&str, &str)]) -> Vec<u8> {
    let mut out = Vec::new();
    for (name, value) in headers {
        out.push(0x00);
        hpack_int(&mut out, 0, 7, name.len());
        out.extend_from_slice(name.as_bytes());
        hpack_int(&mut out, 0, 7, value.len());
        out.extend_from_slice(value.as_bytes());
    }
    out
}

/// The client connection start: preface and an empty SETTINGS frame.
pub fn client_start() -> Vec<u8> {
    let mut out = PREFACE.to_vec();
    out.extend(frame(SETTINGS, 0, 0, &[]));
    out
}

pub fn rst_stream(stream: u32, code: u32) -> Vec<u8> {
    frame(RST_STREAM, 0, stream, &code.to_be_bytes())
}

/// One read frame.
#[derive(Debug, Clone)]
pub struct Frame {
    pub ty: u8,
    pub flags: u8,
    pub stream: u32,
    pub payload: Vec<u8>,
}

/// Reads one frame; `None` at end of stream or on an error.
pub async fn read_frame<R: AsyncRead + Unpin>(r: &mut R) -> Option<Frame> {
    let mut head = [0u8; 9];
    r.read_exact(&mut head).await.ok()?;
    let len = u32::from_be_bytes([0, head[0], head[1], head[2]]) as usize;
    let mut payload = vec![0u8; len];
    r.read_exact(&mut payload).await.ok()?;
    Some(Frame {
        ty: head[3],
        flags: head[4],
        stream: u32::from_be_bytes([head[5], head[6], head[7], head[8]]) & 0x7fff_ffff,
        payload,
    })
}

/// How a connection under attack ended, as seen by the attacker.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum End {
    /// GOAWAY with this error code and debug data.
    GoAway(u32, String),
    /// Closed without a GOAWAY.
    Closed,
    /// Still open when the bound ran out.
    Open,
}

/// Reads (and discards) frames until a GOAWAY, the end of the connection, or `bound`.
/// Also returns every frame type seen, with counts.
pub async fn read_until_end<R: AsyncRead + Unpin>(
    r: &mut R,
    bound: Duration,
) -> (End, std::collections::BTreeMap<u8, usize>) {
    let mut seen = std::collections::BTreeMap::new();
    let deadline = tokio::time::Instant::now() + bound;
    loop {
        match tokio::time::timeout_at(deadline, read_frame(r)).await {
            Err(_) => return (End::Open, seen),
            Ok(None) => return (End::Closed, seen),
            Ok(Some(f)) => {
                *seen.entry(f.ty).or_default() += 1;
                if f.ty == GOAWAY && f.payload.len() >= 8 {
                    let code = u32::from_be_bytes(f.payload[4..8].try_into().unwrap());
                    let debug = String::from_utf8_lossy(&f.payload[8..]).into_owned();
                    return (End::GoAway(code, debug), seen);
                }
            }
        }
    }
}

//! Protocol detection on a tunneled stream: HTTP/1.x and HTTP/2 (prior knowledge) are served
//! by the L7 path, anything else is passed through as TCP.

use std::io;
use std::pin::Pin;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::{Buf, Bytes};
use tokio::io::{AsyncRead, AsyncReadExt, AsyncWrite, ReadBuf};

/// What the first bytes of a stream look like.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Detected {
    Http,
    Tcp,
}

const METHODS: [&[u8]; 9] = [
    b"GET ",
    b"POST ",
    b"PUT ",
    b"DELETE ",
    b"HEAD ",
    b"OPTIONS ",
    b"PATCH ",
    b"CONNECT ",
    b"TRACE ",
];
const H2_PREFACE: &[u8] = b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n";

/// Classifies a prefix; `None` while more bytes are needed.
pub fn classify(prefix: &[u8]) -> Option<Detected> {
    let mut undecided = false;
    for cand in METHODS.iter().copied().chain([H2_PREFACE]) {
        let n = prefix.len().min(cand.len());
        if prefix[..n] == cand[..n] {
            if n == cand.len() {
                return Some(Detected::Http);
            }
            undecided = true;
        }
    }
    if undecided {
        None
    } else {
        Some(Detected::Tcp)
    }
}

/// A stream whose first bytes were read for detection and are replayed first.
pub struct Rewind<S> {
    prefix: Bytes,
    inner: S,
}

impl<S> Rewind<S> {
    pub fn new(prefix: Bytes, inner: S) -> Self {
        Rewind { prefix, inner }
    }
}

/// Reads until the protocol is known (bounded by `timeout` and 24 bytes); server-first
/// protocols that send nothing are treated as TCP.
pub async fn detect<S: AsyncRead + Unpin>(
    mut s: S,
    timeout: Duration,
) -> io::Result<(Detected, Rewind<S>)> {
    let mut buf = Vec::with_capacity(H2_PREFACE.len());
    let deadline = tokio::time::Instant::now() + timeout;
    let detected = loop {
        if let Some(d) = classify(&buf) {
            if !buf.is_empty() {
                break d;
            }
        }
        let mut chunk = [0u8; 24];
        let want = H2_PREFACE.len() - buf.len().min(H2_PREFACE.len());
        if want == 0 {
            break Detected::Tcp;
        }
        match tokio::time::timeout_at(deadline, s.read(&mut chunk[..want])).await {
            Err(_) => break Detected::Tcp,
            Ok(Ok(0)) => break Detected::Tcp,
            Ok(Ok(n)) => buf.extend_from_slice(&chunk[..n]),
            Ok(Err(e)) => return Err(e),
        }
    };
    Ok((detected, Rewind::new(Bytes::from(buf), s)))
}

impl<S: AsyncRead + Unpin> AsyncRead for Rewind<S> {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        if self.prefix.has_remaining() {
            let n = self.prefix.len().min(buf.remaining());
            buf.put_slice(&self.prefix[..n]);
            self.prefix.advance(n);
            return Poll::Ready(Ok(()));
        }
        Pin::new(&mut self.inner).poll_read(cx, buf)
    }
}

impl<S: AsyncWrite + Unpin> AsyncWrite for Rewind<S> {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        Pin::new(&mut self.inner).poll_write(cx, buf)
    }

    fn poll_flush(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_flush(cx)
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        Pin::new(&mut self.inner).poll_shutdown(cx)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::AsyncWriteExt;

    #[test]
    fn classification() {
        assert_eq!(classify(b"GET / HTTP/1.1"), Some(Detected::Http));
        assert_eq!(classify(b"GE"), None);
        assert_eq!(
            classify(b"PRI * HTTP/2.0\r\n\r\nSM\r\n\r\n"),
            Some(Detected::Http)
        );
        assert_eq!(classify(b"PRI * HT"), None);
        assert_eq!(classify(b"\x16\x03\x01"), Some(Detected::Tcp));
        assert_eq!(classify(b"GEX"), Some(Detected::Tcp));
        assert_eq!(classify(b""), None);
    }

    #[tokio::test]
    async fn detect_and_replay() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(b"POST /x HTTP/1.1\r\n").await.unwrap();
        let (d, mut r) = detect(b, Duration::from_secs(1)).await.unwrap();
        assert_eq!(d, Detected::Http);
        drop(a);
        let mut all = String::new();
        r.read_to_string(&mut all).await.unwrap();
        assert_eq!(all, "POST /x HTTP/1.1\r\n");
    }

    #[tokio::test(start_paused = true)]
    async fn silent_client_is_tcp() {
        let (_a, b) = tokio::io::duplex(64);
        let (d, _) = detect(b, Duration::from_millis(100)).await.unwrap();
        assert_eq!(d, Detected::Tcp);
    }

    #[tokio::test]
    async fn binary_is_tcp() {
        let (mut a, b) = tokio::io::duplex(64);
        a.write_all(&[0x16, 0x03, 0x01, 0x00]).await.unwrap();
        let (d, _) = detect(b, Duration::from_secs(1)).await.unwrap();
        assert_eq!(d, Detected::Tcp);
    }
}

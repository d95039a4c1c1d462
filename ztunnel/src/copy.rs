//! Bidirectional copy with per-direction buffers that start small and grow while reads
//! keep filling them: short-lived request/response connections stay cheap (no large
//! allocation per connection) and bulk streams still move big chunks per syscall.

use std::future::poll_fn;
use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

const INITIAL: usize = 16 * 1024;
const MAX: usize = 256 * 1024;

struct OneWay {
    buf: Vec<u8>,
    pos: usize,
    cap: usize,
    eof: bool,
    done: bool,
    total: u64,
}

impl OneWay {
    fn new() -> Self {
        OneWay {
            buf: vec![0; INITIAL],
            pos: 0,
            cap: 0,
            eof: false,
            done: false,
            total: 0,
        }
    }

    fn poll<R, W>(
        &mut self,
        cx: &mut Context<'_>,
        mut r: Pin<&mut R>,
        mut w: Pin<&mut W>,
    ) -> Poll<io::Result<()>>
    where
        R: AsyncRead + ?Sized,
        W: AsyncWrite + ?Sized,
    {
        loop {
            if self.pos == self.cap && !self.eof {
                let mut rb = ReadBuf::new(&mut self.buf);
                match r.as_mut().poll_read(cx, &mut rb) {
                    Poll::Pending => {
                        ready!(w.as_mut().poll_flush(cx))?;
                        return Poll::Pending;
                    }
                    Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Ready(Ok(())) => {
                        let n = rb.filled().len();
                        if n == 0 {
                            self.eof = true;
                        } else {
                            self.pos = 0;
                            self.cap = n;
                            if n == self.buf.len() && self.buf.len() < MAX {
                                let grown = (self.buf.len() * 2).min(MAX);
                                self.buf.resize(grown, 0);
                            }
                        }
                    }
                }
            }
            while self.pos < self.cap {
                let n = ready!(w.as_mut().poll_write(cx, &self.buf[self.pos..self.cap]))?;
                if n == 0 {
                    return Poll::Ready(Err(io::ErrorKind::WriteZero.into()));
                }
                self.pos += n;
                self.total += n as u64;
            }
            if self.eof {
                ready!(w.as_mut().poll_shutdown(cx))?;
                return Poll::Ready(Ok(()));
            }
        }
    }
}

/// Copies `a → b` and `b → a` until both directions reached EOF (each side's writer is
/// shut down when its reader ends). Returns bytes copied (a→b, b→a).
pub async fn bidirectional<A, B>(a: &mut A, b: &mut B) -> io::Result<(u64, u64)>
where
    A: AsyncRead + AsyncWrite + Unpin + ?Sized,
    B: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    let mut ab = OneWay::new();
    let mut ba = OneWay::new();
    poll_fn(|cx| {
        if !ab.done {
            if let Poll::Ready(r) = ab.poll(cx, Pin::new(&mut *a), Pin::new(&mut *b)) {
                r?;
                ab.done = true;
            }
        }
        if !ba.done {
            if let Poll::Ready(r) = ba.poll(cx, Pin::new(&mut *b), Pin::new(&mut *a)) {
                r?;
                ba.done = true;
            }
        }
        if ab.done && ba.done {
            Poll::Ready(Ok((ab.total, ba.total)))
        } else {
            Poll::Pending
        }
    })
    .await
}

/// Relays between a byte stream and an HBONE tunnel without copying payloads into or out
/// of HTTP/2: reads land in a buffer whose frozen chunks are sent as DATA frames, and
/// received DATA chunks are written out directly. `on_read`/`on_write` see the byte
/// counts read from / written to `io`. Returns when both directions ended.
pub async fn bidirectional_h2<T>(
    io: &mut T,
    h2: &mut meshwork_hbone::H2Stream,
    on_read: &(dyn Fn(u64) + Sync),
    on_write: &(dyn Fn(u64) + Sync),
) -> io::Result<()>
where
    T: AsyncRead + AsyncWrite + Unpin + ?Sized,
{
    use bytes::{Bytes, BytesMut};

    let mut inbuf = BytesMut::new();
    let mut want = INITIAL;
    let mut outgoing = Bytes::new();
    let mut up_done = false;
    let mut up_eof = false;
    let mut incoming = Bytes::new();
    let mut down_done = false;
    let mut down_eof = false;
    poll_fn(|cx| {
        // io → h2
        while !up_done {
            if !outgoing.is_empty() {
                match h2.poll_send_chunk(cx, &mut outgoing) {
                    Poll::Ready(r) => r?,
                    Poll::Pending => break,
                }
            }
            if up_eof {
                match Pin::new(&mut *h2).poll_shutdown(cx) {
                    Poll::Ready(r) => {
                        r?;
                        up_done = true;
                    }
                    Poll::Pending => break,
                }
                continue;
            }
            inbuf.reserve(want);
            match tokio_util::io::poll_read_buf(Pin::new(&mut *io), cx, &mut inbuf) {
                Poll::Pending => break,
                Poll::Ready(Err(e)) if e.kind() == io::ErrorKind::Interrupted => continue,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(0)) => up_eof = true,
                Poll::Ready(Ok(n)) => {
                    on_read(n as u64);
                    if n >= want && want < MAX {
                        want = (want * 2).min(MAX);
                    }
                    outgoing = inbuf.split().freeze();
                }
            }
        }
        // h2 → io
        while !down_done {
            if !incoming.is_empty() {
                match Pin::new(&mut *io).poll_write(cx, &incoming) {
                    Poll::Ready(Ok(0)) => return Poll::Ready(Err(io::ErrorKind::WriteZero.into())),
                    Poll::Ready(Ok(n)) => {
                        on_write(n as u64);
                        let _ = incoming.split_to(n);
                        continue;
                    }
                    Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                    Poll::Pending => break,
                }
            }
            if down_eof {
                match Pin::new(&mut *io).poll_shutdown(cx) {
                    Poll::Ready(r) => {
                        r?;
                        down_done = true;
                    }
                    Poll::Pending => break,
                }
                continue;
            }
            match h2.poll_recv_chunk(cx) {
                Poll::Pending => break,
                Poll::Ready(Err(e)) => return Poll::Ready(Err(e)),
                Poll::Ready(Ok(None)) => down_eof = true,
                Poll::Ready(Ok(Some(b))) => incoming = b,
            }
        }
        if up_done && down_done {
            Poll::Ready(Ok(()))
        } else {
            Poll::Pending
        }
    })
    .await
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn copies_both_ways_and_propagates_eof() {
        let (mut client, mut proxy_down) = tokio::io::duplex(64 * 1024);
        let (mut proxy_up, mut server) = tokio::io::duplex(64 * 1024);
        let relay =
            tokio::spawn(async move { bidirectional(&mut proxy_down, &mut proxy_up).await });
        let payload: Vec<u8> = (0..2_000_000u32).map(|i| (i % 253) as u8).collect();
        let p2 = payload.clone();
        let writer = tokio::spawn(async move {
            client.write_all(&p2).await.unwrap();
            client.shutdown().await.unwrap();
            let mut back = Vec::new();
            client.read_to_end(&mut back).await.unwrap();
            back
        });
        let mut got = Vec::new();
        server.read_to_end(&mut got).await.unwrap();
        assert_eq!(got, payload);
        server.write_all(b"reply").await.unwrap();
        server.shutdown().await.unwrap();
        assert_eq!(writer.await.unwrap(), b"reply");
        let (ab, ba) = relay.await.unwrap().unwrap();
        assert_eq!((ab, ba), (payload.len() as u64, 5));
    }
}

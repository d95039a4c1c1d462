//! An HBONE tunnel stream: one HTTP/2 CONNECT stream seen as a byte stream.
//!
//! Reading releases HTTP/2 flow-control capacity as soon as data is handed to the caller;
//! writing waits for send capacity and never buffers more than one chunk per call.
//! `shutdown` ends the stream (END_STREAM); dropping it without shutdown resets it.

use std::io;
use std::pin::Pin;
use std::task::{ready, Context, Poll};

use bytes::Bytes;
use h2::{RecvStream, SendStream};
use tokio::io::{AsyncRead, AsyncWrite, ReadBuf};

/// Largest chunk handed to h2 per write call.
const MAX_WRITE_CHUNK: usize = 256 * 1024;

/// Held by a stream for its whole life; dropping it tells the owner (pool or server)
/// that the stream is gone.
pub type StreamGuard = Box<dyn Send + Sync>;

/// A bidirectional byte stream over one HTTP/2 CONNECT stream.
pub struct H2Stream {
    send: SendStream<Bytes>,
    recv: RecvStream,
    pending: Bytes,
    send_closed: bool,
    _guard: Option<StreamGuard>,
}

impl std::fmt::Debug for H2Stream {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("H2Stream")
            .field("stream_id", &self.send.stream_id())
            .field("send_closed", &self.send_closed)
            .finish()
    }
}

impl H2Stream {
    pub(crate) fn new(
        send: SendStream<Bytes>,
        recv: RecvStream,
        guard: Option<StreamGuard>,
    ) -> Self {
        H2Stream {
            send,
            recv,
            pending: Bytes::new(),
            send_closed: false,
            _guard: guard,
        }
    }
}

impl H2Stream {
    /// The next received chunk as-is (no copy), its flow-control window released; `None`
    /// at the end of the stream.
    pub fn poll_recv_chunk(&mut self, cx: &mut Context<'_>) -> Poll<io::Result<Option<Bytes>>> {
        if !self.pending.is_empty() {
            return Poll::Ready(Ok(Some(std::mem::take(&mut self.pending))));
        }
        match ready!(self.recv.poll_data(cx)) {
            None => Poll::Ready(Ok(None)),
            Some(Err(e)) => Poll::Ready(Err(h2_to_io(e))),
            Some(Ok(data)) => {
                let _ = self.recv.flow_control().release_capacity(data.len());
                Poll::Ready(Ok(Some(data)))
            }
        }
    }

    /// Sends all of `data` without copying, as the peer's window allows; `data` is advanced
    /// past what was handed to HTTP/2, so a `Pending` call resumes where it stopped.
    pub fn poll_send_chunk(
        &mut self,
        cx: &mut Context<'_>,
        data: &mut Bytes,
    ) -> Poll<io::Result<()>> {
        if self.send_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "hbone stream already shut down",
            )));
        }
        while !data.is_empty() {
            if self.send.capacity() == 0 {
                self.send.reserve_capacity(data.len().min(MAX_WRITE_CHUNK));
                match ready!(self.send.poll_capacity(cx)) {
                    None => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "hbone stream closed by peer",
                        )))
                    }
                    Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                    Some(Ok(_)) => continue,
                }
            }
            let n = self.send.capacity().min(data.len());
            self.send
                .send_data(data.split_to(n), false)
                .map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}

fn h2_to_io(e: h2::Error) -> io::Error {
    if e.is_io() {
        return e
            .into_io()
            .unwrap_or_else(|| io::Error::other("h2 io error"));
    }
    match e.reason() {
        Some(h2::Reason::NO_ERROR) | Some(h2::Reason::CANCEL) => {
            io::Error::new(io::ErrorKind::ConnectionReset, e)
        }
        _ => io::Error::other(e),
    }
}

impl AsyncRead for H2Stream {
    fn poll_read(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &mut ReadBuf<'_>,
    ) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if this.pending.is_empty() {
            match ready!(this.recv.poll_data(cx)) {
                None => return Poll::Ready(Ok(())),
                Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                Some(Ok(data)) => {
                    // Give the window back right away: the caller is reading.
                    let _ = this.recv.flow_control().release_capacity(data.len());
                    this.pending = data;
                }
            }
        }
        let n = this.pending.len().min(buf.remaining());
        buf.put_slice(&this.pending.split_to(n));
        Poll::Ready(Ok(()))
    }
}

impl AsyncWrite for H2Stream {
    fn poll_write(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
        buf: &[u8],
    ) -> Poll<io::Result<usize>> {
        if buf.is_empty() {
            return Poll::Ready(Ok(0));
        }
        let this = &mut *self;
        if this.send_closed {
            return Poll::Ready(Err(io::Error::new(
                io::ErrorKind::BrokenPipe,
                "hbone stream already shut down",
            )));
        }
        let want = buf.len().min(MAX_WRITE_CHUNK);
        if this.send.capacity() == 0 {
            this.send.reserve_capacity(want);
            loop {
                match ready!(this.send.poll_capacity(cx)) {
                    None => {
                        return Poll::Ready(Err(io::Error::new(
                            io::ErrorKind::BrokenPipe,
                            "hbone stream closed by peer",
                        )))
                    }
                    Some(Err(e)) => return Poll::Ready(Err(h2_to_io(e))),
                    Some(Ok(0)) => continue,
                    Some(Ok(_)) => break,
                }
            }
        }
        let n = this.send.capacity().min(want);
        this.send
            .send_data(Bytes::copy_from_slice(&buf[..n]), false)
            .map_err(h2_to_io)?;
        Poll::Ready(Ok(n))
    }

    fn poll_flush(self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        // h2 writes buffered frames from the connection task.
        Poll::Ready(Ok(()))
    }

    fn poll_shutdown(mut self: Pin<&mut Self>, _cx: &mut Context<'_>) -> Poll<io::Result<()>> {
        let this = &mut *self;
        if !this.send_closed {
            this.send_closed = true;
            this.send.send_data(Bytes::new(), true).map_err(h2_to_io)?;
        }
        Poll::Ready(Ok(()))
    }
}

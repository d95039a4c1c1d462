//! Body wrappers: count bytes, release the upstream connection at end of stream, and run a
//! completion callback (metrics, access log) exactly once.

use std::pin::Pin;
use std::sync::atomic::{AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::pool::Lease;

type Done = Box<dyn FnOnce(u64, bool) + Send + Sync>;

/// Wraps a body; `on_done(bytes, complete)` runs at end of stream, on error or when dropped.
pub struct Tracked {
    inner: Body,
    bytes: u64,
    counter: Option<Arc<AtomicU64>>,
    lease: Option<Lease>,
    on_done: Option<Done>,
}

impl Tracked {
    pub fn new(inner: Body) -> Self {
        Tracked {
            inner,
            bytes: 0,
            counter: None,
            lease: None,
            on_done: None,
        }
    }

    /// Adds bytes to a shared counter as they pass.
    pub fn counting(mut self, counter: Arc<AtomicU64>) -> Self {
        self.counter = Some(counter);
        self
    }

    /// Holds the upstream connection until the body completes; it is reused on completion.
    pub fn with_lease(mut self, lease: Lease) -> Self {
        self.lease = Some(lease);
        self
    }

    pub fn on_done(mut self, f: impl FnOnce(u64, bool) + Send + Sync + 'static) -> Self {
        self.on_done = Some(Box::new(f));
        self
    }

    fn finish(&mut self, complete: bool) {
        if let Some(lease) = self.lease.take() {
            if complete {
                lease.release();
            }
        }
        if let Some(f) = self.on_done.take() {
            f(self.bytes, complete);
        }
    }
}

impl Drop for Tracked {
    fn drop(&mut self) {
        self.finish(false);
    }
}

impl HttpBody for Tracked {
    type Data = Bytes;
    type Error = BoxError;

    fn poll_frame(
        mut self: Pin<&mut Self>,
        cx: &mut Context<'_>,
    ) -> Poll<Option<Result<Frame<Bytes>, BoxError>>> {
        let this = &mut *self;
        match Pin::new(&mut this.inner).poll_frame(cx) {
            Poll::Ready(Some(Ok(frame))) => {
                if let Some(d) = frame.data_ref() {
                    this.bytes += d.len() as u64;
                    if let Some(c) = &this.counter {
                        c.fetch_add(d.len() as u64, Ordering::Relaxed);
                    }
                }
                if this.inner.is_end_stream() {
                    this.finish(true);
                }
                Poll::Ready(Some(Ok(frame)))
            }
            Poll::Ready(Some(Err(e))) => {
                this.finish(false);
                Poll::Ready(Some(Err(e)))
            }
            Poll::Ready(None) => {
                this.finish(true);
                Poll::Ready(None)
            }
            Poll::Pending => Poll::Pending,
        }
    }

    fn is_end_stream(&self) -> bool {
        self.inner.is_end_stream()
    }

    fn size_hint(&self) -> SizeHint {
        self.inner.size_hint()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use http_body_util::BodyExt;
    use std::sync::Mutex;

    #[tokio::test]
    async fn counts_and_calls_back_once() {
        let seen = Arc::new(Mutex::new(Vec::new()));
        let s = seen.clone();
        let counter = Arc::new(AtomicU64::new(0));
        let t = Tracked::new(crate::body::full("hello"))
            .counting(counter.clone())
            .on_done(move |n, ok| s.lock().unwrap().push((n, ok)));
        let data = t.collect().await.unwrap().to_bytes();
        assert_eq!(&data[..], b"hello");
        assert_eq!(*seen.lock().unwrap(), [(5, true)]);
        assert_eq!(counter.load(Ordering::Relaxed), 5);

        let s = seen.clone();
        drop(
            Tracked::new(crate::body::full("x"))
                .on_done(move |n, ok| s.lock().unwrap().push((n, ok))),
        );
        assert_eq!(seen.lock().unwrap()[1], (0, false));
    }
}

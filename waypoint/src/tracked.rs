//! Body wrappers: count bytes, release the upstream connection at end of stream, and run a
//! completion callback (metrics, access log) exactly once.

use std::future::Future;
use std::pin::Pin;
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::Arc;
use std::task::{Context, Poll};
use std::time::Duration;

use bytes::Bytes;
use hyper::body::{Body as HttpBody, Frame, SizeHint};

use crate::body::{Body, BoxError};
use crate::request::request_end::RequestEnd;
use crate::upstream::pool::Lease;

type Done = Box<dyn FnOnce(u64, bool) + Send + Sync>;

/// Wraps a body; `on_done(bytes, complete)` runs at end of stream, on error or when dropped.
pub struct Tracked {
    inner: Body,
    bytes: u64,
    counter: Option<Arc<AtomicU64>>,
    lease: Option<Lease>,
    on_done: Option<Done>,
    deadline: Option<Deadline>,
    idle: Option<Idle>,
    /// Marked when the body has been read in full (a streamed request body).
    end: Option<RequestEnd>,
}

/// The stream idle timeout of a body: no frame for `timeout` while it is being read. The
/// timer is armed (and re-armed after each frame) only when the body has to wait.
struct Idle {
    timeout: Duration,
    sleep: Option<Pin<Box<tokio::time::Sleep>>>,
    /// A frame passed since the timer was last armed.
    rearm: bool,
    /// Set when the timeout fired.
    expired: Arc<AtomicBool>,
}

impl Idle {
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        let at = tokio::time::Instant::now() + self.timeout;
        match &mut self.sleep {
            None => self.sleep = Some(Box::pin(tokio::time::sleep_until(at))),
            Some(s) if self.rearm => s.as_mut().reset(at),
            Some(_) => {}
        }
        self.rearm = false;
        let fired = self
            .sleep
            .as_mut()
            .is_some_and(|s| s.as_mut().poll(cx).is_ready());
        if fired {
            self.expired.store(true, Ordering::Release);
        }
        fired
    }
}

/// The route timeout of a body: a timer is made only once the body has to wait (most
/// bodies complete without ever waiting).
enum Deadline {
    At(tokio::time::Instant),
    Armed(Pin<Box<tokio::time::Sleep>>),
}

impl Deadline {
    fn poll_expired(&mut self, cx: &mut Context<'_>) -> bool {
        if let Deadline::At(at) = *self {
            *self = Deadline::Armed(Box::pin(tokio::time::sleep_until(at)));
        }
        match self {
            Deadline::Armed(sleep) => sleep.as_mut().poll(cx).is_ready(),
            Deadline::At(_) => false,
        }
    }
}

/// No frame of the body arrived within the stream idle timeout.
#[derive(Debug, thiserror::Error)]
#[error("stream idle timeout while receiving the request body")]
pub struct BodyIdleTimeout;

/// The body did not complete before the route timeout.
#[derive(Debug, thiserror::Error)]
#[error("upstream request timeout while streaming the response body")]
pub struct BodyTimeout;

impl Tracked {
    pub fn new(inner: Body) -> Self {
        Tracked {
            inner,
            bytes: 0,
            counter: None,
            lease: None,
            on_done: None,
            deadline: None,
            idle: None,
            end: None,
        }
    }

    /// Fails the body (resetting the stream) when no frame arrives for `timeout` while it
    /// is read (Envoy's `stream_idle_timeout`); sets `expired` then. Zero disables it.
    pub fn with_idle_timeout(mut self, timeout: Duration, expired: Arc<AtomicBool>) -> Self {
        if !timeout.is_zero() {
            self.idle = Some(Idle {
                timeout,
                sleep: None,
                rearm: false,
                expired,
            });
        }
        self
    }

    /// Fails the body (resetting the stream) if it has not completed by `at`.
    pub fn with_deadline(mut self, at: tokio::time::Instant) -> Self {
        self.deadline = Some(Deadline::At(at));
        self
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

    /// Marks `end` when the body has been read in full (at once when it already has).
    pub fn with_end(mut self, end: RequestEnd) -> Self {
        if self.inner.is_end_stream() {
            end.mark();
        } else {
            self.end = Some(end);
        }
        self
    }

    fn finish(&mut self, complete: bool) {
        if let Some(end) = self.end.take() {
            if complete {
                end.mark();
            }
        }
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
                if let Some(idle) = this.idle.as_mut() {
                    idle.rearm = true;
                }
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
            Poll::Pending => {
                if let Some(idle) = this.idle.as_mut() {
                    if idle.poll_expired(cx) {
                        this.finish(false);
                        return Poll::Ready(Some(Err(Box::new(BodyIdleTimeout))));
                    }
                }
                if let Some(d) = this.deadline.as_mut() {
                    if d.poll_expired(cx) {
                        this.finish(false);
                        return Poll::Ready(Some(Err(Box::new(BodyTimeout))));
                    }
                }
                Poll::Pending
            }
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

    #[tokio::test(start_paused = true)]
    async fn idle_timeout_cuts_a_stalled_body_not_a_slow_one() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let frames = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let stream = http_body_util::StreamBody::new(frames);
        let expired = Arc::new(AtomicBool::new(false));
        let t = Tracked::new(crate::body::boxed(stream))
            .with_idle_timeout(Duration::from_secs(5), expired.clone());
        let feeder = tokio::spawn(async move {
            // A frame every 4 s keeps it alive; then silence.
            for _ in 0..5 {
                tokio::time::sleep(Duration::from_secs(4)).await;
                tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
                    .await
                    .unwrap();
            }
            tokio::time::sleep(Duration::from_secs(3600)).await;
            drop(tx);
        });
        let start = tokio::time::Instant::now();
        let err = t.collect().await.unwrap_err();
        assert!(err.to_string().contains("idle"), "{err}");
        assert_eq!(start.elapsed(), Duration::from_secs(25));
        assert!(expired.load(Ordering::Acquire));
        feeder.abort();
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_cuts_a_slow_body() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let frames = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let stream = http_body_util::StreamBody::new(frames);
        let t = Tracked::new(crate::body::boxed(stream))
            .with_deadline(tokio::time::Instant::now() + std::time::Duration::from_secs(5));
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let start = tokio::time::Instant::now();
        let err = t.collect().await.unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(5));
        drop(tx);
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_counts_from_when_it_was_set_not_from_the_first_wait() {
        let (tx, mut rx) = tokio::sync::mpsc::channel::<Result<Frame<Bytes>, BoxError>>(1);
        let frames = futures::stream::poll_fn(move |cx| rx.poll_recv(cx));
        let stream = http_body_util::StreamBody::new(frames);
        let start = tokio::time::Instant::now();
        let mut t = Tracked::new(crate::body::boxed(stream))
            .with_deadline(start + std::time::Duration::from_secs(5));
        tokio::time::sleep(std::time::Duration::from_secs(3)).await;
        tx.send(Ok(Frame::data(Bytes::from_static(b"a"))))
            .await
            .unwrap();
        let first = t.frame().await.unwrap().unwrap();
        assert_eq!(first.data_ref().map(|d| &d[..]), Some(&b"a"[..]));
        let err = t.frame().await.unwrap().unwrap_err();
        assert!(err.to_string().contains("timeout"), "{err}");
        assert_eq!(start.elapsed(), std::time::Duration::from_secs(5));
        drop(tx);
    }
}

/// The request path learns when a request has been received in full from the `Tracked`
/// wrapper around its body ([`Tracked::with_end`]).
#[cfg(test)]
mod request_end_tests {
    use super::Tracked;
    use crate::body::{Body, BoxError};
    use crate::request::request_end::RequestEnd;
    use bytes::Bytes;
    use futures::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;
    use std::time::Duration;
    use tokio::time::Instant;

    /// `body` behind the request path's `Tracked` wrapper, marking `end`.
    fn watch(body: Body) -> (Body, RequestEnd) {
        let end = RequestEnd::pending();
        (Tracked::new(body).with_end(end.clone()).boxed(), end)
    }

    /// A body of `chunks` frames, one every `every`.
    fn slow(chunks: usize, every: Duration) -> Body {
        let s = futures::stream::iter(0..chunks).then(move |_| async move {
            tokio::time::sleep(every).await;
            Ok::<_, BoxError>(Frame::data(Bytes::from_static(b"x")))
        });
        crate::body::boxed(StreamBody::new(s))
    }

    #[tokio::test(start_paused = true)]
    async fn ends_when_the_last_frame_is_read() {
        let start = Instant::now();
        let (b, end) = watch(slow(3, Duration::from_secs(1)));
        assert_eq!(end.at(), None);
        let waiter = tokio::spawn({
            let end = end.clone();
            async move { end.ended().await }
        });
        let got = b.collect().await.unwrap().to_bytes();
        assert_eq!(&got[..], b"xxx");
        assert_eq!(end.at(), Some(start + Duration::from_secs(3)));
        assert_eq!(waiter.await.unwrap(), start + Duration::from_secs(3));
    }

    #[tokio::test(start_paused = true)]
    async fn known_length_ends_on_the_last_frame_without_a_further_poll() {
        let (mut b, end) = watch(crate::body::full("abc"));
        assert_eq!(end.at(), None);
        let _ = b.frame().await.unwrap().unwrap();
        assert!(end.at().is_some());
        let (_, empty) = watch(crate::body::empty());
        assert!(empty.at().is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn timer_counts_from_the_end_of_the_body_or_the_try_start() {
        let start = Instant::now();
        let (b, end) = watch(slow(2, Duration::from_secs(1)));
        let timer = tokio::spawn({
            let end = end.clone();
            async move {
                end.timer(start, Duration::from_secs(5)).await;
                Instant::now()
            }
        });
        b.collect().await.unwrap();
        assert_eq!(timer.await.unwrap(), start + Duration::from_secs(7));
        // A retry starts after the body ended: its timer counts from the retry.
        tokio::time::sleep(Duration::from_secs(10)).await;
        let retry = Instant::now();
        end.timer(retry, Duration::from_secs(1)).await;
        assert_eq!(retry.elapsed(), Duration::from_secs(1));
        let ready = RequestEnd::now();
        let t = Instant::now();
        ready.timer(t, Duration::from_secs(1)).await;
        assert_eq!(t.elapsed(), Duration::from_secs(1));
    }

    #[tokio::test(start_paused = true)]
    async fn a_body_that_never_ends_never_starts_the_timer() {
        let (b, end) = watch(slow(1, Duration::from_secs(1)));
        drop(b);
        let never = end.timer(Instant::now(), Duration::ZERO);
        let r = tokio::time::timeout(Duration::from_secs(60), never).await;
        assert!(r.is_err());
    }
}

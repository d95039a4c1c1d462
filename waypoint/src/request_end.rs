//! When the downstream request has been received in full.
//!
//! Envoy's route timeout "spans between the point at which the entire downstream request
//! (i.e. end-of-stream) has been processed and when the upstream response has been completely
//! processed", and a per-try timeout starts at the same point (for a retry, which re-sends
//! a buffered body, that is when the try starts). A slow upload therefore never times out
//! while it is still arriving. A streamed request body marks its end through the
//! [`Tracked`](crate::tracked::Tracked) wrapper it already has (`with_end`); [`RequestEnd::timer`] is a timer that starts then.

use std::sync::Arc;
use std::time::Duration;

use tokio::sync::watch;
use tokio::time::Instant;

/// When the request's body ended (shared by the tries of one request).
#[derive(Debug, Clone)]
pub struct RequestEnd(Arc<watch::Sender<Option<Instant>>>);

impl RequestEnd {
    /// A request already received in full (no body, or a buffered one).
    pub fn now() -> Self {
        RequestEnd(Arc::new(watch::Sender::new(Some(Instant::now()))))
    }

    /// A request whose body is still arriving: [`Tracked::with_end`](crate::tracked::Tracked::with_end)
    /// marks it when the last frame has been read.
    pub fn pending() -> Self {
        RequestEnd(Arc::new(watch::Sender::new(None)))
    }

    /// When the request ended, if it has.
    pub fn at(&self) -> Option<Instant> {
        *self.0.borrow()
    }

    /// Completes when the request has ended, with that instant. Never completes for a body
    /// that fails or is dropped before its end (the try fails on its own then).
    pub async fn ended(&self) -> Instant {
        let mut rx = self.0.subscribe();
        let at = match rx.wait_for(Option::is_some).await {
            Ok(at) => *at,
            // Unreachable while `self` holds the sender.
            Err(_) => None,
        };
        match at {
            Some(at) => at,
            // Never completing is the safe answer.
            None => std::future::pending().await,
        }
    }

    /// Completes `timeout` after the later of `from` (when the route or the try started)
    /// and the end of the request.
    pub async fn timer(&self, from: Instant, timeout: Duration) {
        let at = self.ended().await.max(from);
        tokio::time::sleep_until(at + timeout).await;
    }

    pub(crate) fn mark(&self) {
        self.0.send_if_modified(|at| {
            if at.is_none() {
                *at = Some(Instant::now());
                true
            } else {
                false
            }
        });
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::body::{Body, BoxError};
    use crate::tracked::Tracked;
    use bytes::Bytes;
    use futures::StreamExt;
    use http_body_util::{BodyExt, StreamBody};
    use hyper::body::Frame;

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

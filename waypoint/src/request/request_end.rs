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

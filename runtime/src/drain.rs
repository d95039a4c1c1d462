//! Graceful drain on shutdown.
//!
//! A proxy told to stop (SIGTERM) should not cut the requests it is serving. [`Drain`] is the
//! signal and the bookkeeping for that:
//! - every connection task is spawned on it ([`Drain::spawn`]) or holds a [`Drain::hold`]
//!   guard while it serves, so the drain knows what is still in flight;
//! - [`Drain::started`] fires once the drain starts: accept loops stop ([`accept_until`]
//!   returns `None`, and dropping the listener refuses new connections), HTTP servers
//!   disable keep-alive / send GOAWAY;
//! - [`Drain::run`] starts the drain and returns as soon as every tracked task has ended,
//!   or when the deadline passes, whichever is first.

use std::future::Future;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};
use tokio::task::JoinHandle;
use tokio::time::Instant;
use tokio_util::sync::{CancellationToken, WaitForCancellationFuture};
use tokio_util::task::{task_tracker::TaskTrackerToken, TaskTracker};

/// The drain of one process (cheap to clone; clones share it).
#[derive(Debug, Clone, Default)]
pub struct Drain {
    started: CancellationToken,
    tracker: TaskTracker,
}

/// How a drain ended.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Drained {
    /// Everything in flight finished, after this long.
    Idle(Duration),
    /// The deadline passed with this many tasks still running.
    DeadlinePassed { remaining: usize },
}

impl Drain {
    pub fn new() -> Self {
        Self::default()
    }

    /// Completes once the drain has started (at once if it has).
    pub fn started(&self) -> WaitForCancellationFuture<'_> {
        self.started.cancelled()
    }

    pub fn is_draining(&self) -> bool {
        self.started.is_cancelled()
    }

    /// A token cancelled when the drain starts, for APIs that take one.
    pub fn token(&self) -> CancellationToken {
        self.started.clone()
    }

    /// Spawns `task`; the drain waits for it.
    pub fn spawn<F>(&self, task: F) -> JoinHandle<F::Output>
    where
        F: Future + Send + 'static,
        F::Output: Send + 'static,
    {
        self.tracker.spawn(task)
    }

    /// The drain waits while the returned guard lives (for work on a task it did not spawn).
    pub fn hold(&self) -> TaskTrackerToken {
        self.tracker.token()
    }

    /// Tasks and guards still in flight.
    pub fn in_flight(&self) -> usize {
        self.tracker.len()
    }

    /// Starts the drain and waits until nothing is in flight or `deadline` has passed.
    pub async fn run(&self, deadline: Duration) -> Drained {
        let start = Instant::now();
        self.started.cancel();
        self.tracker.close();
        match tokio::time::timeout(deadline, self.tracker.wait()).await {
            Ok(()) => Drained::Idle(start.elapsed()),
            Err(_) => Drained::DeadlinePassed {
                remaining: self.tracker.len(),
            },
        }
    }
}

/// The next connection of `listener` ([`crate::accept::accept`]), or `None` once `drain` has
/// started: the caller then drops the listener, and the kernel refuses new connections.
pub async fn accept_until(
    listener: &TcpListener,
    what: &str,
    drain: &Drain,
) -> Option<(TcpStream, SocketAddr)> {
    tokio::select! {
        biased;
        _ = drain.started() => None,
        conn = crate::accept::accept(listener, what) => Some(conn),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn ends_as_soon_as_the_last_task_ends() {
        let d = Drain::new();
        for ms in [100u64, 300, 200] {
            let d2 = d.clone();
            d.spawn(async move {
                // Work in flight keeps going after the drain starts.
                d2.started().await;
                tokio::time::sleep(Duration::from_millis(ms)).await;
            });
        }
        assert!(!d.is_draining());
        assert_eq!(d.in_flight(), 3);
        let got = d.run(Duration::from_secs(5)).await;
        assert_eq!(got, Drained::Idle(Duration::from_millis(300)));
        assert!(d.is_draining());
    }

    #[tokio::test(start_paused = true)]
    async fn idle_drain_is_immediate() {
        let got = Drain::new().run(Duration::from_secs(5)).await;
        assert_eq!(got, Drained::Idle(Duration::ZERO));
    }

    #[tokio::test(start_paused = true)]
    async fn deadline_bounds_the_drain_and_guards_count() {
        let d = Drain::new();
        let guard = d.hold();
        d.spawn(std::future::pending::<()>());
        let start = Instant::now();
        let got = d.run(Duration::from_secs(5)).await;
        assert_eq!(got, Drained::DeadlinePassed { remaining: 2 });
        assert_eq!(start.elapsed(), Duration::from_secs(5));
        drop(guard);
        assert_eq!(d.in_flight(), 1);
    }

    #[tokio::test]
    async fn accept_stops_and_the_port_refuses_once_draining() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let d = Drain::new();
        let c = TcpStream::connect(addr).await.unwrap();
        let (s, _) = accept_until(&l, "test", &d).await.unwrap();
        assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
        let _ = d.run(Duration::ZERO).await;
        assert!(accept_until(&l, "test", &d).await.is_none());
        drop(l);
        assert!(TcpStream::connect(addr).await.is_err());
    }
}

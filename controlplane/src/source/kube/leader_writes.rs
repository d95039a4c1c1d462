//! The loop the leader-only status writers share: follow the source's batches, write what
//! is pending while this replica holds the Lease (everything again when it gains it), and
//! retry after [`RETRY`] when a write fails. Also [`tee`], which hands a writer the events
//! it cares about.

use std::future::Future;
use std::pin::Pin;
use std::time::Duration;

use tokio::sync::{mpsc, watch};

use crate::source::FileEvent;

/// How long a failed write waits before the next attempt.
pub const RETRY: Duration = Duration::from_secs(5);

/// A status writer driven by [`run`].
pub trait PendingWrites: Send {
    /// Takes in a batch of source events.
    fn observe(&mut self, batch: &[FileEvent]);
    /// Forgets what was written: leadership was just gained, write everything again.
    fn reset_written(&mut self);
    /// Writes everything pending (logging failures); `false` when a write failed.
    fn write_pending(&mut self) -> Pin<Box<dyn Future<Output = bool> + Send + '_>>;
    /// Write everything again this often even without changes (to restore objects someone
    /// edited or deleted); None: only on changes and leadership gains.
    fn resync_every(&self) -> Option<Duration> {
        None
    }
}

/// Drives `writes` with the batches received on `events` while `leader` is true. Ends when
/// `events` is closed or the leader channel is dropped.
pub async fn run<W: PendingWrites>(
    mut writes: W,
    mut events: mpsc::Receiver<Vec<FileEvent>>,
    mut leader: watch::Receiver<bool>,
) {
    let mut retry_at: Option<tokio::time::Instant> = None;
    let mut resync = writes.resync_every().map(|every| {
        let mut i = tokio::time::interval_at(tokio::time::Instant::now() + every, every);
        i.set_missed_tick_behavior(tokio::time::MissedTickBehavior::Delay);
        i
    });
    loop {
        let retry = async {
            match retry_at {
                Some(t) => tokio::time::sleep_until(t).await,
                None => std::future::pending().await,
            }
        };
        let resync_tick = async {
            match resync.as_mut() {
                Some(i) => i.tick().await,
                None => std::future::pending().await,
            }
        };
        tokio::select! {
            batch = events.recv() => match batch {
                Some(b) => writes.observe(&b),
                None => return,
            },
            changed = leader.changed() => {
                if changed.is_err() {
                    return;
                }
                if *leader.borrow() {
                    writes.reset_written();
                }
            }
            _ = retry => retry_at = None,
            _ = resync_tick => writes.reset_written(),
        }
        if !*leader.borrow() {
            continue;
        }
        if !writes.write_pending().await {
            retry_at = Some(tokio::time::Instant::now() + RETRY);
        }
    }
}

/// Splits the source's batches: every batch goes on (first receiver), and the events
/// `wanted` selects also go to the second receiver, when there are any.
pub fn tee(
    mut source: mpsc::Receiver<Vec<FileEvent>>,
    wanted: fn(&FileEvent) -> bool,
) -> (
    mpsc::Receiver<Vec<FileEvent>>,
    mpsc::Receiver<Vec<FileEvent>>,
) {
    let (main_tx, main_rx) = mpsc::channel(16);
    let (side_tx, side_rx) = mpsc::channel(16);
    tokio::spawn(async move {
        while let Some(batch) = source.recv().await {
            let mine: Vec<FileEvent> = batch.iter().filter(|e| wanted(e)).cloned().collect();
            if !mine.is_empty() && !side_tx.is_closed() {
                let _ = side_tx.send(mine).await;
            }
            if main_tx.send(batch).await.is_err() {
                return;
            }
        }
    });
    (main_rx, side_rx)
}

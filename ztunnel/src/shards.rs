//! Data-path threads ("shards"). Each shard is one OS thread running a single-threaded
//! tokio runtime with its own listeners (one per address, all in one SO_REUSEPORT group so
//! the kernel spreads new connections over the shards) and its own HBONE pool. A
//! connection is then served start to end on one thread: the request path has no
//! cross-thread wake-ups and no work stealing, which on a virtualised node cost a
//! vCPU wake-up each (see docs/benchmarks.md). Control work (config, certificates,
//! admin) stays on the runtime that started the ztunnel.

use std::cell::Cell;
use std::io;
use std::sync::mpsc;

use tokio::runtime::Handle;
use tokio_util::sync::CancellationToken;

thread_local! {
    static SHARD: Cell<Option<usize>> = const { Cell::new(None) };
}

/// The shard the calling thread serves, `None` off the data-path threads.
pub fn current() -> Option<usize> {
    SHARD.with(Cell::get)
}

/// The runtimes that serve connections. Dropping it stops the shard threads (their
/// remaining tasks are dropped); drain first for a graceful stop.
pub struct Shards {
    handles: Vec<Handle>,
    stop: CancellationToken,
}

impl Shards {
    /// Serves on the caller's runtime: one shard, no extra thread (embedding, tests).
    pub fn inline() -> Shards {
        Shards {
            handles: vec![Handle::current()],
            stop: CancellationToken::new(),
        }
    }

    /// Starts `n` (at least 1) shard threads named `ztunnel-data-<i>`.
    pub fn start(n: usize) -> io::Result<Shards> {
        let stop = CancellationToken::new();
        let mut handles = Vec::with_capacity(n.max(1));
        for i in 0..n.max(1) {
            let rt = tokio::runtime::Builder::new_current_thread()
                .enable_all()
                .build()?;
            handles.push(rt.handle().clone());
            let stop = stop.clone();
            let (started, ready) = mpsc::sync_channel(0);
            std::thread::Builder::new()
                .name(format!("ztunnel-data-{i}"))
                .spawn(move || {
                    SHARD.with(|s| s.set(Some(i)));
                    let _ = started.send(());
                    rt.block_on(stop.cancelled());
                })?;
            // The thread owns the runtime from here on; wait until it is driving it.
            let _ = ready.recv();
        }
        Ok(Shards { handles, stop })
    }

    pub fn len(&self) -> usize {
        self.handles.len()
    }

    pub fn is_empty(&self) -> bool {
        self.handles.is_empty()
    }

    pub fn handles(&self) -> &[Handle] {
        &self.handles
    }
}

impl Drop for Shards {
    fn drop(&mut self) {
        self.stop.cancel();
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn each_shard_runs_its_tasks_on_its_own_thread() {
        assert_eq!(current(), None);
        let shards = Shards::start(2).unwrap();
        let mut seen = Vec::new();
        for h in shards.handles() {
            let (shard, name) = h
                .spawn(async {
                    // Spawned from inside, a task stays on the shard.
                    tokio::spawn(async {
                        (current(), std::thread::current().name().map(str::to_string))
                    })
                    .await
                    .unwrap()
                })
                .await
                .unwrap();
            seen.push((shard, name));
        }
        assert_eq!(
            seen,
            vec![
                (Some(0), Some("ztunnel-data-0".into())),
                (Some(1), Some("ztunnel-data-1".into()))
            ]
        );
        // Dropping stops the threads: their runtimes no longer accept work.
        let h = shards.handles()[0].clone();
        drop(shards);
        let mut stopped = false;
        for _ in 0..100 {
            if h.spawn(async {}).await.is_err() {
                stopped = true;
                break;
            }
            tokio::time::sleep(std::time::Duration::from_millis(10)).await;
        }
        assert!(stopped, "shard runtime still running after drop");
    }

    #[tokio::test]
    async fn inline_serves_on_the_callers_runtime() {
        let shards = Shards::inline();
        assert_eq!(shards.len(), 1);
        let name = shards.handles()[0]
            .spawn(async { current() })
            .await
            .unwrap();
        assert_eq!(name, None);
    }
}

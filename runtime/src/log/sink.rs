//! [`LineSink`]: lines queued to a writer thread, never blocking the caller.

use std::fs::File;
use std::io::{self, BufWriter, IsTerminal, Write};
use std::os::fd::{AsFd, OwnedFd};
use std::sync::Mutex;

use crate::sync::LockExt;

use tracing_appender::non_blocking::{ErrorCounter, NonBlocking, NonBlockingBuilder, WorkerGuard};

/// Drop counters of the sinks writing to the process's standard streams.
static PROCESS_SINKS: Mutex<Vec<ErrorCounter>> = Mutex::new(Vec::new());

/// Lines dropped so far by every sink of this process's stdout and stderr
/// ([`LineSink::new`]), for the proxies' `meshwork_log_lines_dropped_total`.
pub fn dropped_lines() -> u64 {
    let sinks = PROCESS_SINKS.lock_or_recover();
    sinks.iter().map(|c| c.dropped_lines() as u64).sum()
}

/// How many lines may wait for the writer thread before new ones are dropped: seconds of
/// access logs at thousands of requests per second. The queue's slots are allocated up
/// front (32 bytes each, 256 KiB here), so a larger one would cost idle memory in every
/// proxy.
pub const BUFFERED_LINES: usize = 8 * 1024;

/// The standard stream a sink writes to.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Stream {
    Stdout,
    Stderr,
}

impl Stream {
    fn dup(self) -> io::Result<OwnedFd> {
        match self {
            Stream::Stdout => io::stdout().as_fd().try_clone_to_owned(),
            Stream::Stderr => io::stderr().as_fd().try_clone_to_owned(),
        }
    }

    /// Whether a person is likely reading it (colours make sense).
    pub fn is_terminal(self) -> bool {
        match self {
            Stream::Stdout => io::stdout().is_terminal(),
            Stream::Stderr => io::stderr().is_terminal(),
        }
    }
}

/// Lines handed to one writer thread. Clones feed the same thread.
#[derive(Clone, Debug)]
pub struct LineSink {
    tx: NonBlocking,
    dropped: ErrorCounter,
}

/// Keeps a sink's writer thread. Dropping it writes what is still queued (waiting about a
/// second at most) and ends the thread.
#[must_use = "dropping the guard stops the writer thread"]
#[derive(Debug)]
pub struct SinkGuard(#[allow(dead_code)] WorkerGuard);

impl LineSink {
    /// A sink writing to `stream` from a thread named `thread_name`. The thread writes a
    /// duplicate of the stream's descriptor through a buffer, one system call per batch
    /// of queued lines rather than one per line.
    pub fn new(stream: Stream, thread_name: &str) -> io::Result<(LineSink, SinkGuard)> {
        let out = BufWriter::new(File::from(stream.dup()?));
        let (sink, guard) = LineSink::with_writer(out, thread_name, BUFFERED_LINES);
        PROCESS_SINKS.lock_or_recover().push(sink.dropped.clone());
        Ok((sink, guard))
    }

    /// A sink writing to `out`, holding at most `capacity` lines in the queue.
    pub fn with_writer<W: Write + Send + 'static>(
        out: W,
        thread_name: &str,
        capacity: usize,
    ) -> (LineSink, SinkGuard) {
        let (tx, guard) = NonBlockingBuilder::default()
            .lossy(true)
            .buffered_lines_limit(capacity)
            .thread_name(thread_name)
            .finish(out);
        let dropped = tx.error_counter();
        (LineSink { tx, dropped }, SinkGuard(guard))
    }

    /// Queues `line` and a newline. Never blocks: with the queue full the line is dropped
    /// and counted.
    pub fn line(&self, mut line: String) {
        line.push('\n');
        // One write call is one queued message: the line stays whole.
        let _ = self.tx.clone().write(line.as_bytes());
    }

    /// Lines dropped so far because the writer was too far behind.
    pub fn dropped(&self) -> u64 {
        self.dropped.dropped_lines() as u64
    }

    /// The `tracing-subscriber` writer feeding this sink.
    pub(crate) fn make_writer(&self) -> NonBlocking {
        self.tx.clone()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::sync::mpsc;
    use std::sync::{Arc, Condvar, Mutex};
    use std::time::Duration;

    /// Opened once; writers wait for it.
    type Gate = Arc<(Mutex<bool>, Condvar)>;
    /// What a writer was given.
    type Got = Arc<Mutex<Vec<u8>>>;

    /// A writer that blocks until `gate` opens, then records what it got.
    struct Stuck {
        gate: Gate,
        got: Got,
    }

    impl Write for Stuck {
        fn write(&mut self, buf: &[u8]) -> io::Result<usize> {
            let (open, cv) = &*self.gate;
            let mut g = open.lock().unwrap();
            while !*g {
                g = cv.wait(g).unwrap();
            }
            self.got.lock().unwrap().extend_from_slice(buf);
            Ok(buf.len())
        }
        fn flush(&mut self) -> io::Result<()> {
            Ok(())
        }
    }

    fn stuck() -> (Stuck, Gate, Got) {
        let gate: Gate = Arc::new((Mutex::new(false), Condvar::new()));
        let got: Got = Arc::new(Mutex::new(Vec::new()));
        let w = Stuck {
            gate: gate.clone(),
            got: got.clone(),
        };
        (w, gate, got)
    }

    fn open(gate: &Gate) {
        *gate.0.lock().unwrap() = true;
        gate.1.notify_all();
    }

    /// Runs `f` on another thread and says whether it finished within 10 s (a hang
    /// detector, not a timing assertion).
    fn finishes(f: impl FnOnce() + Send + 'static) -> bool {
        let (tx, rx) = mpsc::channel();
        std::thread::spawn(move || {
            f();
            let _ = tx.send(());
        });
        rx.recv_timeout(Duration::from_secs(10)).is_ok()
    }

    #[test]
    fn a_stuck_reader_does_not_block_writers_and_gets_every_line_in_order_later() {
        let (w, gate, got) = stuck();
        let (sink, guard) = LineSink::with_writer(w, "test-log", 1000);
        let s = sink.clone();
        assert!(
            finishes(move || {
                for i in 0..500 {
                    s.line(format!("line {i}"));
                }
            }),
            "writing to a sink blocked while its reader was stuck"
        );
        open(&gate);
        drop(guard); // writes what is queued
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        let lines: Vec<&str> = text.lines().collect();
        assert_eq!(lines.len(), 500);
        for (i, l) in lines.iter().enumerate() {
            assert_eq!(*l, format!("line {i}"));
        }
        assert_eq!(sink.dropped(), 0);
    }

    #[test]
    fn lines_beyond_the_queue_are_dropped_and_counted() {
        let (w, gate, got) = stuck();
        let (sink, guard) = LineSink::with_writer(w, "test-log", 10);
        let s = sink.clone();
        assert!(finishes(move || {
            for i in 0..100 {
                s.line(format!("line {i}"));
            }
        }));
        // The thread may hold one line while stuck; the queue holds ten more.
        let dropped = sink.dropped();
        assert!((89..=90).contains(&dropped), "dropped {dropped}");
        open(&gate);
        drop(guard);
        let text = String::from_utf8(got.lock().unwrap().clone()).unwrap();
        assert_eq!(text.lines().count() as u64, 100 - dropped);
        assert!(text.starts_with("line 0\n"), "{text}");
    }
}

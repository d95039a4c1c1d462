//! The floor of the data-plane benchmark: the least a userspace hop costs on this machine.
//!
//! [`Relay`] copies a TCP connection to an upstream with one thread per direction that
//! blocks in `read(2)` and then `write(2)`s what it got: no TLS, no HTTP/2, no event loop,
//! no policy. Two of them (source node → destination node → pod) are the mesh's hop
//! count without any of its work, so what they add over a direct connection is what any
//! userspace proxy pays here in process wake-ups and socket calls.
use std::io::{Read, Write};
use std::net::{Shutdown, SocketAddr, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, AtomicU64, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use crate::{netns, HarnessError};

/// CPU time of the relay's copy threads, the live ones read from /proc and the finished
/// ones added up as they exit.
#[derive(Default)]
struct CpuTally {
    finished_ns: AtomicU64,
    live: Mutex<Vec<i32>>,
}

impl CpuTally {
    fn enter(&self) -> i32 {
        // SAFETY: gettid has no preconditions.
        let tid = unsafe { libc::gettid() };
        self.live
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .push(tid);
        tid
    }

    fn exit(&self, tid: i32) {
        let mut live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let own = crate::bench::thread_runtime_ns("/proc/thread-self/schedstat").unwrap_or(0);
        self.finished_ns.fetch_add(own, Ordering::Relaxed);
        live.retain(|t| *t != tid);
    }

    fn total(&self) -> Duration {
        let live = self.live.lock().unwrap_or_else(|p| p.into_inner());
        let running: u64 = live
            .iter()
            .filter_map(|tid| {
                crate::bench::thread_runtime_ns(&format!("/proc/self/task/{tid}/schedstat"))
            })
            .sum();
        Duration::from_nanos(self.finished_ns.load(Ordering::Relaxed) + running)
    }
}

/// A blocking TCP relay listening inside a network namespace.
pub struct Relay {
    stop: Arc<AtomicBool>,
    acceptor: Option<JoinHandle<()>>,
    cpu: Arc<CpuTally>,
}

impl Relay {
    /// Listens on `listen` inside `netns` and relays every accepted connection to
    /// `upstream` (connected from the same namespace).
    pub fn start(
        netns: &str,
        listen: SocketAddr,
        upstream: SocketAddr,
    ) -> Result<Self, HarnessError> {
        let spawn_err = |source: std::io::Error| HarnessError::Spawn {
            command: format!("relay {listen} -> {upstream}"),
            target: netns.to_string(),
            source,
        };
        let listener = netns::in_netns(netns, move || {
            let l = TcpListener::bind(listen)?;
            // Polled so that `stop` is noticed; only accepting waits on the poll.
            l.set_nonblocking(true)?;
            Ok::<_, std::io::Error>(l)
        })?
        .map_err(spawn_err)?;
        let stop = Arc::new(AtomicBool::new(false));
        let cpu = Arc::new(CpuTally::default());
        let (s, c) = (stop.clone(), cpu.clone());
        let acceptor = netns::spawn_in(netns, move || accept_loop(&listener, upstream, &s, &c))?;
        Ok(Relay {
            stop,
            acceptor: Some(acceptor),
            cpu,
        })
    }

    /// CPU time (user + system, from the scheduler) its copy threads have used so far.
    pub fn cpu(&self) -> Duration {
        self.cpu.total()
    }
}

impl Drop for Relay {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(a) = self.acceptor.take() {
            let _ = a.join();
        }
    }
}

fn accept_loop(
    listener: &TcpListener,
    upstream: SocketAddr,
    stop: &AtomicBool,
    cpu: &Arc<CpuTally>,
) {
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((down, _)) => {
                let cpu = cpu.clone();
                // Threads inherit this thread's network namespace.
                std::thread::spawn(move || {
                    let _ = relay_one(down, upstream, &cpu);
                });
            }
            Err(_) => std::thread::sleep(Duration::from_millis(2)),
        }
    }
}

fn relay_one(down: TcpStream, upstream: SocketAddr, cpu: &Arc<CpuTally>) -> std::io::Result<()> {
    down.set_nonblocking(false)?;
    let up = TcpStream::connect_timeout(&upstream, Duration::from_secs(5))?;
    down.set_nodelay(true)?;
    up.set_nodelay(true)?;
    let (down2, up2) = (down.try_clone()?, up.try_clone()?);
    let back = {
        let cpu = cpu.clone();
        std::thread::spawn(move || copy_counted(up2, down2, &cpu))
    };
    copy_counted(down, up, cpu);
    let _ = back.join();
    Ok(())
}

/// Copies until EOF or an error, then half-closes `to`; bounded by the peers closing.
fn copy_counted(mut from: TcpStream, mut to: TcpStream, cpu: &CpuTally) {
    let tid = cpu.enter();
    let mut buf = vec![0u8; 64 * 1024];
    loop {
        match from.read(&mut buf) {
            Ok(0) | Err(_) => break,
            Ok(n) => {
                if to.write_all(&buf[..n]).is_err() {
                    break;
                }
            }
        }
    }
    let _ = to.shutdown(Shutdown::Write);
    cpu.exit(tid);
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn relays_both_ways_and_counts_its_cpu() {
        // The test's own namespace is enough: loopback only.
        let echo = TcpListener::bind("127.0.0.1:0").unwrap();
        let echo_addr = echo.local_addr().unwrap();
        let server = std::thread::spawn(move || {
            let (mut s, _) = echo.accept().unwrap();
            let mut buf = [0u8; 1024];
            loop {
                match s.read(&mut buf) {
                    Ok(0) | Err(_) => break,
                    Ok(n) => s.write_all(&buf[..n]).unwrap(),
                }
            }
        });
        let port = {
            let probe = TcpListener::bind("127.0.0.1:0").unwrap();
            probe.local_addr().unwrap().port()
        };
        let listen: SocketAddr = format!("127.0.0.1:{port}").parse().unwrap();
        let relay = start_here(listen, echo_addr);
        let mut c = TcpStream::connect(listen).unwrap();
        for i in 0..200u32 {
            let msg = i.to_be_bytes();
            c.write_all(&msg).unwrap();
            let mut got = [0u8; 4];
            c.read_exact(&mut got).unwrap();
            assert_eq!(got, msg);
        }
        drop(c);
        server.join().unwrap();
        assert!(relay.cpu() > Duration::ZERO);
    }

    /// `Relay::start` in the test's own namespace (no root needed).
    fn start_here(listen: SocketAddr, upstream: SocketAddr) -> Relay {
        let listener = TcpListener::bind(listen).unwrap();
        listener.set_nonblocking(true).unwrap();
        let stop = Arc::new(AtomicBool::new(false));
        let cpu = Arc::new(CpuTally::default());
        let (s, c) = (stop.clone(), cpu.clone());
        let acceptor = std::thread::spawn(move || accept_loop(&listener, upstream, &s, &c));
        Relay {
            stop,
            acceptor: Some(acceptor),
            cpu,
        }
    }
}

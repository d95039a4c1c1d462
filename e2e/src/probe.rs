//! Minimal TCP probes for redirection tests: listeners that answer one line naming where a
//! connection landed, and a client that reads that line.
use std::io::{BufRead, BufReader, Write};
use std::net::{Ipv4Addr, SocketAddr, SocketAddrV4, TcpListener, TcpStream};
use std::sync::atomic::{AtomicBool, Ordering};
use std::sync::{Arc, Mutex};
use std::thread::JoinHandle;
use std::time::Duration;

use socket2::{Domain, Protocol, Socket, Type};

use crate::{Cluster, HarnessError};

/// One accepted connection: the listener's local address (the original destination for
/// a transparent listener) and the peer.
#[derive(Clone, Copy, Debug, PartialEq, Eq)]
pub struct Accepted {
    pub local: SocketAddr,
    pub peer: SocketAddr,
}

/// A listener thread answering `"<tag> <local addr> <peer addr>\n"` to every connection.
pub struct LineServer {
    accepted: Arc<Mutex<Vec<Accepted>>>,
    stop: Arc<AtomicBool>,
    thread: Option<JoinHandle<()>>,
}

impl LineServer {
    /// Plain listener on `0.0.0.0:port` inside a node or pod.
    pub fn plain(
        cluster: &Cluster,
        target: &str,
        port: u16,
        tag: &str,
    ) -> Result<Self, HarnessError> {
        Self::start(cluster, target, port, tag, false)
    }

    /// IP_TRANSPARENT listener on `0.0.0.0:port` (what ztunnel's listeners are).
    pub fn transparent(
        cluster: &Cluster,
        target: &str,
        port: u16,
        tag: &str,
    ) -> Result<Self, HarnessError> {
        Self::start(cluster, target, port, tag, true)
    }

    fn start(
        cluster: &Cluster,
        target: &str,
        port: u16,
        tag: &str,
        transparent: bool,
    ) -> Result<Self, HarnessError> {
        let what = format!("listener {target}:{port}");
        let listener = cluster
            .in_netns(target, move || bind(port, transparent))?
            .map_err(|source| HarnessError::Io {
                path: what.into(),
                source,
            })?;
        Ok(Self::serve_listener(listener, tag))
    }

    /// Serves an already bound and listening socket (made non-blocking here), e.g. one
    /// created with extra options (`SO_MARK`) inside a pod's namespace.
    pub fn serve_listener(listener: TcpListener, tag: &str) -> Self {
        let _ = listener.set_nonblocking(true);
        let accepted = Arc::new(Mutex::new(Vec::new()));
        let stop = Arc::new(AtomicBool::new(false));
        let (acc, st, tag) = (accepted.clone(), stop.clone(), tag.to_string());
        let thread = std::thread::spawn(move || serve(listener, &tag, &acc, &st));
        Self {
            accepted,
            stop,
            thread: Some(thread),
        }
    }

    pub fn accepted(&self) -> Vec<Accepted> {
        self.accepted
            .lock()
            .unwrap_or_else(|p| p.into_inner())
            .clone()
    }
}

impl Drop for LineServer {
    fn drop(&mut self) {
        self.stop.store(true, Ordering::Relaxed);
        if let Some(t) = self.thread.take() {
            let _ = t.join();
        }
    }
}

fn bind(port: u16, transparent: bool) -> std::io::Result<TcpListener> {
    let s = Socket::new(Domain::IPV4, Type::STREAM, Some(Protocol::TCP))?;
    s.set_reuse_address(true)?;
    if transparent {
        s.set_ip_transparent_v4(true)?;
    }
    s.bind(&SocketAddr::V4(SocketAddrV4::new(Ipv4Addr::UNSPECIFIED, port)).into())?;
    s.listen(128)?;
    s.set_nonblocking(true)?;
    Ok(s.into())
}

fn serve(listener: TcpListener, tag: &str, accepted: &Mutex<Vec<Accepted>>, stop: &AtomicBool) {
    // Bounded by the owner: runs until `stop` is set on drop.
    while !stop.load(Ordering::Relaxed) {
        match listener.accept() {
            Ok((mut stream, peer)) => {
                let Ok(local) = stream.local_addr() else {
                    continue;
                };
                accepted
                    .lock()
                    .unwrap_or_else(|p| p.into_inner())
                    .push(Accepted { local, peer });
                let _ = stream.set_nonblocking(false);
                let _ = writeln!(stream, "{tag} {local} {peer}");
            }
            Err(e) if e.kind() == std::io::ErrorKind::WouldBlock => {
                std::thread::sleep(Duration::from_millis(5));
            }
            Err(_) => std::thread::sleep(Duration::from_millis(5)),
        }
    }
}

/// Connects from a node or pod to `dst` and returns the line the server answered.
pub fn connect_line(
    cluster: &Cluster,
    from: &str,
    dst: SocketAddr,
    timeout: Duration,
) -> Result<std::io::Result<String>, HarnessError> {
    Ok(cluster.in_netns(from, move || {
        let stream = TcpStream::connect_timeout(&dst, timeout)?;
        stream.set_read_timeout(Some(timeout))?;
        let mut line = String::new();
        BufReader::new(stream).read_line(&mut line)?;
        Ok(line.trim_end().to_string())
    })?)
}

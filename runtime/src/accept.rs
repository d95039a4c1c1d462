//! Accept loops that keep accepting.
//!
//! `accept` fails for reasons that pass. A client may reset before its connection was
//! taken. More seriously, the process or system may be out of file descriptors or memory.
//! A loop that returns on such an error leaves a process that looks healthy and never
//! accepts again. A loop that retries at once spins a core while the descriptors stay
//! exhausted.
//!
//! [`accept`] retries:
//! - after a per-connection error, at once;
//! - after any other error, after [`RESOURCE_BACKOFF`].
//!
//! It warns when a run of errors starts and says when accepting works again.

use std::future::Future;
use std::io;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::{TcpListener, TcpStream};

/// Pause before accepting again after an error that is not about one connection
/// (`EMFILE`, `ENFILE`, `ENOBUFS`, `ENOMEM`, …).
pub const RESOURCE_BACKOFF: Duration = Duration::from_millis(100);

/// The next connection of `listener`, retrying through errors. `what` names the listener
/// in logs. Cancel-safe: dropping the future loses no accepted connection.
pub async fn accept(listener: &TcpListener, what: &str) -> (TcpStream, SocketAddr) {
    retrying(|| listener.accept(), what).await
}

/// The connections of `listener` as a stream (for `tonic`'s `serve_with_incoming`, whose
/// own loop retries a failing accept without pause), with `TCP_NODELAY` set. It never
/// ends and never yields an error.
pub fn incoming(
    listener: TcpListener,
    what: &'static str,
) -> impl futures::Stream<Item = io::Result<TcpStream>> + Send + 'static {
    futures::stream::unfold(listener, move |l| async move {
        let (s, _) = accept(&l, what).await;
        let _ = s.set_nodelay(true);
        Some((Ok(s), l))
    })
}

/// [`accept`] over any source of connections.
async fn retrying<T, F, Fut>(mut next: F, what: &str) -> T
where
    F: FnMut() -> Fut,
    Fut: Future<Output = io::Result<T>>,
{
    let mut failures = 0u64;
    loop {
        match next().await {
            Ok(conn) => {
                if failures > 0 {
                    tracing::info!(listener = what, failures, "accepting connections again");
                }
                return conn;
            }
            Err(e) if is_per_connection(&e) => {
                tracing::debug!(listener = what, error = %e, "a connection failed before it was accepted");
            }
            Err(e) => {
                if failures == 0 {
                    tracing::warn!(
                        listener = what,
                        error = %e,
                        "cannot accept connections; retrying every {} ms",
                        RESOURCE_BACKOFF.as_millis()
                    );
                }
                failures += 1;
                tokio::time::sleep(RESOURCE_BACKOFF).await;
            }
        }
    }
}

fn is_per_connection(e: &io::Error) -> bool {
    use io::ErrorKind::*;
    matches!(
        e.kind(),
        ConnectionAborted | ConnectionReset | ConnectionRefused | Interrupted
    ) || e.raw_os_error() == Some(libc::EPROTO)
}

#[cfg(test)]
mod tests {
    use super::*;
    use std::collections::VecDeque;
    use std::sync::Mutex;
    use tokio::time::Instant;

    /// Answers the scripted results in order.
    fn script(
        results: Vec<io::Result<u32>>,
    ) -> impl FnMut() -> std::future::Ready<io::Result<u32>> {
        let q = Mutex::new(VecDeque::from(results));
        move || std::future::ready(q.lock().unwrap().pop_front().expect("script ran out"))
    }

    fn os(code: i32) -> io::Result<u32> {
        Err(io::Error::from_raw_os_error(code))
    }

    #[tokio::test(start_paused = true)]
    async fn out_of_descriptors_backs_off_then_accepts() {
        let start = Instant::now();
        let got = retrying(
            script(vec![
                os(libc::EMFILE),
                os(libc::EMFILE),
                os(libc::ENFILE),
                Ok(7),
            ]),
            "test",
        )
        .await;
        assert_eq!(got, 7);
        assert_eq!(start.elapsed(), RESOURCE_BACKOFF * 3);
    }

    #[tokio::test(start_paused = true)]
    async fn a_connection_reset_before_accept_is_skipped_at_once() {
        let start = Instant::now();
        let got = retrying(
            script(vec![
                os(libc::ECONNABORTED),
                os(libc::EPROTO),
                os(libc::EINTR),
                Ok(3),
            ]),
            "test",
        )
        .await;
        assert_eq!(got, 3);
        assert_eq!(start.elapsed(), Duration::ZERO);
    }

    #[tokio::test]
    async fn incoming_yields_connections_with_nodelay() {
        use futures::StreamExt;
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let mut conns = Box::pin(incoming(l, "test"));
        for _ in 0..3 {
            let c = TcpStream::connect(addr).await.unwrap();
            let s = conns.next().await.unwrap().unwrap();
            assert_eq!(s.peer_addr().unwrap(), c.local_addr().unwrap());
            assert!(s.nodelay().unwrap());
        }
    }

    #[tokio::test]
    async fn accepts_from_a_listener() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        let client = tokio::spawn(async move { TcpStream::connect(addr).await.unwrap() });
        let (_s, peer) = accept(&l, "test").await;
        let c = client.await.unwrap();
        assert_eq!(peer, c.local_addr().unwrap());
    }
}

//! Bounded waits for a starting mesh.

use std::future::Future;
use std::time::{Duration, Instant};

use crate::http::{self, Request, Via};
use crate::Error;

/// Whether `GET path` answers 200.
pub async fn get_ok(via: &Via, path: &str) -> bool {
    http::send(via, &Request::get(path), Duration::from_secs(2))
        .await
        .is_ok_and(|r| r.status == 200)
}

/// Whether `GET path` gets any HTTP answer.
pub async fn answers(via: &Via, path: &str) -> bool {
    http::send(via, &Request::get(path), Duration::from_secs(3))
        .await
        .is_ok()
}

/// Polls `check` until true (bounded by `timeout`), failing early when `died` names a
/// child process that exited.
pub async fn wait_until<D, F, Fut>(
    what: &str,
    timeout: Duration,
    mut died: D,
    mut check: F,
) -> Result<(), Error>
where
    D: FnMut() -> Option<String>,
    F: FnMut() -> Fut,
    Fut: Future<Output = bool>,
{
    let deadline = Instant::now() + timeout;
    loop {
        if let Some(died) = died() {
            return Err(Error::ChildDied(died));
        }
        if check().await {
            return Ok(());
        }
        if Instant::now() >= deadline {
            return Err(Error::NotReady {
                what: what.to_string(),
                timeout,
            });
        }
        tokio::time::sleep(Duration::from_millis(100)).await;
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test(start_paused = true)]
    async fn waits_until_true_or_timeout_or_a_death() {
        let mut n = 0;
        wait_until(
            "x",
            Duration::from_secs(5),
            || None,
            || {
                n += 1;
                let done = n >= 3;
                async move { done }
            },
        )
        .await
        .unwrap();
        assert_eq!(n, 3);
        let e = wait_until("thing", Duration::from_secs(1), || None, || async { false })
            .await
            .unwrap_err();
        assert!(e.to_string().contains("thing not ready"), "{e}");
        let e = wait_until(
            "y",
            Duration::from_secs(1),
            || Some("ztunnel exited (1)".into()),
            || async { true },
        )
        .await
        .unwrap_err();
        assert!(matches!(e, Error::ChildDied(_)), "{e}");
    }
}

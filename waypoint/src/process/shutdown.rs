//! Stopping the waypoint: wait for SIGTERM/SIGINT, then drain for at most
//! `--termination-drain-duration` (Istio's `terminationDrainDuration`, 5 s by default).
//!
//! Draining, in order: readiness fails at once (`/healthz/ready` answers 503, so the pod
//! leaves the Service's endpoints); the listeners close (new connections are refused);
//! open downstream connections are told to go — HTTP/1.1 responses carry
//! `Connection: close`, HTTP/2 and HBONE connections get GOAWAY — while the requests and
//! tunnels in flight are served to completion. The process exits as soon as nothing is in
//! flight, or when the period ends.

use std::sync::atomic::{AtomicBool, Ordering};
use std::time::Duration;

use meshwork_runtime::drain::{Drain, Drained};
use tracing::{info, warn};

/// Istio's default `terminationDrainDuration`.
pub const DEFAULT_DRAIN: &str = "5s";

#[derive(Debug, thiserror::Error)]
#[error("{value:?} is not a duration: want one such as 5s, 1500ms or 1m")]
pub struct DurationError {
    value: String,
}

/// Parses `5s`, `1.5s`, `1500ms`, `1m` (a bare number is seconds).
pub fn parse_duration(s: &str) -> Result<Duration, DurationError> {
    let err = || DurationError {
        value: s.to_string(),
    };
    let t = s.trim();
    let split = t
        .find(|c: char| !(c.is_ascii_digit() || c == '.'))
        .unwrap_or(t.len());
    let (num, unit) = t.split_at(split);
    let n: f64 = num.parse().map_err(|_| err())?;
    let secs = match unit {
        "ms" => n / 1000.0,
        "" | "s" => n,
        "m" => n * 60.0,
        "h" => n * 3600.0,
        _ => return Err(err()),
    };
    Duration::try_from_secs_f64(secs).map_err(|_| err())
}

/// Waits for SIGTERM or SIGINT.
pub async fn signal() {
    use tokio::signal::unix::{signal, SignalKind};
    match signal(SignalKind::terminate()) {
        Ok(mut term) => {
            tokio::select! {
                _ = term.recv() => info!("SIGTERM"),
                _ = tokio::signal::ctrl_c() => info!("SIGINT"),
            }
        }
        Err(e) => {
            warn!("cannot watch for SIGTERM ({e}); stopping on SIGINT only");
            let _ = tokio::signal::ctrl_c().await;
        }
    }
}

/// Drains: readiness off (`ready` false), then [`Drain::run`] for at most `period`.
pub async fn drain(drain: &Drain, ready: &AtomicBool, period: Duration) -> Drained {
    ready.store(false, Ordering::Release);
    info!(
        ?period,
        in_flight = drain.in_flight(),
        "draining: readiness off, listeners closed, serving what is in flight"
    );
    let outcome = drain.run(period).await;
    match outcome {
        Drained::Idle(after) => info!(?after, "drained"),
        Drained::DeadlinePassed { remaining } => warn!(
            remaining,
            "drain period over; closing the connections still open"
        ),
    }
    outcome
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn durations() {
        for (s, want) in [
            ("5s", Duration::from_secs(5)),
            ("5", Duration::from_secs(5)),
            ("1.5s", Duration::from_millis(1500)),
            ("1500ms", Duration::from_millis(1500)),
            ("2m", Duration::from_secs(120)),
            ("0s", Duration::ZERO),
        ] {
            assert_eq!(parse_duration(s).unwrap(), want, "{s}");
        }
        for bad in ["", "s", "-1s", "5x", "1..2s", "5 s"] {
            let e = parse_duration(bad).unwrap_err().to_string();
            assert!(e.contains("is not a duration"), "{bad}: {e}");
        }
    }

    #[tokio::test(start_paused = true)]
    async fn readiness_goes_off_and_an_idle_drain_ends_at_once() {
        let ready = AtomicBool::new(true);
        let d = Drain::new();
        let got = drain(&d, &ready, Duration::from_secs(5)).await;
        assert_eq!(got, Drained::Idle(Duration::ZERO));
        assert!(!ready.load(Ordering::Acquire));
    }
}

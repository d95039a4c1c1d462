//! Retry policy: which outcomes are retried, how many times, and Envoy's jittered exponential
//! backoff (base 25 ms, capped at 10× base).

use std::time::Duration;

use meshwork_model::pb::config as pb;
use rand::Rng;

/// What one attempt produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Attempt {
    Response {
        status: u16,
        grpc_status: Option<u32>,
    },
    ConnectFailure,
    /// The connection or stream broke before a response.
    Reset,
    /// HTTP/2 REFUSED_STREAM.
    RefusedStream,
    /// The per-try timeout fired.
    PerTryTimeout,
    /// A connection-pool limit was hit; never retried.
    Overflow,
}

#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct RetryOn {
    pub five_xx: bool,
    pub gateway_error: bool,
    pub reset: bool,
    pub connect_failure: bool,
    pub refused_stream: bool,
    pub retriable_4xx: bool,
    pub retriable_status_codes: bool,
    pub codes: Vec<u16>,
    /// gRPC statuses (cancelled, deadline-exceeded, internal, resource-exhausted, unavailable).
    pub grpc: Vec<u32>,
}

impl RetryOn {
    /// Parses Istio's `retryOn` tokens; unknown tokens are reported back.
    pub fn parse<'a>(tokens: impl IntoIterator<Item = &'a str>) -> (RetryOn, Vec<String>) {
        let mut on = RetryOn::default();
        let mut unknown = Vec::new();
        for t in tokens.into_iter().flat_map(|t| t.split(',')).map(str::trim) {
            match t {
                "" => {}
                "5xx" => on.five_xx = true,
                "gateway-error" => on.gateway_error = true,
                "reset" | "reset-before-request" => on.reset = true,
                "connect-failure" => on.connect_failure = true,
                "refused-stream" => on.refused_stream = true,
                "retriable-4xx" => on.retriable_4xx = true,
                "retriable-status-codes" => on.retriable_status_codes = true,
                "cancelled" => on.grpc.push(1),
                "deadline-exceeded" => on.grpc.push(4),
                "resource-exhausted" => on.grpc.push(8),
                "internal" => on.grpc.push(13),
                "unavailable" => on.grpc.push(14),
                other => match other.parse::<u16>() {
                    Ok(code) if (100..600).contains(&code) => {
                        on.codes.push(code);
                        on.retriable_status_codes = true;
                    }
                    _ => unknown.push(other.to_string()),
                },
            }
        }
        (on, unknown)
    }

    pub fn should_retry(&self, a: Attempt) -> bool {
        match a {
            Attempt::Response {
                status,
                grpc_status,
            } => {
                (self.five_xx && (500..600).contains(&status))
                    || (self.gateway_error && matches!(status, 502..=504))
                    || (self.retriable_4xx && status == 409)
                    || (self.retriable_status_codes && self.codes.contains(&status))
                    || grpc_status.is_some_and(|g| self.grpc.contains(&g))
            }
            Attempt::ConnectFailure => self.five_xx || self.gateway_error || self.connect_failure,
            Attempt::Reset => self.five_xx || self.gateway_error || self.reset,
            Attempt::RefusedStream => self.five_xx || self.refused_stream,
            Attempt::PerTryTimeout => self.five_xx || self.gateway_error || self.reset,
            Attempt::Overflow => false,
        }
    }
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct RetryPolicy {
    /// Retries after the first attempt.
    pub retries: u32,
    pub per_try_timeout: Option<Duration>,
    pub on: RetryOn,
    pub base_interval: Duration,
}

pub const DEFAULT_BASE_INTERVAL: Duration = Duration::from_millis(25);

impl RetryPolicy {
    /// From a route's retries; `None` gets Istio's default (2 retries on connect-failure,
    /// refused-stream, unavailable, cancelled and 503).
    pub fn from_pb(r: Option<&pb::Retry>) -> (RetryPolicy, Vec<String>) {
        let Some(r) = r else {
            let (on, _) = RetryOn::parse([
                "connect-failure,refused-stream,unavailable,cancelled,retriable-status-codes,503",
            ]);
            return (
                RetryPolicy {
                    retries: 2,
                    per_try_timeout: None,
                    on,
                    base_interval: DEFAULT_BASE_INTERVAL,
                },
                Vec::new(),
            );
        };
        let (on, unknown) = RetryOn::parse(r.retry_on.iter().map(String::as_str));
        let policy = RetryPolicy {
            retries: r.attempts,
            per_try_timeout: (r.per_try_timeout_ms > 0)
                .then(|| Duration::from_millis(r.per_try_timeout_ms)),
            on,
            base_interval: if r.backoff_ms > 0 {
                Duration::from_millis(r.backoff_ms)
            } else {
                DEFAULT_BASE_INTERVAL
            },
        };
        (policy, unknown)
    }

    /// Backoff before retry number `n` (1-based): uniform in [0, (2^n - 1) × base], capped at
    /// 10 × base.
    pub fn backoff<R: Rng + ?Sized>(&self, n: u32, rng: &mut R) -> Duration {
        let base = self.base_interval.as_millis().max(1) as u64;
        let max = base * 10;
        let factor = (1u64 << n.min(20)) - 1;
        let ceiling = base.saturating_mul(factor).min(max);
        Duration::from_millis(rng.random_range(0..=ceiling))
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    fn resp(status: u16) -> Attempt {
        Attempt::Response {
            status,
            grpc_status: None,
        }
    }

    #[test]
    fn seed_policy() {
        let (p, unknown) = RetryPolicy::from_pb(Some(&pb::Retry {
            attempts: 3,
            per_try_timeout_ms: 3000,
            retry_on: vec!["5xx,reset,connect-failure,refused-stream".into()],
            ..Default::default()
        }));
        assert!(unknown.is_empty());
        assert_eq!(p.retries, 3);
        assert_eq!(p.per_try_timeout, Some(Duration::from_secs(3)));
        for a in [
            resp(500),
            resp(503),
            Attempt::Reset,
            Attempt::ConnectFailure,
            Attempt::RefusedStream,
            Attempt::PerTryTimeout,
        ] {
            assert!(p.on.should_retry(a), "{a:?}");
        }
        for a in [resp(200), resp(404), resp(409), Attempt::Overflow] {
            assert!(!p.on.should_retry(a), "{a:?}");
        }
    }

    #[test]
    fn every_token() {
        let (on, unknown) = RetryOn::parse([
            "gateway-error",
            "retriable-4xx, 418",
            "unavailable",
            "bogus",
        ]);
        assert_eq!(unknown, ["bogus"]);
        assert!(on.should_retry(resp(502)));
        assert!(!on.should_retry(resp(500)));
        assert!(on.should_retry(resp(409)));
        assert!(on.should_retry(resp(418)));
        assert!(on.should_retry(Attempt::Response {
            status: 200,
            grpc_status: Some(14)
        }));
        assert!(!on.should_retry(Attempt::RefusedStream));
        let (only_reset, _) = RetryOn::parse(["reset"]);
        assert!(only_reset.should_retry(Attempt::Reset));
        assert!(!only_reset.should_retry(Attempt::ConnectFailure));
        assert!(!only_reset.should_retry(resp(503)));
    }

    #[test]
    fn istio_default() {
        let (p, _) = RetryPolicy::from_pb(None);
        assert_eq!(p.retries, 2);
        assert!(p.on.should_retry(resp(503)));
        assert!(!p.on.should_retry(resp(500)));
        assert!(p.on.should_retry(Attempt::ConnectFailure));
        let (none, _) = RetryPolicy::from_pb(Some(&pb::Retry::default()));
        assert_eq!(none.retries, 0);
    }

    #[test]
    fn backoff_bounds() {
        let (p, _) = RetryPolicy::from_pb(None);
        let mut rng = rand::rngs::StdRng::seed_from_u64(3);
        for n in 1..30 {
            for _ in 0..50 {
                let b = p.backoff(n, &mut rng);
                let ceiling = (25 * ((1u64 << n.min(20)) - 1)).min(250);
                assert!(b <= Duration::from_millis(ceiling), "{n}: {b:?}");
            }
        }
        // Jittered: not constant.
        let draws: std::collections::HashSet<_> = (0..20).map(|_| p.backoff(3, &mut rng)).collect();
        assert!(draws.len() > 5);
    }
}

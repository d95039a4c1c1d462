//! Fault injection: fixed delays and aborts, each applied to a percentage of requests.

use std::time::Duration;

use meshwork_model::pb::config as pb;
use rand::Rng;

/// What to do to this request.
#[derive(Debug, Clone, Default, PartialEq)]
pub struct Injected {
    pub delay: Option<Duration>,
    /// HTTP status to abort with.
    pub abort_status: Option<u16>,
    /// gRPC status to abort with (answered as HTTP 200 with `grpc-status`).
    pub abort_grpc: Option<u32>,
}

fn roll<R: Rng + ?Sized>(percentage: f64, rng: &mut R) -> bool {
    if percentage >= 100.0 {
        return true;
    }
    percentage > 0.0 && rng.random_range(0.0..100.0) < percentage
}

/// Decides the faults for one request.
pub fn decide<R: Rng + ?Sized>(f: &pb::Fault, rng: &mut R) -> Injected {
    let mut out = Injected::default();
    if let Some(d) = &f.delay {
        if d.fixed_delay_ms > 0 && roll(d.percentage, rng) {
            out.delay = Some(Duration::from_millis(d.fixed_delay_ms));
        }
    }
    if let Some(a) = &f.abort {
        if roll(a.percentage, rng) {
            if a.grpc_status > 0 {
                out.abort_grpc = Some(a.grpc_status);
            } else if (200..600).contains(&a.http_status) {
                out.abort_status = Some(a.http_status as u16);
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use rand::SeedableRng;

    #[test]
    fn percentages() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(9);
        let f = pb::Fault {
            delay: Some(pb::fault::Delay {
                fixed_delay_ms: 500,
                percentage: 100.0,
            }),
            abort: Some(pb::fault::Abort {
                http_status: 503,
                grpc_status: 0,
                percentage: 20.0,
            }),
        };
        let mut aborts = 0;
        for _ in 0..5_000 {
            let i = decide(&f, &mut rng);
            assert_eq!(i.delay, Some(Duration::from_millis(500)));
            if i.abort_status == Some(503) {
                aborts += 1;
            }
        }
        assert!((850..1150).contains(&aborts), "{aborts}");
        let none = pb::Fault {
            delay: Some(pb::fault::Delay {
                fixed_delay_ms: 5,
                percentage: 0.0,
            }),
            abort: Some(pb::fault::Abort {
                http_status: 99,
                grpc_status: 0,
                percentage: 100.0,
            }),
        };
        assert_eq!(decide(&none, &mut rng), Injected::default());
        let grpc = pb::Fault {
            delay: None,
            abort: Some(pb::fault::Abort {
                http_status: 0,
                grpc_status: 14,
                percentage: 100.0,
            }),
        };
        assert_eq!(decide(&grpc, &mut rng).abort_grpc, Some(14));
    }
}

//! Outlier detection (passive health checking) per cluster, timed the way Envoy does it for
//! Istio's `outlierDetection`:
//!
//! - **Ejection happens on the event**: the response that brings a host to
//!   `consecutive5xxErrors` 5xx (or `consecutiveGatewayErrors` 502/503/504; connect
//!   failures, resets and timeouts count as both, unless `splitExternalLocalOriginErrors`
//!   counts them apart against `consecutiveLocalOriginFailures`, default 5, where any
//!   response resets that count) ejects it at once, unless that would take
//!   the ejected share of the cluster above `maxEjectionPercent`
//!   (`(ejected + 1) / hosts > max%`: then the host stays in and its count restarts).
//! - **Un-ejection happens on `interval` ticks** (counted from the detector's creation): at
//!   the first tick when `baseEjectionTime × multiplier` has passed since the ejection, so
//!   the effective ejection time rounds up to the interval. The multiplier grows by one per
//!   ejection and shrinks by one for every tick the host spends un-ejected; the ejection time
//!   is capped at `max(300 s, baseEjectionTime)` (Envoy's `max_ejection_time` default).
//! - **`minHealthPercent`** is Envoy's panic threshold: when fewer than that percentage of
//!   the hosts are un-ejected, outlier detection is ignored and all hosts are balanced over
//!   (0, Istio's default, never panics).
//!
//! Ticks are evaluated lazily (whenever the detector is consulted, all ticks due since the
//! last look are applied in order), which is exact and needs no timer task.

use meshwork_runtime::sync::LockExt;
use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::{Mutex, MutexGuard};
use std::time::Duration;

use meshwork_model::pb::config as pb;
use tokio::time::Instant;
use tracing::info;

/// Envoy's default `max_ejection_time`.
const MAX_EJECTION_TIME: Duration = Duration::from_secs(300);

#[derive(Debug, Clone, PartialEq, Eq)]
pub struct OutlierConfig {
    /// 0 disables.
    pub consecutive_5xx: u32,
    /// 0 disables.
    pub consecutive_gateway: u32,
    pub interval: Duration,
    pub base_ejection: Duration,
    pub max_ejection_percent: u32,
    pub min_health_percent: u32,
    /// `splitExternalLocalOriginErrors`: local failures count only against
    /// `consecutive_local_origin`.
    pub split_local_origin: bool,
    pub consecutive_local_origin: u32,
}

impl OutlierConfig {
    /// `None` when outlier detection is not configured. Zero durations/percentages take
    /// Istio's defaults (interval 10 s, base ejection 30 s, max ejection 10%).
    pub fn from_pb(o: Option<&pb::OutlierDetection>) -> Option<Self> {
        let o = o?;
        let split = o.split_external_local_origin_errors;
        if o.consecutive_5xx_errors == 0 && o.consecutive_gateway_errors == 0 && !split {
            return None;
        }
        let ms = |v: u64, d: u64| Duration::from_millis(if v == 0 { d } else { v });
        Some(OutlierConfig {
            consecutive_5xx: o.consecutive_5xx_errors,
            consecutive_gateway: o.consecutive_gateway_errors,
            interval: ms(o.interval_ms, 10_000),
            base_ejection: ms(o.base_ejection_time_ms, 30_000),
            max_ejection_percent: if o.max_ejection_percent == 0 {
                10
            } else {
                o.max_ejection_percent.min(100)
            },
            min_health_percent: o.min_health_percent.min(100),
            split_local_origin: split,
            consecutive_local_origin: if o.consecutive_local_origin_failures == 0 {
                5
            } else {
                o.consecutive_local_origin_failures
            },
        })
    }

    fn ejection_time(&self, multiplier: u32) -> Duration {
        (self.base_ejection * multiplier).min(MAX_EJECTION_TIME.max(self.base_ejection))
    }

    /// The largest multiplier whose ejection time is not above the cap.
    fn max_multiplier(&self) -> u32 {
        let cap = MAX_EJECTION_TIME.max(self.base_ejection).as_millis();
        u32::try_from(cap / self.base_ejection.as_millis().max(1))
            .unwrap_or(u32::MAX)
            .max(1)
    }
}

/// What an attempt against a host produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    Status(u16),
    /// Connect failure, reset or timeout: counted as a gateway error (and a 5xx).
    LocalFailure,
}

#[derive(Debug, Default, Clone)]
struct Host {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    consecutive_local: u32,
    /// When the current ejection started.
    ejected_at: Option<Instant>,
    /// Envoy's ejection time backoff.
    multiplier: u32,
    /// Ejections so far.
    ejections: u32,
}

/// One host's outlier state, for the admin endpoint.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct HostState {
    pub ejected: bool,
    /// Time until the tick that returns the host, when ejected.
    #[serde(skip_serializing_if = "Option::is_none")]
    pub ejected_for_ms: Option<u64>,
    pub ejections: u32,
    pub multiplier: u32,
    pub consecutive_5xx: u32,
    pub consecutive_gateway_errors: u32,
    pub consecutive_local_origin_failures: u32,
}

#[derive(Debug)]
struct Hosts {
    map: HashMap<SocketAddr, Host>,
    /// Ticks applied so far (tick k is at `created + k × interval`).
    ticks: u64,
}

#[derive(Debug)]
pub struct Outlier {
    cfg: OutlierConfig,
    created: Instant,
    hosts: Mutex<Hosts>,
}

impl Outlier {
    pub fn new(cfg: OutlierConfig) -> Self {
        Outlier {
            cfg,
            created: Instant::now(),
            hosts: Mutex::new(Hosts {
                map: HashMap::new(),
                ticks: 0,
            }),
        }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.cfg
    }

    fn tick_at(&self, k: u64) -> Instant {
        self.created
            + self
                .cfg
                .interval
                .saturating_mul(u32::try_from(k).unwrap_or(u32::MAX))
    }

    /// The state with every interval tick due by `now` applied.
    fn at(&self, now: Instant) -> MutexGuard<'_, Hosts> {
        let mut hosts = self.hosts.lock_or_recover();
        let interval = self.cfg.interval.as_nanos().max(1);
        let due = u64::try_from(now.saturating_duration_since(self.created).as_nanos() / interval)
            .unwrap_or(u64::MAX);
        let last = hosts.ticks;
        if due <= last {
            return hosts;
        }
        for h in hosts.map.values_mut() {
            match h.ejected_at {
                Some(at) => {
                    let back = at + self.cfg.ejection_time(h.multiplier);
                    // First tick after `last` at or after `back`.
                    let since = back.saturating_duration_since(self.created).as_nanos();
                    let first = u64::try_from(since.div_ceil(interval))
                        .unwrap_or(u64::MAX)
                        .max(last + 1);
                    if first <= due {
                        h.ejected_at = None;
                        // Un-ejected on tick `first`; every later tick decrements.
                        let healthy = u32::try_from(due - first).unwrap_or(u32::MAX);
                        h.multiplier = h.multiplier.saturating_sub(healthy);
                        info!(ejections = h.ejections, "outlier: host returned");
                    }
                }
                None => {
                    let healthy = u32::try_from(due - last).unwrap_or(u32::MAX);
                    h.multiplier = h.multiplier.saturating_sub(healthy);
                }
            }
        }
        hosts.ticks = due;
        hosts
    }

    /// Records an attempt's result; `total_hosts` is the cluster size now.
    pub fn record(&self, addr: SocketAddr, result: Observation, total_hosts: usize) {
        let now = Instant::now();
        let mut hosts = self.at(now);
        let (is_5xx, is_gw) = match result {
            Observation::Status(s) => ((500..600).contains(&s), matches!(s, 502..=504)),
            Observation::LocalFailure => (true, true),
        };
        let ejected_now = hosts
            .map
            .values()
            .filter(|h| h.ejected_at.is_some())
            .count();
        let h = hosts.map.entry(addr).or_default();
        if h.ejected_at.is_some() {
            return; // a late answer from a host already ejected
        }
        let local = result == Observation::LocalFailure;
        if self.cfg.split_local_origin && local {
            h.consecutive_local += 1;
        } else {
            if self.cfg.split_local_origin {
                h.consecutive_local = 0; // the upstream answered
            }
            if is_5xx {
                h.consecutive_5xx += 1;
            } else {
                h.consecutive_5xx = 0;
            }
            if is_gw {
                h.consecutive_gateway += 1;
            } else {
                h.consecutive_gateway = 0;
            }
        }
        let trip = (self.cfg.consecutive_5xx > 0 && h.consecutive_5xx >= self.cfg.consecutive_5xx)
            || (self.cfg.consecutive_gateway > 0
                && h.consecutive_gateway >= self.cfg.consecutive_gateway)
            || (self.cfg.split_local_origin
                && h.consecutive_local >= self.cfg.consecutive_local_origin);
        if !trip {
            return;
        }
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        h.consecutive_local = 0;
        let total = total_hosts.max(1);
        if (ejected_now + 1) * 100 > total * self.cfg.max_ejection_percent as usize {
            info!(%addr, ejected_now, total, "outlier: not ejecting, maxEjectionPercent reached");
            return;
        }
        h.multiplier = (h.multiplier + 1).min(self.cfg.max_multiplier());
        h.ejections += 1;
        h.ejected_at = Some(now);
        let duration = self.cfg.ejection_time(h.multiplier);
        info!(%addr, ejections = h.ejections, ?duration, "outlier: host ejected");
    }

    /// Whether a host is currently ejected.
    pub fn ejected(&self, addr: &SocketAddr) -> bool {
        let hosts = self.at(Instant::now());
        hosts.map.get(addr).is_some_and(|h| h.ejected_at.is_some())
    }

    /// A host's state now (a host never seen is healthy with no history).
    pub fn state(&self, addr: &SocketAddr) -> HostState {
        let now = Instant::now();
        let hosts = self.at(now);
        let h = hosts.map.get(addr).cloned().unwrap_or_default();
        let ejected_for_ms = h.ejected_at.map(|at| {
            let back = at + self.cfg.ejection_time(h.multiplier);
            // The tick that will return it.
            let interval = self.cfg.interval.as_nanos().max(1);
            let since = back.saturating_duration_since(self.created).as_nanos();
            let k = u64::try_from(since.div_ceil(interval))
                .unwrap_or(u64::MAX)
                .max(hosts.ticks + 1);
            let ms = self.tick_at(k).saturating_duration_since(now).as_millis();
            u64::try_from(ms).unwrap_or(u64::MAX)
        });
        HostState {
            ejected: h.ejected_at.is_some(),
            ejected_for_ms,
            ejections: h.ejections,
            multiplier: h.multiplier,
            consecutive_5xx: h.consecutive_5xx,
            consecutive_gateway_errors: h.consecutive_gateway,
            consecutive_local_origin_failures: h.consecutive_local,
        }
    }

    /// The hosts to balance over: the non-ejected ones, or all of them when fewer than
    /// `minHealthPercent` are healthy (panic mode).
    pub fn filter<T>(&self, hosts: Vec<T>, addr: impl Fn(&T) -> SocketAddr) -> Vec<T> {
        let state = self.at(Instant::now());
        let healthy: Vec<bool> = hosts
            .iter()
            .map(|h| {
                state
                    .map
                    .get(&addr(h))
                    .is_none_or(|s| s.ejected_at.is_none())
            })
            .collect();
        drop(state);
        let total = hosts.len();
        let n = healthy.iter().filter(|h| **h).count();
        if total > 0 && n * 100 < total * self.cfg.min_health_percent as usize {
            return hosts;
        }
        hosts
            .into_iter()
            .zip(healthy)
            .filter_map(|(h, ok)| ok.then_some(h))
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn cfg() -> OutlierConfig {
        OutlierConfig::from_pb(Some(&pb::OutlierDetection {
            consecutive_5xx_errors: 3,
            interval_ms: 30_000,
            base_ejection_time_ms: 60_000,
            max_ejection_percent: 50,
            min_health_percent: 0,
            ..Default::default()
        }))
        .unwrap()
    }

    fn addr(p: u16) -> SocketAddr {
        SocketAddr::from(([127, 0, 0, 1], p))
    }

    fn fail(o: &Outlier, a: SocketAddr, n: usize, total: usize) {
        for _ in 0..n {
            o.record(a, Observation::Status(503), total);
        }
    }

    #[test]
    fn defaults_and_disabled() {
        assert!(OutlierConfig::from_pb(None).is_none());
        assert!(OutlierConfig::from_pb(Some(&pb::OutlierDetection::default())).is_none());
        let c = OutlierConfig::from_pb(Some(&pb::OutlierDetection {
            consecutive_gateway_errors: 2,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(c.base_ejection, Duration::from_secs(30));
        assert_eq!(c.max_ejection_percent, 10);
    }

    #[tokio::test(start_paused = true)]
    async fn ejects_after_consecutive_5xx_and_returns() {
        let o = Outlier::new(cfg());
        fail(&o, addr(1), 2, 4);
        o.record(addr(1), Observation::Status(200), 4);
        fail(&o, addr(1), 2, 4);
        assert!(!o.ejected(&addr(1)), "a success resets the count");
        fail(&o, addr(1), 1, 4);
        assert!(o.ejected(&addr(1)));
        tokio::time::advance(Duration::from_secs(59)).await;
        assert!(o.ejected(&addr(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!o.ejected(&addr(1)), "back after baseEjectionTime");
        // Second ejection right away lasts twice as long.
        fail(&o, addr(1), 3, 4);
        tokio::time::advance(Duration::from_secs(119)).await;
        assert!(o.ejected(&addr(1)));
        tokio::time::advance(Duration::from_secs(1)).await;
        assert!(!o.ejected(&addr(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn multiplier_decays_while_healthy() {
        let o = Outlier::new(cfg());
        fail(&o, addr(1), 3, 4);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!o.ejected(&addr(1)));
        // Healthy for one more tick (t = 90): the multiplier is back to 1.
        tokio::time::advance(Duration::from_secs(31)).await;
        fail(&o, addr(1), 3, 4);
        assert_eq!(o.state(&addr(1)).multiplier, 1);
        // Ejected at t = 91 for 60 s: returned on the first tick after t = 151, t = 180.
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(
            o.ejected(&addr(1)),
            "un-ejection waits for the interval tick"
        );
        assert_eq!(o.state(&addr(1)).ejected_for_ms, Some(29_000));
        tokio::time::advance(Duration::from_secs(29)).await;
        assert!(!o.ejected(&addr(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_is_immediate_and_return_rounds_up_to_the_interval() {
        let o = Outlier::new(cfg());
        // Ejected mid-interval, on the third failure itself.
        tokio::time::advance(Duration::from_secs(10)).await;
        fail(&o, addr(1), 2, 4);
        assert!(!o.state(&addr(1)).ejected);
        assert_eq!(o.state(&addr(1)).consecutive_5xx, 2);
        fail(&o, addr(1), 1, 4);
        let s = o.state(&addr(1));
        assert!(
            s.ejected,
            "ejected on the event, not at the next pick or tick"
        );
        assert_eq!((s.ejections, s.multiplier), (1, 1));
        // 60 s from t = 10 is t = 70; ticks are at 30, 60, 90: back at 90.
        assert_eq!(s.ejected_for_ms, Some(80_000));
        tokio::time::advance(Duration::from_secs(70)).await;
        assert!(o.ejected(&addr(1)), "t = 80");
        tokio::time::advance(Duration::from_secs(10)).await;
        assert!(!o.ejected(&addr(1)), "t = 90");
        // Results arriving for an ejected host do not count.
        let o = Outlier::new(cfg());
        fail(&o, addr(2), 3, 4);
        fail(&o, addr(2), 5, 4);
        assert_eq!(o.state(&addr(2)).ejections, 1);
    }

    #[tokio::test(start_paused = true)]
    async fn ejection_time_is_capped_at_300s() {
        let o = Outlier::new(OutlierConfig {
            base_ejection: Duration::from_secs(100),
            interval: Duration::from_secs(1),
            max_ejection_percent: 100,
            ..cfg()
        });
        for round in 1..=5u32 {
            fail(&o, addr(1), 3, 1);
            let s = o.state(&addr(1));
            assert_eq!(s.ejections, round);
            let expect = 100 * round.min(3);
            assert_eq!(
                s.ejected_for_ms,
                Some(u64::from(expect) * 1000),
                "round {round}"
            );
            tokio::time::advance(Duration::from_secs(u64::from(expect))).await;
            assert!(!o.ejected(&addr(1)));
        }
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent_counts_the_host_being_ejected() {
        // Envoy: eject only if (ejected + 1) / hosts <= max%. 50% of 3 hosts is one host.
        let o = Outlier::new(cfg());
        let hosts: Vec<SocketAddr> = (1..=3).map(addr).collect();
        for h in &hosts {
            fail(&o, *h, 3, 3);
        }
        assert_eq!(hosts.iter().filter(|h| o.ejected(h)).count(), 1);
        // A host left in restarts its count.
        assert_eq!(o.state(&hosts[1]).consecutive_5xx, 0);
    }

    #[tokio::test(start_paused = true)]
    async fn gateway_errors_and_local_failures() {
        let o = Outlier::new(OutlierConfig {
            consecutive_5xx: 0,
            consecutive_gateway: 2,
            ..cfg()
        });
        o.record(addr(1), Observation::Status(500), 2);
        o.record(addr(1), Observation::Status(500), 2);
        assert!(!o.ejected(&addr(1)), "500 is not a gateway error");
        o.record(addr(1), Observation::LocalFailure, 2);
        o.record(addr(1), Observation::Status(502), 2);
        assert!(o.ejected(&addr(1)));
    }

    #[tokio::test(start_paused = true)]
    async fn split_local_origin_errors_count_apart() {
        let c = OutlierConfig::from_pb(Some(&pb::OutlierDetection {
            consecutive_5xx_errors: 3,
            max_ejection_percent: 100,
            split_external_local_origin_errors: true,
            ..Default::default()
        }))
        .unwrap();
        assert_eq!(c.consecutive_local_origin, 5, "Istio's default");
        let o = Outlier::new(c);
        // Two 503s and local failures in between: the 5xx run is not broken nor extended.
        o.record(addr(1), Observation::Status(503), 2);
        for _ in 0..4 {
            o.record(addr(1), Observation::LocalFailure, 2);
        }
        o.record(addr(1), Observation::Status(503), 2);
        let s = o.state(&addr(1));
        assert!(!s.ejected);
        assert_eq!(
            (s.consecutive_5xx, s.consecutive_local_origin_failures),
            (2, 0)
        );
        // A response resets the local count; five local failures in a row eject.
        for _ in 0..5 {
            o.record(addr(2), Observation::LocalFailure, 2);
        }
        assert!(o.ejected(&addr(2)));
        // Without the split, local failures are 5xx.
        let o = Outlier::new(cfg());
        for _ in 0..3 {
            o.record(addr(3), Observation::LocalFailure, 4);
        }
        assert!(o.ejected(&addr(3)));
    }

    #[tokio::test(start_paused = true)]
    async fn max_ejection_percent() {
        let o = Outlier::new(cfg());
        let hosts: Vec<SocketAddr> = (1..=4).map(addr).collect();
        for h in &hosts {
            fail(&o, *h, 3, 4);
        }
        let ejected = hosts.iter().filter(|h| o.ejected(h)).count();
        assert_eq!(ejected, 2, "50% of 4 hosts");
        assert_eq!(o.filter(hosts.clone(), |a| *a).len(), 2);
    }

    #[tokio::test(start_paused = true)]
    async fn min_health_percent_panics_to_all_hosts() {
        let o = Outlier::new(OutlierConfig {
            min_health_percent: 75,
            ..cfg()
        });
        let hosts: Vec<SocketAddr> = (1..=2).map(addr).collect();
        fail(&o, hosts[0], 3, 2);
        assert!(o.ejected(&hosts[0]));
        // 1 of 2 healthy = 50% < 75%: balance over all.
        assert_eq!(o.filter(hosts.clone(), |a| *a).len(), 2);
        // At or above the threshold the ejected host is left out.
        let o = Outlier::new(OutlierConfig {
            min_health_percent: 50,
            ..cfg()
        });
        fail(&o, hosts[0], 3, 2);
        assert_eq!(o.filter(hosts.clone(), |a| *a), vec![hosts[1]]);
        // 0 never panics.
        let o = Outlier::new(OutlierConfig {
            max_ejection_percent: 100,
            ..cfg()
        });
        fail(&o, hosts[0], 3, 2);
        fail(&o, hosts[1], 3, 2);
        assert!(o.filter(hosts.clone(), |a| *a).is_empty());
    }
}

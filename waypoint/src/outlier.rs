//! Outlier detection (passive health checking) per cluster, as Istio configures Envoy:
//! consecutive 5xx / gateway errors eject a host for `baseEjectionTime × ejections`, never
//! more than `maxEjectionPercent` of the hosts; below `minHealthPercent` healthy hosts the
//! cluster balances over all hosts (panic mode).

use std::collections::HashMap;
use std::net::SocketAddr;
use std::sync::Mutex;
use std::time::Duration;

use meshwork_model::pb::config as pb;
use tokio::time::Instant;
use tracing::info;

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
}

impl OutlierConfig {
    /// `None` when outlier detection is not configured. Zero durations/percentages take
    /// Istio's defaults (interval 10 s, base ejection 30 s, max ejection 10%).
    pub fn from_pb(o: Option<&pb::OutlierDetection>) -> Option<Self> {
        let o = o?;
        if o.consecutive_5xx_errors == 0 && o.consecutive_gateway_errors == 0 {
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
        })
    }
}

/// What an attempt against a host produced.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Observation {
    Status(u16),
    /// Connect failure, reset or timeout: counted as a gateway error (and a 5xx).
    LocalFailure,
}

#[derive(Debug, Default)]
struct Host {
    consecutive_5xx: u32,
    consecutive_gateway: u32,
    ejected_until: Option<Instant>,
    ejections: u32,
    returned_at: Option<Instant>,
}

#[derive(Debug)]
pub struct Outlier {
    cfg: OutlierConfig,
    hosts: Mutex<HashMap<SocketAddr, Host>>,
}

impl Outlier {
    pub fn new(cfg: OutlierConfig) -> Self {
        Outlier {
            cfg,
            hosts: Mutex::new(HashMap::new()),
        }
    }

    pub fn config(&self) -> &OutlierConfig {
        &self.cfg
    }

    /// Records an attempt's result; `total_hosts` is the cluster size now.
    pub fn record(&self, addr: SocketAddr, result: Observation, total_hosts: usize) {
        let now = Instant::now();
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        let (is_5xx, is_gw) = match result {
            Observation::Status(s) => ((500..600).contains(&s), matches!(s, 502..=504)),
            Observation::LocalFailure => (true, true),
        };
        let ejected_now = hosts.values().filter(|h| is_ejected(h, now)).count();
        let h = hosts.entry(addr).or_default();
        if is_ejected(h, now) {
            return;
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
        let trip = (self.cfg.consecutive_5xx > 0 && h.consecutive_5xx >= self.cfg.consecutive_5xx)
            || (self.cfg.consecutive_gateway > 0
                && h.consecutive_gateway >= self.cfg.consecutive_gateway);
        if !trip {
            return;
        }
        h.consecutive_5xx = 0;
        h.consecutive_gateway = 0;
        let total = total_hosts.max(1);
        if ejected_now * 100 >= total * self.cfg.max_ejection_percent as usize {
            info!(%addr, ejected_now, total, "outlier: not ejecting, maxEjectionPercent reached");
            return;
        }
        // The multiplier decays by one for every interval the host stayed healthy.
        if let Some(back) = h.returned_at {
            let healthy = now.saturating_duration_since(back);
            let intervals = (healthy.as_millis() / self.cfg.interval.as_millis().max(1)) as u32;
            h.ejections = h.ejections.saturating_sub(intervals);
        }
        h.ejections += 1;
        let duration = self.cfg.base_ejection * h.ejections;
        h.ejected_until = Some(now + duration);
        info!(%addr, ejections = h.ejections, ?duration, "outlier: host ejected");
    }

    /// Whether a host is currently ejected.
    pub fn ejected(&self, addr: &SocketAddr) -> bool {
        let now = Instant::now();
        let mut hosts = self.hosts.lock().unwrap_or_else(|e| e.into_inner());
        hosts.get_mut(addr).is_some_and(|h| {
            refresh(h, now);
            is_ejected(h, now)
        })
    }

    /// The hosts to balance over: the non-ejected ones, or all of them when fewer than
    /// `minHealthPercent` are healthy (panic mode).
    pub fn filter<T>(&self, hosts: Vec<T>, addr: impl Fn(&T) -> SocketAddr) -> Vec<T> {
        let total = hosts.len();
        let healthy: Vec<bool> = hosts.iter().map(|h| !self.ejected(&addr(h))).collect();
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

fn is_ejected(h: &Host, now: Instant) -> bool {
    h.ejected_until.is_some_and(|t| now < t)
}

fn refresh(h: &mut Host, now: Instant) {
    if let Some(t) = h.ejected_until {
        if now >= t {
            h.ejected_until = None;
            h.returned_at = Some(t);
        }
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
        // Healthy for more than one interval: back to the base ejection time.
        tokio::time::advance(Duration::from_secs(31)).await;
        fail(&o, addr(1), 3, 4);
        tokio::time::advance(Duration::from_secs(60)).await;
        assert!(!o.ejected(&addr(1)));
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
    }
}

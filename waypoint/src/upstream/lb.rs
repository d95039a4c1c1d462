//! Load balancing: ROUND_ROBIN, LEAST_REQUEST (power of two choices), RANDOM, and
//! consistent hashing on a ring (header, cookie, source IP or query parameter).

use meshwork_runtime::sync::LockExt;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use http::request::Parts;
use meshwork_model::pb::config as pb;
use rand::Rng;
use tokio::time::Instant;

use crate::upstream::endpoint::Endpoint;

/// The affinity cookie: its name, and what a generated one carries.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CookieSpec {
    pub name: String,
    /// `Max-Age` (0: a session cookie).
    pub ttl: std::time::Duration,
    /// `Path`, when set.
    pub path: String,
    /// Extra attributes, `(name, value)`; an empty value is a flag (`Secure`).
    pub attributes: Vec<(String, String)>,
}

impl CookieSpec {
    /// The `Set-Cookie` value for a generated cookie holding `value`.
    pub fn set_cookie(&self, value: &str) -> String {
        let mut out = format!("{}={value}", self.name);
        if !self.ttl.is_zero() {
            out.push_str(&format!("; Max-Age={}", self.ttl.as_secs().max(1)));
        }
        if !self.path.is_empty() {
            out.push_str(&format!("; Path={}", self.path));
        }
        for (n, v) in &self.attributes {
            if v.is_empty() {
                out.push_str(&format!("; {n}"));
            } else {
                out.push_str(&format!("; {n}={v}"));
            }
        }
        out.push_str("; HttpOnly");
        out
    }
}

/// What a consistent hash is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(String),
    /// A missing cookie is generated (see [`CookieSpec`]).
    Cookie(CookieSpec),
    SourceIp,
    Query(String),
}

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum LbPolicy {
    RoundRobin,
    LeastRequest,
    Random,
    ConsistentHash(HashKey),
}

impl LbPolicy {
    /// Istio's default is LEAST_REQUEST.
    pub fn from_pb(lb: Option<&pb::LoadBalancer>) -> LbPolicy {
        use pb::consistent_hash::Key;
        let Some(lb) = lb else {
            return LbPolicy::LeastRequest;
        };
        if let Some(key) = lb.consistent_hash.as_ref().and_then(|c| c.key.as_ref()) {
            let k = match key {
                Key::HttpHeaderName(h) => HashKey::Header(h.to_ascii_lowercase()),
                Key::HttpCookie(c) => {
                    let ch = lb.consistent_hash.as_ref();
                    HashKey::Cookie(CookieSpec {
                        name: c.clone(),
                        ttl: std::time::Duration::from_millis(ch.map_or(0, |h| h.cookie_ttl_ms)),
                        path: ch.map(|h| h.cookie_path.clone()).unwrap_or_default(),
                        attributes: ch
                            .iter()
                            .flat_map(|h| &h.cookie_attributes)
                            // Attributes the cookie already carries are not repeated.
                            .filter(|a| {
                                !["max-age", "path", "httponly"]
                                    .contains(&a.name.to_ascii_lowercase().as_str())
                            })
                            .map(|a| (a.name.clone(), a.value.clone()))
                            .collect(),
                    })
                }
                Key::UseSourceIp(_) => HashKey::SourceIp,
                Key::HttpQueryParameterName(q) => HashKey::Query(q.clone()),
            };
            return LbPolicy::ConsistentHash(k);
        }
        match lb.simple() {
            pb::load_balancer::Simple::RoundRobin => LbPolicy::RoundRobin,
            pb::load_balancer::Simple::Random => LbPolicy::Random,
            _ => LbPolicy::LeastRequest,
        }
    }

    /// The request's hash for consistent hashing; `None` when the key is absent (the request
    /// is then balanced randomly).
    pub fn request_hash(&self, req: &Parts, source_ip: Option<IpAddr>) -> Option<u64> {
        let LbPolicy::ConsistentHash(key) = self else {
            return None;
        };
        let value: String = match key {
            HashKey::Header(h) => req.headers.get(h)?.to_str().ok()?.to_string(),
            HashKey::Cookie(CookieSpec { name, .. }) => req
                .headers
                .get_all(http::header::COOKIE)
                .iter()
                .filter_map(|v| v.to_str().ok())
                .flat_map(|v| v.split(';'))
                .filter_map(|kv| kv.trim().split_once('='))
                .find(|(k, _)| k == name)
                .map(|(_, v)| v.to_string())?,
            HashKey::SourceIp => source_ip?.to_string(),
            HashKey::Query(q) => req
                .uri
                .query()?
                .split('&')
                .filter_map(|kv| kv.split_once('='))
                .find(|(k, _)| k == q)
                .map(|(_, v)| v.to_string())?,
        };
        Some(hash_of(&value))
    }
}

/// The cookie to generate when a cookie-hashed request has none.
impl LbPolicy {
    pub fn cookie_to_generate(&self) -> Option<&CookieSpec> {
        match self {
            LbPolicy::ConsistentHash(HashKey::Cookie(c)) => Some(c),
            _ => None,
        }
    }
}

/// The hash consistent hashing uses for a key value.
pub fn hash_str(v: &str) -> u64 {
    hash_of(v)
}

fn hash_of<T: Hash + ?Sized>(v: &T) -> u64 {
    let mut h = DefaultHasher::new();
    v.hash(&mut h);
    h.finish()
}

const VNODES: usize = 100;

#[derive(Debug)]
struct Ring {
    addrs: Vec<SocketAddr>,
    points: Vec<(u64, usize)>,
}

impl Ring {
    fn build(eps: &[Arc<Endpoint>]) -> Ring {
        let mut points = Vec::with_capacity(eps.len() * VNODES);
        for (i, e) in eps.iter().enumerate() {
            for v in 0..VNODES {
                points.push((hash_of(&(e.addr, v)), i));
            }
        }
        points.sort_unstable();
        Ring {
            addrs: eps.iter().map(|e| e.addr).collect(),
            points,
        }
    }

    fn lookup(&self, h: u64) -> Option<usize> {
        if self.points.is_empty() {
            return None;
        }
        let i = self.points.partition_point(|(p, _)| *p < h);
        Some(self.points[i % self.points.len()].1)
    }
}

/// Slow start for endpoints that join a cluster (Istio `warmup` and
/// `warmupDurationSecs`, Envoy's `slow_start_config`): for `window` after it appears, an
/// endpoint gets `max(min_fraction, (age / window) ^ (1 / aggression))` of its share of
/// ROUND_ROBIN and LEAST_REQUEST picks. Endpoints present when the cluster is created
/// start warm, as in Envoy.
#[derive(Debug, Clone, Copy, PartialEq)]
pub struct Warmup {
    pub window: Duration,
    pub min_fraction: f64,
    pub aggression: f64,
}

impl Warmup {
    /// Istio's defaults: `minimumPercent` 10, `aggression` 1.
    pub fn from_pb(lb: Option<&pb::LoadBalancer>) -> Option<Warmup> {
        let w = lb?.warmup.as_ref()?;
        (w.duration_ms > 0).then(|| Warmup {
            window: Duration::from_millis(w.duration_ms),
            min_fraction: if w.minimum_percent > 0.0 {
                (w.minimum_percent / 100.0).min(1.0)
            } else {
                0.1
            },
            aggression: if w.aggression > 0.0 {
                w.aggression
            } else {
                1.0
            },
        })
    }

    /// The fraction of its normal share an endpoint `age` old gets.
    pub fn factor(&self, age: Duration) -> f64 {
        if age >= self.window {
            return 1.0;
        }
        let t = age.as_secs_f64() / self.window.as_secs_f64();
        t.powf(1.0 / self.aggression).max(self.min_fraction)
    }
}

/// How many times a pick that landed on a warming endpoint may be drawn again.
const WARMUP_REDRAWS: usize = 8;

/// Per-cluster balancer state.
#[derive(Debug)]
pub struct Balancer {
    pub policy: LbPolicy,
    next: AtomicUsize,
    ring: Mutex<Option<Ring>>,
    warmup: Option<Warmup>,
    /// When each endpoint was first seen (`None` until the first pick: those start warm).
    seen: Mutex<Option<HashMap<SocketAddr, Instant>>>,
}

impl Balancer {
    pub fn new(policy: LbPolicy) -> Self {
        Balancer {
            policy,
            next: AtomicUsize::new(0),
            ring: Mutex::new(None),
            warmup: None,
            seen: Mutex::new(None),
        }
    }

    pub fn with_warmup(mut self, warmup: Option<Warmup>) -> Self {
        self.warmup = warmup;
        self
    }

    /// Records the cluster's endpoints (all of them, healthy or not): new ones start
    /// their warm-up, ones that left are forgotten (a return warms up again, as in Envoy).
    /// Picks see only candidates (healthy, not yet tried), so ages are kept here.
    pub fn observe(&self, all: &[Arc<Endpoint>]) {
        let Some(w) = &self.warmup else {
            return;
        };
        let now = Instant::now();
        let mut seen = self.seen.lock_or_recover();
        let first = seen.is_none();
        let map = seen.get_or_insert_with(HashMap::new);
        let born = if first {
            now.checked_sub(w.window).unwrap_or(now)
        } else {
            now
        };
        for e in all {
            map.entry(e.addr).or_insert(born);
        }
        if map.len() > all.len() {
            let live: std::collections::HashSet<SocketAddr> = all.iter().map(|e| e.addr).collect();
            map.retain(|a, _| live.contains(a));
        }
    }

    /// The warm-up factor of each endpoint of `eps`, in order (one never observed counts
    /// as warm).
    fn warmup_factors(&self, w: &Warmup, eps: &[Arc<Endpoint>]) -> Vec<f64> {
        let now = Instant::now();
        let seen = self.seen.lock_or_recover();
        eps.iter()
            .map(|e| {
                seen.as_ref()
                    .and_then(|m| m.get(&e.addr))
                    .map_or(1.0, |born| w.factor(now.saturating_duration_since(*born)))
            })
            .collect()
    }

    /// Picks an endpoint. `active` gives in-flight requests per endpoint (LEAST_REQUEST).
    pub fn pick<R: Rng + ?Sized>(
        &self,
        eps: &[Arc<Endpoint>],
        hash: Option<u64>,
        active: impl Fn(&SocketAddr) -> usize,
        rng: &mut R,
    ) -> Option<Arc<Endpoint>> {
        if eps.is_empty() {
            return None;
        }
        let one = |rng: &mut R| match &self.policy {
            LbPolicy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % eps.len(),
            _ => {
                let a = rng.random_range(0..eps.len());
                let b = rng.random_range(0..eps.len());
                if active(&eps[b].addr) < active(&eps[a].addr) {
                    b
                } else {
                    a
                }
            }
        };
        let i = match &self.policy {
            LbPolicy::RoundRobin | LbPolicy::LeastRequest => match &self.warmup {
                None => one(rng),
                Some(w) => {
                    let factors = self.warmup_factors(w, eps);
                    let mut i = one(rng);
                    for _ in 0..WARMUP_REDRAWS {
                        if rng.random::<f64>() < factors[i] {
                            break;
                        }
                        i = one(rng);
                    }
                    i
                }
            },
            LbPolicy::Random => rng.random_range(0..eps.len()),
            LbPolicy::ConsistentHash(_) => match hash {
                None => rng.random_range(0..eps.len()),
                Some(h) => {
                    let mut ring = self.ring.lock_or_recover();
                    let stale = ring
                        .as_ref()
                        .is_none_or(|r| !r.addrs.iter().eq(eps.iter().map(|e| &e.addr)));
                    if stale {
                        *ring = Some(Ring::build(eps));
                    }
                    ring.as_ref().and_then(|r| r.lookup(h)).unwrap_or(0)
                }
            },
        };
        eps.get(i).cloned()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::view::PeerName;
    use rand::SeedableRng;

    fn eps(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint {
                    addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i)),
                    identity: None,
                    name: PeerName {
                        workload: format!("w{i}"),
                        ..PeerName::unknown()
                    },
                })
            })
            .collect()
    }

    #[test]
    fn round_robin_cycles() {
        let b = Balancer::new(LbPolicy::RoundRobin);
        let e = eps(3);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let picks: Vec<u16> = (0..6)
            .map(|_| b.pick(&e, None, |_| 0, &mut rng).unwrap().addr.port())
            .collect();
        assert_eq!(picks, [9000, 9001, 9002, 9000, 9001, 9002]);
        assert!(b.pick(&[], None, |_| 0, &mut rng).is_none());
    }

    #[test]
    fn least_request_prefers_idle() {
        let b = Balancer::new(LbPolicy::LeastRequest);
        let e = eps(2);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let busy = |a: &SocketAddr| if a.port() == 9000 { 10 } else { 0 };
        let idle = (0..1000)
            .filter(|_| b.pick(&e, None, busy, &mut rng).unwrap().addr.port() == 9001)
            .count();
        // Two random choices: the busy one only wins when both choices are it (~25%).
        assert!(idle > 700, "{idle}");
    }

    #[test]
    fn random_spreads() {
        let b = Balancer::new(LbPolicy::Random);
        let e = eps(4);
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let mut seen = HashMap::new();
        for _ in 0..400 {
            *seen
                .entry(b.pick(&e, None, |_| 0, &mut rng).unwrap().addr)
                .or_insert(0) += 1;
        }
        assert_eq!(seen.len(), 4);
    }

    #[test]
    fn consistent_hash_is_sticky_and_stable() {
        let mut rng = rand::rngs::StdRng::seed_from_u64(1);
        let policy = LbPolicy::ConsistentHash(HashKey::Header("x-user".into()));
        let b = Balancer::new(policy.clone());
        let e = eps(5);
        let req = |user: &str| {
            let (parts, _) = http::Request::builder()
                .uri("/?u=1")
                .header("x-user", user)
                .header("cookie", format!("a=b; sess={user}"))
                .body(())
                .unwrap()
                .into_parts();
            parts
        };
        let mut spread = HashMap::new();
        for u in 0..200 {
            let user = format!("user-{u}");
            let h = policy.request_hash(&req(&user), None);
            let first = b.pick(&e, h, |_| 0, &mut rng).unwrap().addr;
            for _ in 0..3 {
                assert_eq!(b.pick(&e, h, |_| 0, &mut rng).unwrap().addr, first);
            }
            // Removing another endpoint does not move this key unless it was on it.
            let fewer: Vec<_> = e
                .iter()
                .filter(|x| x.addr.port() != 9004)
                .cloned()
                .collect();
            let after = b.pick(&fewer, h, |_| 0, &mut rng).unwrap().addr;
            if first.port() != 9004 {
                assert_eq!(after, first);
            }
            *spread.entry(first).or_insert(0) += 1;
        }
        assert_eq!(spread.len(), 5);
        let cookie = LbPolicy::ConsistentHash(HashKey::Cookie(CookieSpec {
            name: "sess".into(),
            ttl: std::time::Duration::ZERO,
            path: String::new(),
            attributes: Vec::new(),
        }));
        assert_eq!(
            cookie.cookie_to_generate().map(|c| c.name.as_str()),
            Some("sess")
        );
        assert!(policy.cookie_to_generate().is_none());
        assert_eq!(cookie.request_hash(&req("x"), None), Some(hash_of("x")));
        let query = LbPolicy::ConsistentHash(HashKey::Query("u".into()));
        assert_eq!(query.request_hash(&req("x"), None), Some(hash_of("1")));
        let ip = LbPolicy::ConsistentHash(HashKey::SourceIp);
        assert!(ip
            .request_hash(&req("x"), Some("10.0.0.1".parse().unwrap()))
            .is_some());
        assert!(ip.request_hash(&req("x"), None).is_none());
    }

    #[test]
    fn a_generated_cookie_carries_path_and_attributes() {
        let lb = pb::LoadBalancer {
            consistent_hash: Some(pb::ConsistentHash {
                key: Some(pb::consistent_hash::Key::HttpCookie("sess".into())),
                cookie_ttl_ms: 60_000,
                cookie_path: "/shop".into(),
                cookie_attributes: vec![
                    pb::CookieAttribute {
                        name: "SameSite".into(),
                        value: "Strict".into(),
                    },
                    pb::CookieAttribute {
                        name: "Secure".into(),
                        value: String::new(),
                    },
                    // Already said by the cookie itself: not repeated.
                    pb::CookieAttribute {
                        name: "HttpOnly".into(),
                        value: String::new(),
                    },
                ],
            }),
            ..Default::default()
        };
        let policy = LbPolicy::from_pb(Some(&lb));
        let c = policy.cookie_to_generate().unwrap();
        assert_eq!(
            c.set_cookie("abc"),
            "sess=abc; Max-Age=60; Path=/shop; SameSite=Strict; Secure; HttpOnly"
        );
    }

    #[test]
    fn warmup_factor_ramps_from_the_minimum() {
        let w = Warmup {
            window: Duration::from_secs(10),
            min_fraction: 0.1,
            aggression: 1.0,
        };
        assert_eq!(w.factor(Duration::ZERO), 0.1);
        assert!((w.factor(Duration::from_secs(5)) - 0.5).abs() < 1e-9);
        assert_eq!(w.factor(Duration::from_secs(10)), 1.0);
        let steep = Warmup {
            aggression: 2.0,
            ..w
        };
        // Aggression above 1 ramps faster early on: sqrt(0.25) = 0.5.
        assert!((steep.factor(Duration::from_millis(2500)) - 0.5).abs() < 1e-9);
        let lb = pb::LoadBalancer {
            warmup: Some(pb::Warmup {
                duration_ms: 10_000,
                ..Default::default()
            }),
            ..Default::default()
        };
        assert_eq!(Warmup::from_pb(Some(&lb)), Some(w));
        assert_eq!(Warmup::from_pb(None), None);
    }

    #[tokio::test(start_paused = true)]
    async fn a_new_endpoint_warms_up_while_the_first_ones_start_warm() {
        let w = Warmup {
            window: Duration::from_secs(10),
            min_fraction: 0.1,
            aggression: 1.0,
        };
        let b = Balancer::new(LbPolicy::RoundRobin).with_warmup(Some(w));
        let mut rng = rand::rngs::StdRng::seed_from_u64(7);
        let all = eps(2);
        let old = vec![all[0].clone()];
        let share_of_new = |rng: &mut rand::rngs::StdRng| {
            let n = 2000;
            let hits = (0..n)
                .filter(|_| b.pick(&all, None, |_| 0, rng).unwrap().addr == all[1].addr)
                .count();
            hits as f64 / n as f64
        };
        // The cluster's first endpoints are warm at once.
        b.observe(&old);
        b.pick(&old, None, |_| 0, &mut rng).unwrap();
        // The second endpoint just joined: about 10% of its 50% share.
        b.observe(&all);
        let fresh = share_of_new(&mut rng);
        assert!((0.02..0.12).contains(&fresh), "{fresh}");
        tokio::time::advance(Duration::from_secs(5)).await;
        // A pick among fewer candidates (a retry, an ejected endpoint) does not restart it.
        b.pick(&old, None, |_| 0, &mut rng).unwrap();
        b.observe(&all);
        let half = share_of_new(&mut rng);
        assert!((0.25..0.40).contains(&half), "{half}");
        tokio::time::advance(Duration::from_secs(5)).await;
        let warm = share_of_new(&mut rng);
        assert!((0.45..0.55).contains(&warm), "{warm}");

        // Without warmup, a new endpoint gets its full share at once.
        let plain = Balancer::new(LbPolicy::RoundRobin);
        plain.observe(&old);
        plain.pick(&old, None, |_| 0, &mut rng).unwrap();
        plain.observe(&all);
        let hits = (0..1000)
            .filter(|_| plain.pick(&all, None, |_| 0, &mut rng).unwrap().addr == all[1].addr)
            .count();
        assert_eq!(hits, 500);
    }
}

//! Load balancing: ROUND_ROBIN, LEAST_REQUEST (power of two choices), RANDOM, and
//! consistent hashing on a ring (header, cookie, source IP or query parameter).

use meshwork_runtime::sync::LockExt;
use std::collections::hash_map::DefaultHasher;
use std::hash::{Hash, Hasher};
use std::net::{IpAddr, SocketAddr};
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};

use http::request::Parts;
use meshwork_model::pb::config as pb;
use rand::Rng;

use crate::upstream::endpoint::Endpoint;

/// What a consistent hash is computed from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum HashKey {
    Header(String),
    /// Cookie name; a missing cookie is generated with this lifetime (0: session cookie).
    Cookie {
        name: String,
        ttl: std::time::Duration,
    },
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
                Key::HttpCookie(c) => HashKey::Cookie {
                    name: c.clone(),
                    ttl: std::time::Duration::from_millis(
                        lb.consistent_hash.as_ref().map_or(0, |h| h.cookie_ttl_ms),
                    ),
                },
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
            HashKey::Cookie { name, .. } => req
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

/// The cookie to generate when a cookie-hashed request has none: `(name, ttl)`.
impl LbPolicy {
    pub fn cookie_to_generate(&self) -> Option<(&str, std::time::Duration)> {
        match self {
            LbPolicy::ConsistentHash(HashKey::Cookie { name, ttl }) => Some((name, *ttl)),
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

/// Per-cluster balancer state.
#[derive(Debug)]
pub struct Balancer {
    pub policy: LbPolicy,
    next: AtomicUsize,
    ring: Mutex<Option<Ring>>,
}

impl Balancer {
    pub fn new(policy: LbPolicy) -> Self {
        Balancer {
            policy,
            next: AtomicUsize::new(0),
            ring: Mutex::new(None),
        }
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
        let i = match &self.policy {
            LbPolicy::RoundRobin => self.next.fetch_add(1, Ordering::Relaxed) % eps.len(),
            LbPolicy::Random => rng.random_range(0..eps.len()),
            LbPolicy::LeastRequest => {
                let a = rng.random_range(0..eps.len());
                let b = rng.random_range(0..eps.len());
                if active(&eps[b].addr) < active(&eps[a].addr) {
                    b
                } else {
                    a
                }
            }
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
    use rand::SeedableRng;
    use std::collections::HashMap;

    fn eps(n: u16) -> Vec<Arc<Endpoint>> {
        (0..n)
            .map(|i| {
                Arc::new(Endpoint {
                    addr: SocketAddr::from(([127, 0, 0, 1], 9000 + i)),
                    identity: None,
                    workload: format!("w{i}"),
                    namespace: "ns".into(),
                    labels: Default::default(),
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
        let cookie = LbPolicy::ConsistentHash(HashKey::Cookie {
            name: "sess".into(),
            ttl: std::time::Duration::ZERO,
        });
        assert_eq!(cookie.cookie_to_generate().map(|c| c.0), Some("sess"));
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
}

//! Request metric label sets and their resolved series, cached per compiled config so a
//! request whose labels were seen before neither builds 19 strings nor hashes them four
//! times into the metric families.
//!
//! A set is keyed by everything the labels are computed from: the source address and
//! identity, the upstream endpoint and the service (both by identity within the config,
//! held so they cannot be reused), the protocol, status codes and response flags.

use meshwork_runtime::sync::LockExt;
use std::collections::hash_map::DefaultHasher;
use std::collections::HashMap;
use std::hash::{Hash, Hasher};
use std::net::IpAddr;
use std::sync::{Arc, Mutex};

use meshwork_model::pb::config as pb;

use crate::request::flags::Flags;
use crate::telemetry::metrics::{RequestLabels, Series};
use crate::upstream::endpoint::Endpoint;

/// Most label sets kept; the cache starts over when full (label sets only repeat when
/// traffic does, so a churning workload costs what it cost before the cache).
pub const MAX_ENTRIES: usize = 4096;

/// What a request's labels are computed from, borrowed from the request.
#[derive(Debug, Clone, Copy)]
pub struct LabelQuery<'a> {
    pub source: Option<IpAddr>,
    pub source_identity: Option<&'a str>,
    pub upstream: Option<&'a Arc<Endpoint>>,
    /// A service of the config's snapshot (never a per-request one: those bypass the cache).
    pub service: Option<&'a pb::Service>,
    pub protocol: &'static str,
    pub status: u16,
    pub grpc_status: &'a str,
    pub flags: &'a Flags,
}

impl LabelQuery<'_> {
    fn service_addr(&self) -> Option<usize> {
        self.service.map(|s| s as *const pb::Service as usize)
    }

    fn hash(&self) -> u64 {
        let mut h = DefaultHasher::new();
        self.source.hash(&mut h);
        self.source_identity.hash(&mut h);
        self.upstream.map(Arc::as_ptr).hash(&mut h);
        self.service_addr().hash(&mut h);
        self.protocol.hash(&mut h);
        self.status.hash(&mut h);
        self.grpc_status.hash(&mut h);
        self.flags.hash(&mut h);
        h.finish()
    }

    fn matches(&self, k: &Key) -> bool {
        self.source == k.source
            && self.source_identity == k.source_identity.as_deref()
            && match (self.upstream, &k.upstream) {
                (Some(a), Some(b)) => Arc::ptr_eq(a, b),
                (None, None) => true,
                _ => false,
            }
            && self.service_addr() == k.service
            && self.protocol == k.protocol
            && self.status == k.status
            && self.grpc_status == k.grpc_status
            && self.flags == &k.flags
    }

    fn to_key(self) -> Key {
        Key {
            source: self.source,
            source_identity: self.source_identity.map(String::from),
            upstream: self.upstream.cloned(),
            service: self.service_addr(),
            protocol: self.protocol,
            status: self.status,
            grpc_status: self.grpc_status.to_string(),
            flags: self.flags.clone(),
        }
    }
}

/// An owned [`LabelQuery`]. The service is compared by address: it lives in the
/// snapshot the cache belongs to.
#[derive(Debug)]
struct Key {
    source: Option<IpAddr>,
    source_identity: Option<String>,
    upstream: Option<Arc<Endpoint>>,
    service: Option<usize>,
    protocol: &'static str,
    status: u16,
    grpc_status: String,
    flags: Flags,
}

/// One cached label set with its four series.
#[derive(Debug, Clone)]
pub struct Labeled {
    pub labels: Arc<RequestLabels>,
    pub series: Series,
}

#[derive(Debug)]
struct Slot {
    key: Key,
    value: Labeled,
}

/// Label sets of one compiled config.
#[derive(Debug, Default)]
pub struct LabelCache {
    map: Mutex<HashMap<u64, Slot>>,
}

impl LabelCache {
    /// The label set for `q`, computed with `make` and resolved with `series` when not
    /// cached (or when another set has the same hash: that one is replaced).
    pub fn get_or_insert_with(
        &self,
        q: LabelQuery<'_>,
        make: impl FnOnce() -> RequestLabels,
        series: impl FnOnce(&RequestLabels) -> Series,
    ) -> Labeled {
        let hash = q.hash();
        let mut map = self.map.lock_or_recover();
        if let Some(slot) = map.get(&hash) {
            if q.matches(&slot.key) {
                return slot.value.clone();
            }
        }
        let labels = make();
        let value = Labeled {
            series: series(&labels),
            labels: Arc::new(labels),
        };
        if map.len() >= MAX_ENTRIES {
            map.clear();
        }
        map.insert(
            hash,
            Slot {
                key: q.to_key(),
                value: value.clone(),
            },
        );
        value
    }

    pub fn len(&self) -> usize {
        self.map.lock_or_recover().len()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::request::flags;
    use crate::telemetry::metrics::Metrics;
    use meshwork_model::view::PeerName;
    use prometheus_client::registry::Registry;

    fn ep(addr: &str) -> Arc<Endpoint> {
        Arc::new(Endpoint {
            addr: addr.parse().unwrap(),
            identity: None,
            name: PeerName {
                workload: "w".into(),
                namespace: "ns".into(),
                app: "w".into(),
                version: "v1".into(),
            },
        })
    }

    #[test]
    fn reuses_a_set_only_for_the_same_inputs() {
        let mut reg = Registry::default();
        let metrics = Metrics::new(&mut reg);
        let cache = LabelCache::default();
        let svc = pb::Service {
            hostname: "a.ns.svc.cluster.local".into(),
            ..Default::default()
        };
        let other_svc = svc.clone();
        let e1 = ep("10.0.0.1:80");
        let e2 = ep("10.0.0.1:80");
        let none = Flags::default();
        let mut uo = Flags::default();
        uo.add(flags::UPSTREAM_OVERFLOW);
        let base = LabelQuery {
            source: Some("127.0.0.1".parse().unwrap()),
            source_identity: Some("spiffe://td/ns/a/sa/b"),
            upstream: Some(&e1),
            service: Some(&svc),
            protocol: "http",
            status: 200,
            grpc_status: "",
            flags: &none,
        };
        let mut built = 0;
        let mut get = |q: LabelQuery<'_>| {
            cache.get_or_insert_with(
                q,
                || {
                    built += 1;
                    RequestLabels {
                        response_code: q.status.to_string(),
                        ..Default::default()
                    }
                },
                |l| metrics.series(l),
            )
        };
        let first = get(base);
        let again = get(base);
        assert!(Arc::ptr_eq(&first.labels, &again.labels));
        let variants = [
            LabelQuery {
                source: None,
                ..base
            },
            LabelQuery {
                source_identity: Some("spiffe://td/ns/a/sa/c"),
                ..base
            },
            LabelQuery {
                upstream: Some(&e2),
                ..base
            },
            LabelQuery {
                service: Some(&other_svc),
                ..base
            },
            LabelQuery {
                protocol: "grpc",
                ..base
            },
            LabelQuery {
                status: 503,
                ..base
            },
            LabelQuery {
                grpc_status: "14",
                ..base
            },
            LabelQuery { flags: &uo, ..base },
        ];
        for v in variants {
            assert!(!Arc::ptr_eq(&first.labels, &get(v).labels), "{v:?}");
        }
        assert_eq!(built, 9);
    }

    #[test]
    fn bounded() {
        let mut reg = Registry::default();
        let metrics = Metrics::new(&mut reg);
        let cache = LabelCache::default();
        let none = Flags::default();
        for status in 0..(MAX_ENTRIES as u16 + 10) {
            let q = LabelQuery {
                source: None,
                source_identity: None,
                upstream: None,
                service: None,
                protocol: "http",
                status,
                grpc_status: "",
                flags: &none,
            };
            cache.get_or_insert_with(q, RequestLabels::default, |l| metrics.series(l));
            assert!(cache.len() <= MAX_ENTRIES);
        }
        assert!(!cache.is_empty());
    }
}

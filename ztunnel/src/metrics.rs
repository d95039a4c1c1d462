//! Istio-compatible TCP metrics (`istio_tcp_*`) in the Prometheus text format.
//!
//! Series naming a workload that disappeared from the config are evicted.

use meshwork_runtime::sync::LockExt;
use std::collections::{HashMap, HashSet};
use std::sync::Mutex;

use meshwork_metrics::{security_policy, Peer, PeerLabels};
use prometheus_client::encoding::EncodeLabelSet;
use prometheus_client::metrics::counter::Counter;
use prometheus_client::metrics::family::Family;
use prometheus_client::registry::Registry;

use meshwork_model::pb::config::{Service, Workload};
use meshwork_model::view::PeerName;

/// Labels of every `istio_tcp_*` series: the peers (Istio's common traffic labels, shared
/// with the waypoint's request series) and the connection's outcome.
#[derive(Debug, Clone, Hash, PartialEq, Eq, EncodeLabelSet)]
pub struct TcpLabels {
    pub reporter: String,
    #[prometheus(flatten)]
    pub peers: PeerLabels,
    pub request_protocol: String,
    pub response_flags: String,
    pub connection_security_policy: String,
}

/// Which side of the connection reports.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Reporter {
    Source,
    Destination,
}

/// The peers of a connection, as known when it is opened.
#[derive(Debug, Clone, Default)]
pub struct Peers<'a> {
    pub source: Option<&'a Workload>,
    pub source_principal: Option<String>,
    pub destination: Option<&'a Workload>,
    pub destination_principal: Option<String>,
    pub service: Option<&'a Service>,
    pub mtls: bool,
}

/// A connection's series: its labels and the pods they were made for (`<ns>/<pod>`), so
/// that the series go when a pod leaves the config, although the labels name its
/// Deployment.
#[derive(Debug, Clone)]
pub struct TcpSeries {
    pub labels: TcpLabels,
    pods: [String; 2],
}

impl TcpSeries {
    pub fn new(reporter: Reporter, p: &Peers<'_>, response_flags: &str) -> TcpSeries {
        let name = |w: Option<&Workload>| w.map(PeerName::of);
        let (src, dst) = (name(p.source), name(p.destination));
        let peers = PeerLabels::new(
            Peer {
                name: src.as_ref(),
                principal: p.source_principal.as_deref(),
            },
            Peer {
                name: dst.as_ref(),
                principal: p.destination_principal.as_deref(),
            },
            p.service,
        );
        let pod = |w: Option<&Workload>| match w {
            Some(w) => format!("{}/{}", w.namespace, w.name),
            None => "unknown/unknown".into(),
        };
        TcpSeries {
            labels: TcpLabels {
                reporter: match reporter {
                    Reporter::Source => "source",
                    Reporter::Destination => "destination",
                }
                .into(),
                peers,
                request_protocol: "tcp".into(),
                response_flags: String::new(),
                connection_security_policy: security_policy(p.mtls).into(),
            },
            pods: [pod(p.source), pod(p.destination)],
        }
        .with_flags(response_flags)
    }

    /// The same series with other `response_flags` (`-` when none).
    pub fn with_flags(mut self, response_flags: &str) -> TcpSeries {
        self.labels.response_flags = if response_flags.is_empty() {
            "-".into()
        } else {
            response_flags.into()
        };
        self
    }
}

/// Counters of one connection.
#[derive(Clone)]
pub struct ConnCounters {
    pub sent: Counter,
    pub received: Counter,
    closed: Counter,
}

impl ConnCounters {
    pub fn close(&self) {
        self.closed.inc();
    }
}

/// Which pods each series was opened for, by side, and the series of each pod.
#[derive(Default)]
struct Index {
    /// `<ns>/<pod>` -> the series it is a source or destination of.
    by_pod: HashMap<String, HashSet<TcpLabels>>,
    /// series -> [source pods, destination pods].
    sides: HashMap<TcpLabels, [HashSet<String>; 2]>,
}

pub struct Metrics {
    registry: Registry,
    opened: Family<TcpLabels, Counter>,
    closed: Family<TcpLabels, Counter>,
    sent: Family<TcpLabels, Counter>,
    received: Family<TcpLabels, Counter>,
    /// `<ns>/<name>` -> label sets mentioning that workload.
    index: Mutex<Index>,
}

impl Default for Metrics {
    fn default() -> Self {
        Self::new()
    }
}

impl Metrics {
    pub fn new() -> Self {
        let mut registry = Registry::default();
        let (opened, closed, sent, received) = (
            Family::default(),
            Family::default(),
            Family::default(),
            Family::default(),
        );
        registry.register(
            "istio_tcp_connections_opened",
            "Total TCP connections opened",
            opened.clone(),
        );
        registry.register(
            "istio_tcp_connections_closed",
            "Total TCP connections closed",
            closed.clone(),
        );
        registry.register(
            "istio_tcp_sent_bytes",
            "Total bytes sent to the downstream peer of a TCP connection",
            sent.clone(),
        );
        registry.register(
            "istio_tcp_received_bytes",
            "Total bytes received from the downstream peer of a TCP connection",
            received.clone(),
        );
        meshwork_metrics::register_log_drops(&mut registry);
        Metrics {
            registry,
            opened,
            closed,
            sent,
            received,
            index: Mutex::default(),
        }
    }

    /// Counts an opened connection; the returned counters record its bytes and close.
    pub fn open(&self, series: TcpSeries) -> ConnCounters {
        let TcpSeries { labels, pods } = series;
        self.opened.get_or_create(&labels).inc();
        let c = ConnCounters {
            sent: self.sent.get_or_create_owned(&labels),
            received: self.received.get_or_create_owned(&labels),
            closed: self.closed.get_or_create_owned(&labels),
        };
        let mut index = self.index.lock_or_recover();
        let sides = index.sides.entry(labels.clone()).or_default();
        for (side, pod) in sides.iter_mut().zip(&pods) {
            side.insert(pod.clone());
        }
        for pod in pods {
            index.by_pod.entry(pod).or_default().insert(labels.clone());
        }
        c
    }

    /// A connection refused before it carried data (policy, mode, unknown target): counted
    /// as opened and closed with `response_flags`.
    pub fn refused(&self, series: TcpSeries) {
        self.open(series).close();
    }

    /// Drops series of pods for which `live` (given `<ns>/<pod name>`) is false. Costs
    /// one call per pod with series, not one per workload of the model. A series names
    /// Deployments, so pods of one Deployment share it: it goes when one of its sides has
    /// no pod left in the config (a rollout keeps it and its counters; the destination's
    /// last pod leaving takes it).
    pub fn evict(&self, live: impl Fn(&str) -> bool) {
        let mut guard = self.index.lock_or_recover();
        let index = &mut *guard;
        let gone: Vec<String> = index
            .by_pod
            .keys()
            .filter(|k| !k.starts_with("unknown/") && !live(k))
            .cloned()
            .collect();
        for pod in gone {
            for labels in index.by_pod.remove(&pod).unwrap_or_default() {
                let Some(sides) = index.sides.get_mut(&labels) else {
                    continue;
                };
                for side in sides.iter_mut() {
                    side.remove(&pod);
                }
                if sides.iter().all(|s| !s.is_empty()) {
                    continue;
                }
                // A side has no pod left: the series goes, and every pod forgets it.
                let sides = index.sides.remove(&labels).unwrap_or_default();
                for other in sides.iter().flatten() {
                    if let Some(set) = index.by_pod.get_mut(other) {
                        set.remove(&labels);
                    }
                }
                self.opened.remove(&labels);
                self.closed.remove(&labels);
                self.sent.remove(&labels);
                self.received.remove(&labels);
                tracing::debug!(%pod, "evicted metric series of deleted pod");
            }
        }
    }

    /// The Prometheus text exposition (format 0.0.4).
    pub fn encode(&self) -> String {
        let mut out = String::new();
        prometheus_client::encoding::text::encode(&mut out, &self.registry)
            .expect("writing to a String cannot fail");
        crate::exposition::from_openmetrics(&out)
    }

    /// Sum of a counter family's values matching `filter` (tests, admin).
    pub fn total(&self, metric: &str, filter: impl Fn(&TcpLabels) -> bool) -> u64 {
        let fam = match metric {
            "opened" => &self.opened,
            "closed" => &self.closed,
            "sent" => &self.sent,
            "received" => &self.received,
            _ => return 0,
        };
        let index = self.index.lock_or_recover();
        let all: HashSet<&TcpLabels> = index.sides.keys().collect();
        all.into_iter()
            .filter(|l| filter(l))
            .filter_map(|l| fam.get(l).map(|c| c.get()))
            .sum()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::exposition::validate;

    fn w(ns: &str, name: &str) -> Workload {
        Workload {
            name: name.into(),
            namespace: ns.into(),
            ..Default::default()
        }
    }

    #[test]
    fn encodes_valid_exposition_and_evicts() {
        let m = Metrics::new();
        let (a, b) = (w("prod", "a"), w("prod", "b"));
        let peers = Peers {
            source: Some(&a),
            source_principal: Some("spiffe://cluster.local/ns/prod/sa/a".into()),
            destination: Some(&b),
            destination_principal: None,
            service: None,
            mtls: true,
        };
        let c = m.open(TcpSeries::new(Reporter::Destination, &peers, ""));
        c.sent.inc_by(10);
        c.received.inc_by(7);
        c.close();
        m.refused(TcpSeries::new(Reporter::Destination, &peers, "DENY"));
        let text = m.encode();
        validate(&text).unwrap();
        assert!(
            text.contains("istio_tcp_connections_opened_total{"),
            "{text}"
        );
        assert!(text.contains("connection_security_policy=\"mutual_tls\""));
        assert!(text.contains("response_flags=\"DENY\""));
        assert_eq!(m.total("sent", |_| true), 10);
        assert_eq!(m.total("opened", |l| l.response_flags == "DENY"), 1);
        assert!(
            text.contains("destination_service_name=\"unknown\""),
            "{text}"
        );
        m.evict(|r| r == "prod/a");
        assert!(!m.encode().contains("destination_workload=\"b\""));
        assert_eq!(m.total("sent", |_| true), 0);
    }

    #[test]
    fn names_the_deployment_as_the_waypoint_does_and_evicts_by_pod() {
        let m = Metrics::new();
        let pod = Workload {
            name: "cart-7f9c-x2".into(),
            workload_name: "cart".into(),
            namespace: "shop".into(),
            canonical_name: "cart".into(),
            canonical_revision: "v2".into(),
            ..Default::default()
        };
        let peers = Peers {
            destination: Some(&pod),
            mtls: true,
            ..Default::default()
        };
        m.open(TcpSeries::new(Reporter::Destination, &peers, ""));
        let text = m.encode();
        assert!(text.contains("destination_workload=\"cart\""), "{text}");
        assert!(text.contains("destination_version=\"v2\""), "{text}");
        assert!(!text.contains("cart-7f9c-x2"), "{text}");
        // A second pod of the Deployment shares the series.
        let sibling = Workload {
            name: "cart-7f9c-y7".into(),
            ..pod.clone()
        };
        let c = m.open(TcpSeries::new(
            Reporter::Destination,
            &Peers {
                destination: Some(&sibling),
                mtls: true,
                ..Default::default()
            },
            "",
        ));
        c.sent.inc_by(5);
        assert_eq!(m.total("opened", |_| true), 2);
        // One pod leaving keeps the series its sibling still uses, counters intact.
        m.evict(|r| r != "shop/cart-7f9c-x2");
        assert_eq!(m.total("opened", |_| true), 2);
        c.sent.inc_by(5);
        assert_eq!(m.total("sent", |_| true), 10);
        // The last pod leaving takes the series.
        m.evict(|r| !r.starts_with("shop/cart-"));
        assert!(!m.encode().contains("destination_workload=\"cart\""));
    }
}

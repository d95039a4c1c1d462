//! The service graph from two successive scrapes of the proxies' Istio metrics.
//!
//! Edges go from a source workload to a destination workload (or to the destination
//! service when no workload was chosen, e.g. a request the waypoint denied), per protocol:
//!
//! - `http`: the waypoint's `istio_requests_total` (`reporter="waypoint"`), its
//!   `istio_request_duration_milliseconds` histogram and `istio_request_bytes` /
//!   `istio_response_bytes` sums;
//! - `tcp`: the ztunnels' `istio_tcp_connections_opened_total` and
//!   `istio_tcp_sent_bytes_total` / `istio_tcp_received_bytes_total`. Both ztunnels of a
//!   connection report it (`reporter="source"` and `"destination"`): an edge takes the
//!   destination's numbers when it reported the edge, the source's otherwise.
//!
//! Rates are counter increases between the two scrapes over the time between them (a
//! counter that went down restarted: its new value is the increase; a series new in a
//! target seen before counts whole; a target first seen now counts from the next scrape).
//!
//! Policy decisions have no counter of their own in either proxy, so denials are counted
//! from what each proxy reports for them: the waypoint answers a denied request `403`
//! (`response_code="403"`; an application's own 403 counts too), the ztunnel counts a
//! refused connection as opened with `response_flags="DENY"`.

use std::collections::{BTreeMap, BTreeSet, HashMap};

use serde::Serialize;

use crate::parse::Sample;
use crate::quantile::histogram_quantile;

const UNKNOWN: &str = "unknown";

/// A proxy endpoint to scrape: its `/metrics` URL and an optional name (for a waypoint,
/// its workload as `namespace/name`, which marks that node as a waypoint).
#[derive(Debug, Clone, PartialEq, Eq, Serialize)]
pub struct Target {
    pub url: String,
    pub name: Option<String>,
}

impl Target {
    /// `URL` or `NAME=URL`; a URL without scheme gets `http://`, without path `/metrics`.
    pub fn parse(spec: &str) -> Target {
        let (name, url) = match spec.split_once('=') {
            // A name has no `:`; a URL's part before any `=` has (scheme or port).
            Some((n, u)) if !n.is_empty() && !n.contains(':') => (Some(n.to_string()), u),
            _ => (None, spec),
        };
        let mut url = if url.contains("://") {
            url.to_string()
        } else {
            format!("http://{url}")
        };
        if url.splitn(4, '/').nth(3).is_none() {
            url.push_str("/metrics");
        }
        Target { url, name }
    }
}

/// One target's scrape: its samples, or why there are none.
#[derive(Debug, Clone)]
pub struct TargetScrape {
    pub target: Target,
    pub result: Result<Vec<Sample>, String>,
    pub elapsed_ms: f64,
}

/// Every target scraped at (about) the same time; `at_secs` is on any clock common to
/// successive snapshots.
#[derive(Debug, Clone)]
pub struct Snapshot {
    pub at_secs: f64,
    pub targets: Vec<TargetScrape>,
}

/// The sample names the graph reads; a scrape keeps only these (the other buckets, sums
/// and counts are most of a waypoint's text).
pub const WANTED: [&str; 7] = [
    "istio_requests_total",
    "istio_request_duration_milliseconds_bucket",
    "istio_request_bytes_sum",
    "istio_response_bytes_sum",
    "istio_tcp_connections_opened_total",
    "istio_tcp_sent_bytes_total",
    "istio_tcp_received_bytes_total",
];

/// Whether a scrape keeps samples named `name` ([`WANTED`]).
pub fn wanted(name: &str) -> bool {
    WANTED.contains(&name)
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Hash, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Protocol {
    Http,
    Tcp,
}

/// Whether an edge's traffic (all it ever carried) was mutual TLS.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum Mtls {
    /// All of it (`connection_security_policy="mutual_tls"`).
    Yes,
    /// None of it (`"none"`).
    No,
    Mixed,
    Unknown,
}

impl Mtls {
    pub fn as_str(self) -> &'static str {
        match self {
            Mtls::Yes => "yes",
            Mtls::No => "no",
            Mtls::Mixed => "mixed",
            Mtls::Unknown => "?",
        }
    }
}

#[derive(Debug, Clone, Copy, Default)]
struct MtlsSeen {
    mtls: bool,
    plain: bool,
}

impl MtlsSeen {
    fn add(&mut self, policy: Option<&str>, value: f64) {
        if value <= 0.0 {
            return;
        }
        match policy {
            Some("mutual_tls") => self.mtls = true,
            Some("none") => self.plain = true,
            _ => {}
        }
    }
    fn merge(&mut self, o: MtlsSeen) {
        self.mtls |= o.mtls;
        self.plain |= o.plain;
    }
    fn get(self) -> Mtls {
        match (self.mtls, self.plain) {
            (true, false) => Mtls::Yes,
            (false, true) => Mtls::No,
            (true, true) => Mtls::Mixed,
            (false, false) => Mtls::Unknown,
        }
    }
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, PartialOrd, Ord, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum NodeKind {
    Workload,
    Waypoint,
    Service,
    Unknown,
}

#[derive(Debug, Clone, Serialize)]
pub struct Node {
    /// `namespace/name` for workloads, the hostname for services, `unknown`.
    pub id: String,
    pub name: String,
    pub namespace: Option<String>,
    pub kind: NodeKind,
    /// SPIFFE identities the proxies reported for it.
    pub identities: Vec<String>,
    /// Layout position (the deterministic layered layout of [`layout`]).
    pub x: f64,
    pub y: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Edge {
    pub source: String,
    pub destination: String,
    pub protocol: Protocol,
    /// Destination services this traffic was addressed to.
    pub services: Vec<String>,
    /// `waypoint`, `destination` or `source`: whose numbers these are.
    pub reporter: String,
    /// Requests (http) or connections opened (tcp) per second; `None` before two scrapes.
    pub rate: Option<f64>,
    /// Share of requests not answered 5xx (http), of connections without failure flags
    /// other than `DENY` (tcp); `None` when there was none in the window.
    pub success: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mtls: Mtls,
    /// Bytes per second to / from the client side (Istio's sent = response direction).
    pub sent_bps: Option<f64>,
    pub received_bps: Option<f64>,
    pub sent_bytes_total: f64,
    pub received_bytes_total: f64,
    /// Requests or connections since the proxies started.
    pub total: f64,
    /// Policy denials in the window and since start (see the module docs).
    pub denials: Option<f64>,
    pub denials_total: f64,
}

/// Per destination service (http from the waypoint, tcp from the ztunnels' edges).
#[derive(Debug, Clone, Serialize)]
pub struct ServiceStats {
    pub service: String,
    pub protocol: Protocol,
    pub rate: Option<f64>,
    pub success: Option<f64>,
    pub p50_ms: Option<f64>,
    pub p99_ms: Option<f64>,
    pub mtls: Mtls,
    pub denials: Option<f64>,
    pub denials_total: f64,
    pub total: f64,
}

#[derive(Debug, Clone, Copy, PartialEq, Eq, Serialize)]
#[serde(rename_all = "lowercase")]
pub enum ProxyKind {
    Ztunnel,
    Waypoint,
    /// Up, but no Istio series yet to tell.
    Idle,
    Down,
}

#[derive(Debug, Clone, Serialize)]
pub struct Proxy {
    pub url: String,
    pub name: Option<String>,
    pub kind: ProxyKind,
    pub error: Option<String>,
    pub series: usize,
    pub scrape_ms: f64,
}

#[derive(Debug, Clone, Serialize)]
pub struct Graph {
    /// Seconds between the two scrapes the rates come from.
    pub window_secs: Option<f64>,
    pub nodes: Vec<Node>,
    pub edges: Vec<Edge>,
    pub services: Vec<ServiceStats>,
    pub proxies: Vec<Proxy>,
    /// Size of the layout's canvas.
    pub width: f64,
    pub height: f64,
}

#[derive(Debug, Default, Clone)]
struct HttpAcc {
    total: f64,
    delta: f64,
    errors: f64,
    denied: f64,
    denied_total: f64,
    buckets: HashMap<u64, f64>,
    req_bytes: f64,
    resp_bytes: f64,
    req_bytes_total: f64,
    resp_bytes_total: f64,
    mtls: MtlsSeen,
    services: BTreeSet<String>,
}

impl HttpAcc {
    fn quantile(&self, q: f64) -> Option<f64> {
        let b: Vec<(f64, f64)> = self
            .buckets
            .iter()
            .map(|(le, c)| (f64::from_bits(*le), *c))
            .collect();
        histogram_quantile(q, &b)
    }
}

#[derive(Debug, Default, Clone)]
struct TcpSide {
    opened_total: f64,
    opened: f64,
    failed: f64,
    denied: f64,
    denied_total: f64,
    sent: f64,
    received: f64,
    sent_total: f64,
    received_total: f64,
    mtls: MtlsSeen,
    reported: bool,
}

#[derive(Debug, Default, Clone)]
struct TcpAcc {
    source: TcpSide,
    destination: TcpSide,
    services: BTreeSet<String>,
}

#[derive(Debug, Default)]
struct NodeAcc {
    kind: Option<NodeKind>,
    namespace: Option<String>,
    name: String,
    identities: BTreeSet<String>,
}

fn known(v: Option<&str>) -> Option<&str> {
    v.filter(|v| !v.is_empty() && *v != UNKNOWN)
}

/// The source node of a series: its workload, or `unknown`.
fn source_of(s: &Sample) -> (String, Option<(String, String)>) {
    match (
        known(s.label("source_workload_namespace")),
        known(s.label("source_workload")),
    ) {
        (Some(ns), Some(n)) => (format!("{ns}/{n}"), Some((ns.into(), n.into()))),
        _ => (UNKNOWN.into(), None),
    }
}

enum Dest {
    Workload(String, String),
    Service(String),
    Unknown,
}

fn destination_of(s: &Sample) -> (String, Dest) {
    match (
        known(s.label("destination_workload_namespace")),
        known(s.label("destination_workload")),
    ) {
        (Some(ns), Some(n)) => (format!("{ns}/{n}"), Dest::Workload(ns.into(), n.into())),
        _ => match known(s.label("destination_service")) {
            Some(svc) => (svc.to_string(), Dest::Service(svc.into())),
            None => (UNKNOWN.into(), Dest::Unknown),
        },
    }
}

fn rate(delta: f64, window: Option<f64>) -> Option<f64> {
    window.map(|w| delta / w)
}

fn ratio(good: f64, all: f64, window: Option<f64>) -> Option<f64> {
    (window.is_some() && all > 0.0).then(|| (good / all).clamp(0.0, 1.0))
}

/// Builds the graph from the current snapshot and the one before it (rates need both).
pub fn compute(prev: Option<&Snapshot>, cur: &Snapshot) -> Graph {
    let window = prev.map(|p| cur.at_secs - p.at_secs).filter(|w| *w > 0.0);
    let prev_index: HashMap<&str, HashMap<&str, f64>> = prev
        .filter(|_| window.is_some())
        .map(|p| {
            p.targets
                .iter()
                .filter_map(|t| {
                    let samples = t.result.as_ref().ok()?;
                    Some((
                        t.target.url.as_str(),
                        samples
                            .iter()
                            .map(|s| (s.series.as_str(), s.value))
                            .collect(),
                    ))
                })
                .collect()
        })
        .unwrap_or_default();

    let mut http: BTreeMap<(String, String), HttpAcc> = BTreeMap::new();
    let mut http_by_service: BTreeMap<String, HttpAcc> = BTreeMap::new();
    let mut tcp: BTreeMap<(String, String), TcpAcc> = BTreeMap::new();
    let mut nodes: BTreeMap<String, NodeAcc> = BTreeMap::new();
    let mut proxies = Vec::new();
    // Workloads a source ztunnel sent a service's traffic to, and services a waypoint served.
    let mut tcp_targets: Vec<(String, String)> = Vec::new();
    let mut waypoint_services: BTreeSet<String> = BTreeSet::new();
    let mut service_of_workload: BTreeMap<String, BTreeSet<String>> = BTreeMap::new();
    let mut waypoint_names: BTreeSet<String> = BTreeSet::new();

    for t in &cur.targets {
        let samples = match &t.result {
            Ok(s) => s,
            Err(e) => {
                proxies.push(Proxy {
                    url: t.target.url.clone(),
                    name: t.target.name.clone(),
                    kind: ProxyKind::Down,
                    error: Some(e.clone()),
                    series: 0,
                    scrape_ms: t.elapsed_ms,
                });
                continue;
            }
        };
        let before = prev_index.get(t.target.url.as_str());
        let mut kind = ProxyKind::Idle;
        for s in samples {
            let delta = before.map(|m| match m.get(s.series.as_str()) {
                Some(p) if s.value >= *p => s.value - p,
                _ => s.value,
            });
            let d = delta.unwrap_or(0.0);
            let name = s.name.as_str();
            let is_http = matches!(
                name,
                "istio_requests_total"
                    | "istio_request_duration_milliseconds_bucket"
                    | "istio_request_bytes_sum"
                    | "istio_response_bytes_sum"
            );
            let is_tcp = matches!(
                name,
                "istio_tcp_connections_opened_total"
                    | "istio_tcp_sent_bytes_total"
                    | "istio_tcp_received_bytes_total"
            );
            if !is_http && !is_tcp {
                continue;
            }
            let (src, src_wl) = source_of(s);
            let (dst, dst_kind) = destination_of(s);
            let service = known(s.label("destination_service")).map(str::to_string);
            // Nodes and their identities.
            {
                let n = nodes.entry(src.clone()).or_default();
                if let Some((ns, name)) = &src_wl {
                    n.namespace = Some(ns.clone());
                    n.name = name.clone();
                    n.kind.get_or_insert(NodeKind::Workload);
                }
                if let Some(p) = known(s.label("source_principal")) {
                    n.identities.insert(p.to_string());
                }
                let n = nodes.entry(dst.clone()).or_default();
                match &dst_kind {
                    Dest::Workload(ns, name) => {
                        n.namespace = Some(ns.clone());
                        n.name = name.clone();
                        n.kind.get_or_insert(NodeKind::Workload);
                        if let Some(p) = known(s.label("destination_principal")) {
                            n.identities.insert(p.to_string());
                        }
                    }
                    Dest::Service(svc) => {
                        // `name.namespace.svc...` is drawn by its name; the id keeps it all.
                        n.name = svc.split('.').next().unwrap_or(svc).to_string();
                        n.namespace =
                            known(s.label("destination_service_namespace")).map(str::to_string);
                        n.kind = Some(NodeKind::Service);
                    }
                    Dest::Unknown => {}
                }
            }
            let policy = s.label("connection_security_policy");
            if is_http {
                if s.label("reporter") == Some("waypoint") {
                    kind = ProxyKind::Waypoint;
                }
                let mut accs = vec![http.entry((src.clone(), dst.clone())).or_default()];
                if let Some(svc) = &service {
                    waypoint_services.insert(svc.clone());
                    accs.push(http_by_service.entry(svc.clone()).or_default());
                }
                for acc in accs {
                    if let Some(svc) = &service {
                        acc.services.insert(svc.clone());
                    }
                    match name {
                        "istio_requests_total" => {
                            acc.total += s.value;
                            acc.delta += d;
                            acc.mtls.add(policy, s.value);
                            let code = s.label("response_code").unwrap_or("");
                            if code.starts_with('5') {
                                acc.errors += d;
                            }
                            if code == "403" {
                                acc.denied += d;
                                acc.denied_total += s.value;
                            }
                        }
                        "istio_request_duration_milliseconds_bucket" => {
                            if let Some(le) = s.label("le").and_then(|l| match l {
                                "+Inf" => Some(f64::INFINITY),
                                l => l.parse::<f64>().ok(),
                            }) {
                                *acc.buckets.entry(le.to_bits()).or_default() += d;
                            }
                        }
                        "istio_request_bytes_sum" => {
                            acc.req_bytes += d;
                            acc.req_bytes_total += s.value;
                        }
                        _ => {
                            acc.resp_bytes += d;
                            acc.resp_bytes_total += s.value;
                        }
                    }
                }
            } else {
                if kind != ProxyKind::Waypoint {
                    kind = ProxyKind::Ztunnel;
                }
                let acc = tcp.entry((src.clone(), dst.clone())).or_default();
                if let Some(svc) = &service {
                    acc.services.insert(svc.clone());
                    if let Dest::Workload(..) = dst_kind {
                        tcp_targets.push((dst.clone(), svc.clone()));
                        service_of_workload
                            .entry(dst.clone())
                            .or_default()
                            .insert(svc.clone());
                    }
                }
                let side = if s.label("reporter") == Some("destination") {
                    &mut acc.destination
                } else {
                    &mut acc.source
                };
                side.reported = true;
                match name {
                    "istio_tcp_connections_opened_total" => {
                        side.opened_total += s.value;
                        side.opened += d;
                        side.mtls.add(policy, s.value);
                        let flags = s.label("response_flags").unwrap_or("-");
                        if flags.split(',').any(|f| f == "DENY") {
                            side.denied += d;
                            side.denied_total += s.value;
                        } else if flags != "-" && !flags.is_empty() {
                            side.failed += d;
                        }
                    }
                    "istio_tcp_sent_bytes_total" => {
                        side.sent += d;
                        side.sent_total += s.value;
                    }
                    _ => {
                        side.received += d;
                        side.received_total += s.value;
                    }
                }
            }
        }
        if kind == ProxyKind::Waypoint {
            if let Some(n) = &t.target.name {
                waypoint_names.insert(n.clone());
            }
        }
        proxies.push(Proxy {
            url: t.target.url.clone(),
            name: t.target.name.clone(),
            kind,
            error: None,
            series: samples.len(),
            scrape_ms: t.elapsed_ms,
        });
    }

    // A workload a source ztunnel sends a waypoint-served service's traffic to is that
    // service's waypoint (ambient sends all of it there); a waypoint target's name says so too.
    for (wl, svc) in &tcp_targets {
        if waypoint_services.contains(svc) {
            waypoint_names.insert(wl.clone());
        }
    }
    for w in &waypoint_names {
        if let Some(n) = nodes.get_mut(w) {
            n.kind = Some(NodeKind::Waypoint);
        }
    }

    let mut edges = Vec::new();
    for ((src, dst), a) in &http {
        edges.push(Edge {
            source: src.clone(),
            destination: dst.clone(),
            protocol: Protocol::Http,
            services: a.services.iter().cloned().collect(),
            reporter: "waypoint".into(),
            rate: rate(a.delta, window),
            success: ratio(a.delta - a.errors, a.delta, window),
            p50_ms: window.and_then(|_| a.quantile(0.5)),
            p99_ms: window.and_then(|_| a.quantile(0.99)),
            mtls: a.mtls.get(),
            sent_bps: rate(a.resp_bytes, window),
            received_bps: rate(a.req_bytes, window),
            sent_bytes_total: a.resp_bytes_total,
            received_bytes_total: a.req_bytes_total,
            total: a.total,
            denials: window.map(|_| a.denied),
            denials_total: a.denied_total,
        });
    }
    let mut tcp_by_service: BTreeMap<String, (TcpSide, f64)> = BTreeMap::new();
    for ((src, dst), a) in &tcp {
        let (side, reporter) = if a.destination.reported {
            (&a.destination, "destination")
        } else {
            (&a.source, "source")
        };
        // The destination side does not know the service: take the ones the source
        // ztunnels named for this workload.
        let mut services = a.services.clone();
        if services.is_empty() {
            if let Some(s) = service_of_workload.get(dst) {
                services.extend(s.iter().cloned());
            }
        }
        let denied = a.source.denied.max(a.destination.denied);
        let denied_total = a.source.denied_total.max(a.destination.denied_total);
        if services.len() == 1 {
            let svc = services.iter().next().cloned().unwrap_or_default();
            let e = tcp_by_service.entry(svc).or_default();
            e.0.opened += side.opened;
            e.0.opened_total += side.opened_total;
            e.0.failed += side.failed;
            e.0.mtls.merge(side.mtls);
            e.0.denied += denied;
            e.0.denied_total += denied_total;
        }
        edges.push(Edge {
            source: src.clone(),
            destination: dst.clone(),
            protocol: Protocol::Tcp,
            services: services.into_iter().collect(),
            reporter: reporter.into(),
            rate: rate(side.opened, window),
            success: ratio(side.opened - side.failed, side.opened, window),
            p50_ms: None,
            p99_ms: None,
            mtls: side.mtls.get(),
            sent_bps: rate(side.sent, window),
            received_bps: rate(side.received, window),
            sent_bytes_total: side.sent_total,
            received_bytes_total: side.received_total,
            total: side.opened_total,
            denials: window.map(|_| denied),
            denials_total: denied_total,
        });
    }
    edges.sort_by(|a, b| {
        (&a.source, &a.destination, a.protocol).cmp(&(&b.source, &b.destination, b.protocol))
    });

    let mut services = Vec::new();
    for (svc, a) in &http_by_service {
        services.push(ServiceStats {
            service: svc.clone(),
            protocol: Protocol::Http,
            rate: rate(a.delta, window),
            success: ratio(a.delta - a.errors, a.delta, window),
            p50_ms: window.and_then(|_| a.quantile(0.5)),
            p99_ms: window.and_then(|_| a.quantile(0.99)),
            mtls: a.mtls.get(),
            denials: window.map(|_| a.denied),
            denials_total: a.denied_total,
            total: a.total,
        });
    }
    for (svc, (side, _)) in &tcp_by_service {
        if http_by_service.contains_key(svc) {
            continue;
        }
        services.push(ServiceStats {
            service: svc.clone(),
            protocol: Protocol::Tcp,
            rate: rate(side.opened, window),
            success: ratio(side.opened - side.failed, side.opened, window),
            p50_ms: None,
            p99_ms: None,
            mtls: side.mtls.get(),
            denials: window.map(|_| side.denied),
            denials_total: side.denied_total,
            total: side.opened_total,
        });
    }
    services.sort_by(|a, b| a.service.cmp(&b.service));

    let mut nodes: Vec<Node> = nodes
        .into_iter()
        .map(|(id, n)| Node {
            name: if n.name.is_empty() {
                id.clone()
            } else {
                n.name
            },
            id,
            namespace: n.namespace,
            kind: n.kind.unwrap_or(NodeKind::Unknown),
            identities: n.identities.into_iter().collect(),
            x: 0.0,
            y: 0.0,
        })
        .collect();
    let (width, height) = layout(&mut nodes, &edges);
    Graph {
        window_secs: window,
        nodes,
        edges,
        services,
        proxies,
        width,
        height,
    }
}

/// Column spacing and row spacing of [`layout`].
const COLUMN: f64 = 300.0;
const ROW: f64 = 120.0;
const MARGIN: f64 = 110.0;

/// A deterministic layered layout: a node's column is the longest chain of edges leading
/// to it (callers left, callees right; cycles are cut after as many rounds as nodes); the
/// first column is ordered by namespace and name, each next one by the mean row of a
/// node's callers (fewer crossings), then by name. Returns the canvas size.
pub fn layout(nodes: &mut [Node], edges: &[Edge]) -> (f64, f64) {
    let index: HashMap<&str, usize> = nodes
        .iter()
        .enumerate()
        .map(|(i, n)| (n.id.as_str(), i))
        .collect();
    let links: BTreeSet<(usize, usize)> = edges
        .iter()
        .filter_map(|e| {
            let (a, b) = (
                *index.get(e.source.as_str())?,
                *index.get(e.destination.as_str())?,
            );
            (a != b).then_some((a, b))
        })
        .collect();
    let mut layer = vec![0usize; nodes.len()];
    for _ in 0..nodes.len() {
        let mut changed = false;
        for &(a, b) in &links {
            if layer[b] < layer[a] + 1 && layer[a] + 1 < nodes.len() {
                layer[b] = layer[a] + 1;
                changed = true;
            }
        }
        if !changed {
            break;
        }
    }
    let mut columns: BTreeMap<usize, Vec<usize>> = BTreeMap::new();
    for (i, l) in layer.iter().enumerate() {
        columns.entry(*l).or_default().push(i);
    }
    let rows = columns.values().map(Vec::len).max().unwrap_or(0);
    let height = (MARGIN * 2.0 + ROW * rows.saturating_sub(1) as f64).max(400.0);
    let width = (MARGIN * 2.0 + COLUMN * columns.len().saturating_sub(1) as f64).max(800.0);
    let used = COLUMN * columns.len().saturating_sub(1) as f64;
    let left = (width - used) / 2.0;
    let mut placed = false;
    for (c, (_, members)) in columns.iter_mut().enumerate() {
        let key = |i: usize| -> f64 {
            let ys: Vec<f64> = links
                .iter()
                .filter(|(a, b)| *b == i && layer[*a] < layer[i])
                .map(|(a, _)| nodes[*a].y)
                .collect();
            if !placed || ys.is_empty() {
                f64::INFINITY
            } else {
                ys.iter().sum::<f64>() / ys.len() as f64
            }
        };
        let mut keyed: Vec<(f64, usize)> = members.iter().map(|i| (key(*i), *i)).collect();
        keyed.sort_by(|(ka, a), (kb, b)| {
            ka.total_cmp(kb).then_with(|| {
                (&nodes[*a].namespace, &nodes[*a].id).cmp(&(&nodes[*b].namespace, &nodes[*b].id))
            })
        });
        let top = (height - ROW * (keyed.len() - 1) as f64) / 2.0;
        for (r, (_, i)) in keyed.iter().enumerate() {
            nodes[*i].x = left + COLUMN * c as f64;
            nodes[*i].y = top + ROW * r as f64;
        }
        placed = true;
    }
    (width, height)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::parse::parse_filtered;

    const FIXTURES: [(&str, &str, &str); 3] = [
        (
            "ztunnel-node-a",
            include_str!("../tests/fixtures/ztunnel-node-a.0.prom"),
            include_str!("../tests/fixtures/ztunnel-node-a.1.prom"),
        ),
        (
            "ztunnel-node-b",
            include_str!("../tests/fixtures/ztunnel-node-b.0.prom"),
            include_str!("../tests/fixtures/ztunnel-node-b.1.prom"),
        ),
        (
            "waypoint",
            include_str!("../tests/fixtures/waypoint.0.prom"),
            include_str!("../tests/fixtures/waypoint.1.prom"),
        ),
    ];
    const ORDER: &str = "order-service.production.svc.cluster.local";
    const PAY: &str = "payment.production.svc.cluster.local";

    fn snap(at: f64, which: usize) -> Snapshot {
        Snapshot {
            at_secs: at,
            targets: FIXTURES
                .iter()
                .map(|(name, a, b)| TargetScrape {
                    target: Target {
                        url: format!("http://{name}/metrics"),
                        name: None,
                    },
                    result: Ok(parse_filtered(if which == 0 { a } else { b }, wanted).unwrap()),
                    elapsed_ms: 1.0,
                })
                .collect(),
        }
    }

    fn close(v: Option<f64>, want: f64) {
        let v = v.unwrap_or(f64::NAN);
        assert!((v - want).abs() < 1e-9, "{v} != {want}");
    }

    fn edge<'a>(g: &'a Graph, s: &str, d: &str, p: Protocol) -> &'a Edge {
        g.edges
            .iter()
            .find(|e| e.source == s && e.destination == d && e.protocol == p)
            .unwrap_or_else(|| panic!("no {p:?} edge {s} -> {d}: {:#?}", g.edges))
    }

    /// The recorded scrapes (observe/tests/fixtures, rendered by the proxies' metric
    /// libraries) 10 s apart; the expected numbers are worked out by hand from the traffic
    /// between them: 5 units of the fixture's traffic pattern.
    #[test]
    fn edges_from_two_recorded_scrapes() {
        let g = compute(Some(&snap(100.0, 0)), &snap(110.0, 1));
        assert_eq!(g.window_secs, Some(10.0));
        assert_eq!(g.edges.len(), 9, "{:#?}", g.edges);

        // 50 requests at 3 ms: all in the (1, 5] bucket.
        let e = edge(
            &g,
            "production/frontend",
            "production/order-v1",
            Protocol::Http,
        );
        close(e.rate, 5.0);
        close(e.success, 1.0);
        close(e.p50_ms, 1.0 + 4.0 * 25.0 / 50.0);
        close(e.p99_ms, 1.0 + 4.0 * 49.5 / 50.0);
        assert_eq!(e.mtls, Mtls::Yes);
        assert_eq!(e.services, vec![ORDER.to_string()]);
        assert_eq!(e.total, 60.0);
        close(e.received_bps, 50.0 * 100.0 / 10.0);
        close(e.sent_bps, 50.0 * 1000.0 / 10.0);

        // 40 at 20 ms in (10, 25], 5 at 200 ms in (100, 250], 5 answered 503 at 700 ms in
        // (500, 1000]: p50 rank 25 → 10 + 15 * 25/40; p99 rank 49.5 → 500 + 500 * 4.5/5.
        let e = edge(
            &g,
            "production/frontend",
            "production/order-v2",
            Protocol::Http,
        );
        close(e.rate, 5.0);
        close(e.success, 0.9);
        close(e.p50_ms, 10.0 + 15.0 * 25.0 / 40.0);
        close(e.p99_ms, 950.0);
        close(e.denials, 0.0);

        // Denied by the waypoint (403, no upstream): the edge ends at the service.
        let e = edge(&g, "partners/partner-client", ORDER, Protocol::Http);
        close(e.rate, 1.0);
        close(e.denials, 10.0);
        assert_eq!(e.denials_total, 12.0);
        close(e.success, 1.0);
        close(e.p50_ms, 0.25);

        // TCP: the destination ztunnel's numbers where it reported, services filled in from
        // what the source side named.
        let e = edge(
            &g,
            "production/frontend",
            "production/payment-v1",
            Protocol::Tcp,
        );
        assert_eq!(e.reporter, "destination");
        close(e.rate, 1.5);
        assert_eq!(e.services, vec![PAY.to_string()]);
        let e = edge(
            &g,
            "legacy/legacy-client",
            "production/payment-v1",
            Protocol::Tcp,
        );
        close(e.rate, 2.0);
        close(e.denials, 20.0);
        assert_eq!(e.denials_total, 24.0);
        assert_eq!(e.mtls, Mtls::No);
        assert_eq!(e.services, vec![PAY.to_string()]);
        let e = edge(
            &g,
            "production/frontend",
            "production/waypoint-0",
            Protocol::Tcp,
        );
        assert_eq!(e.reporter, "source");
        close(e.rate, 1.0);
        close(e.sent_bps, 20.0 * 5.0 * 100.0 / 10.0);
        let e = edge(
            &g,
            "production/waypoint-0",
            "production/order-v2",
            Protocol::Tcp,
        );
        close(e.rate, 0.5);
        assert_eq!(e.p99_ms, None);
    }

    #[test]
    fn services_nodes_and_proxies() {
        let g = compute(Some(&snap(0.0, 0)), &snap(10.0, 1));
        let s = g.services.iter().find(|s| s.service == ORDER).unwrap();
        assert_eq!(s.protocol, Protocol::Http);
        close(s.rate, 11.0);
        close(s.success, 105.0 / 110.0);
        // All 110: ≤0.5: 10, ≤5: 60, ≤25: 100, ≤250: 105, ≤1000: 110.
        close(s.p50_ms, 1.0 + 4.0 * 45.0 / 50.0);
        close(s.p99_ms, 500.0 + 500.0 * 3.9 / 5.0);
        close(s.denials, 10.0);
        let p = g.services.iter().find(|s| s.service == PAY).unwrap();
        assert_eq!(p.protocol, Protocol::Tcp);
        close(p.rate, 3.5);
        close(p.denials, 20.0);
        assert_eq!(p.mtls, Mtls::Mixed);

        let kinds: BTreeMap<&str, NodeKind> =
            g.nodes.iter().map(|n| (n.id.as_str(), n.kind)).collect();
        assert_eq!(kinds.len(), 8, "{kinds:?}");
        assert_eq!(kinds["production/waypoint-0"], NodeKind::Waypoint);
        assert_eq!(kinds[ORDER], NodeKind::Service);
        assert_eq!(kinds["production/order-v1"], NodeKind::Workload);
        let wp = g
            .nodes
            .iter()
            .find(|n| n.id == "production/waypoint-0")
            .unwrap();
        assert_eq!(
            wp.identities,
            vec!["spiffe://cluster.local/ns/production/sa/waypoint".to_string()]
        );
        assert_eq!(wp.namespace.as_deref(), Some("production"));
        let fe = g
            .nodes
            .iter()
            .find(|n| n.id == "production/frontend")
            .unwrap();
        assert_eq!(
            fe.identities,
            vec!["spiffe://cluster.local/ns/production/sa/frontend".to_string()]
        );
        let kinds: Vec<ProxyKind> = g.proxies.iter().map(|p| p.kind).collect();
        assert_eq!(
            kinds,
            vec![ProxyKind::Ztunnel, ProxyKind::Ztunnel, ProxyKind::Waypoint]
        );

        // Layout: callers left of callees, order-v1 after the waypoint, all distinct.
        let x = |id: &str| g.nodes.iter().find(|n| n.id == id).unwrap().x;
        assert!(x("production/frontend") < x("production/waypoint-0"));
        assert!(x("production/waypoint-0") < x("production/order-v1"));
        let mut pos: Vec<(i64, i64)> = g.nodes.iter().map(|n| (n.x as i64, n.y as i64)).collect();
        pos.sort();
        pos.dedup();
        assert_eq!(pos.len(), g.nodes.len());
        assert!(g
            .nodes
            .iter()
            .all(|n| n.x > 0.0 && n.x < g.width && n.y > 0.0 && n.y < g.height));
    }

    #[test]
    fn single_scrape_has_totals_but_no_rates() {
        let g = compute(None, &snap(0.0, 1));
        assert_eq!(g.window_secs, None);
        let e = edge(
            &g,
            "production/frontend",
            "production/order-v2",
            Protocol::Http,
        );
        assert_eq!(
            (e.rate, e.success, e.p99_ms, e.denials),
            (None, None, None, None)
        );
        assert_eq!(e.total, 60.0);
        assert_eq!(e.mtls, Mtls::Yes);
    }

    fn one(text: &str, url: &str) -> TargetScrape {
        TargetScrape {
            target: Target::parse(url),
            result: Ok(parse_filtered(text, wanted).unwrap()),
            elapsed_ms: 0.0,
        }
    }

    #[test]
    fn counter_resets_new_series_and_new_targets() {
        let line = |code: &str, v: u32| {
            format!("istio_requests_total{{reporter=\"waypoint\",source_workload=\"a\",source_workload_namespace=\"n\",destination_workload=\"b\",destination_workload_namespace=\"n\",response_code=\"{code}\",connection_security_policy=\"none\"}} {v}\n")
        };
        let prev = Snapshot {
            at_secs: 0.0,
            targets: vec![one(&line("200", 100), "127.0.0.1:1")],
        };
        // The waypoint restarted (200s went 100 → 4) and a 500 series appeared; a second
        // waypoint appeared with 1000 requests (counted from its next scrape only).
        let cur = Snapshot {
            at_secs: 2.0,
            targets: vec![
                one(&(line("200", 4) + &line("500", 2)), "127.0.0.1:1"),
                one(&line("200", 1000), "127.0.0.1:2"),
            ],
        };
        let g = compute(Some(&prev), &cur);
        let e = edge(&g, "n/a", "n/b", Protocol::Http);
        close(e.rate, 3.0);
        close(e.success, 4.0 / 6.0);
        assert_eq!(e.total, 1006.0);
        assert_eq!(e.mtls, Mtls::No);
        // A failed target is listed as down; the others still count.
        let mut cur2 = cur.clone();
        cur2.at_secs = 4.0;
        cur2.targets[1].result = Err("connection refused".into());
        let g = compute(Some(&cur), &cur2);
        close(edge(&g, "n/a", "n/b", Protocol::Http).rate, 0.0);
        assert_eq!(g.proxies[1].kind, ProxyKind::Down);
    }

    #[test]
    fn target_specs() {
        assert_eq!(
            Target::parse("127.0.0.1:15020"),
            Target {
                url: "http://127.0.0.1:15020/metrics".into(),
                name: None
            }
        );
        assert_eq!(
            Target::parse("production/waypoint-0=http://127.0.0.1:1/stats/prometheus"),
            Target {
                url: "http://127.0.0.1:1/stats/prometheus".into(),
                name: Some("production/waypoint-0".into())
            }
        );
        assert_eq!(
            Target::parse("http://h:1/m?a=b").url,
            "http://h:1/m?a=b".to_string()
        );
    }

    #[test]
    fn waypoint_named_by_its_target() {
        let text = "istio_requests_total{reporter=\"waypoint\",source_workload=\"a\",source_workload_namespace=\"n\",destination_workload=\"b\",destination_workload_namespace=\"n\",response_code=\"200\"} 1\n\
                    istio_tcp_connections_opened_total{reporter=\"destination\",source_workload=\"wp\",source_workload_namespace=\"n\",destination_workload=\"b\",destination_workload_namespace=\"n\",response_flags=\"-\"} 1\n";
        let g = compute(
            None,
            &Snapshot {
                at_secs: 0.0,
                targets: vec![one(text, "n/wp=127.0.0.1:1")],
            },
        );
        let wp = g.nodes.iter().find(|n| n.id == "n/wp").unwrap();
        assert_eq!(wp.kind, NodeKind::Waypoint);
    }
}

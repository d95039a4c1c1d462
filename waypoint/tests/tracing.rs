//! Tracing end to end against a real OTLP/gRPC receiver (a tonic TraceService server on
//! 127.0.0.1): sampling rate, custom tags, forced sampling, context propagation to the
//! application, and a stopped collector costing dropped spans, never failed requests.

mod common;

use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use common::*;
use http::HeaderMap;
use meshwork_model::pb::config::{self as pb, custom_tag};
use meshwork_waypoint::tracing::export::ExportSettings;
use meshwork_waypoint::tracing::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
use meshwork_waypoint::tracing::otlp::collector::trace::v1::trace_service_server::{
    TraceService, TraceServiceServer,
};
use meshwork_waypoint::tracing::otlp::collector::trace::v1::{
    ExportTraceServiceRequest, ExportTraceServiceResponse,
};
use meshwork_waypoint::tracing::otlp::common::v1::any_value::Value;
use meshwork_waypoint::tracing::otlp::trace::v1::{
    span::SpanKind, ResourceSpans, ScopeSpans, Span,
};
use meshwork_waypoint::tracing::tracecontext::{hex, parse_traceparent};
use meshwork_waypoint::tracing::TracingOptions;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

/// Spans received, with the resource's `service.name`; answers after `delay`.
#[derive(Clone, Default)]
struct Received(Arc<Mutex<Vec<(String, Span)>>>, Duration);

#[tonic::async_trait]
impl TraceService for Received {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        if !self.1.is_zero() {
            tokio::time::sleep(self.1).await;
        }
        let mut out = self.0.lock().unwrap();
        for rs in req.into_inner().resource_spans {
            let service = rs
                .resource
                .iter()
                .flat_map(|r| &r.attributes)
                .find(|a| a.key == "service.name")
                .and_then(|a| a.value.clone()?.value)
                .map(|v| match v {
                    Value::StringValue(s) => s,
                    other => format!("{other:?}"),
                })
                .unwrap_or_default();
            for ss in rs.scope_spans {
                for s in ss.spans {
                    out.push((service.clone(), s));
                }
            }
        }
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

struct Receiver {
    addr: std::net::SocketAddr,
    spans: Received,
    stop: Option<oneshot::Sender<()>>,
    task: tokio::task::JoinHandle<()>,
}

async fn receiver() -> Receiver {
    slow_receiver(Duration::ZERO).await
}

async fn slow_receiver(delay: Duration) -> Receiver {
    let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = l.local_addr().unwrap();
    let spans = Received(Default::default(), delay);
    let (stop, stopped) = oneshot::channel::<()>();
    let svc = TraceServiceServer::new(spans.clone());
    let task = tokio::spawn(async move {
        let _ = tonic::transport::Server::builder()
            .add_service(svc)
            .serve_with_incoming_shutdown(tonic::transport::server::TcpIncoming::from(l), async {
                let _ = stopped.await;
            })
            .await;
    });
    Receiver {
        addr,
        spans,
        stop: Some(stop),
        task,
    }
}

impl Receiver {
    fn spans(&self) -> Vec<(String, Span)> {
        self.spans.0.lock().unwrap().clone()
    }

    fn server_spans(&self) -> Vec<Span> {
        self.spans()
            .into_iter()
            .map(|(_, s)| s)
            .filter(|s| s.kind == SpanKind::Server as i32)
            .collect()
    }

    /// Waits (bounded) until no new span arrived for 300 ms.
    async fn settle(&self) -> Vec<(String, Span)> {
        let mut last = usize::MAX;
        let mut quiet = 0;
        for _ in 0..200 {
            tokio::time::sleep(Duration::from_millis(50)).await;
            let n = self.spans.0.lock().unwrap().len();
            if n == last && n > 0 {
                quiet += 1;
                if quiet >= 6 {
                    break;
                }
            } else {
                quiet = 0;
            }
            last = n;
        }
        self.spans()
    }

    async fn stop(&mut self) {
        if let Some(s) = self.stop.take() {
            let _ = s.send(());
        }
        let _ = tokio::time::timeout(Duration::from_secs(5), &mut self.task).await;
    }
}

fn attr(s: &Span, k: &str) -> Option<String> {
    s.attributes
        .iter()
        .find(|a| a.key == k)
        .and_then(|a| a.value.clone()?.value)
        .map(|v| match v {
            Value::StringValue(s) => s,
            Value::IntValue(i) => i.to_string(),
            other => format!("{other:?}"),
        })
}

fn tag(name: &str, v: custom_tag::Value, default: &str) -> pb::CustomTag {
    pb::CustomTag {
        name: name.into(),
        value: Some(v),
        default_value: default.into(),
    }
}

/// The seed's 04-tracing.yaml as the translator produces it, at `percent`.
fn seed_telemetry(percent: f64) -> pb::TelemetryConfig {
    pb::TelemetryConfig {
        name: "default-tracing".into(),
        namespace: "istio-system".into(),
        scope: pb::PolicyScope::Global as i32,
        tracing: vec![pb::Tracing {
            providers: vec!["otel".into()],
            random_sampling_percentage: percent,
            has_sampling: true,
            custom_tags: vec![
                tag("user_id", custom_tag::Value::Header("x-user-id".into()), ""),
                tag("team", custom_tag::Value::Literal("payments".into()), ""),
                tag(
                    "cluster_env",
                    custom_tag::Value::Environment("MESHWORK_TEST_SURELY_UNSET".into()),
                    "env-default",
                ),
            ],
            disable_span_reporting: false,
        }],
        ..Default::default()
    }
}

/// A backend that records the headers it receives.
async fn recording() -> (Backend, Arc<Mutex<Vec<HeaderMap>>>) {
    let seen = Arc::new(Mutex::new(Vec::new()));
    let s = seen.clone();
    let b = backend(Arc::new(move |_, parts| {
        s.lock().unwrap().push(parts.headers.clone());
        (200, "ok".into(), Duration::ZERO)
    }))
    .await;
    (b, seen)
}

struct Setup {
    proxy: Proxy,
    seen: Arc<Mutex<Vec<HeaderMap>>>,
}

async fn setup(percent: f64, endpoint: String) -> Setup {
    setup_with(
        percent,
        endpoint,
        ExportSettings {
            flush_interval: Duration::from_millis(50),
            timeout: Duration::from_millis(500),
            ..Default::default()
        },
    )
    .await
}

async fn setup_with(percent: f64, endpoint: String, export: ExportSettings) -> Setup {
    let (b, seen) = recording().await;
    let mut m = Mesh::default();
    m.service("order-service", "10.96.0.10")
        .workload("order-v1", "order-service", "v1", ORDER_SA, b.addr.port())
        .otel_provider(
            "otel",
            "otel-collector.observability.svc.cluster.local",
            4317,
        )
        .telemetry(seed_telemetry(percent));
    let proxy = proxy_traced(
        m.snapshot(),
        Some(ORDER_SA),
        TracingOptions {
            otlp_endpoint: Some(endpoint),
            export,
        },
    )
    .await;
    Setup { proxy, seen }
}

fn counter(p: &Proxy, name: &str) -> u64 {
    let mut text = String::new();
    prometheus_client::encoding::text::encode(&mut text, &p.registry).unwrap();
    text.lines()
        .find_map(|l| l.strip_prefix(name)?.trim().parse().ok())
        .unwrap_or(0)
}

const TRACE: &str = "4bf92f3577b34da6a3ce929d0e0e4736";
const PARENT: &str = "00f067aa0ba902b7";

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn ten_percent_sampling_over_2000_requests() {
    let r = receiver().await;
    let s = setup(10.0, r.addr.to_string()).await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..8 {
        let (c, addr) = (c.clone(), s.proxy.addr);
        tasks.push(tokio::spawn(async move {
            for _ in 0..250 {
                let (status, _, _) = send(&c, addr, "GET", ORDER_HOST, "/orders", &[]).await;
                assert_eq!(status, 200);
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    r.settle().await;
    let traces: BTreeSet<Vec<u8>> = r.server_spans().into_iter().map(|s| s.trace_id).collect();
    // 10% of 2000 = 200; ±3 points = 140..=260 (over 4 standard deviations).
    assert!(
        (140..=260).contains(&traces.len()),
        "sampled traces: {}",
        traces.len()
    );
    // Every request reached the backend, each with a traceparent; the sampled flag matches
    // what was reported.
    let seen = s.seen.lock().unwrap();
    assert_eq!(seen.len(), 2000);
    let flagged = seen
        .iter()
        .filter_map(|h| parse_traceparent(h.get("traceparent")?.to_str().ok()?))
        .filter(|(_, _, sampled)| *sampled)
        .count();
    assert_eq!(flagged, traces.len());
    assert_eq!(counter(&s.proxy, "meshwork_tracing_spans_dropped_total"), 0);
    assert_eq!(
        counter(&s.proxy, "meshwork_tracing_spans_exported_total") as usize,
        r.spans().len()
    );
}

#[tokio::test]
async fn custom_tags_and_span_attributes() {
    let r = receiver().await;
    let s = setup(100.0, r.addr.to_string()).await;
    let c = client();
    let (status, _, _) = send(
        &c,
        s.proxy.addr,
        "POST",
        ORDER_HOST,
        "/orders?id=7",
        &[("x-user-id", "user-42")],
    )
    .await;
    assert_eq!(status, 200);
    let spans = r.settle().await;
    assert_eq!(spans.len(), 2, "one server and one client span");
    assert!(spans.iter().all(|(svc, _)| svc == "waypoint.production"));
    let server = r.server_spans().remove(0);
    let client_span = spans
        .iter()
        .map(|(_, s)| s)
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(client_span.trace_id, server.trace_id);
    assert_eq!(client_span.parent_span_id, server.span_id);
    // The server span (request arrival to response end) encloses the upstream try.
    assert!(server.start_time_unix_nano <= client_span.start_time_unix_nano);
    assert!(server.end_time_unix_nano >= client_span.end_time_unix_nano);
    assert!(client_span.start_time_unix_nano < client_span.end_time_unix_nano);
    for (k, v) in [
        ("user_id", "user-42"),
        ("team", "payments"),
        ("cluster_env", "env-default"),
        ("component", "proxy"),
        ("http.method", "POST"),
        ("http.request.method", "POST"),
        ("url.path", "/orders"),
        ("http.status_code", "200"),
        ("http.response.status_code", "200"),
        ("istio.mesh_id", "cluster.local"),
        ("istio.source_principal", ORDER_SA),
        ("istio.destination_workload", "order-v1"),
        ("istio.destination_namespace", NS),
        ("response_flags", "-"),
    ] {
        assert_eq!(attr(&server, k).as_deref(), Some(v), "{k}");
    }
    assert_eq!(
        attr(&server, "upstream_cluster").as_deref(),
        attr(client_span, "upstream_cluster").as_deref()
    );
    assert!(attr(&server, "upstream_cluster")
        .unwrap()
        .contains("order-service"));
    assert_eq!(server.name, format!("{ORDER_HOST}:80/*"));

    // Without the header (and no default) the tag is absent.
    send(&c, s.proxy.addr, "GET", ORDER_HOST, "/", &[]).await;
    for _ in 0..100 {
        if r.server_spans().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    let second = r
        .server_spans()
        .into_iter()
        .find(|s| s.trace_id != server.trace_id)
        .unwrap();
    assert_eq!(attr(&second, "user_id"), None);
}

#[tokio::test]
async fn sampled_parent_forces_sampling_and_the_application_joins_the_trace() {
    let r = receiver().await;
    let s = setup(0.0, r.addr.to_string()).await;
    let c = client();

    // 0%: nothing is reported without a sampled parent.
    for _ in 0..20 {
        let (status, _, _) = send(&c, s.proxy.addr, "GET", ORDER_HOST, "/", &[]).await;
        assert_eq!(status, 200);
    }
    let unsampled_parent = format!("00-{TRACE}-{PARENT}-00");
    send(
        &c,
        s.proxy.addr,
        "GET",
        ORDER_HOST,
        "/",
        &[("traceparent", &unsampled_parent)],
    )
    .await;

    let tp = format!("00-{TRACE}-{PARENT}-01");
    let (status, _, _) = send(
        &c,
        s.proxy.addr,
        "GET",
        ORDER_HOST,
        "/checkout",
        &[
            ("traceparent", &tp),
            ("tracestate", "congo=t61rcWkgMzE"),
            ("baggage", "userId=alice"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    r.settle().await;
    let servers = r.server_spans();
    assert_eq!(servers.len(), 1, "only the sampled parent's request");
    let server = &servers[0];
    assert_eq!(hex(&server.trace_id), TRACE);
    assert_eq!(hex(&server.parent_span_id), PARENT);
    assert_eq!(server.trace_state, "congo=t61rcWkgMzE");

    // The application received the same trace, parented on the waypoint's client span.
    let h = s.seen.lock().unwrap().last().unwrap().clone();
    let (tid, parent, sampled) = parse_traceparent(h["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!(hex(&tid), TRACE);
    assert!(sampled);
    assert_eq!(h["tracestate"], "congo=t61rcWkgMzE");
    assert_eq!(h["baggage"], "userId=alice");
    let client_span = r
        .spans()
        .into_iter()
        .map(|(_, s)| s)
        .find(|s| s.kind == SpanKind::Client as i32)
        .unwrap();
    assert_eq!(client_span.span_id, parent.to_vec());
    assert_eq!(client_span.parent_span_id, server.span_id);
    // The unsampled parent's request went upstream with the flag still off.
    let unsampled = s.seen.lock().unwrap()[20].clone();
    let (tid2, _, sampled2) =
        parse_traceparent(unsampled["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!((hex(&tid2).as_str(), sampled2), (TRACE, false));

    // The application creates its own span from the propagated context and exports it:
    // it joins the waypoint's trace.
    let app_span = Span {
        trace_id: tid.to_vec(),
        span_id: vec![0xab; 8],
        parent_span_id: parent.to_vec(),
        name: "checkout".into(),
        kind: SpanKind::Server as i32,
        ..Default::default()
    };
    let mut exporter = TraceServiceClient::connect(format!("http://{}", r.addr))
        .await
        .unwrap();
    exporter
        .export(ExportTraceServiceRequest {
            resource_spans: vec![ResourceSpans {
                scope_spans: vec![ScopeSpans {
                    spans: vec![app_span],
                    ..Default::default()
                }],
                ..Default::default()
            }],
        })
        .await
        .unwrap();
    let by_trace: HashMap<Vec<u8>, usize> =
        r.spans().into_iter().fold(HashMap::new(), |mut m, (_, s)| {
            *m.entry(s.trace_id).or_default() += 1;
            m
        });
    assert_eq!(by_trace.len(), 1);
    assert_eq!(
        by_trace[&tid.to_vec()],
        3,
        "server, client and application spans"
    );
}

#[tokio::test]
async fn b3_sampled_forces_sampling_and_b3_headers_follow() {
    let r = receiver().await;
    let s = setup(0.0, r.addr.to_string()).await;
    let c = client();
    let (status, _, _) = send(
        &c,
        s.proxy.addr,
        "GET",
        ORDER_HOST,
        "/",
        &[
            ("x-b3-traceid", "463ac35c9f6413ad48485a3953bb6124"),
            ("x-b3-spanid", "a2fb4a1d1a96d312"),
            ("x-b3-sampled", "1"),
        ],
    )
    .await;
    assert_eq!(status, 200);
    r.settle().await;
    let server = r.server_spans().remove(0);
    assert_eq!(hex(&server.trace_id), "463ac35c9f6413ad48485a3953bb6124");
    let h = s.seen.lock().unwrap()[0].clone();
    let (tid, span, _) = parse_traceparent(h["traceparent"].to_str().unwrap()).unwrap();
    assert_eq!(h["x-b3-traceid"], hex(&tid));
    assert_eq!(h["x-b3-spanid"], hex(&span));
    assert_eq!(h["x-b3-parentspanid"], hex(&server.span_id));
    assert_eq!(h["x-b3-sampled"], "1");

    // A bare `x-b3-sampled: 1` (no ids) also forces sampling, in a new trace.
    send(
        &c,
        s.proxy.addr,
        "GET",
        ORDER_HOST,
        "/",
        &[("x-b3-sampled", "1")],
    )
    .await;
    for _ in 0..100 {
        if r.server_spans().len() >= 2 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(20)).await;
    }
    assert_eq!(r.server_spans().len(), 2);
}

#[tokio::test]
async fn stopped_receiver_costs_dropped_spans_not_requests() {
    let mut r = receiver().await;
    let s = setup(100.0, r.addr.to_string()).await;
    let c = client();
    let (status, _, _) = send(&c, s.proxy.addr, "GET", ORDER_HOST, "/", &[]).await;
    assert_eq!(status, 200);
    r.settle().await;
    assert_eq!(
        counter(&s.proxy, "meshwork_tracing_spans_exported_total"),
        2
    );

    r.stop().await;
    for i in 0..50 {
        let (status, body, _) = send(&c, s.proxy.addr, "GET", ORDER_HOST, "/", &[]).await;
        assert_eq!((status, body.as_str()), (200, "ok"), "request {i}");
    }
    let mut dropped = 0;
    for _ in 0..200 {
        dropped = counter(&s.proxy, "meshwork_tracing_spans_dropped_total");
        if dropped >= 100 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert_eq!(dropped, 100, "two spans per request dropped");
    assert_eq!(
        counter(&s.proxy, "meshwork_tracing_spans_exported_total"),
        2
    );
}

#[tokio::test(flavor = "multi_thread", worker_threads = 2)]
async fn slow_collector_overflows_the_bounded_queue() {
    // The collector takes 10 s per export; the waypoint waits at most 300 ms, keeps at
    // most 8 spans queued, and sends batches of 4.
    let r = slow_receiver(Duration::from_secs(10)).await;
    let s = setup_with(
        100.0,
        r.addr.to_string(),
        ExportSettings {
            queue: 8,
            max_batch: 4,
            flush_interval: Duration::from_millis(20),
            timeout: Duration::from_millis(300),
        },
    )
    .await;
    let c = client();
    let mut tasks = Vec::new();
    for _ in 0..4 {
        let (c, addr) = (c.clone(), s.proxy.addr);
        tasks.push(tokio::spawn(async move {
            for _ in 0..50 {
                let (status, body, _) = send(&c, addr, "GET", ORDER_HOST, "/", &[]).await;
                assert_eq!((status, body.as_str()), (200, "ok"));
            }
        }));
    }
    for t in tasks {
        t.await.unwrap();
    }
    assert_eq!(s.seen.lock().unwrap().len(), 200);
    // Nothing is ever accepted: all 400 spans are dropped, by queue overflow or by export
    // timeout, except those still queued or in flight (at most the queue plus a batch).
    let mut dropped = 0;
    for _ in 0..200 {
        dropped = counter(&s.proxy, "meshwork_tracing_spans_dropped_total");
        if dropped >= 400 - 8 - 4 {
            break;
        }
        tokio::time::sleep(Duration::from_millis(25)).await;
    }
    assert!(dropped >= 400 - 8 - 4, "dropped {dropped}");
    assert_eq!(
        counter(&s.proxy, "meshwork_tracing_spans_exported_total"),
        0
    );
}

#[tokio::test]
async fn each_upstream_try_gets_its_own_client_span() {
    let r = receiver().await;
    let seen = Arc::new(Mutex::new(Vec::<HeaderMap>::new()));
    let s2 = seen.clone();
    // The first try fails with 503, the retry succeeds.
    let b = backend(Arc::new(move |n, parts| {
        s2.lock().unwrap().push(parts.headers.clone());
        let status = if n == 0 { 503 } else { 200 };
        (status, "ok".into(), Duration::ZERO)
    }))
    .await;
    let mut m = Mesh::default();
    m.service("order-service", "10.96.0.10")
        .workload("order-v1", "order-service", "v1", ORDER_SA, b.addr.port())
        .route(pb::RouteConfig {
            hostname: ORDER_HOST.into(),
            namespace: NS.into(),
            http: vec![pb::HttpRoute {
                route: vec![dest(ORDER_HOST, "", 100)],
                retries: Some(pb::Retry {
                    attempts: 2,
                    retry_on: vec!["5xx".into()],
                    ..Default::default()
                }),
                ..Default::default()
            }],
            ..Default::default()
        })
        .otel_provider(
            "otel",
            "otel-collector.observability.svc.cluster.local",
            4317,
        )
        .telemetry(seed_telemetry(100.0));
    let proxy = proxy_traced(
        m.snapshot(),
        Some(ORDER_SA),
        TracingOptions {
            otlp_endpoint: Some(r.addr.to_string()),
            export: ExportSettings {
                flush_interval: Duration::from_millis(50),
                ..Default::default()
            },
        },
    )
    .await;
    let (status, _, _) = send(&client(), proxy.addr, "GET", ORDER_HOST, "/", &[]).await;
    assert_eq!(status, 200);
    let spans: Vec<Span> = r.settle().await.into_iter().map(|(_, s)| s).collect();
    let server = spans
        .iter()
        .find(|s| s.kind == SpanKind::Server as i32)
        .unwrap();
    let mut clients: Vec<&Span> = spans
        .iter()
        .filter(|s| s.kind == SpanKind::Client as i32)
        .collect();
    clients.sort_by_key(|s| s.start_time_unix_nano);
    assert_eq!(clients.len(), 2);
    assert_eq!(attr(clients[0], "http.status_code").as_deref(), Some("503"));
    assert_eq!(attr(clients[1], "http.status_code").as_deref(), Some("200"));
    assert_eq!(attr(server, "http.status_code").as_deref(), Some("200"));
    // Each try carried its own client span as the parent.
    let seen = seen.lock().unwrap();
    assert_eq!(seen.len(), 2);
    for (h, c) in seen.iter().zip(&clients) {
        let (tid, parent, sampled) = parse_traceparent(h["traceparent"].to_str().unwrap()).unwrap();
        assert_eq!(tid.to_vec(), server.trace_id);
        assert_eq!(parent.to_vec(), c.span_id);
        assert_eq!(c.parent_span_id, server.span_id);
        assert!(sampled);
    }
}

#[tokio::test]
async fn without_telemetry_trace_headers_pass_untouched() {
    let r = receiver().await;
    let (b, seen) = recording().await;
    let mut m = Mesh::default();
    m.service("order-service", "10.96.0.10")
        .workload("order-v1", "order-service", "v1", ORDER_SA, b.addr.port())
        .otel_provider(
            "otel",
            "otel-collector.observability.svc.cluster.local",
            4317,
        );
    let proxy = proxy_traced(
        m.snapshot(),
        Some(ORDER_SA),
        TracingOptions {
            otlp_endpoint: Some(r.addr.to_string()),
            ..Default::default()
        },
    )
    .await;
    let tp = format!("00-{TRACE}-{PARENT}-01");
    let (status, _, _) = send(
        &client(),
        proxy.addr,
        "GET",
        ORDER_HOST,
        "/",
        &[("traceparent", &tp), ("x-b3-sampled", "1")],
    )
    .await;
    assert_eq!(status, 200);
    let h = seen.lock().unwrap()[0].clone();
    assert_eq!(h["traceparent"], tp.as_str());
    assert_eq!(h["x-b3-sampled"], "1");
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(r.spans().is_empty());
}

#[tokio::test]
async fn disabled_span_reporting_still_propagates_the_decision() {
    let r = receiver().await;
    let (b, seen) = recording().await;
    let mut t = seed_telemetry(100.0);
    t.tracing[0].disable_span_reporting = true;
    let mut m = Mesh::default();
    m.service("order-service", "10.96.0.10")
        .workload("order-v1", "order-service", "v1", ORDER_SA, b.addr.port())
        .otel_provider(
            "otel",
            "otel-collector.observability.svc.cluster.local",
            4317,
        )
        .telemetry(t);
    let proxy = proxy_traced(
        m.snapshot(),
        Some(ORDER_SA),
        TracingOptions {
            otlp_endpoint: Some(r.addr.to_string()),
            ..Default::default()
        },
    )
    .await;
    let (status, _, _) = send(&client(), proxy.addr, "GET", ORDER_HOST, "/", &[]).await;
    assert_eq!(status, 200);
    let h = seen.lock().unwrap()[0].clone();
    let (_, _, sampled) = parse_traceparent(h["traceparent"].to_str().unwrap()).unwrap();
    assert!(sampled);
    tokio::time::sleep(Duration::from_millis(200)).await;
    assert!(r.spans().is_empty());
    assert_eq!(counter(&proxy, "meshwork_tracing_spans_exported_total"), 0);
}

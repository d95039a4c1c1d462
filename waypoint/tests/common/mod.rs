//! Test harness: real hyper backends on 127.0.0.1, a mesh snapshot built as the translator
//! would, and the waypoint serving on 127.0.0.1.
#![allow(dead_code)]

use std::collections::BTreeMap;
use std::convert::Infallible;
use std::net::SocketAddr;
use std::sync::atomic::{AtomicUsize, Ordering};
use std::sync::{Arc, Mutex};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper::service::service_fn;
use hyper_util::rt::{TokioExecutor, TokioIo};
use meshwork_model::client::ConfigHandle;
use meshwork_model::keys::{make_resource, Kind};
use meshwork_model::pb::config::{self as pb, resource};
use meshwork_model::snapshot::Snapshot;
use meshwork_waypoint::access_log::AccessLog;
use meshwork_waypoint::server::{serve_connection, ServerLimits};
use meshwork_waypoint::tracing::TracingOptions;
use meshwork_waypoint::{ConnContext, Connector, L7Service, Options, TcpConnector, WaypointId};
use prometheus_client::registry::Registry;
use tokio::net::TcpListener;

pub const NS: &str = "production";
pub const ORDER_HOST: &str = "order-service.production.svc.cluster.local";
pub const PAYMENT_HOST: &str = "payment-service.production.svc.cluster.local";
pub const ORDER_SA: &str = "spiffe://cluster.local/ns/production/sa/order-service";

/// What a backend answers: (status, body, delay before answering).
pub type Behaviour =
    Arc<dyn Fn(usize, &http::request::Parts) -> (u16, String, Duration) + Send + Sync>;

pub struct Backend {
    pub addr: SocketAddr,
    pub hits: Arc<AtomicUsize>,
}

/// Starts an HTTP/1.1 + HTTP/2 backend on 127.0.0.1.
pub async fn backend(f: Behaviour) -> Backend {
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let hits = Arc::new(AtomicUsize::new(0));
    let h = hits.clone();
    tokio::spawn(async move {
        for _ in 0..100_000 {
            let Ok((s, _)) = listener.accept().await else {
                return;
            };
            let f = f.clone();
            let h = h.clone();
            tokio::spawn(async move {
                let svc = service_fn(move |req: hyper::Request<hyper::body::Incoming>| {
                    let f = f.clone();
                    let n = h.fetch_add(1, Ordering::SeqCst);
                    async move {
                        let (parts, body) = req.into_parts();
                        let _ = body.collect().await;
                        let (status, text, delay) = f(n, &parts);
                        if !delay.is_zero() {
                            tokio::time::sleep(delay).await;
                        }
                        let mut resp = hyper::Response::new(Full::new(Bytes::from(text)));
                        *resp.status_mut() = http::StatusCode::from_u16(status).unwrap();
                        Ok::<_, Infallible>(resp)
                    }
                });
                let _ = hyper_util::server::conn::auto::Builder::new(TokioExecutor::new())
                    .serve_connection(TokioIo::new(s), svc)
                    .await;
            });
        }
    });
    Backend { addr, hits }
}

/// A backend that always answers 200 with `name`.
pub async fn named(name: &'static str) -> Backend {
    backend(Arc::new(move |_, _| {
        (200, name.to_string(), Duration::ZERO)
    }))
    .await
}

#[derive(Default)]
pub struct Mesh {
    resources: BTreeMap<String, Arc<pb::Resource>>,
    providers: Vec<pb::ExtensionProvider>,
    /// Telemetry keys, least specific first, listed on every workload as the translator does.
    telemetry: Vec<String>,
    path_normalization: pb::PathNormalization,
}

impl Mesh {
    fn put(&mut self, key: String, kind: resource::Kind) {
        self.resources
            .insert(key.clone(), Arc::new(make_resource(key, kind)));
    }

    pub fn service(&mut self, name: &str, vip: &str) -> &mut Self {
        let hostname = format!("{name}.{NS}.svc.cluster.local");
        let s = pb::Service {
            name: name.into(),
            namespace: NS.into(),
            hostname: hostname.clone(),
            aliases: vec![
                name.into(),
                format!("{name}.{NS}"),
                format!("{name}.{NS}.svc"),
            ],
            vips: vec![vip.into()],
            ports: vec![pb::ServicePort {
                port: 80,
                target_port: 8080,
                name: "http".into(),
                protocol: "HTTP".into(),
                target_port_name: String::new(),
            }],
            ..Default::default()
        };
        self.put(Kind::Service.key(NS, &hostname), resource::Kind::Service(s));
        self
    }

    /// A pod of `service` listening on the backend's port, labelled app/version.
    pub fn workload(
        &mut self,
        name: &str,
        service: &str,
        version: &str,
        sa: &str,
        port: u16,
    ) -> &mut Self {
        let hostname = format!("{service}.{NS}.svc.cluster.local");
        let labels: BTreeMap<String, String> = [
            ("app".to_string(), service.to_string()),
            ("version".to_string(), version.to_string()),
        ]
        .into();
        let w = pb::Workload {
            uid: format!("Kubernetes//Pod/{NS}/{name}"),
            name: name.into(),
            namespace: NS.into(),
            service_account: sa.into(),
            trust_domain: "cluster.local".into(),
            addresses: vec!["127.0.0.1".into()],
            labels,
            captured: true,
            healthy: true,
            services: vec![pb::ServicePorts {
                service: format!("{NS}/{hostname}"),
                ports: [(80u32, u32::from(port))].into(),
            }],
            ..Default::default()
        };
        self.put(Kind::Workload.key(NS, name), resource::Kind::Workload(w));
        self
    }

    /// A workload as given (other addresses, waypoint bindings).
    pub fn raw_workload(&mut self, w: pb::Workload) -> &mut Self {
        self.put(
            Kind::Workload.key(&w.namespace, &w.name),
            resource::Kind::Workload(w),
        );
        self
    }

    /// A service as given.
    pub fn raw_service(&mut self, s: pb::Service) -> &mut Self {
        self.put(
            Kind::Service.key(&s.namespace, &s.hostname),
            resource::Kind::Service(s),
        );
        self
    }

    /// Binds every service and workload added so far that names no waypoint to the test
    /// waypoint [`waypoint_address`] (`istio.io/use-waypoint` on the namespace).
    pub fn bind_all_to_waypoint(&mut self) -> &mut Self {
        for res in self.resources.values_mut() {
            let kind = match &res.kind {
                Some(resource::Kind::Service(s)) if s.waypoint.is_none() => {
                    resource::Kind::Service(pb::Service {
                        waypoint: Some(waypoint_address()),
                        ..s.clone()
                    })
                }
                Some(resource::Kind::Workload(w)) if w.waypoint.is_none() && !w.is_waypoint => {
                    resource::Kind::Workload(pb::Workload {
                        waypoint: Some(waypoint_address()),
                        ..w.clone()
                    })
                }
                _ => continue,
            };
            *res = Arc::new(make_resource(res.key.clone(), kind));
        }
        self
    }

    pub fn route(&mut self, r: pb::RouteConfig) -> &mut Self {
        self.put(
            Kind::Route.key(&r.namespace, &r.hostname),
            resource::Kind::Route(r),
        );
        self
    }

    /// A WasmPlugin (`wasmplugin/<ns>/<name>`).
    pub fn wasm_plugin(&mut self, p: pb::WasmPlugin) -> &mut Self {
        self.put(
            Kind::WasmPlugin.key(&p.namespace, &p.name),
            resource::Kind::WasmPlugin(p),
        );
        self
    }

    pub fn authz(&mut self, a: pb::Authorization) -> &mut Self {
        self.put(
            Kind::Authorization.key(&a.namespace, &a.name),
            resource::Kind::Authorization(a),
        );
        self
    }

    /// An `opentelemetry` extension provider.
    pub fn otel_provider(&mut self, name: &str, service: &str, port: u32) -> &mut Self {
        self.providers.push(pb::ExtensionProvider {
            name: name.into(),
            provider: Some(pb::extension_provider::Provider::Opentelemetry(
                pb::OpenTelemetryProvider {
                    service: service.into(),
                    port,
                    ..Default::default()
                },
            )),
        });
        self
    }

    /// `meshConfig.pathNormalization.normalization` (default `BASE`).
    pub fn path_normalization(&mut self, n: pb::PathNormalization) -> &mut Self {
        self.path_normalization = n;
        self
    }

    /// A Telemetry resource (add root-namespace ones before namespace ones).
    pub fn telemetry(&mut self, t: pb::TelemetryConfig) -> &mut Self {
        let key = Kind::Telemetry.key(&t.namespace, &t.name);
        self.telemetry.push(key.clone());
        self.put(key, resource::Kind::Telemetry(t));
        self
    }

    pub fn snapshot(&self) -> Snapshot {
        let mut r = self.resources.clone();
        for res in r.values_mut() {
            if let Some(resource::Kind::Workload(w)) = &res.kind {
                let mut w = w.clone();
                w.telemetry = self.telemetry.clone();
                *res = Arc::new(make_resource(res.key.clone(), resource::Kind::Workload(w)));
            }
        }
        let mesh = pb::MeshSettings {
            trust_domain: "cluster.local".into(),
            root_namespace: "istio-system".into(),
            extension_providers: self.providers.clone(),
            path_normalization: self.path_normalization.into(),
            ..Default::default()
        };
        r.insert(
            "mesh".into(),
            Arc::new(make_resource("mesh".into(), resource::Kind::Mesh(mesh))),
        );
        Snapshot::new(1, r)
    }
}

/// The pod IP the HBONE tests' waypoint listens on (loopback, apart from the backends').
pub const WAYPOINT_IP: &str = "127.0.0.2";

/// The test waypoint `production/waypoint` as the translator references it.
pub fn waypoint_address() -> pb::GatewayAddress {
    pb::GatewayAddress {
        namespace: NS.into(),
        name: "waypoint".into(),
        address: WAYPOINT_IP.into(),
        hbone_port: 15008,
        identity: "spiffe://cluster.local/ns/production/sa/waypoint".into(),
    }
}

pub fn dest(host: &str, subset: &str, weight: u32) -> pb::WeightedDestination {
    pb::WeightedDestination {
        destination: Some(pb::Destination {
            host: host.into(),
            subset: subset.into(),
            port: 0,
        }),
        weight,
        headers: None,
    }
}

pub fn subset(name: &str, version: &str, policy: Option<pb::TrafficPolicy>) -> pb::Subset {
    pb::Subset {
        name: name.into(),
        labels: [("version".to_string(), version.to_string())].into(),
        traffic_policy: policy,
    }
}

fn exact(v: &str) -> pb::StringMatch {
    pb::StringMatch {
        r#match: Some(pb::string_match::Match::Exact(v.into())),
        present: false,
    }
}

fn regex(v: &str) -> pb::StringMatch {
    pb::StringMatch {
        r#match: Some(pb::string_match::Match::Regex(v.into())),
        present: false,
    }
}

/// The seed's order-service VirtualService + DestinationRule (02-order-traffic.yaml), as the
/// translator produces it; `timeout_ms` and `retry` parametrize the default route.
pub fn order_route(timeout_ms: u64, retry: Option<pb::Retry>) -> pb::RouteConfig {
    let header_route = |name: &str, m: pb::StringMatch| pb::HttpRoute {
        matches: vec![pb::RouteMatch {
            headers: [(name.to_string(), m)].into(),
            ..Default::default()
        }],
        route: vec![dest(ORDER_HOST, "v2", 100)],
        origin: "VirtualService/production/order-service-vs".into(),
        ..Default::default()
    };
    let pool = |pending: u32| pb::TrafficPolicy {
        connection_pool: Some(pb::ConnectionPool {
            max_connections: 100,
            http1_max_pending_requests: pending,
            http2_max_requests: 100,
            h2_upgrade_policy: "DEFAULT".into(),
            ..Default::default()
        }),
        ..Default::default()
    };
    pb::RouteConfig {
        hostname: ORDER_HOST.into(),
        namespace: NS.into(),
        http: vec![
            header_route("x-canary", exact("true")),
            header_route("x-user-id", regex("^[0-9]*[02468]$")),
            pb::HttpRoute {
                route: vec![dest(ORDER_HOST, "v1", 90), dest(ORDER_HOST, "v2", 10)],
                timeout_ms,
                has_timeout: timeout_ms > 0,
                retries: retry,
                origin: "VirtualService/production/order-service-vs".into(),
                ..Default::default()
            },
        ],
        tcp: vec![],
        traffic_policy: Some(pool(100)),
        subsets: vec![
            subset("v1", "v1", Some(pool(50))),
            subset("v2", "v2", Some(pool(100))),
        ],
        origins: vec![
            "VirtualService/production/order-service-vs".into(),
            "DestinationRule/production/order-service-dr".into(),
        ],
    }
}

pub fn seed_retry() -> pb::Retry {
    pb::Retry {
        attempts: 3,
        per_try_timeout_ms: 3000,
        retry_on: vec![
            "5xx".into(),
            "reset".into(),
            "connect-failure".into(),
            "refused-stream".into(),
        ],
        ..Default::default()
    }
}

pub struct Proxy {
    pub addr: SocketAddr,
    pub log: Arc<Mutex<Vec<String>>>,
    pub registry: Arc<Registry>,
    pub service: L7Service,
}

/// Starts the waypoint on 127.0.0.1; every connection is attributed to `identity`.
pub async fn proxy(snapshot: Snapshot, identity: Option<&str>) -> Proxy {
    proxy_traced(snapshot, identity, TracingOptions::default()).await
}

/// [`proxy`] with tracing options (e.g. the test's OTLP receiver as `otlp_endpoint`).
pub async fn proxy_traced(
    snapshot: Snapshot,
    identity: Option<&str>,
    tracing: TracingOptions,
) -> Proxy {
    proxy_with(
        snapshot,
        ProxySetup {
            identity: identity.map(String::from),
            tracing,
            ..Default::default()
        },
    )
    .await
}

/// How [`proxy_with`] serves every connection it accepts.
#[derive(Default)]
pub struct ProxySetup {
    /// The peer identity every connection is attributed to.
    pub identity: Option<String>,
    /// The original destination every connection carries (a tunnel to it), if any.
    pub destination: Option<SocketAddr>,
    pub limits: ServerLimits,
    pub tracing: TracingOptions,
}

/// Starts the waypoint on 127.0.0.1, serving every connection as `setup` says.
pub async fn proxy_with(snapshot: Snapshot, setup: ProxySetup) -> Proxy {
    proxy_on(ConfigHandle::fixed(snapshot), setup).await
}

/// [`proxy_with`] following `config` (e.g. [`ConfigHandle::manual`], to change it live).
pub async fn proxy_on(config: ConfigHandle, setup: ProxySetup) -> Proxy {
    let log = Arc::new(Mutex::new(Vec::new()));
    let mut registry = Registry::default();
    let svc = L7Service::new(
        config,
        Arc::new(TcpConnector),
        Options {
            waypoint: WaypointId {
                namespace: NS.into(),
                name: "waypoint".into(),
            },
            access_log: AccessLog::Memory(log.clone()),
            tracing: setup.tracing,
            ..Default::default()
        },
        &mut registry,
    );
    let listener = TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let (identity, destination) = (setup.identity, setup.destination);
    let limits = Arc::new(setup.limits);
    let service = svc.clone();
    tokio::spawn(async move {
        for _ in 0..100_000 {
            let Ok((s, peer)) = listener.accept().await else {
                return;
            };
            let ctx = ConnContext {
                source_identity: identity.clone(),
                source: Some(peer),
                destination,
            };
            let (svc, limits) = (svc.clone(), limits.clone());
            tokio::spawn(async move {
                serve_connection(s, svc, ctx, &limits).await;
            });
        }
    });
    Proxy {
        addr,
        log,
        registry: Arc::new(registry),
        service,
    }
}

/// The waypoint's request handler over `snapshot`, reaching upstreams through `connector`,
/// with its access log kept in memory (returned beside it).
pub fn logged_service(
    snapshot: Snapshot,
    connector: Arc<dyn Connector>,
) -> (L7Service, Arc<Mutex<Vec<String>>>) {
    let log = Arc::new(Mutex::new(Vec::new()));
    let svc = L7Service::new(
        ConfigHandle::fixed(snapshot),
        connector,
        Options {
            waypoint: WaypointId {
                namespace: NS.into(),
                name: "waypoint".into(),
            },
            access_log: AccessLog::Memory(log.clone()),
            ..Default::default()
        },
        &mut Registry::default(),
    );
    (svc, log)
}

/// `snap` with payment-service selecting the payment pods (`app: payment-service`), so the
/// waypoint enforces their selector policies.
pub fn payment_service_selects_its_pods(snap: Snapshot) -> Snapshot {
    let key = format!("service/{NS}/{PAYMENT_HOST}");
    let mut svc = snap.service(&key).unwrap().clone();
    svc.selector = [("app".to_string(), "payment-service".to_string())].into();
    snap.apply(
        2,
        vec![make_resource(key, resource::Kind::Service(svc))],
        &[],
    )
}

/// The `targetRef` to Service `service` in [`NS`].
pub fn service_ref(service: &str) -> pb::TargetRef {
    pb::TargetRef {
        group: "".into(),
        kind: "Service".into(),
        name: service.into(),
        namespace: NS.into(),
    }
}

/// An L7 policy `name` enforced at the waypoint for Service `service` (by `targetRef`).
pub fn service_policy(
    name: &str,
    action: pb::Action,
    service: &str,
    rules: Vec<pb::Rule>,
) -> pb::Authorization {
    pb::Authorization {
        name: name.into(),
        namespace: NS.into(),
        scope: pb::PolicyScope::TargetRef as i32,
        action: action as i32,
        target_refs: vec![service_ref(service)],
        rules,
        has_l7: true,
        ..Default::default()
    }
}

/// The strings of `v`, owned.
pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

pub type Client = hyper_util::client::legacy::Client<
    hyper_util::client::legacy::connect::HttpConnector,
    Full<Bytes>,
>;

pub fn client() -> Client {
    hyper_util::client::legacy::Client::builder(TokioExecutor::new()).build_http()
}

/// Sends a request through the proxy; returns status, body and headers.
pub async fn send(
    c: &Client,
    proxy: SocketAddr,
    method: &str,
    host: &str,
    path: &str,
    headers: &[(&str, &str)],
) -> (u16, String, http::HeaderMap) {
    let mut b = http::Request::builder()
        .method(method)
        .uri(format!("http://{proxy}{path}"))
        .header("host", host);
    for (k, v) in headers {
        b = b.header(*k, *v);
    }
    let resp = c
        .request(b.body(Full::new(Bytes::new())).unwrap())
        .await
        .unwrap();
    let status = resp.status().as_u16();
    let headers = resp.headers().clone();
    let body = resp.into_body().collect().await.unwrap().to_bytes();
    (status, String::from_utf8_lossy(&body).into_owned(), headers)
}

/// The access log entries parsed as JSON.
pub fn log_entries(p: &Proxy) -> Vec<serde_json::Value> {
    p.log
        .lock()
        .unwrap()
        .iter()
        .map(|l| serde_json::from_str(l).unwrap())
        .collect()
}

/// Waits (bounded) until the access log has `n` entries.
pub async fn wait_log(p: &Proxy, n: usize) -> Vec<serde_json::Value> {
    for _ in 0..200 {
        if p.log.lock().unwrap().len() >= n {
            break;
        }
        tokio::time::sleep(Duration::from_millis(10)).await;
    }
    log_entries(p)
}

//! An in-process OTLP/gRPC trace collector for the waypoint to export to (on 127.0.0.1, or
//! on a listener made in the demo cluster's fabric namespace): keeps every span it
//! receives so pattern 4 can count them.

use std::collections::BTreeMap;
use std::net::SocketAddr;
use std::sync::{Arc, Mutex};

use crate::otlp::collector::trace::v1::trace_service_server::{TraceService, TraceServiceServer};
use crate::otlp::collector::trace::v1::{ExportTraceServiceRequest, ExportTraceServiceResponse};
use crate::otlp::common::v1::any_value::Value;
use crate::otlp::common::v1::KeyValue;
use meshwork_runtime::tracecontext::hex;
use tokio::net::TcpListener;
use tokio::sync::oneshot;

use crate::Error;

/// One received span, flattened: ids in lower-case hex, attributes as strings.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ReceivedSpan {
    pub trace_id: String,
    pub span_id: String,
    pub attributes: BTreeMap<String, String>,
}

impl ReceivedSpan {
    pub fn attr(&self, key: &str) -> Option<&str> {
        self.attributes.get(key).map(String::as_str)
    }
}

#[derive(Clone, Default)]
struct Store(Arc<Mutex<Vec<ReceivedSpan>>>);

fn value_text(kv: &KeyValue) -> Option<String> {
    Some(match kv.value.clone()?.value? {
        Value::StringValue(s) => s,
        Value::BoolValue(b) => b.to_string(),
        Value::IntValue(i) => i.to_string(),
        Value::DoubleValue(d) => d.to_string(),
        other => format!("{other:?}"),
    })
}

fn flatten(req: ExportTraceServiceRequest) -> Vec<ReceivedSpan> {
    req.resource_spans
        .into_iter()
        .flat_map(|rs| rs.scope_spans)
        .flat_map(|ss| ss.spans)
        .map(|s| ReceivedSpan {
            trace_id: hex(&s.trace_id),
            span_id: hex(&s.span_id),
            attributes: s
                .attributes
                .iter()
                .filter_map(|kv| Some((kv.key.clone(), value_text(kv)?)))
                .collect(),
        })
        .collect()
}

#[tonic::async_trait]
impl TraceService for Store {
    async fn export(
        &self,
        req: tonic::Request<ExportTraceServiceRequest>,
    ) -> Result<tonic::Response<ExportTraceServiceResponse>, tonic::Status> {
        let spans = flatten(req.into_inner());
        self.0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .extend(spans);
        Ok(tonic::Response::new(ExportTraceServiceResponse::default()))
    }
}

/// The running collector; dropping it stops the server.
pub struct Collector {
    pub addr: SocketAddr,
    store: Store,
    _stop: oneshot::Sender<()>,
}

impl Collector {
    /// On an OS-chosen port of 127.0.0.1.
    pub async fn start() -> Result<Collector, Error> {
        let want: SocketAddr = "127.0.0.1:0".parse().expect("literal");
        let l = TcpListener::bind(want)
            .await
            .map_err(|error| Error::Bind { addr: want, error })?;
        Collector::serve(l, want)
    }

    /// On a listener bound elsewhere (e.g. inside a network namespace: it stays there).
    pub fn start_on(l: std::net::TcpListener) -> Result<Collector, Error> {
        let want = l
            .local_addr()
            .unwrap_or_else(|_| SocketAddr::from(([0, 0, 0, 0], 0)));
        l.set_nonblocking(true)
            .map_err(|error| Error::Bind { addr: want, error })?;
        let l = TcpListener::from_std(l).map_err(|error| Error::Bind { addr: want, error })?;
        Collector::serve(l, want)
    }

    fn serve(l: TcpListener, want: SocketAddr) -> Result<Collector, Error> {
        let addr = l
            .local_addr()
            .map_err(|error| Error::Bind { addr: want, error })?;
        let store = Store::default();
        let (stop, stopped) = oneshot::channel::<()>();
        let svc = TraceServiceServer::new(store.clone());
        tokio::spawn(async move {
            let served = tonic::transport::Server::builder()
                .add_service(svc)
                .serve_with_incoming_shutdown(
                    tonic::transport::server::TcpIncoming::from(l),
                    async {
                        let _ = stopped.await;
                    },
                )
                .await;
            if let Err(e) = served {
                crate::progress(&format!("the demo's OTLP collector stopped: {e}"));
            }
        });
        Ok(Collector {
            addr,
            store,
            _stop: stop,
        })
    }

    /// Every span received so far.
    pub fn spans(&self) -> Vec<ReceivedSpan> {
        self.store
            .0
            .lock()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }

    pub fn len(&self) -> usize {
        self.store.0.lock().unwrap_or_else(|e| e.into_inner()).len()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::otlp::collector::trace::v1::trace_service_client::TraceServiceClient;
    use crate::otlp::common::v1::AnyValue;
    use crate::otlp::trace::v1::{ResourceSpans, ScopeSpans, Span};

    #[tokio::test]
    async fn keeps_what_an_otlp_client_exports() {
        let l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let c = Collector::start_on(l).unwrap();
        let mut client = TraceServiceClient::connect(format!("http://{}", c.addr))
            .await
            .unwrap();
        let span = Span {
            trace_id: vec![0xab; 16],
            span_id: vec![0x01; 8],
            attributes: vec![KeyValue {
                key: "user_id".into(),
                value: Some(AnyValue {
                    value: Some(Value::StringValue("42".into())),
                }),
            }],
            ..Default::default()
        };
        client
            .export(ExportTraceServiceRequest {
                resource_spans: vec![ResourceSpans {
                    scope_spans: vec![ScopeSpans {
                        spans: vec![span],
                        ..Default::default()
                    }],
                    ..Default::default()
                }],
            })
            .await
            .unwrap();
        let got = c.spans();
        assert_eq!(got.len(), 1);
        assert_eq!(got[0].trace_id, "ab".repeat(16));
        assert_eq!(got[0].span_id, "01".repeat(8));
        assert_eq!(got[0].attr("user_id"), Some("42"));
        assert_eq!(c.len(), 1);
    }
}

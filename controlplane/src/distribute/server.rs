//! The `MeshConfig` gRPC service: one task per proxy stream ([`super::stream`]).

use std::convert::Infallible;
use std::pin::Pin;
use std::sync::Arc;
use std::time::{Duration, SystemTime, UNIX_EPOCH};

use futures::Stream;
use meshwork_model::pb::config::{proxy_message, ProxyKind, ProxyMessage, Subscribe};
use tokio::sync::{mpsc, Semaphore};
use tokio_stream::wrappers::ReceiverStream;
use tonic::codegen::{http, BoxFuture, Context, Poll, Service, StdError};
use tonic::server::{NamedService, StreamingService};
use tonic::{Request, Response, Status, Streaming};
use tracing::info;

use super::filter::{Filter, L4View};
use super::hub::ModelHub;
use super::registry::{ProxyInfo, Registry};
use super::stream::StreamTask;
use super::wire::{EncodedUpdate, UpdateCodec};

/// How many streams may have a full (re)sync in flight at once. A full update to a
/// ztunnel is the whole model (tens of MB at 100,000 pods), held encoded until the proxy
/// ACKs it: when 1,000 ztunnels connect at once, this bounds the control plane's memory
/// (Istio's istiod similarly throttles concurrent pushes).
pub const MAX_CONCURRENT_FULL_SYNCS: usize = 8;

/// Decides whether a subscription may be served (node tokens in file mode, TokenReview
/// in Kubernetes).
#[tonic::async_trait]
pub trait SubscriptionAuth: Send + Sync {
    async fn check(&self, sub: &Subscribe) -> Result<(), Status>;
}

#[derive(Clone)]
pub struct MeshConfigService {
    hub: Arc<ModelHub>,
    registry: Arc<Registry>,
    auth: Arc<dyn SubscriptionAuth>,
    l4_view: L4View,
    full_syncs: Arc<Semaphore>,
}

impl MeshConfigService {
    pub fn new(
        hub: Arc<ModelHub>,
        registry: Arc<Registry>,
        auth: Arc<dyn SubscriptionAuth>,
        l4_view: L4View,
    ) -> Self {
        MeshConfigService {
            hub,
            registry,
            auth,
            l4_view,
            full_syncs: Arc::new(Semaphore::new(MAX_CONCURRENT_FULL_SYNCS)),
        }
    }

    pub fn into_server(self) -> MeshConfigServer {
        MeshConfigServer::new(self, 16 * 1024 * 1024, 512 * 1024 * 1024)
    }
}

pub type UpdateStream = Pin<Box<dyn Stream<Item = Result<EncodedUpdate, Status>> + Send>>;

impl MeshConfigService {
    pub async fn stream(
        &self,
        req: Request<Streaming<ProxyMessage>>,
    ) -> Result<Response<UpdateStream>, Status> {
        let peer = req.remote_addr();
        let mut inbound = req.into_inner();
        let first = tokio::time::timeout(Duration::from_secs(10), inbound.message())
            .await
            .map_err(|_| Status::deadline_exceeded("no Subscribe within 10s"))??
            .ok_or_else(|| Status::invalid_argument("stream closed before Subscribe"))?;
        let Some(proxy_message::Msg::Subscribe(sub)) = first.msg else {
            return Err(Status::invalid_argument(
                "the first message on a stream must be Subscribe",
            ));
        };
        let kind = ProxyKind::try_from(sub.kind).unwrap_or(ProxyKind::Unspecified);
        match kind {
            ProxyKind::Ztunnel if sub.node.is_empty() => {
                return Err(Status::invalid_argument(
                    "ztunnel subscription without node",
                ))
            }
            ProxyKind::Waypoint if sub.namespace.is_empty() || sub.name.is_empty() => {
                return Err(Status::invalid_argument(
                    "waypoint subscription without namespace/name",
                ))
            }
            ProxyKind::Unspecified => {
                return Err(Status::invalid_argument("subscription without proxy kind"))
            }
            _ => {}
        }
        self.auth.check(&sub).await?;

        let id = self.registry.next_id();
        self.registry.lock().insert(
            id,
            ProxyInfo {
                id,
                kind: kind.as_str_name().to_ascii_lowercase(),
                node: sub.node.clone(),
                gateway: if sub.name.is_empty() {
                    String::new()
                } else {
                    format!("{}/{}", sub.namespace, sub.name)
                },
                proxy_id: sub.proxy_id.clone(),
                peer,
                connected_at_unix: SystemTime::now()
                    .duration_since(UNIX_EPOCH)
                    .map(|d| d.as_secs())
                    .unwrap_or(0),
                acked_version: 0,
                resources: 0,
                acks: 0,
                nacks: 0,
                last_nack: None,
            },
        );
        info!(id, kind = ?kind, node = %sub.node, proxy = %sub.proxy_id, ?peer, "proxy subscribed");
        let (tx, rx) = mpsc::channel(4);
        let task = StreamTask::new(
            id,
            self.hub.clone(),
            self.registry.clone(),
            Filter::new(kind, &sub.node, &sub.namespace, &sub.name, self.l4_view),
            sub.known.into_iter().collect(),
            sub.accepts_parts,
        );
        tokio::spawn(task.run(inbound, tx, self.full_syncs.clone()));
        Ok(Response::new(Box::pin(ReceiverStream::new(rx))))
    }
}

const PATH: &str = "/meshwork.config.v1.MeshConfig/Stream";

/// The tonic service for `MeshConfig` (its one method, `Stream`).
#[derive(Clone)]
pub struct MeshConfigServer {
    inner: Arc<MeshConfigService>,
    max_decoding: usize,
    max_encoding: usize,
}

impl MeshConfigServer {
    pub fn new(inner: MeshConfigService, max_decoding: usize, max_encoding: usize) -> Self {
        MeshConfigServer {
            inner: Arc::new(inner),
            max_decoding,
            max_encoding,
        }
    }
}

struct StreamMethod(Arc<MeshConfigService>);

impl StreamingService<ProxyMessage> for StreamMethod {
    type Response = EncodedUpdate;
    type ResponseStream = UpdateStream;
    type Future = BoxFuture<tonic::Response<UpdateStream>, Status>;

    fn call(&mut self, request: Request<Streaming<ProxyMessage>>) -> Self::Future {
        let inner = self.0.clone();
        Box::pin(async move { inner.stream(request).await })
    }
}

impl<B> Service<http::Request<B>> for MeshConfigServer
where
    B: tonic::codegen::Body + Send + 'static,
    B::Error: Into<StdError> + Send + 'static,
{
    type Response = http::Response<tonic::body::Body>;
    type Error = Infallible;
    type Future = BoxFuture<Self::Response, Self::Error>;

    fn poll_ready(&mut self, _cx: &mut Context<'_>) -> Poll<Result<(), Self::Error>> {
        Poll::Ready(Ok(()))
    }

    fn call(&mut self, req: http::Request<B>) -> Self::Future {
        if req.uri().path() != PATH {
            return Box::pin(async move {
                let mut response = http::Response::new(tonic::body::Body::default());
                let headers = response.headers_mut();
                headers.insert(
                    Status::GRPC_STATUS,
                    (tonic::Code::Unimplemented as i32).into(),
                );
                headers.insert(
                    http::header::CONTENT_TYPE,
                    tonic::metadata::GRPC_CONTENT_TYPE,
                );
                Ok(response)
            });
        }
        let (inner, dec, enc) = (self.inner.clone(), self.max_decoding, self.max_encoding);
        Box::pin(async move {
            let mut grpc = tonic::server::Grpc::new(UpdateCodec)
                .apply_max_message_size_config(Some(dec), Some(enc));
            Ok(grpc.streaming(StreamMethod(inner), req).await)
        })
    }
}

impl NamedService for MeshConfigServer {
    const NAME: &'static str = "meshwork.config.v1.MeshConfig";
}

//! What is known about one request while it is handled: filled by the stages of the
//! request path and the upstream, read by telemetry when the exchange ends.

use std::borrow::Cow;
use std::sync::Arc;

use http::{Request, Version};
use meshwork_model::pb::config as pb;

use crate::request::authority::authority_of;
use crate::request::flags::Flags;
use crate::request::headers::user_agent;
use crate::telemetry::policy::{cel, TelemetryPolicy};
use crate::telemetry::tracing::{Active, Attributes};
use crate::upstream::cluster::Cluster;
use crate::upstream::endpoint::Endpoint;

/// What is known about a request while it is handled, for metrics and the access log.
/// Borrows the service from the compiled config the request is handled with.
#[derive(Debug, Default)]
pub(crate) struct Exchange<'a> {
    pub flags: Flags,
    pub details: String,
    /// The route's name, filled only when an access log may be written.
    pub route: String,
    pub cluster: Option<Arc<Cluster>>,
    pub upstream: Option<Arc<Endpoint>>,
    pub service: Option<Cow<'a, pb::Service>>,
    pub attempts: u32,
    pub policy: String,
    pub grpc_status: String,
    /// When the request arrived (the server span's start).
    pub arrived: Option<std::time::SystemTime>,
    /// The service port the request was routed on (the server span's name is
    /// `<service hostname>:<port>/*`).
    pub port: u16,
    /// The request was addressed to this workload directly (pod IP), not to a service.
    pub direct: Option<Arc<Endpoint>>,
    /// A generated affinity cookie to set on the response.
    pub set_cookie: Option<String>,
    /// The request's trace, when a Telemetry resource enables tracing for its service.
    pub trace: Option<Active>,
    /// Attributes of the request's spans.
    pub span_attrs: Attributes,
    /// The Telemetry metrics/access log settings of the request's service.
    pub telemetry: Option<Arc<TelemetryPolicy>>,
    /// What the settings' expressions see, when they have any.
    pub cel: Option<cel::Context>,
    /// The path and query after normalisation, kept for the access log only.
    pub normalized_path: Option<String>,
}

/// The request fields the access log records, read before the request is consumed.
pub(crate) struct LoggedRequest {
    pub method: String,
    pub path: String,
    pub authority: String,
    pub protocol: &'static str,
    pub user_agent: String,
}

impl LoggedRequest {
    pub fn of<B>(req: &Request<B>) -> Self {
        LoggedRequest {
            method: req.method().to_string(),
            path: req
                .uri()
                .path_and_query()
                .map(|p| p.to_string())
                .unwrap_or_default(),
            authority: authority_of(req),
            protocol: match req.version() {
                Version::HTTP_2 => "HTTP/2",
                Version::HTTP_10 => "HTTP/1.0",
                _ => "HTTP/1.1",
            },
            user_agent: user_agent(req.headers()),
        }
    }
}

//! Who sends the calls plugins make (`proxy_http_call`): the proxy implements
//! [`HttpCaller`].

use std::future::Future;
use std::pin::Pin;

use super::types::{CallRequest, CallResponse};

/// Sends the calls plugins make with `proxy_http_call`.
pub trait HttpCaller: Send + Sync + 'static {
    /// Whether `upstream` names a destination this proxy has. A call to one it does not is
    /// refused at once with `BadArgument`, as Envoy refuses a call to an unknown cluster.
    fn knows(&self, upstream: &str) -> bool {
        let _ = upstream;
        true
    }

    fn call(
        &self,
        req: CallRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CallResponse, String>> + Send + 'static>>;
}

/// A caller that refuses every call (for proxies that offer none).
#[derive(Debug, Default)]
pub struct NoCalls;

impl HttpCaller for NoCalls {
    fn call(
        &self,
        req: CallRequest,
    ) -> Pin<Box<dyn Future<Output = Result<CallResponse, String>> + Send + 'static>> {
        Box::pin(async move { Err(format!("no upstream {:?} for plugin calls", req.upstream)) })
    }
}

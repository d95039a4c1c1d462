//! How the proxy reaches an endpoint: plain TCP (tests, local), HBONE (mesh).

use std::io;
use std::net::SocketAddr;
use std::sync::Arc;

use futures::future::BoxFuture;
use tokio::io::{AsyncRead, AsyncWrite};

/// A byte stream to an endpoint.
pub trait Io: AsyncRead + AsyncWrite + Send + Unpin + 'static {}
impl<T: AsyncRead + AsyncWrite + Send + Unpin + 'static> Io for T {}

pub type BoxedIo = Box<dyn Io>;

/// The endpoint a request is sent to.
#[derive(Debug, Clone, PartialEq, Eq, Hash)]
pub struct Target {
    /// Workload address and target port.
    pub addr: SocketAddr,
    /// SPIFFE identity the endpoint must present (HBONE), e.g. `spiffe://td/ns/x/sa/y`.
    pub identity: Option<String>,
}

/// Opens byte streams to endpoints.
pub trait Connector: Send + Sync + 'static {
    fn connect(&self, target: &Target) -> BoxFuture<'static, io::Result<BoxedIo>>;
}

/// Plain TCP to the endpoint address.
#[derive(Debug, Clone, Default)]
pub struct TcpConnector;

impl Connector for TcpConnector {
    fn connect(&self, target: &Target) -> BoxFuture<'static, io::Result<BoxedIo>> {
        let addr = target.addr;
        Box::pin(async move {
            let s = tokio::net::TcpStream::connect(addr).await?;
            meshwork_runtime::socket::tune(&s)?;
            Ok(Box::new(s) as BoxedIo)
        })
    }
}

impl<C: Connector + ?Sized> Connector for Arc<C> {
    fn connect(&self, target: &Target) -> BoxFuture<'static, io::Result<BoxedIo>> {
        (**self).connect(target)
    }
}

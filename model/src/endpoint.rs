//! Where a proxy (or the CLI) reaches the control plane, and how the connection is secured.
//!
//! * `https://HOST:PORT` (the control plane's 15012, as istiod's): TLS 1.3 with ALPN `h2`;
//!   the server's certificate must chain to the mesh roots read from a PEM file and name
//!   `HOST` (or the configured server name) as a DNS or IP SAN, as Istio's ztunnel checks
//!   istiod. The roots file is read at every connection attempt, so a rotated root
//!   (a Kubernetes ConfigMap update) is picked up at the next reconnect.
//! * `http://HOST:PORT` is plaintext and allowed only to a loopback host (`127.0.0.0/8`,
//!   `::1`, `localhost`): bearer tokens never leave the host in the clear.

use std::net::IpAddr;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use hyper_util::rt::TokioIo;
use meshwork_identity::TrustBundle;
use rustls::pki_types::ServerName;
use tonic::transport::{Channel, Endpoint, Uri};

#[derive(Debug, thiserror::Error)]
pub enum EndpointError {
    #[error("invalid control-plane address {address:?}: {reason}")]
    Address { address: String, reason: String },
    #[error(
        "control-plane address {address:?} is plaintext (http://) to a host that is not \
         loopback; use https:// (port 15012) with the mesh root (--control-plane-root)"
    )]
    PlaintextOffHost { address: String },
    #[error(
        "control-plane address {address:?} is https:// but no mesh root file was given \
         (--control-plane-root)"
    )]
    NoRoots { address: String },
    #[error("control-plane server name {name:?}: {reason}")]
    ServerName { name: String, reason: String },
}

/// A control-plane address and, for `https://`, the roots that must sign its certificate.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ControlPlane {
    url: String,
    roots_file: Option<PathBuf>,
    server_name: Option<String>,
}

impl From<String> for ControlPlane {
    fn from(url: String) -> Self {
        ControlPlane::new(url)
    }
}

impl From<&String> for ControlPlane {
    fn from(url: &String) -> Self {
        ControlPlane::new(url.clone())
    }
}

impl From<&str> for ControlPlane {
    fn from(url: &str) -> Self {
        ControlPlane::new(url)
    }
}

impl std::fmt::Display for ControlPlane {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.write_str(&self.url)
    }
}

impl ControlPlane {
    pub fn new(url: impl Into<String>) -> Self {
        ControlPlane {
            url: url.into(),
            roots_file: None,
            server_name: None,
        }
    }

    /// The PEM file of mesh roots the server's certificate must chain to.
    pub fn with_roots_file(mut self, path: Option<PathBuf>) -> Self {
        self.roots_file = path;
        self
    }

    /// Verify the server's certificate for this name instead of the URL's host (e.g. the
    /// Service name when the URL holds an address).
    pub fn with_server_name(mut self, name: Option<String>) -> Self {
        self.server_name = name.filter(|n| !n.is_empty());
        self
    }

    pub fn url(&self) -> &str {
        &self.url
    }

    pub fn is_tls(&self) -> bool {
        self.url.starts_with("https://")
    }

    /// Checks the address and the security rules above without connecting.
    pub fn validate(&self) -> Result<(), EndpointError> {
        self.plan().map(|_| ())
    }

    /// A channel that connects on first use (and reconnects as needed).
    pub fn connect_lazy(
        &self,
        endpoint_tuning: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, EndpointError> {
        let (endpoint, tls) = self.plan()?;
        let endpoint = endpoint_tuning(endpoint);
        Ok(match tls {
            None => endpoint.connect_lazy(),
            Some(tls) => endpoint.connect_with_connector_lazy(tls.connector()),
        })
    }

    /// A channel connected now.
    pub async fn connect(
        &self,
        endpoint_tuning: impl FnOnce(Endpoint) -> Endpoint,
    ) -> Result<Channel, ConnectError> {
        let (endpoint, tls) = self.plan().map_err(ConnectError::Endpoint)?;
        let endpoint = endpoint_tuning(endpoint);
        match tls {
            None => endpoint.connect().await,
            Some(tls) => endpoint.connect_with_connector(tls.connector()).await,
        }
        .map_err(ConnectError::Transport)
    }

    fn plan(&self) -> Result<(Endpoint, Option<TlsConnect>), EndpointError> {
        let bad = |reason: String| EndpointError::Address {
            address: self.url.clone(),
            reason,
        };
        let uri: Uri = self.url.parse().map_err(|e| bad(format!("{e}")))?;
        let host = uri
            .host()
            .ok_or_else(|| bad("no host".into()))?
            .trim_start_matches('[')
            .trim_end_matches(']')
            .to_string();
        let endpoint = Endpoint::from_shared(self.url.clone()).map_err(|e| bad(format!("{e}")))?;
        match uri.scheme_str() {
            Some("http") => {
                if !is_loopback_host(&host) {
                    return Err(EndpointError::PlaintextOffHost {
                        address: self.url.clone(),
                    });
                }
                Ok((endpoint, None))
            }
            Some("https") => {
                let roots = self.roots_file.clone().ok_or(EndpointError::NoRoots {
                    address: self.url.clone(),
                })?;
                let name = self.server_name.clone().unwrap_or(host);
                let server_name =
                    ServerName::try_from(name.clone()).map_err(|e| EndpointError::ServerName {
                        name: name.clone(),
                        reason: e.to_string(),
                    })?;
                Ok((
                    endpoint,
                    Some(TlsConnect {
                        roots,
                        server_name: server_name.to_owned(),
                    }),
                ))
            }
            other => Err(bad(format!(
                "scheme {other:?}: expected https:// (or http:// to loopback)"
            ))),
        }
    }
}

#[derive(Debug, thiserror::Error)]
pub enum ConnectError {
    #[error(transparent)]
    Endpoint(EndpointError),
    #[error(transparent)]
    Transport(tonic::transport::Error),
}

/// `localhost`, `127.0.0.0/8`, `::1` (and IPv4-mapped loopback).
pub fn is_loopback_host(host: &str) -> bool {
    if host.eq_ignore_ascii_case("localhost") {
        return true;
    }
    match host.parse::<IpAddr>() {
        Ok(IpAddr::V4(a)) => a.is_loopback(),
        Ok(IpAddr::V6(a)) => {
            a.is_loopback() || a.to_ipv4_mapped().is_some_and(|v4| v4.is_loopback())
        }
        Err(_) => false,
    }
}

/// TLS to the control plane, built at each connection attempt.
#[derive(Clone)]
struct TlsConnect {
    roots: PathBuf,
    server_name: ServerName<'static>,
}

type BoxError = Box<dyn std::error::Error + Send + Sync>;

impl TlsConnect {
    fn connector(
        self,
    ) -> impl tower::Service<
        Uri,
        Response = TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>,
        Error = BoxError,
        Future = impl Send,
    > + Clone
           + Send
           + 'static {
        let this = Arc::new(self);
        tower::service_fn(move |uri: Uri| {
            let this = this.clone();
            async move { this.connect(uri).await }
        })
    }

    async fn connect(
        &self,
        uri: Uri,
    ) -> Result<TokioIo<tokio_rustls::client::TlsStream<tokio::net::TcpStream>>, BoxError> {
        let config = client_config(&self.roots)?;
        let host = uri.host().ok_or("no host in the control-plane address")?;
        let host = host.trim_start_matches('[').trim_end_matches(']');
        let port = uri.port_u16().unwrap_or(443);
        let tcp = tokio::net::TcpStream::connect((host, port)).await?;
        tcp.set_nodelay(true)?;
        let tls = tokio_rustls::TlsConnector::from(Arc::new(config))
            .connect(self.server_name.clone(), tcp)
            .await?;
        Ok(TokioIo::new(tls))
    }
}

/// TLS 1.3 only, ALPN `h2`, the server verified against the mesh roots in `roots`.
pub fn client_config(roots: &Path) -> Result<rustls::ClientConfig, BoxError> {
    let pem = std::fs::read_to_string(roots)
        .map_err(|e| format!("reading the mesh root file {}: {e}", roots.display()))?;
    let bundle = TrustBundle::from_pem(&roots.display().to_string(), &pem)?;
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ClientConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_root_certificates(bundle.root_store())
        .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn plaintext_only_to_loopback() {
        for ok in [
            "http://127.0.0.1:15010",
            "http://127.5.0.1:15010",
            "http://localhost:15010",
            "http://[::1]:15010",
        ] {
            ControlPlane::new(ok).validate().unwrap();
        }
        for bad in [
            "http://10.0.0.1:15010",
            "http://meshwork-controlplane.meshwork-system.svc:15010",
            "http://[fd00::1]:15010",
        ] {
            let e = ControlPlane::new(bad).validate().unwrap_err();
            assert!(
                matches!(e, EndpointError::PlaintextOffHost { .. }),
                "{bad}: {e}"
            );
        }
    }

    #[test]
    fn https_needs_the_mesh_roots() {
        let cp = ControlPlane::new("https://istiod.istio-system.svc:15012");
        assert!(matches!(
            cp.validate().unwrap_err(),
            EndpointError::NoRoots { .. }
        ));
        cp.with_roots_file(Some("/nonexistent/root-cert.pem".into()))
            .validate()
            .unwrap();
    }

    #[test]
    fn other_schemes_are_refused_by_name() {
        let e = ControlPlane::new("grpc://cp:15012").validate().unwrap_err();
        assert!(e.to_string().contains("grpc://cp:15012"), "{e}");
    }
}

//! A small HTTP/1.1 GET client (hyper + rustls) for module downloads and registry calls:
//! a response size cap, a deadline for the whole exchange, redirects followed (at most
//! [`MAX_REDIRECTS`]), credentials dropped when a redirect leaves the original host.

use std::sync::Arc;
use std::time::Duration;

use bytes::Bytes;
use http::header::{HeaderName, HeaderValue, AUTHORIZATION, HOST, LOCATION, USER_AGENT};
use http::{HeaderMap, Request, StatusCode, Uri};
use http_body_util::{BodyExt, Empty, Limited};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncRead, AsyncWrite};
use tokio::net::TcpStream;

pub const MAX_REDIRECTS: usize = 5;

/// A response read in full.
#[derive(Debug)]
pub struct Response {
    pub status: StatusCode,
    pub headers: HeaderMap,
    pub body: Bytes,
    /// The URL that answered (after redirects).
    pub url: Uri,
}

/// Connection settings shared by every request of a fetcher.
#[derive(Clone)]
pub struct Client {
    tls: Arc<rustls::ClientConfig>,
    pub max_bytes: usize,
    pub timeout: Duration,
}

impl std::fmt::Debug for Client {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("Client")
            .field("max_bytes", &self.max_bytes)
            .field("timeout", &self.timeout)
            .finish()
    }
}

trait Io: AsyncRead + AsyncWrite + Unpin + Send {}
impl<T: AsyncRead + AsyncWrite + Unpin + Send> Io for T {}

impl Client {
    /// `roots`: the certificates https servers are checked against (the system's, plus
    /// any extra ones the fetcher was given).
    pub fn new(roots: rustls::RootCertStore, max_bytes: usize, timeout: Duration) -> Self {
        let tls = rustls::ClientConfig::builder_with_provider(Arc::new(
            rustls::crypto::ring::default_provider(),
        ))
        .with_safe_default_protocol_versions()
        .expect("ring supports the default protocol versions")
        .with_root_certificates(roots)
        .with_no_client_auth();
        Client {
            tls: Arc::new(tls),
            max_bytes,
            timeout,
        }
    }

    /// GET `url` with `headers`, following redirects, within the client's deadline.
    pub async fn get(
        &self,
        url: &Uri,
        headers: &[(HeaderName, String)],
    ) -> Result<Response, String> {
        tokio::time::timeout(self.timeout, self.get_following(url, headers))
            .await
            .map_err(|_| format!("no complete answer within {:?}", self.timeout))?
    }

    async fn get_following(
        &self,
        url: &Uri,
        headers: &[(HeaderName, String)],
    ) -> Result<Response, String> {
        let mut url = url.clone();
        let origin = url.authority().cloned();
        let mut headers = headers.to_vec();
        for _ in 0..=MAX_REDIRECTS {
            let resp = self.get_once(&url, &headers).await?;
            if !resp.status.is_redirection() || resp.status == StatusCode::NOT_MODIFIED {
                return Ok(resp);
            }
            let loc = resp
                .headers
                .get(LOCATION)
                .and_then(|v| v.to_str().ok())
                .ok_or_else(|| format!("{} from {url} without a Location", resp.status))?;
            url = resolve(&url, loc)?;
            if url.authority() != origin.as_ref() {
                // Credentials are for the host they were given for (registries redirect
                // blob downloads to storage that must not see them).
                headers.retain(|(n, _)| n != AUTHORIZATION);
            }
        }
        Err(format!("more than {MAX_REDIRECTS} redirects"))
    }

    async fn get_once(
        &self,
        url: &Uri,
        headers: &[(HeaderName, String)],
    ) -> Result<Response, String> {
        let https = match url.scheme_str() {
            Some("https") => true,
            Some("http") => false,
            other => return Err(format!("unsupported scheme {other:?}")),
        };
        let host = url.host().ok_or("url without a host")?;
        let bare = host.trim_start_matches('[').trim_end_matches(']');
        let port = url.port_u16().unwrap_or(if https { 443 } else { 80 });
        let tcp = TcpStream::connect((bare, port))
            .await
            .map_err(|e| format!("connecting to {host}:{port}: {e}"))?;
        let io: Box<dyn Io> = if https {
            let name = rustls_pki_types::ServerName::try_from(bare.to_string())
                .map_err(|e| format!("server name {bare}: {e}"))?;
            let tls = tokio_rustls::TlsConnector::from(self.tls.clone())
                .connect(name, tcp)
                .await
                .map_err(|e| format!("TLS with {host}:{port}: {e}"))?;
            Box::new(tls)
        } else {
            Box::new(tcp)
        };
        let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(io))
            .await
            .map_err(|e| format!("HTTP with {host}:{port}: {e}"))?;
        tokio::spawn(async move {
            let _ = conn.await;
        });
        let path = url.path_and_query().map(|p| p.as_str()).unwrap_or("/");
        let authority = url.authority().map(|a| a.as_str()).unwrap_or(host);
        let mut req = Request::get(path)
            .header(HOST, authority)
            .header(USER_AGENT, "meshwork-wasm")
            .body(Empty::<Bytes>::new())
            .map_err(|e| e.to_string())?;
        for (n, v) in headers {
            let v = HeaderValue::from_str(v).map_err(|_| format!("bad value for header {n}"))?;
            req.headers_mut().append(n.clone(), v);
        }
        let resp = sender
            .send_request(req)
            .await
            .map_err(|e| format!("GET {url}: {e}"))?;
        let (parts, body) = resp.into_parts();
        let body = Limited::new(body, self.max_bytes)
            .collect()
            .await
            .map_err(|e| {
                if e.is::<http_body_util::LengthLimitError>() {
                    format!("GET {url}: response larger than {} bytes", self.max_bytes)
                } else {
                    format!("GET {url}: reading the body: {e}")
                }
            })?
            .to_bytes();
        Ok(Response {
            status: parts.status,
            headers: parts.headers,
            body,
            url: url.clone(),
        })
    }
}

/// `loc` (absolute, or a path on the same origin) against `base`.
pub fn resolve(base: &Uri, loc: &str) -> Result<Uri, String> {
    if loc.starts_with('/') && !loc.starts_with("//") {
        let scheme = base.scheme_str().unwrap_or("http");
        let authority = base.authority().map(|a| a.as_str()).unwrap_or_default();
        return format!("{scheme}://{authority}{loc}")
            .parse()
            .map_err(|e| format!("redirect to {loc:?}: {e}"));
    }
    let u: Uri = loc
        .parse()
        .map_err(|e| format!("redirect to {loc:?}: {e}"))?;
    if u.scheme().is_none() || u.authority().is_none() {
        return Err(format!("redirect to {loc:?}: not an absolute URL"));
    }
    Ok(u)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn redirects_resolve_against_the_origin() {
        let base: Uri = "http://127.0.0.1:5000/v2/x/blobs/sha256:ab"
            .parse()
            .unwrap();
        assert_eq!(
            resolve(&base, "/store/ab").unwrap().to_string(),
            "http://127.0.0.1:5000/store/ab"
        );
        assert_eq!(
            resolve(&base, "https://cdn.example/ab")
                .unwrap()
                .to_string(),
            "https://cdn.example/ab"
        );
        assert!(resolve(&base, "relative/ab").is_err());
    }
}

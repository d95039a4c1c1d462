//! HTTP/1.1 requests through a ztunnel's SOCKS5 entry (username = source workload), or on
//! the application's own plain TCP connection (from a pod's network namespace, where the
//! eBPF redirection captures it, or straight to an address).

use std::net::{IpAddr, SocketAddr};
use std::time::Duration;

use bytes::Bytes;
use http_body_util::{BodyExt, Full};
use hyper_util::rt::TokioIo;
use tokio::io::{AsyncReadExt, AsyncWriteExt};
use tokio::net::TcpStream;

use crate::connect::{Dial, DialError};

/// Why a request got no HTTP answer.
#[derive(Debug, thiserror::Error)]
pub enum HttpError {
    #[error(transparent)]
    Dial(#[from] DialError),
    #[error("SOCKS5 proxy {proxy}: {detail}")]
    Socks { proxy: SocketAddr, detail: String },
    /// The proxy refused the CONNECT (e.g. an L4 policy denied it).
    #[error("SOCKS5 CONNECT to {target} refused (reply code {code})")]
    Refused { target: String, code: u8 },
    #[error("HTTP to {target}: {source}")]
    Http {
        target: String,
        source: hyper::Error,
    },
    #[error("{target}: no answer within {timeout:?}")]
    Timeout { target: String, timeout: Duration },
}

/// One request.
#[derive(Debug, Clone)]
pub struct Request {
    pub method: &'static str,
    pub path: String,
    pub headers: Vec<(String, String)>,
}

impl Request {
    pub fn get(path: &str) -> Self {
        Request {
            method: "GET",
            path: path.to_string(),
            headers: Vec::new(),
        }
    }

    pub fn post(path: &str) -> Self {
        Request {
            method: "POST",
            ..Request::get(path)
        }
    }

    pub fn header(mut self, name: &str, value: &str) -> Self {
        self.headers.push((name.to_string(), value.to_string()));
        self
    }
}

/// One answer.
#[derive(Debug, Clone)]
pub struct Response {
    pub status: u16,
    pub headers: Vec<(String, String)>,
    pub body: Bytes,
}

impl Response {
    pub fn json(&self) -> Option<serde_json::Value> {
        serde_json::from_slice(&self.body).ok()
    }

    pub fn header(&self, name: &str) -> Option<&str> {
        self.headers
            .iter()
            .find(|(k, _)| k.eq_ignore_ascii_case(name))
            .map(|(_, v)| v.as_str())
    }
}

/// Where requests go: via SOCKS5 as a workload, or on a plain connection.
#[derive(Debug, Clone)]
pub enum Via {
    Socks {
        proxy: SocketAddr,
        /// `<ns>/<pod>` of the source workload.
        workload: String,
        /// The source pod's own address: the connection to the proxy leaves from it, so
        /// the ztunnel sees (and policies such as `ipBlocks` match) the pod, not 127.0.0.1.
        source: Option<IpAddr>,
        host: String,
        port: u16,
    },
    /// The application's own TCP connection to `dial`, with `Host: <host>`.
    Plain { dial: Dial, host: String },
}

impl Via {
    /// Straight to `addr` from this process.
    pub fn direct(addr: SocketAddr) -> Via {
        Via::Plain {
            dial: Dial::Here(addr),
            host: addr.to_string(),
        }
    }

    fn target(&self) -> String {
        match self {
            Via::Socks { host, port, .. } => format!("{host}:{port}"),
            Via::Plain { dial, .. } => dial.to_string(),
        }
    }
}

/// A connection to `proxy` from `source` (any port) when given.
async fn connect_from(proxy: SocketAddr, source: Option<IpAddr>) -> Result<TcpStream, HttpError> {
    let Some(ip) = source else {
        return Ok(Dial::Here(proxy).connect().await?);
    };
    let err = |e: std::io::Error| HttpError::Socks {
        proxy,
        detail: format!("connecting from {ip}: {e}"),
    };
    let sock = match ip {
        IpAddr::V4(_) => tokio::net::TcpSocket::new_v4(),
        IpAddr::V6(_) => tokio::net::TcpSocket::new_v6(),
    }
    .map_err(err)?;
    sock.bind(SocketAddr::new(ip, 0)).map_err(err)?;
    sock.connect(proxy).await.map_err(err)
}

async fn socks_connect(
    proxy: SocketAddr,
    workload: &str,
    source: Option<IpAddr>,
    host: &str,
    port: u16,
) -> Result<TcpStream, HttpError> {
    let err = |detail: String| HttpError::Socks { proxy, detail };
    let mut s = connect_from(proxy, source).await?;
    let io = |e: std::io::Error| err(e.to_string());
    s.write_all(&[5, 1, 2]).await.map_err(io)?;
    let mut m = [0u8; 2];
    s.read_exact(&mut m).await.map_err(io)?;
    if m != [5, 2] {
        return Err(err(format!("method reply {m:?}")));
    }
    let mut auth = vec![1, workload.len() as u8];
    auth.extend(workload.as_bytes());
    auth.extend([1, b'-']);
    s.write_all(&auth).await.map_err(io)?;
    s.read_exact(&mut m).await.map_err(io)?;
    let mut req = vec![5, 1, 0, 3, host.len() as u8];
    req.extend(host.as_bytes());
    req.extend(port.to_be_bytes());
    s.write_all(&req).await.map_err(io)?;
    let mut reply = [0u8; 10];
    s.read_exact(&mut reply).await.map_err(io)?;
    if reply[1] != 0 {
        return Err(HttpError::Refused {
            target: format!("{host}:{port}"),
            code: reply[1],
        });
    }
    Ok(s)
}

async fn exchange(via: &Via, req: &Request) -> Result<Response, HttpError> {
    let target = via.target();
    let (stream, authority) = match via {
        Via::Socks {
            proxy,
            workload,
            source,
            host,
            port,
        } => (
            socks_connect(*proxy, workload, *source, host, *port).await?,
            format!("{host}:{port}"),
        ),
        Via::Plain { dial, host } => (dial.connect().await?, host.clone()),
    };
    let http = |source| HttpError::Http {
        target: target.clone(),
        source,
    };
    let (mut sender, conn) = hyper::client::conn::http1::handshake(TokioIo::new(stream))
        .await
        .map_err(http)?;
    tokio::spawn(conn);
    let mut builder = hyper::Request::builder()
        .method(req.method)
        .uri(&req.path)
        .header("host", authority);
    for (k, v) in &req.headers {
        builder = builder.header(k.as_str(), v.as_str());
    }
    let body = if req.method == "POST" {
        Bytes::from_static(b"{\"amount\":42}")
    } else {
        Bytes::new()
    };
    let request = builder
        .body(Full::new(body))
        .expect("demo requests are well-formed");
    let resp = sender.send_request(request).await.map_err(http)?;
    let status = resp.status().as_u16();
    let headers = resp
        .headers()
        .iter()
        .map(|(k, v)| {
            (
                k.as_str().to_string(),
                String::from_utf8_lossy(v.as_bytes()).into_owned(),
            )
        })
        .collect();
    let body = resp.into_body().collect().await.map_err(http)?.to_bytes();
    Ok(Response {
        status,
        headers,
        body,
    })
}

/// Sends `req` on a fresh connection, bounded by `timeout`.
pub async fn send(via: &Via, req: &Request, timeout: Duration) -> Result<Response, HttpError> {
    tokio::time::timeout(timeout, exchange(via, req))
        .await
        .map_err(|_| HttpError::Timeout {
            target: via.target(),
            timeout,
        })?
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::net::TcpListener;

    #[tokio::test]
    async fn direct_request_reads_status_headers_and_body() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_string();
            assert!(head.starts_with("GET /x HTTP/1.1"), "{head}");
            assert!(
                head.to_ascii_lowercase().contains("x-canary: true"),
                "{head}"
            );
            s.write_all(
                b"HTTP/1.1 503 Service Unavailable\r\nx-flag: UO\r\ncontent-length: 2\r\n\r\n{}",
            )
            .await
            .unwrap();
        });
        let r = send(
            &Via::direct(addr),
            &Request::get("/x").header("x-canary", "true"),
            Duration::from_secs(5),
        )
        .await
        .unwrap();
        assert_eq!(r.status, 503);
        assert_eq!(r.header("X-Flag"), Some("UO"));
        assert_eq!(r.json(), Some(serde_json::json!({})));
    }

    #[tokio::test]
    async fn plain_connection_names_the_service_in_host() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut buf = vec![0u8; 1024];
            let n = s.read(&mut buf).await.unwrap();
            let head = String::from_utf8_lossy(&buf[..n]).to_ascii_lowercase();
            let code = if head.contains("\r\nhost: order-service\r\n") {
                "200 OK"
            } else {
                "400 Bad Request"
            };
            s.write_all(format!("HTTP/1.1 {code}\r\ncontent-length: 0\r\n\r\n").as_bytes())
                .await
                .unwrap();
        });
        let via = Via::Plain {
            dial: Dial::Here(addr),
            host: "order-service".into(),
        };
        let r = send(&via, &Request::get("/api/orders"), Duration::from_secs(5))
            .await
            .unwrap();
        assert_eq!(r.status, 200);
    }

    #[tokio::test]
    async fn socks_connection_leaves_from_the_pod_address() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = l.local_addr().unwrap();
        let seen = tokio::spawn(async move { l.accept().await.unwrap().1.ip() });
        let pod: IpAddr = "127.66.5.14".parse().unwrap();
        let via = Via::Socks {
            proxy,
            workload: "shop/web-0".into(),
            source: Some(pod),
            host: "cart".into(),
            port: 8080,
        };
        let _ = send(&via, &Request::get("/"), Duration::from_millis(500)).await;
        assert_eq!(seen.await.unwrap(), pod);
    }

    #[tokio::test]
    async fn socks_refusal_is_reported_with_its_code() {
        let l = TcpListener::bind("127.0.0.1:0").await.unwrap();
        let proxy = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            let mut b = [0u8; 3];
            s.read_exact(&mut b).await.unwrap();
            s.write_all(&[5, 2]).await.unwrap();
            let mut h = [0u8; 2];
            s.read_exact(&mut h).await.unwrap();
            let mut user = vec![0u8; h[1] as usize + 2];
            s.read_exact(&mut user).await.unwrap();
            s.write_all(&[1, 0]).await.unwrap();
            let mut r = [0u8; 5];
            s.read_exact(&mut r).await.unwrap();
            let mut rest = vec![0u8; r[4] as usize + 2];
            s.read_exact(&mut rest).await.unwrap();
            s.write_all(&[5, 2, 0, 1, 0, 0, 0, 0, 0, 0]).await.unwrap();
        });
        let via = Via::Socks {
            proxy,
            workload: "production/order-client".into(),
            source: None,
            host: "payment-service".into(),
            port: 8080,
        };
        let e = send(&via, &Request::get("/"), Duration::from_secs(5))
            .await
            .unwrap_err();
        assert!(matches!(e, HttpError::Refused { code: 2, .. }), "{e}");
    }
}

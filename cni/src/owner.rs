//! Is this an uninstall or a restart? When the installer is stopped, it asks the Kubernetes
//! API whether the DaemonSet it belongs to still exists (as Istio's node agent does): gone
//! or being deleted means the mesh is being uninstalled from the node. One HTTP/1.0 GET over
//! TLS with the pod's service-account token — the installer's only use of the API, so no
//! Kubernetes client library (the CNI plugin is the same static binary).

use std::io::{self, Read, Write};
use std::net::TcpStream;
use std::path::{Path, PathBuf};
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::pem::PemObject;
use rustls::pki_types::{CertificateDer, ServerName};

/// What the API said about the DaemonSet.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Owner {
    /// It exists and is not being deleted: a restart or an upgrade.
    Present,
    /// Not found, or being deleted: the mesh is leaving the node.
    Gone,
}

#[derive(Debug, thiserror::Error)]
pub enum OwnerError {
    #[error("reading {path}: {source}")]
    Read { path: PathBuf, source: io::Error },
    #[error("{path}: no certificate in it")]
    NoCa { path: PathBuf },
    #[error("TLS setup: {0}")]
    Tls(String),
    #[error("asking {server} about daemonset {namespace}/{name}: {source}")]
    Request {
        server: String,
        namespace: String,
        name: String,
        source: io::Error,
    },
    #[error("daemonset {namespace}/{name}: the API answered {status}: {body}")]
    Status {
        namespace: String,
        name: String,
        status: u16,
        body: String,
    },
    #[error("daemonset {namespace}/{name}: unreadable answer: {reason}")]
    Answer {
        namespace: String,
        name: String,
        reason: String,
    },
}

/// Where the API server is and how to prove who we are.
#[derive(Debug, Clone)]
pub struct ApiServer {
    /// `host:port` to connect to.
    pub addr: String,
    /// The name the server's certificate must carry.
    pub server_name: String,
    pub ca_file: PathBuf,
    pub token_file: PathBuf,
}

const SA_DIR: &str = "/var/run/secrets/kubernetes.io/serviceaccount";

impl ApiServer {
    /// The in-cluster API server (`KUBERNETES_SERVICE_HOST`/`_PORT`, the mounted token and
    /// CA); `None` outside a pod.
    pub fn in_cluster() -> Option<ApiServer> {
        let host = std::env::var("KUBERNETES_SERVICE_HOST").ok()?;
        let port = std::env::var("KUBERNETES_SERVICE_PORT").unwrap_or_else(|_| "443".into());
        let addr = if host.contains(':') {
            format!("[{host}]:{port}")
        } else {
            format!("{host}:{port}")
        };
        Some(ApiServer {
            addr,
            server_name: host,
            ca_file: Path::new(SA_DIR).join("ca.crt"),
            token_file: Path::new(SA_DIR).join("token"),
        })
    }

    fn tls(&self) -> Result<Arc<rustls::ClientConfig>, OwnerError> {
        let mut roots = rustls::RootCertStore::empty();
        let pem = std::fs::read(&self.ca_file).map_err(|source| OwnerError::Read {
            path: self.ca_file.clone(),
            source,
        })?;
        for cert in CertificateDer::pem_slice_iter(&pem).flatten() {
            roots
                .add(cert)
                .map_err(|e| OwnerError::Tls(e.to_string()))?;
        }
        if roots.is_empty() {
            return Err(OwnerError::NoCa {
                path: self.ca_file.clone(),
            });
        }
        let provider = Arc::new(rustls::crypto::ring::default_provider());
        let cfg = rustls::ClientConfig::builder_with_provider(provider)
            .with_safe_default_protocol_versions()
            .map_err(|e| OwnerError::Tls(e.to_string()))?
            .with_root_certificates(roots)
            .with_no_client_auth();
        Ok(Arc::new(cfg))
    }

    /// Whether DaemonSet `namespace/name` still exists and is not being deleted.
    pub fn daemonset(&self, namespace: &str, name: &str) -> Result<Owner, OwnerError> {
        let token =
            std::fs::read_to_string(&self.token_file).map_err(|source| OwnerError::Read {
                path: self.token_file.clone(),
                source,
            })?;
        let tls = self.tls()?;
        let req_err = |source: io::Error| OwnerError::Request {
            server: self.addr.clone(),
            namespace: namespace.to_string(),
            name: name.to_string(),
            source,
        };
        let server_name = ServerName::try_from(self.server_name.clone())
            .map_err(|e| OwnerError::Tls(e.to_string()))?;
        let conn = rustls::ClientConnection::new(tls, server_name)
            .map_err(|e| OwnerError::Tls(e.to_string()))?;
        let addr = std::net::ToSocketAddrs::to_socket_addrs(&self.addr)
            .map_err(req_err)?
            .next()
            .ok_or_else(|| req_err(io::Error::other("no address")))?;
        let tcp = TcpStream::connect_timeout(&addr, Duration::from_secs(3)).map_err(req_err)?;
        tcp.set_read_timeout(Some(Duration::from_secs(5)))
            .map_err(req_err)?;
        tcp.set_write_timeout(Some(Duration::from_secs(5)))
            .map_err(req_err)?;
        let mut tls = rustls::StreamOwned::new(conn, tcp);
        // HTTP/1.0: the answer ends with the connection (no chunked encoding to undo).
        let request = format!(
            "GET /apis/apps/v1/namespaces/{namespace}/daemonsets/{name} HTTP/1.0\r\n\
             Host: {}\r\nAuthorization: Bearer {}\r\nAccept: application/json\r\n\r\n",
            self.server_name,
            token.trim()
        );
        tls.write_all(request.as_bytes()).map_err(req_err)?;
        let mut reply = Vec::new();
        // A DaemonSet object is a few KiB; bound what is read.
        let _ = Read::by_ref(&mut tls)
            .take(1 << 20)
            .read_to_end(&mut reply)
            .or_else(|e| {
                // Some servers close without close_notify once the body is sent.
                if e.kind() == io::ErrorKind::UnexpectedEof && !reply.is_empty() {
                    Ok(0)
                } else {
                    Err(e)
                }
            })
            .map_err(req_err)?;
        parse(namespace, name, &reply)
    }
}

fn parse(namespace: &str, name: &str, reply: &[u8]) -> Result<Owner, OwnerError> {
    let text = String::from_utf8_lossy(reply);
    let answer = |reason: &str| OwnerError::Answer {
        namespace: namespace.to_string(),
        name: name.to_string(),
        reason: reason.to_string(),
    };
    let (head, body) = text
        .split_once("\r\n\r\n")
        .ok_or_else(|| answer("no header end"))?;
    let status: u16 = head
        .split_whitespace()
        .nth(1)
        .and_then(|s| s.parse().ok())
        .ok_or_else(|| answer("no status code"))?;
    match status {
        404 => Ok(Owner::Gone),
        200 => {
            let v: serde_json::Value =
                serde_json::from_str(body).map_err(|e| answer(&e.to_string()))?;
            if v["metadata"]["deletionTimestamp"].is_string() {
                Ok(Owner::Gone)
            } else {
                Ok(Owner::Present)
            }
        }
        _ => Err(OwnerError::Status {
            namespace: namespace.to_string(),
            name: name.to_string(),
            status,
            body: body.chars().take(200).collect(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn reply(status: &str, body: &str) -> Vec<u8> {
        format!("HTTP/1.0 {status}\r\nContent-Type: application/json\r\n\r\n{body}").into_bytes()
    }

    #[test]
    fn present_gone_and_being_deleted() {
        let ds = r#"{"kind":"DaemonSet","metadata":{"name":"meshwork-ztunnel"}}"#;
        assert_eq!(
            parse("m", "z", &reply("200 OK", ds)).unwrap(),
            Owner::Present
        );
        let deleting = r#"{"kind":"DaemonSet","metadata":{"name":"z","deletionTimestamp":"2026-12-07T17:00:00Z"}}"#;
        assert_eq!(
            parse("m", "z", &reply("200 OK", deleting)).unwrap(),
            Owner::Gone
        );
        let nf = r#"{"kind":"Status","reason":"NotFound","code":404}"#;
        assert_eq!(
            parse("m", "z", &reply("404 Not Found", nf)).unwrap(),
            Owner::Gone
        );
    }

    #[test]
    fn anything_else_is_an_error_naming_the_daemonset() {
        let e = parse("m", "z", &reply("403 Forbidden", "{}")).unwrap_err();
        assert!(
            e.to_string().contains("daemonset m/z") && e.to_string().contains("403"),
            "{e}"
        );
        let e = parse("m", "z", b"garbage").unwrap_err();
        assert!(e.to_string().contains("daemonset m/z"), "{e}");
        let e = parse("m", "z", &reply("200 OK", "not json")).unwrap_err();
        assert!(matches!(e, OwnerError::Answer { .. }), "{e}");
    }
}

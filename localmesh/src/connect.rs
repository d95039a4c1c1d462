//! Where a TCP connection is opened from: this process's network namespace, or a named one
//! of the demo cluster (a pod, a node, the fabric). A socket keeps the namespace it was
//! created in, so a connection made on a thread that entered the namespace is then used by
//! tokio like any other.

use std::fmt;
use std::net::SocketAddr;
use std::time::Duration;

use tokio::net::TcpStream;

/// How long a connect may take (captured connections complete at the local ztunnel).
const CONNECT_TIMEOUT: Duration = Duration::from_secs(5);

/// A TCP destination, and the network namespace the connection starts from.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Dial {
    /// From this process's namespace.
    Here(SocketAddr),
    /// From the named network namespace (`/run/netns/<netns>`).
    Netns { netns: String, addr: SocketAddr },
}

impl fmt::Display for Dial {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        match self {
            Dial::Here(a) => write!(f, "{a}"),
            Dial::Netns { netns, addr } => write!(f, "{addr} (from netns {netns})"),
        }
    }
}

/// Why a connection could not be opened.
#[derive(Debug, thiserror::Error)]
pub enum DialError {
    #[error("connecting to {dial}: {source}")]
    Connect {
        dial: String,
        source: std::io::Error,
    },
    #[error("connecting to {dial}: {detail}")]
    Netns { dial: String, detail: String },
}

impl Dial {
    pub fn addr(&self) -> SocketAddr {
        match self {
            Dial::Here(a) | Dial::Netns { addr: a, .. } => *a,
        }
    }

    /// Opens the connection.
    pub async fn connect(&self) -> Result<TcpStream, DialError> {
        match self {
            Dial::Here(addr) => {
                TcpStream::connect(addr)
                    .await
                    .map_err(|source| DialError::Connect {
                        dial: self.to_string(),
                        source,
                    })
            }
            Dial::Netns { netns, addr } => {
                let (netns, addr) = (netns.clone(), *addr);
                let std = tokio::task::spawn_blocking(move || {
                    meshwork_netlab::netns::in_netns(&netns, move || {
                        let s = std::net::TcpStream::connect_timeout(&addr, CONNECT_TIMEOUT)?;
                        s.set_nonblocking(true)?;
                        Ok::<_, std::io::Error>(s)
                    })
                })
                .await
                .map_err(|e| DialError::Netns {
                    dial: self.to_string(),
                    detail: e.to_string(),
                })?
                .map_err(|e| DialError::Netns {
                    dial: self.to_string(),
                    detail: e.to_string(),
                })?
                .map_err(|source| DialError::Connect {
                    dial: self.to_string(),
                    source,
                })?;
                TcpStream::from_std(std).map_err(|source| DialError::Connect {
                    dial: self.to_string(),
                    source,
                })
            }
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use tokio::io::{AsyncReadExt, AsyncWriteExt};

    #[tokio::test]
    async fn here_connects_and_netns_errors_name_the_namespace() {
        let l = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
        let addr = l.local_addr().unwrap();
        tokio::spawn(async move {
            let (mut s, _) = l.accept().await.unwrap();
            s.write_all(b"hi").await.unwrap();
        });
        let mut s = Dial::Here(addr).connect().await.unwrap();
        let mut buf = [0u8; 2];
        s.read_exact(&mut buf).await.unwrap();
        assert_eq!(&buf, b"hi");
        let missing = Dial::Netns {
            netns: "meshwork-demo-no-such-netns".into(),
            addr,
        };
        let e = missing.connect().await.unwrap_err().to_string();
        assert!(e.contains("meshwork-demo-no-such-netns"), "{e}");
        assert_eq!(missing.addr(), addr);
    }
}

//! Reaching endpoints over HBONE: CONNECT `ip:port` through mTLS to the workload's node
//! (`ip:15008`), verifying the endpoint's SPIFFE identity.

use meshwork_runtime::sync::LockExt;
use std::collections::HashMap;
use std::io;
use std::net::SocketAddr;
use std::str::FromStr;
use std::sync::{Arc, Mutex};

use futures::future::BoxFuture;
use meshwork_hbone::{Pool, PoolKey};
use meshwork_identity::tls::{client_config_with_resolver, RotatingCert};
use meshwork_identity::SpiffeId;
use rustls::ClientConfig;

use crate::upstream::connector::{BoxedIo, Connector, Target};

/// Opens CONNECT streams over pooled HBONE connections, presenting the waypoint's certificate.
pub struct HboneConnector {
    pool: Pool,
    cert: Arc<RotatingCert>,
    hbone_port: u16,
    /// Client TLS configs by (certificate serial, expected peer identity).
    configs: Mutex<HashMap<(String, String), Arc<ClientConfig>>>,
}

impl HboneConnector {
    pub fn new(pool: Pool, cert: Arc<RotatingCert>, hbone_port: u16) -> Self {
        HboneConnector {
            pool,
            cert,
            hbone_port,
            configs: Mutex::default(),
        }
    }

    fn tls(&self, expected: &SpiffeId) -> io::Result<Arc<ClientConfig>> {
        let current = self.cert.current();
        let key = (current.serial().to_string(), expected.to_string());
        let mut configs = self.configs.lock_or_recover();
        if let Some(c) = configs.get(&key) {
            return Ok(c.clone());
        }
        let c = client_config_with_resolver(self.cert.clone(), current.roots(), [expected.clone()])
            .map_err(|e| io::Error::other(format!("HBONE client TLS for {expected}: {e}")))?;
        configs.retain(|(serial, _), _| *serial == key.0);
        configs.insert(key, c.clone());
        Ok(c)
    }
}

impl Connector for HboneConnector {
    fn connect(&self, target: &Target) -> BoxFuture<'static, io::Result<BoxedIo>> {
        let pool = self.pool.clone();
        let target = target.clone();
        let prepared = (|| {
            let identity = target.identity.as_deref().ok_or_else(|| {
                io::Error::other(format!(
                    "endpoint {} has no identity for HBONE",
                    target.addr
                ))
            })?;
            let expected = SpiffeId::from_str(identity)
                .map_err(|e| io::Error::other(format!("endpoint identity {identity:?}: {e}")))?;
            // The hop guard of the dialing side: a tunnel to this waypoint's own identity
            // would come back in as a loop.
            if &expected == self.cert.current().identity() {
                return Err(io::Error::other(format!(
                    "endpoint {} runs as this waypoint's own identity {expected}: not dialing a loop",
                    target.addr
                )));
            }
            let tls = self.tls(&expected)?;
            let key = PoolKey {
                src_identity: self.cert.current().identity().to_string(),
                dst: SocketAddr::new(target.addr.ip(), self.hbone_port),
                dst_identity: identity.to_string(),
                from: Default::default(),
            };
            Ok::<_, io::Error>((key, tls))
        })();
        Box::pin(async move {
            let (key, tls) = prepared?;
            let stream = pool
                .connect(
                    &key,
                    move || tls,
                    &target.addr.to_string(),
                    http::HeaderMap::new(),
                )
                .await
                .map_err(io::Error::other)?;
            Ok(Box::new(stream) as BoxedIo)
        })
    }
}

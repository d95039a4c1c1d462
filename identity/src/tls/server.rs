//! Server side of HBONE TLS: client certificate required, server certificate chosen per handshake.

use std::collections::HashMap;
use std::fmt;
use std::sync::{Arc, RwLock};

use rustls::client::ResolvesClientCert;
use rustls::server::{
    ClientHello, NoServerSessionStorage, ResolvesServerCert, WebPkiClientVerifier,
};
use rustls::sign::CertifiedKey;
use rustls::{ServerConfig, SignatureScheme};

use super::{crypto_provider, TlsConfigError, HBONE_ALPN};
use crate::bundle::TrustBundle;
use crate::cert::WorkloadCertificate;
use crate::spiffe::SpiffeId;

/// A TLS 1.3 server configuration for HBONE.
///
/// Clients must present a certificate chaining to `roots` (any mesh identity is accepted here;
/// authorization happens after the handshake with [`peer_identity`](super::peer_identity)).
/// `resolver` is asked for the server certificate on every handshake, so swapping what it
/// returns rotates the certificate for new connections without touching established ones.
/// Session resumption is disabled, so every connection authenticates both certificates.
pub fn server_config(
    roots: &TrustBundle,
    resolver: Arc<dyn ResolvesServerCert>,
) -> Result<Arc<ServerConfig>, TlsConfigError> {
    let provider = crypto_provider();
    let verifier =
        WebPkiClientVerifier::builder_with_provider(roots.root_store(), provider.clone())
            .build()?;
    let mut config = ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_client_cert_verifier(verifier)
        .with_cert_resolver(resolver);
    config.alpn_protocols = vec![HBONE_ALPN.to_vec()];
    config.session_storage = Arc::new(NoServerSessionStorage {});
    config.send_tls13_tickets = 0;
    Ok(Arc::new(config))
}

/// One identity's certificate, replaceable at runtime (renewal). Usable as the server resolver
/// and as the client certificate of [`client_config`](super::client_config)-like setups.
pub struct RotatingCert {
    current: RwLock<WorkloadCertificate>,
}

impl RotatingCert {
    pub fn new(cert: WorkloadCertificate) -> Arc<Self> {
        Arc::new(RotatingCert {
            current: RwLock::new(cert),
        })
    }

    /// New handshakes present `cert` from now on.
    pub fn set(&self, cert: WorkloadCertificate) {
        tracing::debug!(identity = %cert.identity(), serial = cert.serial(), "rotating certificate");
        *self.current.write().unwrap_or_else(|e| e.into_inner()) = cert;
    }

    pub fn current(&self) -> WorkloadCertificate {
        self.current
            .read()
            .unwrap_or_else(|e| e.into_inner())
            .clone()
    }
}

impl fmt::Debug for RotatingCert {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("RotatingCert")
            .field("current", &self.current())
            .finish()
    }
}

impl ResolvesServerCert for RotatingCert {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified_key())
    }
}

impl ResolvesClientCert for RotatingCert {
    fn resolve(&self, _hints: &[&[u8]], _schemes: &[SignatureScheme]) -> Option<Arc<CertifiedKey>> {
        Some(self.current().certified_key())
    }

    fn has_certs(&self) -> bool {
        true
    }
}

/// Certificates of several identities (a ztunnel holds one per local service account),
/// updated by their owner as certificates are fetched, renewed or dropped.
#[derive(Default)]
pub struct CertStore {
    certs: RwLock<HashMap<SpiffeId, WorkloadCertificate>>,
}

type Selector = dyn Fn(&ClientHello<'_>) -> Option<SpiffeId> + Send + Sync;

impl CertStore {
    pub fn new() -> Arc<Self> {
        Arc::new(CertStore::default())
    }

    /// Adds or replaces the certificate of `cert.identity()`; returns the replaced one.
    pub fn insert(&self, cert: WorkloadCertificate) -> Option<WorkloadCertificate> {
        let mut certs = self.certs.write().unwrap_or_else(|e| e.into_inner());
        certs.insert(cert.identity().clone(), cert)
    }

    pub fn remove(&self, identity: &SpiffeId) -> Option<WorkloadCertificate> {
        let mut certs = self.certs.write().unwrap_or_else(|e| e.into_inner());
        certs.remove(identity)
    }

    pub fn get(&self, identity: &SpiffeId) -> Option<WorkloadCertificate> {
        let certs = self.certs.read().unwrap_or_else(|e| e.into_inner());
        certs.get(identity).cloned()
    }

    /// Every identity held, sorted.
    pub fn identities(&self) -> Vec<SpiffeId> {
        let certs = self.certs.read().unwrap_or_else(|e| e.into_inner());
        let mut ids: Vec<_> = certs.keys().cloned().collect();
        ids.sort();
        ids
    }

    /// A resolver presenting `identity`'s current certificate (looked up at handshake time).
    ///
    /// A ztunnel accepting an HBONE connection knows the original destination address before
    /// the handshake; it maps it to the destination workload's identity and builds
    /// `server_config(&roots, store.resolver_for(identity))` for that connection.
    pub fn resolver_for(self: &Arc<Self>, identity: SpiffeId) -> Arc<IdentityResolver> {
        Arc::new(IdentityResolver {
            store: self.clone(),
            select: Selection::Fixed(identity),
        })
    }

    /// A resolver asking `select` which identity to present, from the ClientHello (SNI, ALPN).
    pub fn resolver_with<F>(self: &Arc<Self>, select: F) -> Arc<IdentityResolver>
    where
        F: Fn(&ClientHello<'_>) -> Option<SpiffeId> + Send + Sync + 'static,
    {
        Arc::new(IdentityResolver {
            store: self.clone(),
            select: Selection::Callback(Arc::new(select)),
        })
    }
}

impl fmt::Debug for CertStore {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.debug_struct("CertStore")
            .field("identities", &self.identities())
            .finish()
    }
}

enum Selection {
    Fixed(SpiffeId),
    Callback(Arc<Selector>),
}

/// Picks the server certificate from a [`CertStore`]; aborts the handshake (with a warning
/// log) when no identity is selected or its certificate is missing.
pub struct IdentityResolver {
    store: Arc<CertStore>,
    select: Selection,
}

impl ResolvesServerCert for IdentityResolver {
    fn resolve(&self, hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        let identity = match &self.select {
            Selection::Fixed(id) => id.clone(),
            Selection::Callback(select) => match select(&hello) {
                Some(id) => id,
                None => {
                    tracing::warn!(sni = ?hello.server_name(), "no identity selected for TLS handshake");
                    return None;
                }
            },
        };
        match self.store.get(&identity) {
            Some(cert) => Some(cert.certified_key()),
            None => {
                tracing::warn!(%identity, "no certificate for the identity to present");
                None
            }
        }
    }
}

impl fmt::Debug for IdentityResolver {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        let select = match &self.select {
            Selection::Fixed(id) => id.to_string(),
            Selection::Callback(_) => "<callback>".to_string(),
        };
        f.debug_struct("IdentityResolver")
            .field("select", &select)
            .finish_non_exhaustive()
    }
}

//! The control plane's own TLS certificate, for its gRPC port (15012): signed by the mesh
//! CA it runs, so proxies verify it against the mesh root they already hold (as Istio's
//! ztunnel verifies istiod). Renewed at half its lifetime and whenever the CA changes.

use meshwork_runtime::sync::LockExt;
use std::net::IpAddr;
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meshwork_identity::pem::certificates_from_pem;
use meshwork_identity::SpiffeId;
use rcgen::{
    CertificateParams, DistinguishedName, ExtendedKeyUsagePurpose, IsCa, KeyPair, KeyUsagePurpose,
    SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls::server::{ClientHello, ResolvesServerCert};
use rustls::sign::CertifiedKey;
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::authority::{random_serial, Ca};
use super::error::SignError;
use super::handle::CaHandle;
use super::material::CLOCK_SKEW_BACKDATE;

/// Who the control plane is on the wire.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServingIdentity {
    /// Its SPIFFE identity (its service account).
    pub spiffe: SpiffeId,
    /// DNS names clients dial (`meshwork-controlplane.istio-system.svc`, `localhost`, …).
    pub dns_names: Vec<String>,
    /// Addresses clients dial directly.
    pub ips: Vec<IpAddr>,
    pub ttl: Duration,
}

impl Ca {
    /// A serving certificate and its new key: leaf (SPIFFE URI, DNS and IP SANs, server
    /// authentication only), then the intermediates; never the root.
    pub fn issue_serving(
        &self,
        id: &ServingIdentity,
    ) -> Result<(Vec<CertificateDer<'static>>, PrivateKeyDer<'static>), SignError> {
        let signing = |e: rcgen::Error| SignError::Signing(e.to_string());
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(signing)?;
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        let mut sans = vec![SanType::URI(
            id.spiffe.to_string().try_into().map_err(signing)?,
        )];
        for name in &id.dns_names {
            sans.push(SanType::DnsName(name.clone().try_into().map_err(signing)?));
        }
        sans.extend(id.ips.iter().map(|ip| SanType::IpAddress(*ip)));
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![KeyUsagePurpose::DigitalSignature];
        params.extended_key_usages = vec![ExtendedKeyUsagePurpose::ServerAuth];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()?));
        let now = SystemTime::now();
        params.not_before = (now - CLOCK_SKEW_BACKDATE).into();
        params.not_after = (now + id.ttl).min(self.signing_not_after()).into();
        let leaf = params
            .signed_by(&key, self.issuer())
            .map_err(signing)?
            .der()
            .clone();
        let mut chain = vec![leaf];
        for pem in self.intermediates_pem() {
            chain.extend(
                certificates_from_pem("chain", pem)
                    .map_err(|e| SignError::Signing(e.to_string()))?,
            );
        }
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        tracing::info!(identity = %id.spiffe, dns = ?id.dns_names, ips = ?id.ips, "issued the control plane's serving certificate");
        Ok((chain, key))
    }
}

/// Hands rustls the current serving certificate, issuing a new one when half its life is
/// gone or the CA changed.
pub struct ServingCerts {
    ca: Arc<CaHandle>,
    id: ServingIdentity,
    current: Mutex<Option<Current>>,
}

struct Current {
    key: Arc<CertifiedKey>,
    renew_at: SystemTime,
    ca_version: u64,
}

impl ServingCerts {
    /// Issues the first certificate now, so a bad identity fails at startup.
    pub fn new(ca: Arc<CaHandle>, id: ServingIdentity) -> Result<Arc<Self>, SignError> {
        let certs = Arc::new(ServingCerts {
            ca,
            id,
            current: Mutex::new(None),
        });
        certs.get()?;
        Ok(certs)
    }

    fn get(&self) -> Result<Arc<CertifiedKey>, SignError> {
        let mut current = self.current.lock_or_recover();
        let version = self.ca.version();
        if let Some(c) = current.as_ref() {
            if c.ca_version == version && SystemTime::now() < c.renew_at {
                return Ok(c.key.clone());
            }
        }
        let (chain, key) = self.ca.current().issue_serving(&self.id)?;
        let signing_key = rustls::crypto::ring::sign::any_supported_type(&key)
            .map_err(|e| SignError::Signing(e.to_string()))?;
        let key = Arc::new(CertifiedKey::new(chain, signing_key));
        *current = Some(Current {
            key: key.clone(),
            renew_at: SystemTime::now() + self.id.ttl / 2,
            ca_version: version,
        });
        Ok(key)
    }
}

impl ResolvesServerCert for ServingCerts {
    fn resolve(&self, _hello: ClientHello<'_>) -> Option<Arc<CertifiedKey>> {
        self.get()
            .inspect_err(|e| tracing::error!(error = %e, "cannot issue the serving certificate"))
            .ok()
    }
}

impl std::fmt::Debug for ServingCerts {
    fn fmt(&self, f: &mut std::fmt::Formatter<'_>) -> std::fmt::Result {
        f.debug_struct("ServingCerts")
            .field("id", &self.id)
            .finish()
    }
}

/// TLS 1.3 only, ALPN `h2`, no client certificates (callers prove themselves with tokens).
pub fn server_config(certs: Arc<ServingCerts>) -> Result<rustls::ServerConfig, rustls::Error> {
    let provider = Arc::new(rustls::crypto::ring::default_provider());
    let mut config = rustls::ServerConfig::builder_with_provider(provider)
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .with_no_client_auth()
        .with_cert_resolver(certs);
    config.alpn_protocols = vec![b"h2".to_vec()];
    Ok(config)
}

//! Client side of HBONE TLS: present a workload certificate, accept only the expected identities.

use std::fmt;
use std::sync::Arc;

use rustls::client::danger::{HandshakeSignatureValid, ServerCertVerified, ServerCertVerifier};
use rustls::client::{verify_server_cert_signed_by_trust_anchor, ResolvesClientCert, Resumption};
use rustls::crypto::CryptoProvider;
use rustls::pki_types::{CertificateDer, ServerName, UnixTime};
use rustls::server::ParsedCertificate;
use rustls::{
    CertificateError, ClientConfig, DigitallySignedStruct, OtherError, RootCertStore,
    SignatureScheme,
};

use super::{crypto_provider, RotatingCert, TlsConfigError, HBONE_ALPN};
use crate::bundle::TrustBundle;
use crate::cert::WorkloadCertificate;
use crate::spiffe::{SpiffeId, SpiffeIdError};
use crate::x509::{leaf_spiffe_id, LeafError};

/// Why the server's (validly chained) certificate is not acceptable.
///
/// Carried in `rustls::Error::InvalidCertificate(CertificateError::Other(..))`; rustls prints
/// that with `Debug`, so `Debug` here is the readable message too.
#[derive(Clone, PartialEq, Eq, thiserror::Error)]
pub enum ServerIdentityError {
    #[error("server certificate: {0}")]
    Leaf(#[from] LeafError),
    #[error("server certificate: invalid SPIFFE identity: {0}")]
    Identity(#[from] SpiffeIdError),
    #[error("server identity {presented} is not the expected {}", join(.expected))]
    Unexpected {
        presented: SpiffeId,
        expected: Vec<SpiffeId>,
    },
}

impl fmt::Debug for ServerIdentityError {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        fmt::Display::fmt(self, f)
    }
}

fn join(ids: &[SpiffeId]) -> String {
    ids.iter()
        .map(|id| id.to_string())
        .collect::<Vec<_>>()
        .join(" or ")
}

/// A TLS 1.3 client configuration for HBONE presenting `cert`, trusting `roots`, and accepting
/// only a server whose URI SAN is one of `expected` (DNS names are not checked: pass any
/// `ServerName`, e.g. the destination IP). Resumption is disabled so the server identity is
/// verified on every connection.
pub fn client_config(
    cert: &WorkloadCertificate,
    roots: &TrustBundle,
    expected: impl IntoIterator<Item = SpiffeId>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    client_config_with_resolver(RotatingCert::new(cert.clone()), roots, expected)
}

/// Like [`client_config`], with the client certificate chosen by `client_cert` on every
/// handshake (e.g. a shared [`RotatingCert`]).
pub fn client_config_with_resolver(
    client_cert: Arc<dyn ResolvesClientCert>,
    roots: &TrustBundle,
    expected: impl IntoIterator<Item = SpiffeId>,
) -> Result<Arc<ClientConfig>, TlsConfigError> {
    let verifier = Arc::new(SpiffeServerVerifier::new(roots, expected)?);
    let mut config = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS13])?
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(client_cert);
    config.alpn_protocols = vec![HBONE_ALPN.to_vec()];
    config.resumption = Resumption::disabled();
    Ok(Arc::new(config))
}

/// Verifies the server chain against the mesh roots and its SPIFFE id against an allow list.
#[derive(Debug)]
pub struct SpiffeServerVerifier {
    roots: Arc<RootCertStore>,
    expected: Vec<SpiffeId>,
    provider: Arc<CryptoProvider>,
}

impl SpiffeServerVerifier {
    pub fn new(
        roots: &TrustBundle,
        expected: impl IntoIterator<Item = SpiffeId>,
    ) -> Result<Self, TlsConfigError> {
        let expected: Vec<SpiffeId> = expected.into_iter().collect();
        if expected.is_empty() {
            return Err(TlsConfigError::NoExpectedIdentity);
        }
        Ok(SpiffeServerVerifier {
            roots: roots.root_store(),
            expected,
            provider: crypto_provider(),
        })
    }

    pub fn expected(&self) -> &[SpiffeId] {
        &self.expected
    }

    fn check_identity(&self, leaf: &CertificateDer<'_>) -> Result<(), ServerIdentityError> {
        let presented: SpiffeId = leaf_spiffe_id(leaf)?.uri.parse()?;
        if self.expected.contains(&presented) {
            Ok(())
        } else {
            Err(ServerIdentityError::Unexpected {
                presented,
                expected: self.expected.clone(),
            })
        }
    }
}

impl ServerCertVerifier for SpiffeServerVerifier {
    fn verify_server_cert(
        &self,
        end_entity: &CertificateDer<'_>,
        intermediates: &[CertificateDer<'_>],
        _server_name: &ServerName<'_>,
        _ocsp_response: &[u8],
        now: UnixTime,
    ) -> Result<ServerCertVerified, rustls::Error> {
        let parsed = ParsedCertificate::try_from(end_entity)?;
        verify_server_cert_signed_by_trust_anchor(
            &parsed,
            &self.roots,
            intermediates,
            now,
            self.provider.signature_verification_algorithms.all,
        )?;
        self.check_identity(end_entity).map_err(|e| {
            tracing::debug!(error = %e, "rejecting server certificate");
            rustls::Error::InvalidCertificate(CertificateError::Other(OtherError(Arc::new(e))))
        })?;
        Ok(ServerCertVerified::assertion())
    }

    fn verify_tls12_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls12_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn verify_tls13_signature(
        &self,
        message: &[u8],
        cert: &CertificateDer<'_>,
        dss: &DigitallySignedStruct,
    ) -> Result<HandshakeSignatureValid, rustls::Error> {
        rustls::crypto::verify_tls13_signature(
            message,
            cert,
            dss,
            &self.provider.signature_verification_algorithms,
        )
    }

    fn supported_verify_schemes(&self) -> Vec<SignatureScheme> {
        self.provider
            .signature_verification_algorithms
            .supported_schemes()
    }
}

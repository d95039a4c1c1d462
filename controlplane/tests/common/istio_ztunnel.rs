//! A CA client that sends exactly what Istio's ztunnel sends to istiod (read from
//! istio/ztunnel `src/identity/caclient.rs`, `src/tls/control.rs`, `src/tls/csr.rs` and
//! `src/identity/auth.rs`, Apache-2.0; written here, not copied):
//!
//! * TLS 1.3 only, ALPN `h2`, the server verified against the mesh root file with the
//!   address's host as the name (what `control_plane_client_config` does without an
//!   alternative hostname);
//! * headers `authorization: Bearer <token>` and `ClusterID: <cluster>`;
//! * a CSR made by rcgen: P-256, no subject, a URI SAN with the SPIFFE identity,
//!   SHA-256 key identifier;
//! * `validity_duration` = the secret TTL, metadata `ImpersonatedIdentity` = the identity;
//! * the answer read as ztunnel reads it: `cert_chain[0]` the leaf, the *last* element
//!   the roots (several may be concatenated there), the ones between intermediates.

use std::path::Path;
use std::sync::Arc;

use meshwork_model::pb::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use meshwork_model::pb::istio_ca::IstioCertificateRequest;
use rustls_pki_types::{CertificateDer, ServerName};
use tonic::transport::{Channel, Endpoint, Uri};

pub struct IstioZtunnel {
    pub address: String,
    pub root_cert: std::path::PathBuf,
    pub token: String,
    pub cluster_id: String,
}

/// What ztunnel keeps from an answer.
pub struct Issued {
    pub leaf: CertificateDer<'static>,
    pub intermediates: Vec<CertificateDer<'static>>,
    pub roots: Vec<CertificateDer<'static>>,
    pub uri_sans: Vec<String>,
}

pub fn tls_config(root_cert: &Path) -> rustls::ClientConfig {
    let pem = std::fs::read(root_cert).unwrap();
    let mut roots = rustls::RootCertStore::empty();
    for c in rustls_pemfile_certs(&pem) {
        roots.add(c).unwrap();
    }
    let mut config = rustls::ClientConfig::builder_with_provider(Arc::new(
        rustls::crypto::ring::default_provider(),
    ))
    .with_protocol_versions(&[&rustls::version::TLS13])
    .unwrap()
    .with_root_certificates(roots)
    .with_no_client_auth();
    config.alpn_protocols = vec![b"h2".to_vec()];
    config
}

fn rustls_pemfile_certs(pem: &[u8]) -> Vec<CertificateDer<'static>> {
    ::pem::parse_many(pem)
        .unwrap()
        .into_iter()
        .filter(|p| p.tag() == "CERTIFICATE")
        .map(|p| CertificateDer::from(p.into_contents()))
        .collect()
}

/// A gRPC channel over TLS as ztunnel opens it (the host of `address` is the server name).
pub async fn channel(address: &str, config: rustls::ClientConfig) -> Result<Channel, String> {
    let config = Arc::new(config);
    let uri: Uri = address.parse().unwrap();
    let host = uri.host().unwrap().to_string();
    let connector = tower::service_fn(move |uri: Uri| {
        let config = config.clone();
        let host = host.clone();
        async move {
            let tcp = tokio::net::TcpStream::connect((
                uri.host().unwrap().trim_matches(|c| c == '[' || c == ']'),
                uri.port_u16().unwrap(),
            ))
            .await?;
            let name = ServerName::try_from(host.trim_matches(|c| c == '[' || c == ']'))
                .map_err(|e| std::io::Error::other(e.to_string()))?
                .to_owned();
            let tls = tokio_rustls::TlsConnector::from(config)
                .connect(name, tcp)
                .await?;
            Ok::<_, std::io::Error>(hyper_util::rt::TokioIo::new(tls))
        }
    });
    Endpoint::from_shared(address.to_string())
        .unwrap()
        .connect_with_connector(connector)
        .await
        .map_err(|e| format!("{e:?}"))
}

impl IstioZtunnel {
    pub async fn fetch_certificate(&self, identity: &str) -> Result<Issued, tonic::Status> {
        let channel = channel(&self.address, tls_config(&self.root_cert))
            .await
            .map_err(tonic::Status::unavailable)?;
        let key = rcgen::KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
        let mut params = rcgen::CertificateParams::default();
        params.subject_alt_names = vec![rcgen::SanType::URI(identity.try_into().unwrap())];
        params.key_identifier_method = rcgen::KeyIdMethod::Sha256;
        params.distinguished_name = rcgen::DistinguishedName::new();
        let csr = params.serialize_request(&key).unwrap().pem().unwrap();

        use prost_types::value::Kind;
        let mut req = tonic::Request::new(IstioCertificateRequest {
            csr,
            validity_duration: 86_400,
            metadata: Some(prost_types::Struct {
                fields: [(
                    "ImpersonatedIdentity".to_string(),
                    prost_types::Value {
                        kind: Some(Kind::StringValue(identity.to_string())),
                    },
                )]
                .into(),
            }),
        });
        req.metadata_mut().insert(
            "authorization",
            format!("Bearer {}", self.token).parse().unwrap(),
        );
        req.metadata_mut()
            .insert("clusterid", self.cluster_id.parse().unwrap());
        let chain = IstioCertificateServiceClient::new(channel)
            .create_certificate(req)
            .await?
            .into_inner()
            .cert_chain;
        assert!(chain.len() >= 2, "ztunnel warns and has no roots otherwise");
        let leaf = rustls_pemfile_certs(chain[0].as_bytes()).remove(0);
        let roots = rustls_pemfile_certs(chain.last().unwrap().as_bytes());
        let intermediates = chain[1..chain.len() - 1]
            .iter()
            .flat_map(|p| rustls_pemfile_certs(p.as_bytes()))
            .collect();
        let uri_sans = {
            use x509_parser::prelude::*;
            let (_, cert) = X509Certificate::from_der(&leaf).unwrap();
            cert.subject_alternative_name()
                .unwrap()
                .map(|s| {
                    s.value
                        .general_names
                        .iter()
                        .filter_map(|n| match n {
                            GeneralName::URI(u) => Some(u.to_string()),
                            _ => None,
                        })
                        .collect()
                })
                .unwrap_or_default()
        };
        Ok(Issued {
            leaf,
            intermediates,
            roots,
            uri_sans,
        })
    }
}

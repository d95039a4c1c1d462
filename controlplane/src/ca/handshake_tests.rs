//! Certificates issued by the CA work for real mTLS handshakes with `meshwork_identity::tls`.

use std::net::Ipv4Addr;
use std::time::Duration;

use meshwork_identity::tls::{client_config, peer_identity, server_config, RotatingCert};
use meshwork_identity::{CertRequest, SpiffeId, WorkloadCertificate};
use rustls_pki_types::ServerName;
use tokio_rustls::{TlsAcceptor, TlsConnector};

use super::*;

fn issue(ca: &Ca, identity: &str) -> WorkloadCertificate {
    let identity: SpiffeId = identity.parse().unwrap();
    let req = CertRequest::generate(&identity).unwrap();
    let chain = ca.sign(req.csr_pem(), None, |_| Ok(())).unwrap();
    req.into_certificate(&chain, None).unwrap()
}

async fn mtls(server: &WorkloadCertificate, client: &WorkloadCertificate) {
    let server_cfg = server_config(server.roots(), RotatingCert::new(server.clone())).unwrap();
    let client_cfg = client_config(client, client.roots(), [server.identity().clone()]).unwrap();
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let (c, s) = tokio::time::timeout(Duration::from_secs(10), async {
        tokio::join!(
            TlsConnector::from(client_cfg).connect(name, c),
            TlsAcceptor::from(server_cfg).accept(s)
        )
    })
    .await
    .unwrap();
    let (c, s) = (c.unwrap(), s.unwrap());
    assert_eq!(&peer_identity(c.get_ref().1).unwrap(), server.identity());
    assert_eq!(&peer_identity(s.get_ref().1).unwrap(), client.identity());
}

#[tokio::test]
async fn issued_certificates_authenticate_both_ways() {
    let dir = tempfile::tempdir().unwrap();
    let ca = Ca::open(dir.path(), CaConfig::new("cluster.local")).unwrap();
    let server = issue(&ca, "spiffe://cluster.local/ns/app/sa/server");
    let client = issue(&ca, "spiffe://cluster.local/ns/app/sa/client");
    mtls(&server, &client).await;
    mtls(&client, &server).await;
}

#[tokio::test]
async fn issued_certificates_from_an_intermediate_authenticate() {
    let dir = tempfile::tempdir().unwrap();
    let root_key = rcgen::KeyPair::generate().unwrap();
    let mut root_params = rcgen::CertificateParams::default();
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, root_key);
    let int_key = rcgen::KeyPair::generate().unwrap();
    let mut int_params = rcgen::CertificateParams::default();
    int_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    int_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    int_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "intermediate");
    let intermediate = int_params.signed_by(&int_key, &root_issuer).unwrap();
    let material = CaMaterial::from_pem(
        &intermediate.pem(),
        &int_key.serialize_pem(),
        None,
        &root.pem(),
    )
    .unwrap();
    let ca = Ca::new(material, CaConfig::new("cluster.local")).unwrap();
    let server = issue(&ca, "spiffe://cluster.local/ns/app/sa/server");
    let client = issue(&ca, "spiffe://cluster.local/ns/app/sa/client");
    assert_eq!(
        server.chain().len(),
        2,
        "leaf and intermediate are presented"
    );
    mtls(&server, &client).await;
    drop(dir);
}

#[tokio::test]
async fn istio_style_rsa_plug_in_certificates_work() {
    let dir = tempfile::tempdir().unwrap();
    for (name, text) in [
        (
            PLUGIN_CERT_FILE,
            include_str!("testdata/istio-rsa/ca-cert.pem"),
        ),
        (KEY_FILE, include_str!("testdata/istio-rsa/ca-key.pem")),
        (
            PLUGIN_ROOTS_FILE,
            include_str!("testdata/istio-rsa/root-cert.pem"),
        ),
        (
            PLUGIN_CHAIN_FILE,
            include_str!("testdata/istio-rsa/cert-chain.pem"),
        ),
    ] {
        std::fs::write(dir.path().join(name), text).unwrap();
    }
    assert!(include_str!("testdata/istio-rsa/ca-key.pem").starts_with("-----BEGIN RSA PRIVATE KEY"));
    let ca = Ca::open(dir.path(), CaConfig::new("cluster.local")).unwrap();
    let server = issue(&ca, "spiffe://cluster.local/ns/app/sa/server");
    let client = issue(&ca, "spiffe://cluster.local/ns/app/sa/client");
    assert_eq!(
        server.chain().len(),
        2,
        "leaf and intermediate are presented"
    );
    mtls(&server, &client).await;
}

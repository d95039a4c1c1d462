//! Real TLS handshakes between `client_config` and `server_config` over in-memory pipes.

use std::net::Ipv4Addr;
use std::sync::Arc;
use std::time::Duration;

use rustls::pki_types::ServerName;
use rustls::{ClientConfig, ServerConfig};
use tokio::io::{AsyncReadExt, AsyncWriteExt, DuplexStream};
use tokio_rustls::{client, server, TlsAcceptor, TlsConnector};

use super::*;
use crate::testing::TestCa;
use crate::{SpiffeId, WorkloadCertificate};

type Handshake = (
    std::io::Result<client::TlsStream<DuplexStream>>,
    std::io::Result<server::TlsStream<DuplexStream>>,
);

async fn handshake(server: Arc<ServerConfig>, client: Arc<ClientConfig>) -> Handshake {
    let (c, s) = tokio::io::duplex(64 * 1024);
    let name = ServerName::IpAddress(Ipv4Addr::LOCALHOST.into());
    let both = async {
        tokio::join!(
            TlsConnector::from(client).connect(name, c),
            TlsAcceptor::from(server).accept(s)
        )
    };
    tokio::time::timeout(Duration::from_secs(10), both)
        .await
        .expect("handshake finished in time")
}

fn id(text: &str) -> SpiffeId {
    text.parse().unwrap()
}

struct Mesh {
    ca: TestCa,
    server_cert: WorkloadCertificate,
    client_cert: WorkloadCertificate,
}

fn mesh() -> Mesh {
    let ca = TestCa::new("cluster.local");
    let server_cert = ca.issue(
        &id("spiffe://cluster.local/ns/app/sa/server"),
        Duration::from_secs(600),
    );
    let client_cert = ca.issue(
        &id("spiffe://cluster.local/ns/app/sa/client"),
        Duration::from_secs(600),
    );
    Mesh {
        ca,
        server_cert,
        client_cert,
    }
}

#[tokio::test]
async fn mutual_tls_succeeds_and_both_sides_see_the_peer_identity() {
    let m = mesh();
    let server = server_config(&m.ca.bundle(), RotatingCert::new(m.server_cert.clone())).unwrap();
    let client = client_config(
        &m.client_cert,
        &m.ca.bundle(),
        [m.server_cert.identity().clone()],
    )
    .unwrap();
    let (c, s) = handshake(server, client).await;
    let (mut c, mut s) = (c.unwrap(), s.unwrap());
    let (_, client_conn) = c.get_ref();
    assert_eq!(client_conn.alpn_protocol(), Some(HBONE_ALPN));
    assert_eq!(
        client_conn.protocol_version(),
        Some(rustls::ProtocolVersion::TLSv1_3)
    );
    assert_eq!(
        &peer_identity(client_conn).unwrap(),
        m.server_cert.identity()
    );
    assert_eq!(
        &peer_identity(s.get_ref().1).unwrap(),
        m.client_cert.identity()
    );

    c.write_all(b"ping").await.unwrap();
    let mut buf = [0u8; 4];
    s.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"ping");
}

#[tokio::test]
async fn client_refuses_a_server_from_another_root() {
    let m = mesh();
    let rogue = TestCa::new("cluster.local");
    let rogue_cert = rogue.issue(m.server_cert.identity(), Duration::from_secs(600));
    let server = server_config(&m.ca.bundle(), RotatingCert::new(rogue_cert)).unwrap();
    let client = client_config(
        &m.client_cert,
        &m.ca.bundle(),
        [m.server_cert.identity().clone()],
    )
    .unwrap();
    let (c, s) = handshake(server, client).await;
    let err = c.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
    assert!(s.is_err());
}

#[tokio::test]
async fn server_refuses_a_client_from_another_root() {
    let m = mesh();
    let rogue = TestCa::new("cluster.local");
    let rogue_client = rogue.issue(m.client_cert.identity(), Duration::from_secs(600));
    let server = server_config(&m.ca.bundle(), RotatingCert::new(m.server_cert.clone())).unwrap();
    // The rogue client trusts the real mesh root, so only the server can object.
    let client = client_config(
        &rogue_client,
        &m.ca.bundle(),
        [m.server_cert.identity().clone()],
    )
    .unwrap();
    let (_, s) = handshake(server, client).await;
    let err = s.unwrap_err().to_string();
    assert!(err.contains("UnknownIssuer"), "{err}");
}

#[tokio::test]
async fn client_refuses_an_unexpected_server_identity() {
    let m = mesh();
    let server = server_config(&m.ca.bundle(), RotatingCert::new(m.server_cert.clone())).unwrap();
    let expected = id("spiffe://cluster.local/ns/app/sa/someone-else");
    let client = client_config(&m.client_cert, &m.ca.bundle(), [expected.clone()]).unwrap();
    let (c, _) = handshake(server, client).await;
    let err = c.unwrap_err().to_string();
    assert!(
        err.contains(&format!(
            "server identity {} is not the expected {expected}",
            m.server_cert.identity()
        )),
        "{err}"
    );
}

#[tokio::test]
async fn any_of_several_expected_identities_is_accepted() {
    let m = mesh();
    let server = server_config(&m.ca.bundle(), RotatingCert::new(m.server_cert.clone())).unwrap();
    let client = client_config(
        &m.client_cert,
        &m.ca.bundle(),
        [
            id("spiffe://cluster.local/ns/app/sa/other"),
            m.server_cert.identity().clone(),
        ],
    )
    .unwrap();
    let (c, s) = handshake(server, client).await;
    c.unwrap();
    s.unwrap();
}

#[tokio::test]
async fn rotation_applies_to_new_handshakes_only() {
    let m = mesh();
    let rotating = RotatingCert::new(m.server_cert.clone());
    let server = server_config(&m.ca.bundle(), rotating.clone()).unwrap();
    let expected = [m.server_cert.identity().clone()];
    let client = client_config(&m.client_cert, &m.ca.bundle(), expected.clone()).unwrap();

    let (c1, s1) = handshake(server.clone(), client.clone()).await;
    let (mut c1, mut s1) = (c1.unwrap(), s1.unwrap());
    let first_serial = serial_seen_by_client(&c1);
    assert_eq!(first_serial, m.server_cert.serial());

    let renewed =
        m.ca.issue(m.server_cert.identity(), Duration::from_secs(600));
    assert_ne!(renewed.serial(), m.server_cert.serial());
    rotating.set(renewed.clone());

    let (c2, s2) = handshake(server, client).await;
    let (c2, _s2) = (c2.unwrap(), s2.unwrap());
    assert_eq!(serial_seen_by_client(&c2), renewed.serial());

    // The first connection is untouched by the rotation.
    s1.write_all(b"still here").await.unwrap();
    let mut buf = [0u8; 10];
    c1.read_exact(&mut buf).await.unwrap();
    assert_eq!(&buf, b"still here");
    assert_eq!(serial_seen_by_client(&c1), first_serial);
}

fn serial_seen_by_client(stream: &client::TlsStream<DuplexStream>) -> String {
    let leaf = &stream.get_ref().1.peer_certificates().unwrap()[0];
    let (_, parsed) = x509_parser::parse_x509_certificate(leaf).unwrap();
    parsed
        .raw_serial()
        .iter()
        .map(|b| format!("{b:02x}"))
        .collect()
}

#[tokio::test]
async fn cert_store_presents_the_selected_identity() {
    let m = mesh();
    let store = CertStore::new();
    let other = m.ca.issue(
        &id("spiffe://cluster.local/ns/db/sa/postgres"),
        Duration::from_secs(600),
    );
    store.insert(m.server_cert.clone());
    store.insert(other.clone());
    assert_eq!(store.identities().len(), 2);

    for target in [&m.server_cert, &other] {
        let server = server_config(
            &m.ca.bundle(),
            store.resolver_for(target.identity().clone()),
        )
        .unwrap();
        let client =
            client_config(&m.client_cert, &m.ca.bundle(), [target.identity().clone()]).unwrap();
        let (c, s) = handshake(server, client).await;
        assert_eq!(
            &peer_identity(c.unwrap().get_ref().1).unwrap(),
            target.identity()
        );
        s.unwrap();
    }

    // Selection by callback (here: always the database identity).
    let db = other.identity().clone();
    let server = server_config(
        &m.ca.bundle(),
        store.resolver_with(move |_hello| Some(db.clone())),
    )
    .unwrap();
    let client = client_config(&m.client_cert, &m.ca.bundle(), [other.identity().clone()]).unwrap();
    let (c, _) = handshake(server, client).await;
    c.unwrap();

    // An identity without certificate aborts the handshake.
    store.remove(other.identity());
    let server =
        server_config(&m.ca.bundle(), store.resolver_for(other.identity().clone())).unwrap();
    let client = client_config(&m.client_cert, &m.ca.bundle(), [other.identity().clone()]).unwrap();
    let (c, s) = handshake(server, client).await;
    assert!(c.is_err());
    assert!(s.is_err());
}

#[tokio::test]
async fn a_bundle_with_two_roots_accepts_both_during_migration() {
    let m = mesh();
    let new_ca = TestCa::new("cluster.local");
    let migrated_server = new_ca.issue(m.server_cert.identity(), Duration::from_secs(600));
    let both = m.ca.bundle().merged(&new_ca.bundle());
    for server_cert in [&m.server_cert, &migrated_server] {
        let server = server_config(&both, RotatingCert::new(server_cert.clone())).unwrap();
        let client =
            client_config(&m.client_cert, &both, [server_cert.identity().clone()]).unwrap();
        let (c, s) = handshake(server, client).await;
        c.unwrap();
        s.unwrap();
    }
}

#[test]
fn client_config_needs_an_expected_identity() {
    let m = mesh();
    let err = client_config(&m.client_cert, &m.ca.bundle(), []).unwrap_err();
    assert!(matches!(err, TlsConfigError::NoExpectedIdentity), "{err}");
}

#[derive(Debug)]
struct NoClientCert;

impl rustls::client::ResolvesClientCert for NoClientCert {
    fn resolve(
        &self,
        _hints: &[&[u8]],
        _schemes: &[rustls::SignatureScheme],
    ) -> Option<Arc<rustls::sign::CertifiedKey>> {
        None
    }

    fn has_certs(&self) -> bool {
        false
    }
}

#[tokio::test]
async fn server_requires_a_client_certificate() {
    let m = mesh();
    let server = server_config(&m.ca.bundle(), RotatingCert::new(m.server_cert.clone())).unwrap();
    let client = client_config_with_resolver(
        Arc::new(NoClientCert),
        &m.ca.bundle(),
        [m.server_cert.identity().clone()],
    )
    .unwrap();
    let (_, s) = handshake(server, client).await;
    let err = s.unwrap_err().to_string();
    assert!(err.contains("no certificates"), "{err}");
}

#[tokio::test]
async fn server_refuses_tls12_clients() {
    let m = mesh();
    let server = server_config(&m.ca.bundle(), RotatingCert::new(m.server_cert.clone())).unwrap();
    let verifier = Arc::new(
        SpiffeServerVerifier::new(&m.ca.bundle(), [m.server_cert.identity().clone()]).unwrap(),
    );
    let mut tls12 = ClientConfig::builder_with_provider(crypto_provider())
        .with_protocol_versions(&[&rustls::version::TLS12])
        .unwrap()
        .dangerous()
        .with_custom_certificate_verifier(verifier)
        .with_client_cert_resolver(RotatingCert::new(m.client_cert.clone()));
    tls12.alpn_protocols = vec![HBONE_ALPN.to_vec()];
    let (c, s) = handshake(server, Arc::new(tls12)).await;
    assert!(c.is_err());
    let err = s.unwrap_err().to_string();
    assert!(err.contains("Tls12NotOfferedOrEnabled"), "{err}");
}

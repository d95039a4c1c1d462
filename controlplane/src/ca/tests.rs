//! CA behaviour end to end: signing, refusals, persistence, plug-in certificates, gRPC.

use std::sync::Arc;
use std::time::{Duration, SystemTime};

use meshwork_identity::{CertRequest, SpiffeId, WorkloadCertificate};
use meshwork_model::pb::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use meshwork_model::pb::istio_ca::IstioCertificateRequest;
use rcgen::{CertificateParams, DistinguishedName, KeyPair, SanType};
use x509_parser::prelude::{FromDer, X509Certificate};

use super::*;

#[path = "../../tests/common/csr.rs"]
mod csr;

const TD: &str = "cluster.local";

fn id(text: &str) -> SpiffeId {
    text.parse().unwrap()
}

fn new_ca(dir: &std::path::Path) -> Ca {
    Ca::open(dir, CaConfig::new(TD)).unwrap()
}

fn allow_all(_: &SpiffeId) -> Result<(), SignError> {
    Ok(())
}

fn csr_with_sans(sans: Vec<SanType>) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.distinguished_name = DistinguishedName::new();
    params.subject_alt_names = sans;
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(text: &str) -> SanType {
    SanType::URI(text.try_into().unwrap())
}

#[test]
fn signs_a_valid_csr_with_a_chain_to_the_root() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());
    let sleep = id("spiffe://cluster.local/ns/default/sa/sleep");
    let req = CertRequest::generate(&sleep).unwrap();
    let before = SystemTime::now();
    let chain = ca.sign(req.csr_pem(), None, allow_all).unwrap();
    assert_eq!(chain.len(), 2, "leaf and root");
    assert_eq!(chain[1], ca.trust_bundle().to_pem());

    let cert = req.into_certificate(&chain, None).unwrap();
    assert_eq!(cert.identity(), &sleep);
    assert_eq!(cert.roots(), ca.trust_bundle());
    // Validity: backdated for clock skew, 24 h by default.
    assert!(cert.not_before() <= before - CLOCK_SKEW_BACKDATE + Duration::from_secs(1));
    let lifetime = cert.not_after().duration_since(before).unwrap();
    assert!(lifetime.as_secs().abs_diff(24 * 3600) <= 2, "{lifetime:?}");

    let der = &cert.chain()[0];
    let (_, leaf) = X509Certificate::from_der(der).unwrap();
    assert!(!leaf.is_ca());
    let ku = leaf.key_usage().unwrap().unwrap().value;
    assert!(ku.digital_signature() && ku.key_encipherment() && !ku.key_cert_sign());
    let eku = leaf.extended_key_usage().unwrap().unwrap().value;
    assert!(eku.server_auth && eku.client_auth);
    let bc = leaf.basic_constraints().unwrap().unwrap().value;
    assert!(!bc.ca);

    // A real peer accepts it.
    verify_like_a_peer(&cert);
}

fn verify_like_a_peer(cert: &WorkloadCertificate) {
    use rustls::client::danger::ServerCertVerifier;
    let verifier =
        meshwork_identity::tls::SpiffeServerVerifier::new(cert.roots(), [cert.identity().clone()])
            .unwrap();
    verifier
        .verify_server_cert(
            &cert.chain()[0],
            &cert.chain()[1..],
            &rustls_pki_types::ServerName::try_from("peer").unwrap(),
            &[],
            rustls_pki_types::UnixTime::now(),
        )
        .unwrap();
}

#[test]
fn requested_ttl_is_honoured_up_to_the_max() {
    let dir = tempfile::tempdir().unwrap();
    let mut config = CaConfig::new(TD);
    config.max_ttl = Duration::from_secs(48 * 3600);
    let ca = Ca::open(dir.path(), config).unwrap();
    let ident = id("spiffe://cluster.local/ns/a/sa/b");
    for (requested, expected) in [
        (Duration::from_secs(3600), 3600),
        (Duration::from_secs(365 * 24 * 3600), 48 * 3600),
    ] {
        let req = CertRequest::generate(&ident).unwrap();
        let now = SystemTime::now();
        let chain = ca.sign(req.csr_pem(), Some(requested), allow_all).unwrap();
        let cert = req.into_certificate(&chain, None).unwrap();
        let lifetime = cert.not_after().duration_since(now).unwrap().as_secs();
        assert!(
            lifetime.abs_diff(expected) <= 2,
            "{requested:?}: {lifetime}"
        );
    }
}

#[test]
fn refuses_bad_requests_with_their_error() {
    let dir = tempfile::tempdir().unwrap();
    let ca = new_ca(dir.path());

    let foreign = CertRequest::generate(&id("spiffe://other.domain/ns/a/sa/b")).unwrap();
    let err = ca.sign(foreign.csr_pem(), None, allow_all).unwrap_err();
    assert!(matches!(err, SignError::ForeignTrustDomain { .. }), "{err}");
    assert!(err.to_string().contains("other.domain"), "{err}");

    let err = ca.sign("not a csr", None, allow_all).unwrap_err();
    assert!(matches!(err, SignError::MalformedCsr(_)), "{err}");
    let garbage = "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n";
    let err = ca.sign(garbage, None, allow_all).unwrap_err();
    assert!(matches!(err, SignError::MalformedCsr(_)), "{err}");

    let two = csr_with_sans(vec![
        uri("spiffe://cluster.local/ns/a/sa/a"),
        uri("spiffe://cluster.local/ns/a/sa/b"),
    ]);
    let err = ca.sign(&two, None, allow_all).unwrap_err();
    assert!(
        matches!(err, SignError::ManyUriSans(ref u) if u.len() == 2),
        "{err}"
    );

    let none = csr_with_sans(vec![SanType::DnsName("a.example".try_into().unwrap())]);
    let err = ca.sign(&none, None, allow_all).unwrap_err();
    assert!(matches!(err, SignError::NoUriSan), "{err}");

    let not_spiffe = csr_with_sans(vec![uri("https://example.com/x")]);
    let err = ca.sign(&not_spiffe, None, allow_all).unwrap_err();
    assert!(matches!(err, SignError::InvalidIdentity { .. }), "{err}");

    let swapped = csr::csr_with_swapped_key(&id("spiffe://cluster.local/ns/a/sa/a"));
    let err = ca.sign(&swapped, None, allow_all).unwrap_err();
    assert!(matches!(err, SignError::BadSignature), "{err}");

    // The authorization decision is the caller's.
    let ok = CertRequest::generate(&id("spiffe://cluster.local/ns/a/sa/b")).unwrap();
    let err = ca
        .sign(ok.csr_pem(), None, |_| Err(SignError::InvalidToken))
        .unwrap_err();
    assert!(matches!(err, SignError::InvalidToken), "{err}");
}

#[test]
fn root_is_persisted_and_reloaded() {
    use std::os::unix::fs::PermissionsExt;
    let dir = tempfile::tempdir().unwrap();
    let first = new_ca(dir.path());
    let mode = std::fs::metadata(dir.path().join(KEY_FILE))
        .unwrap()
        .permissions()
        .mode();
    assert_eq!(mode & 0o777, 0o600);
    assert!(dir.path().join(ROOT_CERT_FILE).exists());
    let second = new_ca(dir.path());
    assert_eq!(first.trust_bundle(), second.trust_bundle());
    // Certificates from before the restart still verify against the reloaded root.
    let ident = id("spiffe://cluster.local/ns/a/sa/b");
    let req = CertRequest::generate(&ident).unwrap();
    let chain = first.sign(req.csr_pem(), None, allow_all).unwrap();
    let cert = req
        .into_certificate(&chain[..1], Some(second.trust_bundle()))
        .unwrap();
    verify_like_a_peer(&cert);
}

#[test]
fn plug_in_intermediate_ca_is_used_and_chained() {
    let dir = tempfile::tempdir().unwrap();
    // An offline root and an intermediate for this cluster, laid out like Istio's cacerts.
    let root_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut root_params = CertificateParams::default();
    root_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    root_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    root_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "offline root");
    let root = root_params.self_signed(&root_key).unwrap();
    let root_issuer = rcgen::Issuer::new(root_params, root_key);
    let int_key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut int_params = CertificateParams::default();
    int_params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    int_params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    int_params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cluster intermediate");
    let intermediate = int_params.signed_by(&int_key, &root_issuer).unwrap();
    let write = |name: &str, text: String| std::fs::write(dir.path().join(name), text).unwrap();
    write(PLUGIN_CERT_FILE, intermediate.pem());
    write(KEY_FILE, int_key.serialize_pem());
    write(PLUGIN_ROOTS_FILE, root.pem());
    write(
        PLUGIN_CHAIN_FILE,
        format!("{}{}", intermediate.pem(), root.pem()),
    );

    let ca = new_ca(dir.path());
    assert_eq!(ca.trust_bundle().roots(), &[root.der().clone()]);
    let ident = id("spiffe://cluster.local/ns/a/sa/b");
    let req = CertRequest::generate(&ident).unwrap();
    let chain = ca.sign(req.csr_pem(), None, allow_all).unwrap();
    assert_eq!(chain.len(), 3, "leaf, intermediate, root");
    let cert = req.into_certificate(&chain, None).unwrap();
    assert_eq!(cert.chain().len(), 2);
    verify_like_a_peer(&cert);

    // Without cert-chain.pem, the root is found in root-cert.pem.
    std::fs::remove_file(dir.path().join(PLUGIN_CHAIN_FILE)).unwrap();
    let ca = new_ca(dir.path());
    let req = CertRequest::generate(&ident).unwrap();
    assert_eq!(ca.sign(req.csr_pem(), None, allow_all).unwrap().len(), 3);

    // A key that does not belong to ca-cert.pem is refused at startup.
    write(KEY_FILE, KeyPair::generate().unwrap().serialize_pem());
    let err = Ca::open(dir.path(), CaConfig::new(TD)).unwrap_err();
    assert!(matches!(err, CaLoadError::KeyMismatch), "{err}");
}

#[test]
fn node_authorization_uses_the_workload_directory() {
    let directory = StaticDirectory::new();
    directory.insert("node-a", "default", "sleep");
    let sleep = id("spiffe://cluster.local/ns/default/sa/sleep");
    authorize_node(&directory, "node-a", &sleep).unwrap();
    let err = authorize_node(&directory, "node-b", &sleep).unwrap_err();
    assert!(matches!(err, SignError::NotAllowedForNode { .. }), "{err}");
    assert!(err.to_string().contains("node-b"), "{err}");
}

struct GrpcFixture {
    addr: std::net::SocketAddr,
    tokens: NodeTokens,
    _dir: tempfile::TempDir,
    server: tokio::task::JoinHandle<()>,
}

async fn start_server() -> GrpcFixture {
    let dir = tempfile::tempdir().unwrap();
    let ca = CaHandle::new(new_ca(dir.path()));
    let tokens = NodeTokens::open(dir.path()).unwrap();
    let directory = Arc::new(StaticDirectory::new());
    directory.insert("node-a", "default", "sleep");
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let router = tonic::transport::Server::builder().add_service(service(
        ca,
        Arc::new(tokens.clone()),
        directory,
    ));
    let server = tokio::spawn(async move {
        router
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener))
            .await
            .unwrap();
    });
    GrpcFixture {
        addr,
        tokens,
        _dir: dir,
        server,
    }
}

fn request(
    csr: &str,
    token: Option<&str>,
    impersonated: Option<&str>,
) -> tonic::Request<IstioCertificateRequest> {
    use prost_types::value::Kind;
    let metadata = impersonated.map(|who| prost_types::Struct {
        fields: [(
            IMPERSONATED_IDENTITY.to_string(),
            prost_types::Value {
                kind: Some(Kind::StringValue(who.to_string())),
            },
        )]
        .into(),
    });
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: 3600,
        metadata,
    });
    if let Some(token) = token {
        req.metadata_mut()
            .insert("authorization", format!("Bearer {token}").parse().unwrap());
    }
    req
}

#[tokio::test]
async fn grpc_create_certificate_grants_and_refuses() {
    let fixture = start_server().await;
    let mut client = IstioCertificateServiceClient::connect(format!("http://{}", fixture.addr))
        .await
        .unwrap();
    let sleep = id("spiffe://cluster.local/ns/default/sa/sleep");
    let node_a = fixture.tokens.token_for("node-a").unwrap();
    let node_b = fixture.tokens.token_for("node-b").unwrap();

    // Granted: node-a runs a sleep pod.
    let req = CertRequest::generate(&sleep).unwrap();
    let chain = client
        .create_certificate(request(
            req.csr_pem(),
            Some(&node_a),
            Some(&sleep.to_string()),
        ))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    let cert = req.into_certificate(&chain, None).unwrap();
    assert_eq!(cert.identity(), &sleep);
    let lifetime = cert.not_after().duration_since(cert.not_before()).unwrap();
    assert_eq!(lifetime, Duration::from_secs(3600) + CLOCK_SKEW_BACKDATE);

    // node-b has no sleep pod.
    let req = CertRequest::generate(&sleep).unwrap();
    let status = client
        .create_certificate(request(req.csr_pem(), Some(&node_b), None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(status.message().contains("node-b"), "{status:?}");

    // ImpersonatedIdentity must match the CSR.
    let status = client
        .create_certificate(request(
            req.csr_pem(),
            Some(&node_a),
            Some("spiffe://cluster.local/ns/default/sa/other"),
        ))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");

    // Unknown token, and no token at all.
    let forged = NodeTokens::from_secret(b"guess")
        .token_for("node-a")
        .unwrap();
    for token in [Some(forged.as_str()), None] {
        let status = client
            .create_certificate(request(req.csr_pem(), token, None))
            .await
            .unwrap_err();
        assert_eq!(status.code(), tonic::Code::Unauthenticated, "{status:?}");
    }

    // Garbage CSR.
    let status = client
        .create_certificate(request("garbage", Some(&node_a), None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::InvalidArgument, "{status:?}");

    fixture.server.abort();
}

/// Tokens of single service accounts: `sa:<ns>/<name>` proves that service account.
struct ServiceAccountTokens;

impl NodeAuthenticator for ServiceAccountTokens {
    fn authenticate<'a>(
        &'a self,
        _token: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<NodeName, NodeAuthError>> + Send + 'a>,
    > {
        Box::pin(async { Err(NodeAuthError::PermissionDenied("not a node".into())) })
    }

    fn authenticate_caller<'a>(
        &'a self,
        token: &'a str,
    ) -> std::pin::Pin<
        Box<dyn std::future::Future<Output = Result<Caller, NodeAuthError>> + Send + 'a>,
    > {
        let r = token
            .strip_prefix("sa:")
            .and_then(|s| s.split_once('/'))
            .map(|(ns, name)| Caller::ServiceAccount {
                namespace: ns.into(),
                name: name.into(),
            })
            .ok_or_else(|| NodeAuthError::Unauthenticated("bad token".into()));
        Box::pin(std::future::ready(r))
    }
}

#[tokio::test]
async fn a_service_account_caller_obtains_its_own_identity_only() {
    let dir = tempfile::tempdir().unwrap();
    let ca = CaHandle::new(new_ca(dir.path()));
    let listener = tokio::net::TcpListener::bind("127.0.0.1:0").await.unwrap();
    let addr = listener.local_addr().unwrap();
    let server = tokio::spawn(
        tonic::transport::Server::builder()
            .add_service(service(
                ca,
                Arc::new(ServiceAccountTokens),
                Arc::new(StaticDirectory::new()),
            ))
            .serve_with_incoming(tokio_stream::wrappers::TcpListenerStream::new(listener)),
    );
    let mut client = IstioCertificateServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let waypoint = id("spiffe://cluster.local/ns/shop/sa/waypoint");
    let req = CertRequest::generate(&waypoint).unwrap();
    let chain = client
        .create_certificate(request(
            req.csr_pem(),
            Some("sa:shop/waypoint"),
            Some(&waypoint.to_string()),
        ))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(
        req.into_certificate(&chain, None).unwrap().identity(),
        &waypoint
    );

    // Another identity (even in the same namespace) is refused, naming both.
    let other = id("spiffe://cluster.local/ns/shop/sa/cart");
    let req = CertRequest::generate(&other).unwrap();
    let status = client
        .create_certificate(request(req.csr_pem(), Some("sa:shop/waypoint"), None))
        .await
        .unwrap_err();
    assert_eq!(status.code(), tonic::Code::PermissionDenied, "{status:?}");
    assert!(
        status.message().contains("shop/waypoint") && status.message().contains("sa/cart"),
        "{status:?}"
    );
    server.abort();
}

//! Attacks on the mesh CA through its real gRPC endpoint: the control plane started
//! in-process on a temporary YAML directory (pods on two nodes), called as a ztunnel would.
//! The attacker holds a genuine node token for node-a (a compromised node) or none at all,
//! and asks for identities it must not get, or sends requests crafted to trick the signer.
//! Every refusal is checked for its gRPC code and for a message naming the reason; every
//! certificate that is granted is checked to carry nothing but the authorized identity.

#[macro_use]
mod common;

use std::net::SocketAddr;
use std::time::Duration;

use common::csr::csr_with_swapped_key;
use meshwork_controlplane::run::{self, Options, Running, Source};
use meshwork_identity::{CertRequest, SpiffeId};
use meshwork_model::pb::config::mesh_config_client::MeshConfigClient;
use meshwork_model::pb::config::{proxy_message, ProxyKind, ProxyMessage, Subscribe};
use meshwork_model::pb::istio_ca::istio_certificate_service_client::IstioCertificateServiceClient;
use meshwork_model::pb::istio_ca::IstioCertificateRequest;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, IsCa, KeyPair, KeyUsagePurpose, SanType,
};
use tokio_stream::wrappers::ReceiverStream;
use tonic::transport::Channel;
use tonic::Code;
use x509_parser::extensions::{GeneralName, ParsedExtension};
use x509_parser::prelude::{FromDer, X509Certificate};

const MESH: &str = concat!(
    ambient_namespace!("production"),
    "---",
    ambient_namespace!("staging")
);

fn pod(ns: &str, name: &str, sa: &str, node: &str, ip: &str) -> String {
    format!(
        r#"
---
apiVersion: v1
kind: Pod
metadata:
  name: {name}
  namespace: {ns}
  labels:
    app: {name}
spec:
  nodeName: {node}
  serviceAccountName: {sa}
  containers:
    - name: app
      image: app
status:
  phase: Running
  podIP: {ip}
"#
    )
}

struct Ca {
    running: Running,
    client: IstioCertificateServiceClient<Channel>,
    /// node-a's genuine token: the attacker controls node-a.
    node_a: String,
    _dirs: (tempfile::TempDir, tempfile::TempDir),
}

/// order-service runs on node-a (the attacker's node); payment-service on node-b; a
/// staging order-service on node-b.
async fn ca() -> Ca {
    let config = tempfile::tempdir().unwrap();
    let ca_dir = tempfile::tempdir().unwrap();
    let yaml = [
        MESH.to_string(),
        pod("production", "order", "order-service", "node-a", "10.0.1.1"),
        pod(
            "production",
            "payment",
            "payment-service",
            "node-b",
            "10.0.2.1",
        ),
        pod("staging", "order", "order-service", "node-b", "10.0.2.2"),
    ]
    .concat();
    std::fs::write(config.path().join("mesh.yaml"), yaml).unwrap();
    let running = run::start(Options {
        source: Source::Dir(config.path().to_path_buf()),
        mesh_config: None,
        trust_domain: None,
        root_namespace: None,
        default_namespace: "default".into(),
        grpc_addr: Some("127.0.0.1:0".parse().unwrap()),
        grpc_tls_addr: None,
        serving: meshwork_controlplane::run::Serving::local(
            "istio-system",
            "meshwork-controlplane",
        ),
        admin_addr: "127.0.0.1:0".parse().unwrap(),
        probe_addr: None,
        ca_dir: ca_dir.path().to_path_buf(),
        cert_ttl: Duration::from_secs(3600),
        ca_reload_interval: Duration::from_secs(10),
        state_dir: None,
    })
    .await
    .unwrap();
    let node_a = running.tokens.token_for("node-a").unwrap();
    let client = connect(running.grpc_addr.unwrap()).await;
    Ca {
        running,
        client,
        node_a,
        _dirs: (config, ca_dir),
    }
}

async fn connect(addr: SocketAddr) -> IstioCertificateServiceClient<Channel> {
    IstioCertificateServiceClient::connect(format!("http://{addr}"))
        .await
        .unwrap()
}

fn id(text: &str) -> SpiffeId {
    text.parse().unwrap()
}

const ORDER: &str = "spiffe://cluster.local/ns/production/sa/order-service";

/// A CreateCertificate call as ztunnel makes it.
fn request(
    csr: &str,
    authorization: Option<&str>,
    impersonated: Option<&str>,
    ttl_secs: i64,
) -> tonic::Request<IstioCertificateRequest> {
    use prost_types::value::Kind;
    let metadata = impersonated.map(|who| prost_types::Struct {
        fields: [(
            "ImpersonatedIdentity".to_string(),
            prost_types::Value {
                kind: Some(Kind::StringValue(who.to_string())),
            },
        )]
        .into(),
    });
    let mut req = tonic::Request::new(IstioCertificateRequest {
        csr: csr.to_string(),
        validity_duration: ttl_secs,
        metadata,
    });
    if let Some(value) = authorization {
        req.metadata_mut()
            .insert("authorization", value.parse().unwrap());
    }
    req
}

fn bearer(token: &str) -> String {
    format!("Bearer {token}")
}

/// Calls the CA; the refusal, which must have `code` and mention `message_part`.
async fn refused(
    ca: &mut Ca,
    req: tonic::Request<IstioCertificateRequest>,
    code: Code,
    message_part: &str,
) {
    let status = ca
        .client
        .create_certificate(req)
        .await
        .expect_err("the CA must refuse");
    assert_eq!(status.code(), code, "{status:?}");
    assert!(
        status.message().contains(message_part),
        "{message_part:?} not in {:?}",
        status.message()
    );
}

/// The control: node-a gets the identity of the pod it runs, so the refusals below are
/// refusals, not a broken setup.
#[tokio::test]
async fn control_node_gets_its_own_workload_identity() {
    let mut ca = ca().await;
    let req = CertRequest::generate(&id(ORDER)).unwrap();
    let chain = ca
        .client
        .create_certificate(request(
            req.csr_pem(),
            Some(&bearer(&ca.node_a)),
            Some(ORDER),
            3600,
        ))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    assert_eq!(
        req.into_certificate(&chain, None).unwrap().identity(),
        &id(ORDER)
    );
    ca.running.shutdown();
}

/// A compromised node asks for identities of pods it does not run: another service account
/// of the same namespace, the same service account name in another namespace, the control
/// plane's and the ztunnels' own service accounts, and a namespace that does not exist.
#[tokio::test]
async fn attack_node_cannot_obtain_identities_of_other_nodes_or_namespaces() {
    let mut ca = ca().await;
    let token = bearer(&ca.node_a);
    for foreign in [
        "spiffe://cluster.local/ns/production/sa/payment-service",
        "spiffe://cluster.local/ns/staging/sa/order-service",
        "spiffe://cluster.local/ns/istio-system/sa/meshwork-controlplane",
        "spiffe://cluster.local/ns/istio-system/sa/meshwork-ztunnel",
        "spiffe://cluster.local/ns/kube-system/sa/default",
        "spiffe://cluster.local/ns/production/sa/default",
    ] {
        let req = CertRequest::generate(&id(foreign)).unwrap();
        // With and without a matching ImpersonatedIdentity.
        for impersonated in [Some(foreign), None] {
            let r = request(req.csr_pem(), Some(&token), impersonated, 3600);
            refused(&mut ca, r, Code::PermissionDenied, "node-a").await;
        }
        // Claiming the node's own workload in metadata while the CSR names the foreign one.
        let r = request(req.csr_pem(), Some(&token), Some(ORDER), 3600);
        refused(&mut ca, r, Code::PermissionDenied, "does not match").await;
    }
    ca.running.shutdown();
}

/// Requests without a valid node token: none, an empty one, another scheme, a token
/// signed with a guessed secret, node-a's MAC under node-b's name, node-a's token with
/// its MAC truncated or altered.
#[tokio::test]
async fn attack_requests_without_a_valid_token_are_unauthenticated() {
    let mut ca = ca().await;
    let req = CertRequest::generate(&id(ORDER)).unwrap();
    let forged = meshwork_controlplane::ca::NodeTokens::from_secret(b"guessed")
        .token_for("node-a")
        .unwrap();
    let renamed = ca.node_a.replacen("node-a", "node-b", 1);
    let truncated = ca.node_a[..ca.node_a.len() - 2].to_string();
    let mut flipped = ca.node_a.clone().into_bytes();
    let last = flipped.len() - 1;
    flipped[last] = if flipped[last] == b'0' { b'1' } else { b'0' };
    let flipped = String::from_utf8(flipped).unwrap();
    let cases: Vec<(Option<String>, &str)> = vec![
        (None, "authorization"),
        (Some("Bearer ".into()), "authorization"),
        (Some(format!("Basic {}", ca.node_a)), "authorization"),
        (Some(ca.node_a.clone()), "authorization"),
        (Some(bearer(&forged)), "token"),
        (Some(bearer(&renamed)), "token"),
        (Some(bearer(&truncated)), "token"),
        (Some(bearer(&flipped)), "token"),
        (Some(bearer("node-a")), "token"),
    ];
    for (auth, part) in cases {
        let r = request(req.csr_pem(), auth.as_deref(), Some(ORDER), 3600);
        refused(&mut ca, r, Code::Unauthenticated, part).await;
    }
    ca.running.shutdown();
}

fn csr_with(sans: Vec<SanType>) -> String {
    let mut params = CertificateParams::default();
    params.subject_alt_names = sans;
    csr_params(params)
}

fn csr_params(mut params: CertificateParams) -> String {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    params.distinguished_name = DistinguishedName::new();
    params.serialize_request(&key).unwrap().pem().unwrap()
}

fn uri(text: &str) -> SanType {
    SanType::URI(text.try_into().unwrap())
}

/// The leaf of a granted chain.
fn leaf_der(chain: &[String]) -> Vec<u8> {
    ::pem::parse(&chain[0]).unwrap().into_contents()
}

/// CSRs crafted to smuggle more than the node's own identity into a certificate: a second
/// URI SAN (refused), DNS/IP/e-mail SANs and a CA:true + keyCertSign request (signed, but
/// the leaf carries only the SPIFFE URI, CA:false, no keyCertSign, and a capped lifetime).
#[tokio::test]
async fn attack_crafted_csrs_cannot_widen_the_certificate() {
    let mut ca = ca().await;
    let token = bearer(&ca.node_a);

    // Two URI SANs: the node's own identity and a foreign one.
    let two = csr_with(vec![
        uri(ORDER),
        uri("spiffe://cluster.local/ns/production/sa/payment-service"),
    ]);
    let r = request(&two, Some(&token), None, 3600);
    refused(&mut ca, r, Code::InvalidArgument, "2 URI").await;

    // Extra SAN kinds, basicConstraints CA:true and keyUsage keyCertSign|cRLSign requested.
    let mut greedy = CertificateParams::default();
    greedy.subject_alt_names = vec![
        uri(ORDER),
        SanType::DnsName("kubernetes.default.svc".try_into().unwrap()),
        SanType::DnsName("*.production.svc.cluster.local".try_into().unwrap()),
        SanType::IpAddress("10.0.2.1".parse().unwrap()),
        SanType::Rfc822Name("admin@example.com".try_into().unwrap()),
    ];
    greedy.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    greedy.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
    let greedy = csr_params(greedy);
    // Ten years asked for.
    let chain = ca
        .client
        .create_certificate(request(&greedy, Some(&token), None, 10 * 365 * 24 * 3600))
        .await
        .unwrap()
        .into_inner()
        .cert_chain;
    let der = leaf_der(&chain);
    let (_, leaf) = X509Certificate::from_der(&der).unwrap();
    let mut sans = Vec::new();
    let mut is_ca = None;
    let mut can_sign_certs = None;
    for ext in leaf.extensions() {
        match ext.parsed_extension() {
            ParsedExtension::SubjectAlternativeName(san) => {
                for name in &san.general_names {
                    sans.push(match name {
                        GeneralName::URI(u) => format!("URI:{u}"),
                        other => format!("{other:?}"),
                    });
                }
            }
            ParsedExtension::BasicConstraints(bc) => is_ca = Some(bc.ca),
            ParsedExtension::KeyUsage(ku) => {
                can_sign_certs = Some(ku.key_cert_sign() || ku.crl_sign())
            }
            _ => {}
        }
    }
    assert_eq!(sans, vec![format!("URI:{ORDER}")], "only the SPIFFE id");
    assert_eq!(is_ca, Some(false), "the leaf must say CA:false");
    assert_eq!(can_sign_certs, Some(false), "no keyCertSign/cRLSign");
    let validity = leaf.validity();
    let lifetime = validity.not_after.timestamp() - validity.not_before.timestamp();
    assert!(
        lifetime <= 90 * 24 * 3600 + 600,
        "lifetime {lifetime}s above the CA's maximum"
    );
    ca.running.shutdown();
}

/// A CSR whose public key is not the one that signed it (no proof of possession: the
/// attacker would get a certificate for someone else's key), a weakly formed identity,
/// and plain garbage.
#[tokio::test]
async fn attack_malformed_or_mismatched_csrs_are_invalid() {
    let mut ca = ca().await;
    let token = bearer(&ca.node_a);

    let r = request(&csr_with_swapped_key(&id(ORDER)), Some(&token), None, 3600);
    refused(&mut ca, r, Code::InvalidArgument, "signature").await;

    let cases: Vec<(String, &str)> = vec![
        ("garbage".into(), "malformed CSR"),
        (String::new(), "malformed CSR"),
        (
            "-----BEGIN CERTIFICATE REQUEST-----\nAAAA\n-----END CERTIFICATE REQUEST-----\n".into(),
            "malformed CSR",
        ),
        // A certificate (the CA's own root) instead of a request.
        (
            ca.running.ca.current().trust_bundle().to_pem(),
            "malformed CSR",
        ),
        // No URI SAN at all, only a DNS name.
        (
            csr_with(vec![SanType::DnsName(
                "order-service.production".try_into().unwrap(),
            )]),
            "no URI",
        ),
        // Path tricks and near-miss identities in the URI SAN.
        (
            csr_with(vec![uri(
                "spiffe://cluster.local/ns/production/sa/order-service/../../ns/staging/sa/x",
            )]),
            "not a valid SPIFFE id",
        ),
        (
            csr_with(vec![uri(
                "spiffe://cluster.local/ns/production/sa/order%2Dservice",
            )]),
            "not a valid SPIFFE id",
        ),
        (
            csr_with(vec![uri(
                "https://cluster.local/ns/production/sa/order-service",
            )]),
            "not a valid SPIFFE id",
        ),
    ];
    for (csr, part) in cases {
        let r = request(&csr, Some(&token), None, 3600);
        refused(&mut ca, r, Code::InvalidArgument, part).await;
    }

    // A foreign trust domain, and the mesh's trust domain spelt in another case.
    for other in [
        "spiffe://evil.example/ns/production/sa/order-service",
        "spiffe://cluster.local.evil.example/ns/production/sa/order-service",
    ] {
        let req = CertRequest::generate(&id(other)).unwrap();
        let r = request(req.csr_pem(), Some(&token), None, 3600);
        refused(&mut ca, r, Code::PermissionDenied, "trust domain").await;
    }
    let upper = csr_with(vec![uri(
        "spiffe://CLUSTER.LOCAL/ns/production/sa/order-service",
    )]);
    let status = ca
        .client
        .create_certificate(request(&upper, Some(&token), None, 3600))
        .await
        .expect_err("an upper-case trust domain must not be signed");
    assert!(
        matches!(
            status.code(),
            Code::InvalidArgument | Code::PermissionDenied
        ),
        "{status:?}"
    );

    // A malformed ImpersonatedIdentity.
    let req = CertRequest::generate(&id(ORDER)).unwrap();
    let r = request(req.csr_pem(), Some(&token), Some("order-service"), 3600);
    refused(&mut ca, r, Code::InvalidArgument, "ImpersonatedIdentity").await;
    ca.running.shutdown();
}

/// The subscription's refusal: the call's status, or the first message's.
async fn subscription_refusal(addr: SocketAddr, sub: Subscribe) -> tonic::Status {
    let mut client = MeshConfigClient::connect(format!("http://{addr}"))
        .await
        .unwrap();
    let (tx, rx) = tokio::sync::mpsc::channel(1);
    tx.send(ProxyMessage {
        msg: Some(proxy_message::Msg::Subscribe(sub)),
    })
    .await
    .unwrap();
    match client.stream(ReceiverStream::new(rx)).await {
        Err(status) => status,
        Ok(resp) => {
            let mut updates = resp.into_inner();
            match tokio::time::timeout(Duration::from_secs(10), updates.message()).await {
                Ok(Err(status)) => status,
                other => panic!("the subscription was not refused: {other:?}"),
            }
        }
    }
}

/// The config stream: node-a's token cannot subscribe as the ztunnel of node-b (and so
/// learn node-b's policies), a guessed or empty token as anything.
#[tokio::test]
async fn attack_ztunnel_cannot_subscribe_as_another_node() {
    let ca = ca().await;
    let forged = meshwork_controlplane::ca::NodeTokens::from_secret(b"guessed")
        .token_for("node-a")
        .unwrap();
    let cases = [
        (
            "node-b",
            ca.node_a.clone(),
            Code::PermissionDenied,
            "node-b",
        ),
        ("node-a", forged, Code::Unauthenticated, "token"),
        ("node-a", String::new(), Code::Unauthenticated, "token"),
    ];
    for (node, token, code, part) in cases {
        let status = subscription_refusal(
            ca.running.grpc_addr.unwrap(),
            Subscribe {
                kind: ProxyKind::Ztunnel as i32,
                node: node.into(),
                proxy_id: "attacker".into(),
                token,
                ..Default::default()
            },
        )
        .await;
        assert_eq!(status.code(), code, "{node}: {status:?}");
        assert!(status.message().contains(part), "{node}: {status:?}");
    }
    ca.running.shutdown();
}

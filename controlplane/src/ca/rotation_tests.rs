//! Root rotation as Istio documents it for plug-in CAs: (1) `root-cert.pem` gains the new
//! root beside the old, (2) the signing intermediate changes to one under the new root,
//! (3) the old root is removed. Through steps 1–2 every certificate issued verifies for
//! every peer; the CA is swapped while serving, and material that does not load never
//! replaces the running CA.

use std::sync::Arc;
use std::time::Duration;

use meshwork_identity::{CertRequest, SpiffeId, WorkloadCertificate};
use rcgen::{CertificateParams, Issuer, KeyPair};

use super::*;

const TD: &str = "cluster.local";

struct Root {
    pem: String,
    issuer: Issuer<'static, KeyPair>,
}

fn root(name: &str) -> Root {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Unconstrained);
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, name);
    let cert = params.self_signed(&key).unwrap();
    Root {
        pem: cert.pem(),
        issuer: Issuer::new(params, key),
    }
}

/// Writes Istio `cacerts` files: an intermediate under `under`, and `roots`.
fn plug_in(dir: &std::path::Path, under: &Root, roots: &[&Root]) {
    let key = KeyPair::generate_for(&rcgen::PKCS_ECDSA_P256_SHA256).unwrap();
    let mut params = CertificateParams::default();
    params.is_ca = rcgen::IsCa::Ca(rcgen::BasicConstraints::Constrained(0));
    params.key_usages = vec![rcgen::KeyUsagePurpose::KeyCertSign];
    params
        .distinguished_name
        .push(rcgen::DnType::CommonName, "cluster intermediate");
    let int = params.signed_by(&key, &under.issuer).unwrap();
    let write = |name: &str, text: String| std::fs::write(dir.join(name), text).unwrap();
    write(PLUGIN_CERT_FILE, int.pem());
    write(KEY_FILE, key.serialize_pem());
    write(
        PLUGIN_ROOTS_FILE,
        roots.iter().map(|r| r.pem.clone()).collect::<String>(),
    );
    write(PLUGIN_CHAIN_FILE, format!("{}{}", int.pem(), under.pem));
}

fn issue(ca: &Ca, who: &str) -> WorkloadCertificate {
    let id: SpiffeId = format!("spiffe://{TD}/ns/shop/sa/{who}").parse().unwrap();
    let req = CertRequest::generate(&id).unwrap();
    let chain = ca.sign(req.csr_pem(), None, |_| Ok(())).unwrap();
    req.into_certificate(&chain, None).unwrap()
}

/// `holder` (with its roots) accepts `peer`'s chain, as in an mTLS handshake.
fn accepts(holder: &WorkloadCertificate, peer: &WorkloadCertificate) -> bool {
    use rustls::client::danger::ServerCertVerifier;
    let verifier = meshwork_identity::tls::SpiffeServerVerifier::new(
        holder.roots(),
        [peer.identity().clone()],
    )
    .unwrap();
    verifier
        .verify_server_cert(
            &peer.chain()[0],
            &peer.chain()[1..],
            &rustls_pki_types::ServerName::try_from("peer").unwrap(),
            &[],
            rustls_pki_types::UnixTime::now(),
        )
        .is_ok()
}

#[test]
fn every_certificate_verifies_for_every_peer_through_a_root_rotation() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (root("old root"), root("new root"));
    plug_in(dir.path(), &old, &[&old]);
    let handle = CaHandle::new(Ca::open(dir.path(), CaConfig::new(TD)).unwrap());
    let before = issue(&handle.current(), "a");
    assert_eq!(before.roots().len(), 1);

    // Step 1: both roots trusted, still signing under the old one.
    plug_in(dir.path(), &old, &[&old, &new]);
    handle.replace(Ca::reload(dir.path(), CaConfig::new(TD)).unwrap());
    let step1 = issue(&handle.current(), "b");
    assert_eq!(step1.roots().len(), 2, "the answer carries both roots");

    // Step 2: signing under the new root, both still trusted.
    plug_in(dir.path(), &new, &[&old, &new]);
    handle.replace(Ca::reload(dir.path(), CaConfig::new(TD)).unwrap());
    let step2 = issue(&handle.current(), "c");
    assert_eq!(handle.version(), 2);

    // Peers renewed at step 1 or 2 accept everyone; a peer that never renewed (old root
    // only) still accepts the certificates signed under the old root.
    for (holder, peer) in [
        (&step1, &before),
        (&step1, &step2),
        (&step2, &before),
        (&step2, &step1),
        (&before, &step1),
    ] {
        assert!(
            accepts(holder, peer),
            "{} must accept {}",
            holder.identity(),
            peer.identity()
        );
    }
    assert!(
        !accepts(&before, &step2),
        "a peer that kept only the old root cannot verify the new chain: why step 1 comes first"
    );
}

#[tokio::test(start_paused = true)]
async fn the_directory_is_followed_and_bad_material_never_replaces_the_ca() {
    let dir = tempfile::tempdir().unwrap();
    let (old, new) = (root("old root"), root("new root"));
    plug_in(dir.path(), &old, &[&old]);
    let handle = CaHandle::new(Ca::open(dir.path(), CaConfig::new(TD)).unwrap());
    let task = tokio::spawn(follow_dir(
        dir.path().to_path_buf(),
        Arc::clone(&handle),
        CaConfig::new(TD),
        Duration::from_secs(1),
    ));
    tokio::time::sleep(Duration::from_millis(1500)).await;
    assert_eq!(handle.version(), 0, "nothing changed");

    // A key that does not match the signing certificate: refused, the CA stays.
    std::fs::write(
        dir.path().join(KEY_FILE),
        KeyPair::generate().unwrap().serialize_pem(),
    )
    .unwrap();
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(handle.version(), 0, "bad material is not loaded");
    assert_eq!(issue(&handle.current(), "a").roots().len(), 1);

    plug_in(dir.path(), &old, &[&old, &new]);
    tokio::time::sleep(Duration::from_secs(2)).await;
    assert_eq!(handle.version(), 1, "good material is loaded");
    assert_eq!(issue(&handle.current(), "a").roots().len(), 2);
    task.abort();
}

//! A throw-away certificate authority for tests (feature `test-util`, and this crate's own tests).
//!
//! It signs leaves directly with a self-signed root, with both serverAuth and clientAuth EKUs,
//! like the mesh CA does. Not for production: no persistence, no authorization.

use std::time::{Duration, SystemTime};

use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, ExtendedKeyUsagePurpose, IsCa,
    Issuer, KeyPair, KeyUsagePurpose, SanType, SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use crate::bundle::TrustBundle;
use crate::cert::WorkloadCertificate;
use crate::spiffe::SpiffeId;

/// A self-signed root that issues workload certificates. Panics on failure (test helper).
pub struct TestCa {
    trust_domain: String,
    issuer: Issuer<'static, KeyPair>,
    root: CertificateDer<'static>,
}

impl TestCa {
    pub fn new(trust_domain: &str) -> Self {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("root key");
        let mut params = CertificateParams::default();
        let mut dn = DistinguishedName::new();
        dn.push(DnType::OrganizationName, trust_domain);
        // A unique name, so that a foreign root is reported as an unknown issuer.
        let unique: String = random_serial()[..6]
            .iter()
            .map(|b| format!("{b:02x}"))
            .collect();
        dn.push(DnType::CommonName, format!("meshwork test root {unique}"));
        params.distinguished_name = dn;
        params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
        params.key_usages = vec![KeyUsagePurpose::KeyCertSign, KeyUsagePurpose::CrlSign];
        let now = SystemTime::now();
        params.not_before = (now - Duration::from_secs(3600)).into();
        params.not_after = (now + Duration::from_secs(10 * 365 * 86400)).into();
        let root = params.self_signed(&key).expect("self-signed root");
        TestCa {
            trust_domain: trust_domain.to_string(),
            issuer: Issuer::new(params, key),
            root: root.der().clone(),
        }
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn root(&self) -> &CertificateDer<'static> {
        &self.root
    }

    pub fn bundle(&self) -> TrustBundle {
        TrustBundle::new([self.root.clone()]).expect("valid root")
    }

    /// A certificate valid from now (truncated to the second) for `ttl`.
    pub fn issue(&self, identity: &SpiffeId, ttl: Duration) -> WorkloadCertificate {
        let now = SystemTime::UNIX_EPOCH
            + Duration::from_secs(
                SystemTime::now()
                    .duration_since(SystemTime::UNIX_EPOCH)
                    .expect("clock after 1970")
                    .as_secs(),
            );
        self.issue_with_validity(identity, now, now + ttl)
    }

    pub fn issue_with_validity(
        &self,
        identity: &SpiffeId,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> WorkloadCertificate {
        let uri = identity.to_string().try_into().expect("URI SAN");
        let (key, leaf) = self.sign(vec![SanType::URI(uri)], not_before, not_after);
        WorkloadCertificate::new(key, vec![leaf], self.bundle()).expect("valid workload cert")
    }

    /// A leaf with arbitrary SANs, valid for an hour, without any validation.
    pub fn issue_raw(
        &self,
        sans: Vec<SanType>,
    ) -> (PrivateKeyDer<'static>, CertificateDer<'static>) {
        let now = SystemTime::now();
        self.sign(sans, now, now + Duration::from_secs(3600))
    }

    fn sign(
        &self,
        sans: Vec<SanType>,
        not_before: SystemTime,
        not_after: SystemTime,
    ) -> (PrivateKeyDer<'static>, CertificateDer<'static>) {
        let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).expect("leaf key");
        let mut params = CertificateParams::default();
        params.distinguished_name = DistinguishedName::new();
        params.subject_alt_names = sans;
        params.is_ca = IsCa::ExplicitNoCa;
        params.key_usages = vec![
            KeyUsagePurpose::DigitalSignature,
            KeyUsagePurpose::KeyEncipherment,
        ];
        params.extended_key_usages = vec![
            ExtendedKeyUsagePurpose::ServerAuth,
            ExtendedKeyUsagePurpose::ClientAuth,
        ];
        params.use_authority_key_identifier_extension = true;
        params.serial_number = Some(SerialNumber::from_slice(&random_serial()));
        params.not_before = not_before.into();
        params.not_after = not_after.into();
        let cert = params.signed_by(&key, &self.issuer).expect("signed leaf");
        let key = PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der()));
        (key, cert.der().clone())
    }
}

fn random_serial() -> [u8; 16] {
    use ring::rand::SecureRandom;
    let mut serial = [0u8; 16];
    ring::rand::SystemRandom::new()
        .fill(&mut serial)
        .expect("system randomness");
    serial[0] &= 0x7f;
    serial[0] |= 0x01;
    serial
}

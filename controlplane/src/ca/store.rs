//! The CA directory: a self-signed root generated on first start, or Istio-style plug-in
//! certificates (`cacerts`).
//!
//! * Plug-in layout (used when `ca-cert.pem` exists): `ca-cert.pem` (signing certificate, an
//!   intermediate or the root), `ca-key.pem`, `root-cert.pem` (one or more roots) and optionally
//!   `cert-chain.pem` (from `ca-cert.pem` towards the root).
//! * Self-signed layout: `ca-root.pem` and `ca-key.pem` (mode 0600), created when absent.

use std::os::unix::fs::PermissionsExt;
use std::path::Path;
use std::time::{Duration, SystemTime};

use meshwork_identity::files::{write_atomic, PUBLIC_MODE, SECRET_MODE};
use meshwork_identity::TrustBundle;
use rcgen::{
    BasicConstraints, CertificateParams, DistinguishedName, DnType, IsCa, KeyPair, KeyUsagePurpose,
    SerialNumber, PKCS_ECDSA_P256_SHA256,
};
use rustls_pki_types::{CertificateDer, PrivateKeyDer, PrivatePkcs8KeyDer};

use super::authority::{random_serial, Ca};
use super::material::{CaConfig, CaLoadError, CaMaterial};

pub const ROOT_CERT_FILE: &str = "ca-root.pem";
pub const KEY_FILE: &str = "ca-key.pem";
pub const PLUGIN_CERT_FILE: &str = "ca-cert.pem";
pub const PLUGIN_ROOTS_FILE: &str = "root-cert.pem";
pub const PLUGIN_CHAIN_FILE: &str = "cert-chain.pem";

/// Lifetime of a generated root.
pub const ROOT_TTL: Duration = Duration::from_secs(10 * 365 * 24 * 3600);

impl Ca {
    /// Opens the CA directory `dir` (creating it, and a self-signed root, when needed).
    pub fn open(dir: &Path, config: CaConfig) -> Result<Ca, CaLoadError> {
        let material = if dir.join(PLUGIN_CERT_FILE).exists() {
            tracing::info!(dir = %dir.display(), "loading plug-in CA certificates");
            load_plugin(dir)?
        } else if dir.join(ROOT_CERT_FILE).exists() {
            tracing::info!(dir = %dir.display(), "loading mesh root CA");
            load_self_signed(dir)?
        } else {
            tracing::info!(dir = %dir.display(), trust_domain = %config.trust_domain, "generating mesh root CA");
            generate_root(dir, &config.trust_domain)?
        };
        Ca::new(material, config)
    }
}

impl Ca {
    /// Loads the CA directory as it is now, never generating anything: a root rotation
    /// (new plug-in files) is read with this; a directory that lost its files is an error,
    /// so the running CA stays.
    pub fn reload(dir: &Path, config: CaConfig) -> Result<Ca, CaLoadError> {
        let material = if dir.join(PLUGIN_CERT_FILE).exists() {
            load_plugin(dir)?
        } else {
            load_self_signed(dir)?
        };
        Ca::new(material, config)
    }
}

/// What the CA's material files hold now (missing files count as empty): a change means
/// the CA must be reloaded.
pub fn fingerprint(dir: &Path) -> u64 {
    use std::hash::{Hash, Hasher};
    let mut h = std::collections::hash_map::DefaultHasher::new();
    for f in [
        PLUGIN_CERT_FILE,
        KEY_FILE,
        PLUGIN_ROOTS_FILE,
        PLUGIN_CHAIN_FILE,
        ROOT_CERT_FILE,
    ] {
        f.hash(&mut h);
        std::fs::read(dir.join(f)).unwrap_or_default().hash(&mut h);
    }
    h.finish()
}

/// Follows the CA directory (Istio's plug-in rotation: a new `cacerts` mounted there):
/// checks it every `every` and swaps the CA when its files change and load; material that
/// does not load is logged and the running CA stays.
pub async fn follow_dir(
    dir: std::path::PathBuf,
    handle: std::sync::Arc<super::handle::CaHandle>,
    config: CaConfig,
    every: Duration,
) {
    let mut last = fingerprint(&dir);
    loop {
        tokio::time::sleep(every).await;
        let now = fingerprint(&dir);
        if now == last {
            continue;
        }
        last = now;
        match Ca::reload(&dir, config.clone()) {
            Ok(ca) => {
                tracing::info!(dir = %dir.display(), roots = ca.trust_bundle().len(), "CA material changed: signing with the new material");
                handle.replace(ca);
            }
            Err(e) => {
                tracing::error!(dir = %dir.display(), error = %e, "CA material changed but does not load; keeping the current CA")
            }
        }
    }
}

fn load_plugin(dir: &Path) -> Result<CaMaterial, CaLoadError> {
    let chain_path = dir.join(PLUGIN_CHAIN_FILE);
    let chain = if chain_path.exists() {
        Some(read(&chain_path)?)
    } else {
        None
    };
    CaMaterial::from_pem(
        &read(&dir.join(PLUGIN_CERT_FILE))?,
        &read_key(&dir.join(KEY_FILE))?,
        chain.as_deref(),
        &read(&dir.join(PLUGIN_ROOTS_FILE))?,
    )
}

fn load_self_signed(dir: &Path) -> Result<CaMaterial, CaLoadError> {
    let root = read(&dir.join(ROOT_CERT_FILE))?;
    CaMaterial::from_pem(&root, &read_key(&dir.join(KEY_FILE))?, None, &root)
}

fn generate_root(dir: &Path, trust_domain: &str) -> Result<CaMaterial, CaLoadError> {
    let key = KeyPair::generate_for(&PKCS_ECDSA_P256_SHA256).map_err(CaLoadError::Generate)?;
    let mut params = CertificateParams::default();
    let mut dn = DistinguishedName::new();
    dn.push(DnType::OrganizationName, trust_domain);
    dn.push(DnType::CommonName, "Meshwork root CA");
    params.distinguished_name = dn;
    params.is_ca = IsCa::Ca(BasicConstraints::Unconstrained);
    params.key_usages = vec![
        KeyUsagePurpose::KeyCertSign,
        KeyUsagePurpose::CrlSign,
        KeyUsagePurpose::DigitalSignature,
    ];
    let serial = random_serial().map_err(|e| CaLoadError::SelfCheck(e.to_string()))?;
    params.serial_number = Some(SerialNumber::from_slice(&serial));
    let now = SystemTime::now();
    params.not_before = (now - Duration::from_secs(3600)).into();
    params.not_after = (now + ROOT_TTL).into();
    let root = params.self_signed(&key).map_err(CaLoadError::Generate)?;

    std::fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
    let key_path = dir.join(KEY_FILE);
    write_atomic(&key_path, key.serialize_pem().as_bytes(), SECRET_MODE)
        .map_err(|e| io_error(&key_path, e))?;
    // Written last: its presence means the directory is complete.
    let root_path = dir.join(ROOT_CERT_FILE);
    write_atomic(&root_path, root.pem().as_bytes(), PUBLIC_MODE)
        .map_err(|e| io_error(&root_path, e))?;

    let root_der: CertificateDer<'static> = root.der().clone();
    Ok(CaMaterial {
        signing_cert: root_der.clone(),
        signing_key: PrivateKeyDer::Pkcs8(PrivatePkcs8KeyDer::from(key.serialize_der())),
        chain: Vec::new(),
        roots: TrustBundle::new([root_der])?,
    })
}

fn read(path: &Path) -> Result<String, CaLoadError> {
    std::fs::read_to_string(path).map_err(|e| io_error(path, e))
}

/// Reads a private key, warning when other users may read it.
fn read_key(path: &Path) -> Result<String, CaLoadError> {
    let meta = std::fs::metadata(path).map_err(|e| io_error(path, e))?;
    let mode = meta.permissions().mode() & 0o777;
    if mode & 0o077 != 0 {
        tracing::warn!(path = %path.display(), mode = format!("{mode:o}"), "CA private key is readable by other users; use mode 0600");
    }
    read(path)
}

fn io_error(path: &Path, source: std::io::Error) -> CaLoadError {
    CaLoadError::Io {
        path: path.display().to_string(),
        source,
    }
}

//! Writing key material to disk: atomically, with restrictive permissions for secrets.

use std::fs;
use std::io::Write;
use std::os::unix::fs::{OpenOptionsExt, PermissionsExt};
use std::path::{Path, PathBuf};

use crate::cert::{CertificateError, WorkloadCertificate};

/// File names of a stored workload certificate (the names Istio mounts for workloads).
pub const KEY_FILE: &str = "key.pem";
pub const CHAIN_FILE: &str = "cert-chain.pem";
pub const ROOTS_FILE: &str = "root-cert.pem";

/// Mode for private keys.
pub const SECRET_MODE: u32 = 0o600;
/// Mode for certificates.
pub const PUBLIC_MODE: u32 = 0o644;

/// Writes `contents` to `path` through a temporary file in the same directory and a rename,
/// so readers never see a partial file; the file gets `mode`.
pub fn write_atomic(path: &Path, contents: &[u8], mode: u32) -> std::io::Result<()> {
    let file_name = path
        .file_name()
        .ok_or_else(|| std::io::Error::other("path has no file name"))?;
    let mut tmp_name = std::ffi::OsString::from(".");
    tmp_name.push(file_name);
    tmp_name.push(".tmp");
    let tmp: PathBuf = path.with_file_name(tmp_name);
    let result = (|| {
        let mut file = fs::OpenOptions::new()
            .write(true)
            .create(true)
            .truncate(true)
            .mode(mode)
            .open(&tmp)?;
        // The mode of an existing file is not changed by open(); enforce it.
        file.set_permissions(fs::Permissions::from_mode(mode))?;
        file.write_all(contents)?;
        file.sync_all()?;
        fs::rename(&tmp, path)
    })();
    if result.is_err() {
        let _ = fs::remove_file(&tmp);
    }
    result
}

/// Reads a file as UTF-8, naming it in the error.
pub fn read_to_string(path: &Path) -> Result<String, CertificateError> {
    fs::read_to_string(path).map_err(|source| io_error(path, source))
}

fn io_error(path: &Path, source: std::io::Error) -> CertificateError {
    CertificateError::Io {
        path: path.display().to_string(),
        source,
    }
}

impl WorkloadCertificate {
    /// Stores the key (mode 0600), chain and roots in `dir` as `key.pem`, `cert-chain.pem`
    /// and `root-cert.pem`, creating `dir` if needed.
    pub fn save(&self, dir: &Path) -> Result<(), CertificateError> {
        fs::create_dir_all(dir).map_err(|e| io_error(dir, e))?;
        for (name, contents, mode) in [
            (KEY_FILE, self.key_pem(), SECRET_MODE),
            (CHAIN_FILE, self.chain_pem(), PUBLIC_MODE),
            (ROOTS_FILE, self.roots_pem(), PUBLIC_MODE),
        ] {
            let path = dir.join(name);
            write_atomic(&path, contents.as_bytes(), mode).map_err(|e| io_error(&path, e))?;
        }
        Ok(())
    }

    /// Loads what [`save`](Self::save) stored.
    pub fn load(dir: &Path) -> Result<Self, CertificateError> {
        let key = read_to_string(&dir.join(KEY_FILE))?;
        let chain = read_to_string(&dir.join(CHAIN_FILE))?;
        let roots = read_to_string(&dir.join(ROOTS_FILE))?;
        Self::from_pem(&key, &chain, &roots)
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::testing::TestCa;
    use std::time::Duration;

    #[test]
    fn save_and_load_round_trip_with_private_key_mode() {
        let dir = tempfile::tempdir().unwrap();
        let ca = TestCa::new("cluster.local");
        let id = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let cert = ca.issue(&id, Duration::from_secs(60));
        let target = dir.path().join("certs");
        cert.save(&target).unwrap();
        let mode = fs::metadata(target.join(KEY_FILE))
            .unwrap()
            .permissions()
            .mode();
        assert_eq!(mode & 0o777, 0o600);
        assert_eq!(WorkloadCertificate::load(&target).unwrap(), cert);
        // Overwriting keeps working (renewal).
        let renewed = ca.issue(&id, Duration::from_secs(60));
        renewed.save(&target).unwrap();
        assert_eq!(WorkloadCertificate::load(&target).unwrap(), renewed);
    }

    #[test]
    fn load_names_the_missing_file() {
        let dir = tempfile::tempdir().unwrap();
        let err = WorkloadCertificate::load(dir.path()).unwrap_err();
        assert!(err.to_string().contains(KEY_FILE), "{err}");
    }
}

//! A content-addressed module cache on disk.
//!
//! - `modules/<sha256>.wasm`: module bytes under their own digest (written to a temporary
//!   file, then renamed, so a reader never sees half a module).
//! - `urls/<sha256 of the url>`: `<module sha256> <manifest digest or ->` of the last
//!   module fetched from that url, so `IfNotPresent` needs no network when the plugin pins
//!   no digest (and an OCI plugin pinned to its manifest digest finds its module).
//!
//! Whatever the index says, bytes read back are hashed again and must match their name:
//! a damaged entry is removed and reported as a miss.

use std::path::{Path, PathBuf};

use super::sha256_hex;

#[derive(Debug, Clone)]
pub struct Cache {
    dir: PathBuf,
}

/// A cached module and what it was recorded with.
#[derive(Debug)]
pub struct Hit {
    pub bytes: Vec<u8>,
    pub sha256: String,
    pub manifest_digest: Option<String>,
}

impl Cache {
    pub fn new(dir: impl Into<PathBuf>) -> Self {
        Cache { dir: dir.into() }
    }

    pub fn dir(&self) -> &Path {
        &self.dir
    }

    fn module_path(&self, sha: &str) -> PathBuf {
        self.dir.join("modules").join(format!("{sha}.wasm"))
    }

    fn url_path(&self, url: &str) -> PathBuf {
        self.dir.join("urls").join(sha256_hex(url.as_bytes()))
    }

    /// The module stored under `sha`, checked.
    pub async fn module(&self, sha: &str) -> Option<Vec<u8>> {
        if sha.len() != 64 || !sha.bytes().all(|c| c.is_ascii_hexdigit()) {
            return None;
        }
        let path = self.module_path(sha);
        let bytes = tokio::fs::read(&path).await.ok()?;
        if sha256_hex(&bytes) != sha {
            let _ = tokio::fs::remove_file(&path).await;
            return None;
        }
        Some(bytes)
    }

    /// What `url` last gave, when the module is still cached.
    pub async fn by_url(&self, url: &str) -> Option<Hit> {
        let line = tokio::fs::read_to_string(self.url_path(url)).await.ok()?;
        let mut parts = line.split_whitespace();
        let sha = parts.next()?.to_string();
        let manifest = parts.next().filter(|m| *m != "-").map(str::to_string);
        let bytes = self.module(&sha).await?;
        Some(Hit {
            bytes,
            sha256: sha,
            manifest_digest: manifest,
        })
    }

    /// Stores a module fetched from `url`.
    pub async fn store(
        &self,
        url: &str,
        bytes: &[u8],
        sha: &str,
        manifest_digest: Option<&str>,
    ) -> std::io::Result<()> {
        let module = self.module_path(sha);
        write_atomic(&module, bytes).await?;
        let line = format!("{sha} {}\n", manifest_digest.unwrap_or("-"));
        write_atomic(&self.url_path(url), line.as_bytes()).await
    }
}

async fn write_atomic(path: &Path, bytes: &[u8]) -> std::io::Result<()> {
    let dir = path.parent().expect("cache paths have a parent");
    tokio::fs::create_dir_all(dir).await?;
    let tmp = dir.join(format!(
        ".{}.{}.tmp",
        path.file_name().unwrap_or_default().to_string_lossy(),
        std::process::id()
    ));
    tokio::fs::write(&tmp, bytes).await?;
    tokio::fs::rename(&tmp, path).await
}

#[cfg(test)]
mod tests {
    use super::*;

    #[tokio::test]
    async fn damaged_entries_are_misses() {
        let dir = tempfile::tempdir().unwrap();
        let c = Cache::new(dir.path());
        let sha = sha256_hex(b"module");
        c.store("http://h/p.wasm", b"module", &sha, None)
            .await
            .unwrap();
        assert_eq!(c.by_url("http://h/p.wasm").await.unwrap().bytes, b"module");
        assert!(c.by_url("http://h/other.wasm").await.is_none());
        std::fs::write(
            dir.path().join("modules").join(format!("{sha}.wasm")),
            b"evil",
        )
        .unwrap();
        assert!(c.module(&sha).await.is_none());
        assert!(c.by_url("http://h/p.wasm").await.is_none());
    }
}

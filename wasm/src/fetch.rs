//! From a `WasmPlugin`'s `url` and `sha256` to verified module bytes.
//!
//! Sources: `file://` (read), `http://` / `https://` ([`http`]: size cap, deadline),
//! `oci://` ([`oci`]: the registry distribution API with its token dance and the plugin's
//! `pull_auth`). A [`Fetcher`] with a [`cache::Cache`] keeps modules by digest and honours
//! `imagePullPolicy` as Istio does: `IfNotPresent` uses a cached module without network,
//! `Always` fetches again; unspecified is `IfNotPresent`, except `Always` for an `oci://`
//! reference tagged `:latest`.
//!
//! Every source ends in the same check, cache hits included: when the plugin names a
//! `sha256`, bytes whose digest differs are refused, so a module can never change under a
//! pinned digest. For `oci://`, as in Istio, `sha256` may name the image manifest's digest
//! (the module is then pinned through the manifest, whose layer digests are checked); the
//! module's own digest is accepted too.

pub mod cache;
pub mod http;
pub mod oci;

use std::path::PathBuf;
use std::sync::Arc;
use std::time::Duration;

use meshwork_model::pb::config::{WasmPlugin, WasmPullPolicy};

/// Istio's `MaxWasmBinarySizeBytes` default (256 MiB): the largest module or response read.
pub const MAX_MODULE_BYTES: usize = 256 << 20;
/// Deadline of one download (connection, redirects, token, body).
pub const DEFAULT_TIMEOUT: Duration = Duration::from_secs(300);

/// Why a plugin's module could not be had.
#[derive(Debug, thiserror::Error)]
pub enum FetchError {
    #[error("WasmPlugin {plugin}: url {url:?}: {reason}")]
    Url {
        plugin: String,
        url: String,
        reason: String,
    },
    #[error("WasmPlugin {plugin}: reading {path}: {source}")]
    Read {
        plugin: String,
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("WasmPlugin {plugin}: fetching {url}: {reason}")]
    Download {
        plugin: String,
        url: String,
        reason: String,
    },
    #[error(
        "WasmPlugin {plugin}: sha256 is {actual}, but the plugin's sha256 field says {expected}"
    )]
    Digest {
        plugin: String,
        expected: String,
        actual: String,
    },
}

/// A `file://` module: a regular file of at most `max` bytes (never `/dev/zero`, a FIFO
/// or a file that grows while read), so a WasmPlugin cannot make a waypoint read forever.
async fn read_module_file(path: &std::path::Path, max: usize) -> std::io::Result<Vec<u8>> {
    use tokio::io::AsyncReadExt;
    let file = tokio::fs::File::open(path).await?;
    let meta = file.metadata().await?;
    let too_big = || {
        std::io::Error::new(
            std::io::ErrorKind::InvalidData,
            format!("larger than {max} bytes"),
        )
    };
    if !meta.is_file() {
        return Err(std::io::Error::new(
            std::io::ErrorKind::InvalidInput,
            "not a regular file",
        ));
    }
    if meta.len() > max as u64 {
        return Err(too_big());
    }
    let mut bytes = Vec::with_capacity(meta.len() as usize);
    file.take(max as u64 + 1).read_to_end(&mut bytes).await?;
    if bytes.len() > max {
        return Err(too_big());
    }
    Ok(bytes)
}

/// Verified module bytes and their digest.
#[derive(Debug, Clone)]
pub struct Module {
    pub bytes: Arc<[u8]>,
    /// Lower-case hex SHA-256 of `bytes`.
    pub sha256: String,
}

/// Where a plugin's module comes from, as read from its `url`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Location {
    File(PathBuf),
    /// `http://` or `https://`.
    Http(::http::Uri),
    Oci(oci::Reference),
}

/// `<ns>/<name>` of a plugin, for errors.
fn plugin_ref(p: &WasmPlugin) -> String {
    format!("{}/{}", p.namespace, p.name)
}

/// Reads a plugin's `url`.
pub fn location(p: &WasmPlugin) -> Result<Location, FetchError> {
    let bad = |reason: &str| FetchError::Url {
        plugin: plugin_ref(p),
        url: p.url.clone(),
        reason: reason.to_string(),
    };
    match p.url.split_once("://") {
        Some(("file", path)) if path.starts_with('/') => Ok(Location::File(PathBuf::from(path))),
        Some(("file", _)) => Err(bad("a file:// url needs an absolute path")),
        Some(("http" | "https", _)) => match p.url.parse::<::http::Uri>() {
            Ok(u) if u.host().is_some() => Ok(Location::Http(u)),
            Ok(_) => Err(bad("no host")),
            Err(e) => Err(bad(&e.to_string())),
        },
        Some(("oci", r)) => oci::Reference::parse(r)
            .map(Location::Oci)
            .map_err(|e| bad(&e)),
        Some((scheme, _)) => Err(bad(&format!("scheme {scheme}:// is not supported"))),
        None => Err(bad("no scheme")),
    }
}

/// Lower-case hex SHA-256 of `bytes`.
pub fn sha256_hex(bytes: &[u8]) -> String {
    let d = ring::digest::digest(&ring::digest::SHA256, bytes);
    d.as_ref().iter().map(|b| format!("{b:02x}")).collect()
}

/// Refuses `bytes` unless they match the plugin's `sha256` (when it names one).
pub fn verify(p: &WasmPlugin, bytes: Vec<u8>) -> Result<Module, FetchError> {
    verify_with(p, bytes, None)
}

/// [`verify`], also accepting the digest of the OCI manifest the bytes came from.
fn verify_with(
    p: &WasmPlugin,
    bytes: Vec<u8>,
    manifest_digest: Option<&str>,
) -> Result<Module, FetchError> {
    let actual = sha256_hex(&bytes);
    let expected = p.sha256.trim().to_ascii_lowercase();
    if !expected.is_empty() && expected != actual && Some(expected.as_str()) != manifest_digest {
        return Err(FetchError::Digest {
            plugin: plugin_ref(p),
            expected,
            actual,
        });
    }
    Ok(Module {
        bytes: bytes.into(),
        sha256: actual,
    })
}

/// The plugin's module, verified, without a cache (`file://` reads; other schemes
/// download every time).
pub async fn fetch(p: &WasmPlugin) -> Result<Module, FetchError> {
    Fetcher::new().fetch(p).await
}

/// Whether a plugin's module may come from the cache (Istio's rule for an unspecified
/// policy: `IfNotPresent`, but `Always` for `oci://` tagged `latest`).
pub fn pull_always(p: &WasmPlugin, loc: &Location) -> bool {
    match WasmPullPolicy::try_from(p.image_pull_policy).unwrap_or_default() {
        WasmPullPolicy::Always => true,
        WasmPullPolicy::IfNotPresent => false,
        WasmPullPolicy::PullUnspecified => {
            matches!(loc, Location::Oci(r) if r.reference == "latest")
        }
    }
}

/// Downloads modules, with an optional on-disk cache.
#[derive(Debug, Clone)]
pub struct Fetcher {
    client: http::Client,
    cache: Option<cache::Cache>,
}

impl Default for Fetcher {
    fn default() -> Self {
        Self::new()
    }
}

impl Fetcher {
    /// No cache; https servers checked against the system's roots.
    pub fn new() -> Self {
        let mut roots = rustls::RootCertStore::empty();
        for cert in rustls_native_certs::load_native_certs().certs {
            let _ = roots.add(cert);
        }
        Self::with_roots(roots)
    }

    /// https servers checked against `roots` only.
    pub fn with_roots(roots: rustls::RootCertStore) -> Self {
        Fetcher {
            client: http::Client::new(roots, MAX_MODULE_BYTES, DEFAULT_TIMEOUT),
            cache: None,
        }
    }

    /// Keeps modules in `dir` (created when needed).
    pub fn with_cache(mut self, dir: impl Into<PathBuf>) -> Self {
        self.cache = Some(cache::Cache::new(dir));
        self
    }

    /// Largest response read, and the deadline of one download.
    pub fn with_limits(mut self, max_bytes: usize, timeout: Duration) -> Self {
        self.client.max_bytes = max_bytes;
        self.client.timeout = timeout;
        self
    }

    /// The plugin's module, verified.
    pub async fn fetch(&self, p: &WasmPlugin) -> Result<Module, FetchError> {
        let loc = location(p)?;
        let download = |reason: String| FetchError::Download {
            plugin: plugin_ref(p),
            url: p.url.clone(),
            reason,
        };
        let (bytes, manifest) = match &loc {
            Location::File(path) => {
                let bytes = read_module_file(path, self.client.max_bytes)
                    .await
                    .map_err(|source| FetchError::Read {
                        plugin: plugin_ref(p),
                        path: path.clone(),
                        source,
                    })?;
                return verify(p, bytes);
            }
            _ if !pull_always(p, &loc) => match self.cached(p).await {
                Some(m) => return Ok(m),
                None => self.download(&loc, p).await.map_err(download)?,
            },
            _ => self.download(&loc, p).await.map_err(download)?,
        };
        let module = verify_with(p, bytes, manifest.as_deref())?;
        if let Some(c) = &self.cache {
            if let Err(e) = c
                .store(&p.url, &module.bytes, &module.sha256, manifest.as_deref())
                .await
            {
                tracing::warn!(plugin = %plugin_ref(p), dir = %c.dir().display(), "wasm cache: {e}");
            }
        }
        Ok(module)
    }

    /// A cached module this plugin accepts.
    async fn cached(&self, p: &WasmPlugin) -> Option<Module> {
        let c = self.cache.as_ref()?;
        let pinned = p.sha256.trim().to_ascii_lowercase();
        if !pinned.is_empty() {
            if let Some(bytes) = c.module(&pinned).await {
                return verify(p, bytes).ok();
            }
        }
        let hit = c.by_url(&p.url).await?;
        verify_with(p, hit.bytes, hit.manifest_digest.as_deref()).ok()
    }

    async fn download(
        &self,
        loc: &Location,
        p: &WasmPlugin,
    ) -> Result<(Vec<u8>, Option<String>), String> {
        match loc {
            Location::Http(uri) => {
                let resp = self.client.get(uri, &[]).await?;
                if !resp.status.is_success() {
                    return Err(format!("server answered {}", resp.status));
                }
                Ok((resp.body.to_vec(), None))
            }
            Location::Oci(r) => {
                let auth = Some(p.pull_auth.as_str()).filter(|a| !a.is_empty());
                let pulled = oci::pull(&self.client, r, auth).await?;
                Ok((pulled.module, Some(pulled.manifest_digest)))
            }
            Location::File(_) => unreachable!("files are read, not downloaded"),
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn plugin(url: &str, sha256: &str) -> WasmPlugin {
        WasmPlugin {
            name: "auth".into(),
            namespace: "shop".into(),
            url: url.into(),
            sha256: sha256.into(),
            ..Default::default()
        }
    }

    #[test]
    fn digest_of_known_input() {
        assert_eq!(
            sha256_hex(b"abc"),
            "ba7816bf8f01cfea414140de5dae2223b00361a396177a9cb410ff61f20015ad"
        );
    }

    #[tokio::test]
    async fn file_url_is_read_and_checked() {
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("p.wasm");
        std::fs::write(&path, b"abc").unwrap();
        let url = format!("file://{}", path.display());

        let m = fetch(&plugin(&url, "")).await.unwrap();
        assert_eq!(&*m.bytes, b"abc");

        let pinned = sha256_hex(b"abc").to_uppercase();
        assert!(fetch(&plugin(&url, &pinned)).await.is_ok());

        let err = fetch(&plugin(&url, &"0".repeat(64))).await.unwrap_err();
        assert!(matches!(err, FetchError::Digest { .. }), "{err}");
        assert!(err.to_string().contains("shop/auth"), "{err}");
    }

    #[test]
    fn urls_without_a_known_scheme_are_refused_by_name() {
        for url in ["p.wasm", "file://relative/p.wasm", "ftp://h/p.wasm"] {
            let err = location(&plugin(url, "")).unwrap_err();
            assert!(err.to_string().contains("shop/auth"), "{err}");
        }
    }

    #[tokio::test]
    async fn missing_file_names_the_path() {
        let err = fetch(&plugin("file:///nonexistent/meshwork/p.wasm", ""))
            .await
            .unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/meshwork/p.wasm"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn a_file_url_is_a_bounded_regular_file() {
        // /dev/zero would be read forever; a directory is not a module.
        for url in ["file:///dev/zero", "file:///tmp"] {
            let err = fetch(&plugin(url, "")).await.unwrap_err();
            assert!(
                err.to_string().contains("not a regular file"),
                "{url}: {err}"
            );
        }
        let dir = tempfile::tempdir().unwrap();
        let path = dir.path().join("big.wasm");
        std::fs::write(&path, vec![0u8; 64]).unwrap();
        let f = Fetcher::new().with_limits(16, DEFAULT_TIMEOUT);
        let err = f
            .fetch(&plugin(&format!("file://{}", path.display()), ""))
            .await
            .unwrap_err();
        assert!(err.to_string().contains("larger than 16 bytes"), "{err}");
    }
}

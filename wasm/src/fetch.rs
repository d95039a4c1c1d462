//! From a `WasmPlugin`'s `url` and `sha256` to verified module bytes.
//!
//! Every source ends in the same check: when the plugin names a `sha256`, bytes whose digest
//! differs are refused, whatever their source, so a module can never change under a pinned
//! digest.

use std::path::PathBuf;
use std::sync::Arc;

use meshwork_model::pb::config::WasmPlugin;

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
    #[error(
        "WasmPlugin {plugin}: sha256 is {actual}, but the plugin's sha256 field says {expected}"
    )]
    Digest {
        plugin: String,
        expected: String,
        actual: String,
    },
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
    let actual = sha256_hex(&bytes);
    let expected = p.sha256.trim().to_ascii_lowercase();
    if !expected.is_empty() && expected != actual {
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

/// The plugin's module, verified.
pub async fn fetch(p: &WasmPlugin) -> Result<Module, FetchError> {
    match location(p)? {
        Location::File(path) => {
            let bytes = tokio::fs::read(&path)
                .await
                .map_err(|source| FetchError::Read {
                    plugin: plugin_ref(p),
                    path,
                    source,
                })?;
            verify(p, bytes)
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
}

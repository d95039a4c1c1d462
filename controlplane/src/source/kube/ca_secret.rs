//! One mesh CA for every control-plane replica: its material lives in Kubernetes Secrets in
//! the control plane's namespace and is copied into each replica's CA directory, which the
//! CA loads (and follows, for rotations) as in directory mode.
//!
//! * `cacerts` (Istio's plug-in CA Secret: `ca-cert.pem`, `ca-key.pem`, `root-cert.pem`,
//!   optional `cert-chain.pem`) wins when present.
//! * Else `meshwork-ca-secret` (`ca-cert.pem`, `ca-key.pem`: a self-signed root, like
//!   istiod's `istio-ca-secret`). When it does not exist, a replica generates a root and
//!   *creates* the Secret; creation is atomic in the API server, so when two replicas race
//!   one gets 409 Conflict, drops its own root and takes the winner's. Every replica thus
//!   signs into the same chain, and a restart keeps the root.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use k8s_openapi::api::core::v1::Secret;
use k8s_openapi::ByteString;
use kube::api::{ObjectMeta, PostParams};
use kube::{Api, Client};
use meshwork_identity::files::{write_atomic, PUBLIC_MODE, SECRET_MODE};

use crate::ca::{
    Ca, CaConfig, KEY_FILE, PLUGIN_CERT_FILE, PLUGIN_CHAIN_FILE, PLUGIN_ROOTS_FILE, ROOT_CERT_FILE,
};

/// Istio's plug-in CA Secret.
pub const PLUGIN_SECRET: &str = "cacerts";
/// The generated root, shared by the replicas.
pub const SELF_SIGNED_SECRET: &str = "meshwork-ca-secret";

#[derive(Debug, thiserror::Error)]
pub enum CaSecretError {
    #[error("reading Secret {namespace}/{name}: {source}")]
    Read {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("creating Secret {namespace}/{name}: {source}")]
    Create {
        namespace: String,
        name: String,
        source: kube::Error,
    },
    #[error("Secret {namespace}/{name}: missing key {key:?}")]
    MissingKey {
        namespace: String,
        name: String,
        key: &'static str,
    },
    #[error("Secret {namespace}/{name}: key {key:?} is not UTF-8 PEM")]
    NotPem {
        namespace: String,
        name: String,
        key: String,
    },
    #[error("CA directory {path}: {source}")]
    Io {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("generating the mesh root: {0}")]
    Generate(String),
}

/// Where the shared CA lives.
#[derive(Clone)]
pub struct CaSecrets {
    api: Api<Secret>,
    namespace: String,
}

impl CaSecrets {
    pub fn new(client: Client, namespace: &str) -> Self {
        CaSecrets {
            api: Api::namespaced(client, namespace),
            namespace: namespace.to_string(),
        }
    }

    /// Fills `dir` with the shared CA material, creating the shared root when there is
    /// none yet. Afterwards [`Ca::open`] on `dir` loads what every replica loads.
    pub async fn materialize(&self, dir: &Path, trust_domain: &str) -> Result<(), CaSecretError> {
        if self.sync(dir).await? {
            return Ok(());
        }
        // No CA yet: make one and try to be the replica that publishes it.
        let scratch = dir.join(".generate");
        let _ = std::fs::remove_dir_all(&scratch);
        Ca::open(&scratch, CaConfig::new(trust_domain))
            .map_err(|e| CaSecretError::Generate(e.to_string()))?;
        let read = |f: &str| -> Result<ByteString, CaSecretError> {
            std::fs::read(scratch.join(f))
                .map(ByteString)
                .map_err(|source| CaSecretError::Io {
                    path: scratch.join(f),
                    source,
                })
        };
        let secret = Secret {
            metadata: ObjectMeta {
                name: Some(SELF_SIGNED_SECRET.into()),
                namespace: Some(self.namespace.clone()),
                labels: Some(BTreeMap::from([(
                    "app.kubernetes.io/managed-by".to_string(),
                    "meshwork-controlplane".to_string(),
                )])),
                ..Default::default()
            },
            type_: Some("istio.io/ca-root".into()),
            data: Some(BTreeMap::from([
                (PLUGIN_CERT_FILE.to_string(), read(ROOT_CERT_FILE)?),
                (KEY_FILE.to_string(), read(KEY_FILE)?),
            ])),
            ..Default::default()
        };
        let _ = std::fs::remove_dir_all(&scratch);
        match self.api.create(&PostParams::default(), &secret).await {
            Ok(_) => {
                tracing::info!(secret = %format!("{}/{SELF_SIGNED_SECRET}", self.namespace), "created the shared mesh root")
            }
            Err(kube::Error::Api(e)) if e.code == 409 => {
                tracing::info!(secret = %format!("{}/{SELF_SIGNED_SECRET}", self.namespace), "another replica created the mesh root first: using it")
            }
            Err(source) => {
                return Err(CaSecretError::Create {
                    namespace: self.namespace.clone(),
                    name: SELF_SIGNED_SECRET.into(),
                    source,
                })
            }
        }
        // Whoever won, the Secret now holds the root every replica uses.
        if self.sync(dir).await? {
            Ok(())
        } else {
            Err(CaSecretError::MissingKey {
                namespace: self.namespace.clone(),
                name: SELF_SIGNED_SECRET.into(),
                key: PLUGIN_CERT_FILE,
            })
        }
    }

    /// Copies the current Secret (plug-in first) into `dir`; `false` when neither exists.
    /// Files are rewritten only when they differ, so the CA's directory follower sees a
    /// change only when the Secret changed.
    pub async fn sync(&self, dir: &Path) -> Result<bool, CaSecretError> {
        if let Some(s) = self.get(PLUGIN_SECRET).await? {
            let files = [
                (PLUGIN_CERT_FILE, PUBLIC_MODE, true),
                (KEY_FILE, SECRET_MODE, true),
                (PLUGIN_ROOTS_FILE, PUBLIC_MODE, true),
                (PLUGIN_CHAIN_FILE, PUBLIC_MODE, false),
            ];
            self.write(dir, PLUGIN_SECRET, &s, &files)?;
            remove_if_present(dir, ROOT_CERT_FILE)?;
            return Ok(true);
        }
        if let Some(s) = self.get(SELF_SIGNED_SECRET).await? {
            // Stored under Istio's key names; laid out as the self-signed directory.
            let cert = self.key(SELF_SIGNED_SECRET, &s, PLUGIN_CERT_FILE)?;
            let key = self.key(SELF_SIGNED_SECRET, &s, KEY_FILE)?;
            std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
            for f in [PLUGIN_CERT_FILE, PLUGIN_ROOTS_FILE, PLUGIN_CHAIN_FILE] {
                remove_if_present(dir, f)?;
            }
            write_if_changed(&dir.join(KEY_FILE), &key, SECRET_MODE)?;
            write_if_changed(&dir.join(ROOT_CERT_FILE), &cert, PUBLIC_MODE)?;
            return Ok(true);
        }
        Ok(false)
    }

    /// Keeps `dir` in step with the Secrets (a plug-in rotation is a `cacerts` update);
    /// the CA's directory follower loads the new material. Errors are logged and retried.
    pub async fn follow(self, dir: PathBuf, every: Duration) {
        loop {
            tokio::time::sleep(every).await;
            if let Err(e) = self.sync(&dir).await {
                tracing::warn!(error = %e, "cannot refresh the CA from its Secret; keeping the current CA");
            }
        }
    }

    async fn get(&self, name: &str) -> Result<Option<Secret>, CaSecretError> {
        self.api
            .get_opt(name)
            .await
            .map_err(|source| CaSecretError::Read {
                namespace: self.namespace.clone(),
                name: name.into(),
                source,
            })
    }

    fn key(&self, name: &str, s: &Secret, key: &'static str) -> Result<Vec<u8>, CaSecretError> {
        let value = s
            .data
            .as_ref()
            .and_then(|d| d.get(key))
            .map(|b| b.0.clone())
            .ok_or_else(|| CaSecretError::MissingKey {
                namespace: self.namespace.clone(),
                name: name.into(),
                key,
            })?;
        if std::str::from_utf8(&value).is_err() {
            return Err(CaSecretError::NotPem {
                namespace: self.namespace.clone(),
                name: name.into(),
                key: key.into(),
            });
        }
        Ok(value)
    }

    fn write(
        &self,
        dir: &Path,
        name: &str,
        s: &Secret,
        files: &[(&'static str, u32, bool)],
    ) -> Result<(), CaSecretError> {
        std::fs::create_dir_all(dir).map_err(|source| io(dir, source))?;
        for (file, mode, required) in files {
            match self.key(name, s, file) {
                Ok(v) => write_if_changed(&dir.join(file), &v, *mode)?,
                Err(CaSecretError::MissingKey { .. }) if !required => remove_if_present(dir, file)?,
                Err(e) => return Err(e),
            }
        }
        Ok(())
    }
}

fn write_if_changed(path: &Path, contents: &[u8], mode: u32) -> Result<(), CaSecretError> {
    if std::fs::read(path).is_ok_and(|old| old == contents) {
        return Ok(());
    }
    write_atomic(path, contents, mode).map_err(|source| io(path, source))
}

fn remove_if_present(dir: &Path, file: &str) -> Result<(), CaSecretError> {
    match std::fs::remove_file(dir.join(file)) {
        Err(e) if e.kind() != std::io::ErrorKind::NotFound => Err(io(&dir.join(file), e)),
        _ => Ok(()),
    }
}

fn io(path: &Path, source: std::io::Error) -> CaSecretError {
    CaSecretError::Io {
        path: path.to_path_buf(),
        source,
    }
}

#[cfg(test)]
mod tests;

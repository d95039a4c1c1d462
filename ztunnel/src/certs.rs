//! Certificates of the local workloads' identities: fetched from the mesh CA, cached,
//! renewed at half-life, and turned into rustls configurations.
//!
//! Renewal swaps the certificate inside a resolver, so established TLS connections are
//! untouched and new handshakes present the new certificate. When the CA is unreachable
//! the current certificate keeps being served and the request is retried with backoff.
//! Where certificates come from ([`CertSigner`]: the mesh CA or a directory) and the
//! renewal timing are shared with the waypoint (`meshwork_model::certs`).

use meshwork_runtime::sync::LockExt;
use std::collections::{BTreeSet, HashMap};
use std::sync::{Arc, Mutex};
use std::time::{Duration, SystemTime};

use meshwork_identity::tls::{
    client_config_with_resolver, server_config, CertStore, RotatingCert, TlsConfigError,
};
use meshwork_identity::{SpiffeId, TrustBundle, WorkloadCertificate};
pub use meshwork_model::ca_client::{CaClient, CaClientError};
use meshwork_model::certs::{self, Backoff, Renewal};
/// The signers both proxies share.
pub use meshwork_model::certs::{CertSigner, DirSigner, SignError, SignFuture};
use rustls::{ClientConfig, ServerConfig};
use tokio::sync::watch;
use tokio::task::JoinHandle;

#[derive(Debug, thiserror::Error)]
pub enum CertError {
    #[error("no certificate yet for {identity}")]
    NotReady { identity: SpiffeId },
    #[error("TLS configuration for {identity}: {source}")]
    Tls {
        identity: SpiffeId,
        source: Box<TlsConfigError>,
    },
}

/// Backoff bounds for CA retries.
const MIN_BACKOFF: Duration = Duration::from_millis(200);
const MAX_BACKOFF: Duration = Duration::from_secs(30);

struct Entry {
    rotating: Arc<RotatingCert>,
    roots_pem: String,
}

#[derive(Default)]
struct Caches {
    client: HashMap<(SpiffeId, SpiffeId), Arc<ClientConfig>>,
    server: HashMap<SpiffeId, Arc<ServerConfig>>,
}

/// Holds and renews the certificates of this node's identities.
pub struct CertManager {
    signer: Arc<dyn CertSigner>,
    store: Arc<CertStore>,
    entries: Mutex<HashMap<SpiffeId, Entry>>,
    tasks: Mutex<HashMap<SpiffeId, JoinHandle<()>>>,
    wanted: Mutex<BTreeSet<SpiffeId>>,
    caches: Mutex<Caches>,
    changed: watch::Sender<u64>,
    /// The mesh CA's roots as last published by the control plane.
    mesh_roots: Mutex<String>,
}

/// A summary of one held certificate, for `/certs`.
#[derive(Debug, Clone, serde::Serialize)]
pub struct CertInfo {
    pub identity: String,
    pub serial: String,
    pub not_before: u64,
    pub not_after: u64,
    pub renew_at: u64,
    pub chain_pem: String,
}

fn unix(t: SystemTime) -> u64 {
    t.duration_since(SystemTime::UNIX_EPOCH)
        .map(|d| d.as_secs())
        .unwrap_or(0)
}

impl CertManager {
    pub fn new(signer: Arc<dyn CertSigner>) -> Arc<Self> {
        Arc::new(CertManager {
            signer,
            store: CertStore::new(),
            entries: Mutex::default(),
            tasks: Mutex::default(),
            wanted: Mutex::default(),
            caches: Mutex::default(),
            changed: watch::channel(0).0,
            mesh_roots: Mutex::default(),
        })
    }

    /// Starts fetching certificates for new identities and drops the ones not wanted.
    pub fn set_identities(self: &Arc<Self>, wanted: BTreeSet<SpiffeId>) {
        let mut tasks = self.tasks.lock_or_recover();
        tasks.retain(|id, task| {
            let keep = wanted.contains(id);
            if !keep {
                task.abort();
                self.store.remove(id);
                self.entries.lock_or_recover().remove(id);
                tracing::info!(identity = %id, "dropping certificate: no local workload uses it");
            }
            keep
        });
        for id in &wanted {
            if !tasks.contains_key(id) {
                let me = self.clone();
                let id2 = id.clone();
                tasks.insert(
                    id.clone(),
                    tokio::spawn(async move { me.maintain(id2).await }),
                );
            }
        }
        *self.wanted.lock_or_recover() = wanted;
        self.changed.send_modify(|v| *v += 1);
    }

    /// The control plane published the CA's roots (`pem`). When they change (a root
    /// rotation), every certificate is fetched again now rather than at its half-life, so
    /// this node trusts the new roots before any peer presents a certificate under them.
    /// The current certificates keep serving until their replacements arrive.
    pub fn set_mesh_roots(self: &Arc<Self>, pem: &str) {
        {
            let mut last = self.mesh_roots.lock_or_recover();
            if pem.is_empty() || *last == pem {
                return;
            }
            let first = last.is_empty();
            *last = pem.to_string();
            if first {
                // The first roots seen: the certificates being fetched carry them.
                return;
            }
        }
        let mut tasks = self.tasks.lock_or_recover();
        tracing::info!(
            identities = tasks.len(),
            "mesh roots changed: renewing every certificate now"
        );
        for (id, task) in tasks.iter_mut() {
            task.abort();
            let me = self.clone();
            let id2 = id.clone();
            *task = tokio::spawn(async move { me.maintain(id2).await });
        }
    }

    /// Fetch, install, sleep until half-life, repeat; retries with backoff on failure
    /// ([`certs::keep_renewed`], the loop the waypoint runs too).
    async fn maintain(self: Arc<Self>, id: SpiffeId) {
        let timing = Renewal {
            floor: Duration::from_millis(100),
            backoff: Backoff::new(MIN_BACKOFF, MAX_BACKOFF),
        };
        let me = self.clone();
        certs::keep_renewed(&*self.signer, &id, None, timing, None, move |c| {
            me.install(c)
        })
        .await;
    }

    /// Installs `cert` (also used directly by tests and static setups).
    pub fn install(&self, cert: WorkloadCertificate) {
        let id = cert.identity().clone();
        let roots_pem = cert.roots_pem();
        self.store.insert(cert.clone());
        let mut entries = self.entries.lock_or_recover();
        match entries.get_mut(&id) {
            Some(e) => {
                e.rotating.set(cert);
                if e.roots_pem != roots_pem {
                    e.roots_pem = roots_pem;
                    let mut c = self.caches.lock_or_recover();
                    c.client.retain(|(s, d), _| s != &id && d != &id);
                    c.server.remove(&id);
                }
            }
            None => {
                entries.insert(
                    id,
                    Entry {
                        rotating: RotatingCert::new(cert),
                        roots_pem,
                    },
                );
            }
        }
        drop(entries);
        self.changed.send_modify(|v| *v += 1);
    }

    pub fn current(&self, id: &SpiffeId) -> Option<WorkloadCertificate> {
        self.store.get(id)
    }

    /// The identities certificates are kept for.
    #[cfg(test)]
    pub(crate) fn wanted(&self) -> BTreeSet<SpiffeId> {
        self.wanted.lock_or_recover().clone()
    }

    /// True once every wanted identity has a certificate.
    pub fn ready(&self) -> bool {
        let wanted = self.wanted.lock_or_recover();
        wanted.iter().all(|id| self.store.get(id).is_some())
    }

    /// Wakes on every certificate or identity change.
    pub fn subscribe(&self) -> watch::Receiver<u64> {
        self.changed.subscribe()
    }

    /// Client TLS presenting `src`, accepting only `dst`.
    pub fn client_config(
        &self,
        src: &SpiffeId,
        dst: &SpiffeId,
    ) -> Result<Arc<ClientConfig>, CertError> {
        let key = (src.clone(), dst.clone());
        if let Some(c) = self.caches.lock_or_recover().client.get(&key) {
            return Ok(c.clone());
        }
        let entries = self.entries.lock_or_recover();
        let e = entries.get(src).ok_or_else(|| CertError::NotReady {
            identity: src.clone(),
        })?;
        let roots: TrustBundle = e.rotating.current().roots().clone();
        let cfg = client_config_with_resolver(e.rotating.clone(), &roots, [dst.clone()]).map_err(
            |source| CertError::Tls {
                identity: src.clone(),
                source: Box::new(source),
            },
        )?;
        drop(entries);
        self.caches
            .lock_or_recover()
            .client
            .insert(key, cfg.clone());
        Ok(cfg)
    }

    /// Server TLS presenting `id`.
    pub fn server_config(&self, id: &SpiffeId) -> Result<Arc<ServerConfig>, CertError> {
        if let Some(c) = self.caches.lock_or_recover().server.get(id) {
            return Ok(c.clone());
        }
        let cert = self.store.get(id).ok_or_else(|| CertError::NotReady {
            identity: id.clone(),
        })?;
        let cfg =
            server_config(cert.roots(), self.store.resolver_for(id.clone())).map_err(|source| {
                CertError::Tls {
                    identity: id.clone(),
                    source: Box::new(source),
                }
            })?;
        self.caches
            .lock_or_recover()
            .server
            .insert(id.clone(), cfg.clone());
        Ok(cfg)
    }

    pub fn dump(&self) -> Vec<CertInfo> {
        self.store
            .identities()
            .into_iter()
            .filter_map(|id| self.store.get(&id))
            .map(|c| CertInfo {
                identity: c.identity().to_string(),
                serial: c.serial().to_string(),
                not_before: unix(c.not_before()),
                not_after: unix(c.not_after()),
                renew_at: unix(c.renew_at()),
                chain_pem: c.chain_pem(),
            })
            .collect()
    }
}

impl Drop for CertManager {
    fn drop(&mut self) {
        for (_, t) in self.tasks.lock_or_recover().drain() {
            t.abort();
        }
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_identity::testing::TestCa;

    struct Flaky {
        ca: TestCa,
        fail_first: std::sync::atomic::AtomicUsize,
    }

    impl CertSigner for Flaky {
        fn sign<'a>(&'a self, identity: &'a SpiffeId) -> SignFuture<'a> {
            let fail = self
                .fail_first
                .fetch_update(
                    std::sync::atomic::Ordering::SeqCst,
                    std::sync::atomic::Ordering::SeqCst,
                    |n| n.checked_sub(1),
                )
                .is_ok();
            let cert = self.ca.issue(identity, Duration::from_secs(3600));
            Box::pin(async move {
                if fail {
                    Err(SignError::Other("CA unreachable".into()))
                } else {
                    Ok(cert)
                }
            })
        }
    }

    /// Counts signing requests.
    struct Counting(std::sync::atomic::AtomicUsize, TestCa);
    impl CertSigner for Counting {
        fn sign<'a>(&'a self, identity: &'a SpiffeId) -> SignFuture<'a> {
            self.0.fetch_add(1, std::sync::atomic::Ordering::SeqCst);
            Box::pin(async move { Ok(self.1.issue(identity, Duration::from_secs(3600))) })
        }
    }

    #[tokio::test(start_paused = true)]
    async fn new_mesh_roots_renew_every_certificate_at_once() {
        let signer = Arc::new(Counting(Default::default(), TestCa::new("cluster.local")));
        let m = CertManager::new(signer.clone());
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        m.set_identities([id.clone()].into());
        tokio::time::sleep(Duration::from_millis(10)).await;
        let count = || signer.0.load(std::sync::atomic::Ordering::SeqCst);
        assert_eq!(count(), 1);
        m.set_mesh_roots("ROOT-A");
        m.set_mesh_roots("ROOT-A");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(count(), 1, "the first roots and repeats fetch nothing");
        m.set_mesh_roots("ROOT-A\nROOT-B");
        tokio::time::sleep(Duration::from_millis(10)).await;
        assert_eq!(count(), 2, "a rotation renews at once, not at half-life");
        assert!(m.current(&id).is_some());
    }

    #[tokio::test(start_paused = true)]
    async fn retries_with_backoff_until_the_ca_answers() {
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let m = CertManager::new(Arc::new(Flaky {
            ca: TestCa::new("cluster.local"),
            fail_first: 3.into(),
        }));
        m.set_identities([id.clone()].into());
        assert!(!m.ready());
        let mut changes = m.subscribe();
        while m.current(&id).is_none() {
            changes.changed().await.unwrap();
        }
        assert!(m.ready());
        let other: SpiffeId = "spiffe://cluster.local/ns/a/sa/c".parse().unwrap();
        assert!(matches!(
            m.client_config(&other, &id),
            Err(CertError::NotReady { .. })
        ));
        m.client_config(&id, &other).unwrap();
        m.server_config(&id).unwrap();
        m.set_identities(Default::default());
        assert!(m.current(&id).is_none());
    }

    #[tokio::test(start_paused = true)]
    async fn an_unreadable_token_file_keeps_the_installed_certificate() {
        let ca = TestCa::new("cluster.local");
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let client = CaClient::new(
            "http://127.0.0.1:9",
            meshwork_model::token::TokenSource::File("/nonexistent/meshwork/token".into()),
            Duration::from_secs(3600),
            None,
        )
        .unwrap();
        let e = CertSigner::sign(&client, &id).await.unwrap_err();
        assert!(e.to_string().contains("/nonexistent/meshwork/token"), "{e}");
        let m = CertManager::new(Arc::new(client));
        let cert = ca.issue(&id, Duration::from_secs(3600));
        let serial = cert.serial().to_string();
        m.install(cert);
        m.set_identities([id.clone()].into());
        tokio::time::sleep(Duration::from_secs(60)).await;
        assert!(m.ready());
        assert_eq!(m.current(&id).unwrap().serial(), serial);
        m.server_config(&id).unwrap();
    }

    #[tokio::test]
    async fn dir_signer_loads_saved_certificates() {
        let ca = TestCa::new("cluster.local");
        let id: SpiffeId = "spiffe://cluster.local/ns/a/sa/b".parse().unwrap();
        let dir = std::env::temp_dir().join(format!("meshwork-dirsigner-{}", std::process::id()));
        let s = DirSigner { dir: dir.clone() };
        let e = s.sign(&id).await.unwrap_err();
        assert!(e.to_string().contains("ns/a/sa/b"), "{e}");
        ca.issue(&id, Duration::from_secs(60))
            .save(&s.path_for(&id))
            .unwrap();
        assert_eq!(s.sign(&id).await.unwrap().identity(), &id);
        let _ = std::fs::remove_dir_all(dir);
    }
}

//! The state shared by every listener of one ztunnel.

use meshwork_runtime::sync::{LockExt, RwLockExt};
use std::collections::{BTreeMap, BTreeSet};
use std::sync::{Arc, Mutex, OnceLock, RwLock};

use meshwork_hbone::{H2Settings, Pool, PoolStats};
use meshwork_identity::SpiffeId;
use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config::{resource, Workload};
use meshwork_model::{Kind, Snapshot};
use tokio::sync::watch;
use tokio_util::sync::CancellationToken;
use tokio_util::task::TaskTracker;

use crate::access_log::AccessLog;
use crate::args::Config;
use crate::certs::CertManager;
use crate::connections::Registry;
use crate::metrics::Metrics;
use crate::policy::Authorizer;
use crate::redirect::Redirector;
use crate::state::{RoundRobin, State};

/// The config as seen by this node, with compiled policies.
pub struct Current {
    pub state: State,
    /// Shared by successive configs while no policy or mesh setting changes.
    pub authz: Arc<Authorizer>,
}

/// What [`Proxy::apply`] keeps from the last applied snapshot, so that an update costs
/// work in proportion to what it changed rather than to the size of the model.
struct Applied {
    snapshot: Arc<Snapshot>,
    authz: Arc<Authorizer>,
    /// Key -> identity of each workload on this node (with a valid identity).
    local: BTreeMap<String, SpiffeId>,
    /// The identities last handed to the certificate manager.
    identities: BTreeSet<SpiffeId>,
}

/// What an update changed, as far as `apply` is concerned.
#[derive(Debug, Default, PartialEq, Eq)]
struct Delta {
    /// The mesh settings (trust domain, root namespace) changed: everything is redone.
    mesh: bool,
    /// An authorization policy changed: policies are compiled again.
    policies: bool,
    /// Something a verdict on an open inbound connection depends on changed: a local
    /// workload (they are the destinations), or anything that is not a workload
    /// (policies, services and their waypoints, mesh settings).
    recheck: bool,
    /// Keys of the workloads added, changed or removed.
    workloads: Vec<String>,
}

fn local_workload<'a>(
    r: Option<&'a Arc<meshwork_model::pb::config::Resource>>,
    node: &str,
) -> Option<&'a Workload> {
    match r?.kind.as_ref()? {
        resource::Kind::Workload(w) if w.node == node => Some(w),
        _ => None,
    }
}

impl Delta {
    fn between(older: &Snapshot, newer: &Snapshot, node: &str) -> Delta {
        let mut d = Delta::default();
        for c in newer.changes_since(older) {
            match c.kind() {
                Some(Kind::Workload) => {
                    if local_workload(c.old, node).is_some()
                        || local_workload(c.new, node).is_some()
                    {
                        d.recheck = true;
                    }
                    d.workloads.push(c.key.to_string());
                }
                Some(Kind::Mesh) => {
                    d.mesh = true;
                    d.policies = true;
                    d.recheck = true;
                }
                Some(Kind::Authorization) => {
                    d.policies = true;
                    d.recheck = true;
                }
                _ => d.recheck = true,
            }
        }
        d
    }
}

/// Key -> identity of every workload of `state`'s node.
fn local_identities(state: &State) -> BTreeMap<String, SpiffeId> {
    state
        .local_workloads()
        .filter_map(|w| {
            Some((
                Kind::Workload.key(&w.namespace, &w.name),
                local_identity(state, w)?,
            ))
        })
        .collect()
}

fn local_identity(state: &State, w: &Workload) -> Option<SpiffeId> {
    match state.identity(w) {
        Ok(id) => Some(id),
        Err(e) => {
            tracing::warn!(error = %e, "skipping workload without a valid identity");
            None
        }
    }
}

/// Changes the process log level (`/logging?level=`); provided by the binary.
pub type LogControl = meshwork_runtime::log::LevelControl;

pub struct Proxy {
    pub cfg: Config,
    current: RwLock<Arc<Current>>,
    pub certs: Arc<CertManager>,
    /// One HBONE pool per shard (`crate::shards`): a pooled connection is driven by the
    /// thread whose connections use it.
    pools: Vec<Pool>,
    pub h2: H2Settings,
    pub metrics: Arc<Metrics>,
    pub registry: Arc<Registry>,
    pub rr: RoundRobin,
    pub access: AccessLog,
    /// Every connection task; drain waits on it.
    pub tracker: TaskTracker,
    /// Stop accepting (drain started).
    pub stop_accept: CancellationToken,
    /// Close everything (drain deadline passed).
    pub force_close: CancellationToken,
    pub xds: ConfigHandle,
    pub log_control: Option<LogControl>,
    /// The node's eBPF redirection (`--redirect ebpf`), set once at start.
    pub redirect: OnceLock<Arc<Redirector>>,
    applied: watch::Sender<u64>,
    last: Mutex<Option<Applied>>,
}

impl Proxy {
    pub fn new(
        cfg: Config,
        xds: ConfigHandle,
        certs: Arc<CertManager>,
        pools: Vec<Pool>,
        log_control: Option<LogControl>,
    ) -> Self {
        let snap = xds.snapshot();
        let current = Arc::new(Current {
            state: State::new(snap.clone(), &cfg.node, cfg.hbone_port),
            authz: Arc::new(Authorizer::new(&snap)),
        });
        Proxy {
            access: AccessLog {
                enabled: !cfg.no_access_log,
            },
            current: RwLock::new(current),
            certs,
            pools,
            h2: H2Settings::default(),
            metrics: Arc::new(Metrics::new()),
            registry: Arc::default(),
            rr: RoundRobin::default(),
            tracker: TaskTracker::new(),
            stop_accept: CancellationToken::new(),
            force_close: CancellationToken::new(),
            xds,
            log_control,
            redirect: OnceLock::new(),
            applied: watch::channel(0).0,
            last: Mutex::new(None),
            cfg,
        }
    }

    /// The HBONE pool of the calling shard (the first one off the data-path threads).
    pub fn pool(&self) -> &Pool {
        let i = crate::shards::current().unwrap_or(0);
        &self.pools[i % self.pools.len()]
    }

    /// Every shard's pool counters, summed.
    pub fn pool_stats(&self) -> PoolStats {
        let mut total = PoolStats {
            connections_opened: 0,
            connections_open: 0,
            streams_opened: 0,
        };
        for p in &self.pools {
            let s = p.stats();
            total.connections_opened += s.connections_opened;
            total.connections_open += s.connections_open;
            total.streams_opened += s.streams_opened;
        }
        total
    }

    pub fn current(&self) -> Arc<Current> {
        self.current.read_or_recover().clone()
    }

    /// Number of snapshots applied; wakes watchers on each.
    pub fn applied(&self) -> watch::Receiver<u64> {
        self.applied.subscribe()
    }

    /// Adopts a new snapshot: swaps lookups and policies, updates the wanted
    /// certificates, evicts metrics of deleted workloads, and closes open connections the
    /// new policies deny.
    pub fn apply(&self, snap: Arc<Snapshot>) {
        // One apply at a time: each works from what the previous one left.
        let mut last = self.last.lock_or_recover();
        let state = State::new(snap.clone(), &self.cfg.node, self.cfg.hbone_port);
        // None on the first apply: everything is computed from scratch.
        let delta = last
            .as_ref()
            .map(|l| Delta::between(&l.snapshot, &snap, &self.cfg.node));
        let authz = match (&delta, last.as_ref()) {
            (Some(d), Some(l)) if !d.policies => l.authz.clone(),
            _ => Arc::new(Authorizer::new(&snap)),
        };
        let current = Arc::new(Current {
            state,
            authz: authz.clone(),
        });
        *self.current.write_or_recover() = current.clone();

        let (local, before) = match (last.take(), &delta) {
            (Some(mut l), Some(d)) if !d.mesh => {
                for key in &d.workloads {
                    l.local.remove(key);
                    if let Some(w) = local_workload(snap.get(key), &self.cfg.node) {
                        if let Some(id) = local_identity(&current.state, w) {
                            l.local.insert(key.clone(), id);
                        }
                    }
                }
                (l.local, Some(l.identities))
            }
            (l, _) => (local_identities(&current.state), l.map(|l| l.identities)),
        };
        let identities: BTreeSet<SpiffeId> = local.values().cloned().collect();
        if before.as_ref() != Some(&identities) {
            self.certs.set_identities(identities.clone());
        }
        if let Some(mesh) = snap.mesh() {
            self.certs.set_mesh_roots(&mesh.ca_roots_pem);
        }
        // O(series): the series kept are those of local traffic, not of the whole model.
        self.metrics
            .evict(|r| current.state.workload_by_ref(r).is_some());
        let closed = if delta.as_ref().is_none_or(|d| d.recheck) {
            self.registry.recheck(|attrs| {
                let v = current.authz.check(&current.state, attrs);
                (!v.allowed).then_some(v.reason)
            })
        } else {
            0
        };
        *last = Some(Applied {
            snapshot: snap.clone(),
            authz,
            local,
            identities,
        });
        drop(last);
        tracing::info!(
            version = snap.version,
            resources = snap.len(),
            closed,
            "config applied"
        );
        self.applied.send_modify(|v| *v += 1);
    }

    /// Ready once the config is synced and every local identity has a certificate.
    pub fn readiness(&self) -> Result<(), String> {
        if !self.xds.status().synced {
            return Err("config not synced".into());
        }
        if *self.applied.borrow() == 0 {
            return Err("config not applied".into());
        }
        if !self.certs.ready() {
            return Err("certificates not loaded".into());
        }
        if self.redirect.get().is_some_and(|r| !r.synced()) {
            return Err("redirection not synced".into());
        }
        Ok(())
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::certs::{CertSigner, SignFuture};
    use crate::policy::ConnAttrs;
    use crate::state::tests::{snapshot, workload};
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::{
        Action, Authorization, MeshSettings, PolicyScope, Resource, Rule, Source,
    };

    /// Never answers: the certificate manager's wanted set is all these tests look at.
    struct Silent;
    impl CertSigner for Silent {
        fn sign<'a>(&'a self, _: &'a SpiffeId) -> SignFuture<'a> {
            Box::pin(std::future::pending())
        }
    }

    fn proxy(initial: &Arc<Snapshot>) -> Proxy {
        Proxy::new(
            Config::for_node("n1"),
            ConfigHandle::fixed((**initial).clone()),
            CertManager::new(Arc::new(Silent)),
            vec![Pool::new(Default::default())],
            None,
        )
    }

    fn res(kind: resource::Kind) -> Resource {
        let key = match &kind {
            resource::Kind::Workload(w) => Kind::Workload.key(&w.namespace, &w.name),
            resource::Kind::Authorization(a) => Kind::Authorization.key(&a.namespace, &a.name),
            resource::Kind::Mesh(_) => Kind::Mesh.prefix().to_string(),
            _ => unreachable!(),
        };
        make_resource(key, kind)
    }

    fn next(s: &Arc<Snapshot>, upserts: Vec<resource::Kind>, removed: &[&str]) -> Arc<Snapshot> {
        let removed: Vec<String> = removed.iter().map(|r| r.to_string()).collect();
        Arc::new(s.apply(
            s.version + 1,
            upserts.into_iter().map(res).collect(),
            &removed,
        ))
    }

    fn id(s: &str) -> SpiffeId {
        s.parse().unwrap()
    }

    fn sa(mut w: Workload, sa: &str) -> Workload {
        w.service_account = sa.into();
        w
    }

    fn deny_all_from_evil() -> Authorization {
        Authorization {
            name: "deny-evil".into(),
            namespace: "prod".into(),
            scope: PolicyScope::Namespace as i32,
            action: Action::Deny as i32,
            rules: vec![Rule {
                from: vec![Source {
                    principals: vec!["cluster.local/ns/evil/sa/*".into()],
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        }
    }

    #[test]
    fn delta_tells_what_a_verdict_may_depend_on() {
        let s0 = snapshot(
            vec![
                workload("prod", "local", "n1", "10.0.0.1"),
                workload("prod", "remote", "n2", "10.0.0.2"),
            ],
            vec![],
        );
        let d = |s: &Arc<Snapshot>| Delta::between(&s0, s, "n1");
        assert_eq!(d(&s0), Delta::default());
        let remote = next(
            &s0,
            vec![resource::Kind::Workload(sa(
                workload("prod", "remote", "n2", "10.0.0.2"),
                "x",
            ))],
            &[],
        );
        assert_eq!(
            d(&remote),
            Delta {
                workloads: vec!["workload/prod/remote".into()],
                ..Default::default()
            },
            "a remote pod is no destination of this node's connections"
        );
        let gone = next(&s0, vec![], &["workload/prod/local"]);
        assert!(d(&gone).recheck);
        // A pod moving onto this node.
        let arrived = next(
            &s0,
            vec![resource::Kind::Workload(workload(
                "prod", "remote", "n1", "10.0.0.2",
            ))],
            &[],
        );
        assert!(d(&arrived).recheck);
        let policy = next(
            &s0,
            vec![resource::Kind::Authorization(deny_all_from_evil())],
            &[],
        );
        let dp = d(&policy);
        assert!(dp.policies && dp.recheck && !dp.mesh);
        let mesh = next(
            &s0,
            vec![resource::Kind::Mesh(MeshSettings::default())],
            &[],
        );
        let dm = d(&mesh);
        assert!(dm.mesh && dm.policies && dm.recheck);
    }

    #[tokio::test(start_paused = true)]
    async fn apply_follows_local_identities_from_the_change_alone() {
        let mut pods: Vec<Workload> = (0..500)
            .map(|i| {
                workload(
                    "prod",
                    &format!("r{i}"),
                    "n2",
                    &format!("10.1.{}.{}", i / 250, i % 250),
                )
            })
            .collect();
        pods.push(sa(workload("prod", "a", "n1", "10.0.0.1"), "sa-a"));
        let s0 = snapshot(pods, vec![]);
        let p = proxy(&s0);
        let changes = p.certs.subscribe();
        p.apply(s0.clone());
        assert_eq!(
            p.certs.wanted(),
            [id("spiffe://cluster.local/ns/prod/sa/sa-a")].into()
        );
        let authz = p.current().authz.clone();
        let seen = *changes.borrow();

        // Remote pods come and go: no identity or policy work.
        let s1 = next(
            &s0,
            vec![resource::Kind::Workload(sa(
                workload("prod", "r7", "n2", "10.1.0.7"),
                "other",
            ))],
            &["workload/prod/r8"],
        );
        p.apply(s1.clone());
        assert_eq!(
            *changes.borrow(),
            seen,
            "the wanted identities were not touched"
        );
        assert!(
            Arc::ptr_eq(&authz, &p.current().authz),
            "policies not compiled again"
        );
        assert!(Arc::ptr_eq(&p.current().state.snapshot, &s1));

        // A local pod arrives, another identity.
        let s2 = next(
            &s1,
            vec![resource::Kind::Workload(sa(
                workload("prod", "b", "n1", "10.0.0.2"),
                "sa-b",
            ))],
            &[],
        );
        p.apply(s2.clone());
        assert_eq!(
            p.certs.wanted(),
            [
                id("spiffe://cluster.local/ns/prod/sa/sa-a"),
                id("spiffe://cluster.local/ns/prod/sa/sa-b")
            ]
            .into()
        );
        // A local pod changes its service account; the other leaves.
        let s3 = next(
            &s2,
            vec![resource::Kind::Workload(sa(
                workload("prod", "a", "n1", "10.0.0.1"),
                "sa-c",
            ))],
            &["workload/prod/b"],
        );
        p.apply(s3.clone());
        assert_eq!(
            p.certs.wanted(),
            [id("spiffe://cluster.local/ns/prod/sa/sa-c")].into()
        );
        // A pod moving away from this node.
        let s4 = next(
            &s3,
            vec![resource::Kind::Workload(sa(
                workload("prod", "a", "n2", "10.0.0.1"),
                "sa-c",
            ))],
            &[],
        );
        p.apply(s4.clone());
        assert!(p.certs.wanted().is_empty());
        let s5 = next(
            &s4,
            vec![resource::Kind::Workload(sa(
                workload("prod", "a", "n1", "10.0.0.1"),
                "sa-c",
            ))],
            &[],
        );
        p.apply(s5.clone());
        // A new trust domain changes every identity.
        let s6 = next(
            &s5,
            vec![resource::Kind::Mesh(MeshSettings {
                trust_domain: "example.org".into(),
                ..Default::default()
            })],
            &[],
        );
        p.apply(s6.clone());
        assert_eq!(
            p.certs.wanted(),
            [id("spiffe://example.org/ns/prod/sa/sa-c")].into()
        );
        assert!(!Arc::ptr_eq(&authz, &p.current().authz));
        // The same as computing everything from the snapshot.
        assert_eq!(p.certs.wanted(), p.current().state.local_identities());
    }

    #[tokio::test(start_paused = true)]
    async fn apply_still_closes_connections_a_change_denies() {
        let s0 = snapshot(
            vec![
                workload("prod", "server", "n1", "10.0.0.2"),
                workload("prod", "remote", "n2", "10.0.0.3"),
            ],
            vec![],
        );
        let p = proxy(&s0);
        p.apply(s0.clone());
        let conn = |src: &str| {
            p.registry.register(
                ConnAttrs {
                    src_identity: Some(id(src)),
                    src_addr: "10.0.0.1:40000".parse().unwrap(),
                    remote_ip: None,
                    dst: "10.0.0.2:8080".parse().unwrap(),
                    dst_workload: "prod/server".into(),
                },
                &p.force_close,
            )
        };
        let evil = conn("spiffe://cluster.local/ns/evil/sa/x");
        let good = conn("spiffe://cluster.local/ns/prod/sa/ok");
        let s1 = next(
            &s0,
            vec![resource::Kind::Workload(sa(
                workload("prod", "remote", "n2", "10.0.0.3"),
                "x",
            ))],
            &[],
        );
        p.apply(s1.clone());
        assert!(!evil.cancel.is_cancelled());
        let s2 = next(
            &s1,
            vec![resource::Kind::Authorization(deny_all_from_evil())],
            &[],
        );
        p.apply(s2.clone());
        assert!(evil.cancel.is_cancelled(), "the new policy denies it");
        assert!(!good.cancel.is_cancelled());
        let s3 = next(&s2, vec![], &["workload/prod/server"]);
        p.apply(s3);
        assert!(good.cancel.is_cancelled(), "its destination is gone");
    }
}

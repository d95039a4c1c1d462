//! The watchers: one kube-rs watcher (through a reflector, whose cache other parts of the
//! control plane may read) per watched kind, merged into batches of [`FileEvent`]s.
//!
//! Like [`crate::source::dir::watch`], the first batch is the complete initial state: it
//! is sent only once every kind has finished its first list, so the engine never
//! publishes a half-loaded model. Later batches carry whatever the watchers delivered
//! together. Watch errors (API server restarts, `410 Gone`) are retried with kube's
//! default backoff; the relist that follows is reconciled by [`SourceIndex`].

use std::collections::BTreeMap;

use ::kube::api::Api;
use ::kube::core::{ApiResource, DynamicObject};
use ::kube::runtime::reflector::{self, store::Writer, Store};
use ::kube::runtime::{watcher, WatchStreamExt};
use ::kube::Client;
use futures::stream::{self, BoxStream, StreamExt};
use tokio::sync::mpsc;
use tracing::{debug, info, warn};

use super::error::KubeSourceError;
use super::index::SourceIndex;
use super::resources::{Scope, WatchedKind, WATCHED};
use crate::source::dir::FileEvent;

/// Where to watch.
#[derive(Debug, Clone)]
pub struct KubeSourceOptions {
    /// Mesh root namespace: ConfigMaps are watched here only (default `istio-system`).
    pub root_namespace: String,
}

impl Default for KubeSourceOptions {
    fn default() -> Self {
        KubeSourceOptions {
            root_namespace: "istio-system".into(),
        }
    }
}

/// A kind resolved to the version the API server serves.
#[derive(Debug, Clone)]
pub struct Resolved {
    pub watched: &'static WatchedKind,
    pub resource: ApiResource,
}

/// Picks, for every watched kind, the first candidate version the API server serves.
/// Kinds whose group is not served are left out (and logged).
pub async fn discover(client: &Client) -> Result<Vec<Resolved>, KubeSourceError> {
    let mut served: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    let mut out = Vec::new();
    for w in WATCHED {
        if w.group.is_empty() {
            out.push(Resolved {
                watched: w,
                resource: w.preferred(),
            });
            continue;
        }
        let mut found = None;
        for v in w.versions {
            let gv = format!("{}/{}", w.group, v);
            if !served.contains_key(&gv) {
                let plurals = match client.list_api_group_resources(&gv).await {
                    Ok(list) => Some(list.resources.into_iter().map(|r| r.name).collect()),
                    Err(::kube::Error::Api(s)) if s.code == 404 => None,
                    Err(source) => {
                        return Err(KubeSourceError::Discovery { group: gv, source });
                    }
                };
                served.insert(gv.clone(), plurals);
            }
            if served[&gv]
                .as_ref()
                .is_some_and(|p| p.iter().any(|n| n == w.plural))
            {
                found = Some(w.api_resource(v));
                break;
            }
        }
        match found {
            Some(resource) => {
                debug!(kind = w.kind, api_version = %resource.api_version, "watching");
                out.push(Resolved {
                    watched: w,
                    resource,
                });
            }
            None => warn!(
                kind = w.kind,
                group = w.group,
                versions = ?w.versions,
                "API group/version not served (CRDs not installed?); not watching this kind"
            ),
        }
    }
    Ok(out)
}

/// Reflector caches of the watched kinds, by kind.
#[derive(Clone, Default)]
pub struct KubeStores {
    stores: BTreeMap<String, Store<DynamicObject>>,
}

impl KubeStores {
    /// The cache of `kind` (e.g. `"Pod"`), when that kind is watched.
    pub fn get(&self, kind: &str) -> Option<&Store<DynamicObject>> {
        self.stores.get(kind)
    }
}

type Item = (usize, Result<watcher::Event<DynamicObject>, watcher::Error>);

/// Starts the watchers. Returns the batches (first one complete, see the module doc) and
/// the reflector caches. The task ends when the receiver is dropped.
pub fn watch(
    client: Client,
    kinds: Vec<Resolved>,
    opts: &KubeSourceOptions,
) -> (mpsc::Receiver<Vec<FileEvent>>, KubeStores) {
    let mut streams: Vec<BoxStream<'static, Item>> = Vec::new();
    let mut stores = KubeStores::default();
    for (i, k) in kinds.iter().enumerate() {
        let ar = &k.resource;
        let api: Api<DynamicObject> = match k.watched.scope {
            Scope::Cluster | Scope::AllNamespaces => Api::all_with(client.clone(), ar),
            Scope::RootNamespace => Api::namespaced_with(client.clone(), &opts.root_namespace, ar),
        };
        let writer = Writer::new(ar.clone());
        stores.stores.insert(ar.kind.clone(), writer.as_reader());
        let events = watcher(api, watcher::Config::default()).default_backoff();
        streams.push(
            reflector::reflector(writer, events)
                .map(move |r| (i, r))
                .boxed(),
        );
    }
    let index = SourceIndex::new(kinds.into_iter().map(|k| k.resource));
    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(pump(stream::select_all(streams), index, tx));
    (rx, stores)
}

/// Feeds watch events through `index` and sends the batches; public for tests, which
/// drive it with synthetic streams.
pub async fn pump<S>(events: S, mut index: SourceIndex, tx: mpsc::Sender<Vec<FileEvent>>)
where
    S: futures::Stream<Item = Item> + Send + Unpin,
{
    let mut chunks = events.ready_chunks(512);
    let mut pending: Vec<FileEvent> = Vec::new();
    let mut initial_sent = false;
    while let Some(chunk) = chunks.next().await {
        for (i, res) in chunk {
            match res {
                Ok(ev) => pending.extend(index.handle(i, ev)),
                Err(e) => warn!(
                    kind = %index.kinds()[i].resource().kind,
                    error = %e,
                    "watch failed; retrying with backoff (a relist follows)"
                ),
            }
        }
        if !initial_sent {
            if !index.is_synced() {
                continue;
            }
            initial_sent = true;
            info!(objects = index.len(), "Kubernetes initial list complete");
        } else if pending.is_empty() {
            continue;
        }
        if tx.send(std::mem::take(&mut pending)).await.is_err() {
            return;
        }
    }
}

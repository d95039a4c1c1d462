//! The watchers: one kube-rs watcher task per watched kind, started and stopped as CRDs
//! come and go ([`super::discovery`]), merged into batches of [`FileEvent`]s. No reflector
//! cache: each object is pruned ([`super::prune`]) as it arrives, and the validated store
//! keeps the only copy.
//!
//! Like [`crate::source::dir::watch`], the first batch is the complete initial state: it
//! is sent only once the CRDs are listed and every watched kind has finished its first
//! list, so the engine never publishes a half-loaded model. A kind the API server refuses
//! (`403`, `404`…) counts as absent: it is reported ([`SourceHealth`]) and does not hold
//! the rest back; its watcher keeps retrying, and its objects arrive once it succeeds.
//! If the CRDs themselves cannot be watched, API discovery is polled instead (the first
//! batch then waits for its first answer). Later batches carry whatever the watchers
//! delivered together. Watch errors (API server
//! restarts, `410 Gone`) are retried with kube's default backoff; the relist that follows
//! is reconciled by [`SourceIndex`].

use meshwork_runtime::sync::RwLockExt;
use std::collections::BTreeMap;
use std::sync::{Arc, RwLock};

use ::kube::api::Api;
use ::kube::core::{ApiResource, DynamicObject};
use ::kube::runtime::{watcher, WatchStreamExt};
use ::kube::Client;
use futures::stream::StreamExt;
use tokio::sync::mpsc;
use tokio::task::JoinHandle;
use tracing::{info, warn};

use super::discovery::{crd_resource, discover, Crds, ServedResource};
use super::health::{self, SourceHealth};
use super::index::{KindIndex, SourceIndex};
use super::resources::{Scope, WATCHED};
use crate::source::FileEvent;

/// Where to watch.
#[derive(Debug, Clone)]
pub struct KubeSourceOptions {
    /// Mesh root namespace: ConfigMaps are watched here only (default `istio-system`).
    pub root_namespace: String,
    /// Also watch what the canary controller reads: Deployments, and Flagger's `Canary`
    /// and `MetricTemplate` while their CRDs are installed (default off).
    pub canary: bool,
}

impl Default for KubeSourceOptions {
    fn default() -> Self {
        KubeSourceOptions {
            root_namespace: "istio-system".into(),
            canary: false,
        }
    }
}

/// The API resource (version) each kind is watched at now, by kind; shared with the
/// status writers.
pub type Served = Arc<RwLock<BTreeMap<String, ApiResource>>>;

/// What the running source shares: its reports and the versions it watches.
#[derive(Clone, Default)]
pub struct SourceHandle {
    pub health: SourceHealth,
    pub served: Served,
}

type WatchResult = Result<watcher::Event<DynamicObject>, watcher::Error>;

/// What the watcher tasks send the pump.
enum Input {
    /// An event of the kind at `slot` (position in [`WATCHED`]) from the watcher started
    /// as generation `generation` of that slot (older generations are stale).
    Kind {
        slot: usize,
        generation: u64,
        result: WatchResult,
    },
    Crd(WatchResult),
    /// API discovery's answer while the CRDs cannot be watched.
    Discovered(Vec<ServedResource>),
}

/// Starts watching. Returns the batches (first one complete, see the module doc) and the
/// shared handle. The task ends when the receiver is dropped.
pub fn watch(
    client: Client,
    opts: &KubeSourceOptions,
) -> (mpsc::Receiver<Vec<FileEvent>>, SourceHandle) {
    let handle = SourceHandle::default();
    let (tx, rx) = mpsc::channel(16);
    let mut pump = Pump::new(client, opts.root_namespace.clone(), handle.clone());
    pump.canary = opts.canary;
    tokio::spawn(pump.run(tx));
    (rx, handle)
}

fn spawn_watcher<F>(api: Api<DynamicObject>, tx: mpsc::Sender<Input>, wrap: F) -> JoinHandle<()>
where
    F: Fn(WatchResult) -> Input + Send + 'static,
{
    tokio::spawn(async move {
        let mut events = watcher(api, watcher::Config::default())
            .default_backoff()
            .boxed();
        while let Some(r) = events.next().await {
            if tx.send(wrap(r)).await.is_err() {
                return;
            }
        }
    })
}

/// Polls API discovery every [`super::discovery::POLL`] (the CRDs cannot be watched).
fn spawn_poll(client: Client, tx: mpsc::Sender<Input>) -> JoinHandle<()> {
    tokio::spawn(async move {
        loop {
            match discover(&client).await {
                Ok(found) => {
                    if tx.send(Input::Discovered(found)).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "API discovery failed; retrying"),
            }
            tokio::time::sleep(super::discovery::POLL).await;
        }
    })
}

struct Pump {
    client: Client,
    root_namespace: String,
    handle: SourceHandle,
    index: SourceIndex,
    crds: Crds,
    /// Per slot: the running watcher and its generation.
    tasks: Vec<Option<(JoinHandle<()>, u64)>>,
    generation: u64,
    /// Polls API discovery while the CRDs cannot be watched.
    poll: Option<JoinHandle<()>>,
    /// Watch the canary controller's kinds too.
    canary: bool,
}

impl Pump {
    fn new(client: Client, root_namespace: String, handle: SourceHandle) -> Self {
        let kinds = WATCHED
            .iter()
            .map(|w| KindIndex::absent(w.preferred()))
            .collect();
        Pump {
            client,
            root_namespace,
            handle,
            index: SourceIndex::from_kinds(kinds),
            crds: Crds::default(),
            tasks: WATCHED.iter().map(|_| None).collect(),
            generation: 0,
            poll: None,
            canary: false,
        }
    }

    /// Whether the kind at `slot` is watched at all (canary kinds only for the canary
    /// controller).
    fn enabled(&self, slot: usize) -> bool {
        self.canary || !WATCHED[slot].canary_only
    }

    fn api(&self, slot: usize, ar: &ApiResource) -> Api<DynamicObject> {
        match WATCHED[slot].scope {
            Scope::Cluster | Scope::AllNamespaces => Api::all_with(self.client.clone(), ar),
            Scope::RootNamespace => {
                Api::namespaced_with(self.client.clone(), &self.root_namespace, ar)
            }
        }
    }

    /// Watches `slot` at `resource`, or stops watching it (`None`); the removals of the
    /// objects no longer watched.
    fn set(
        &mut self,
        slot: usize,
        resource: Option<ApiResource>,
        tx: &mpsc::Sender<Input>,
    ) -> Vec<FileEvent> {
        if let Some((task, _)) = self.tasks[slot].take() {
            task.abort();
        }
        let w = &WATCHED[slot];
        self.handle.health.clear(w.kind);
        let mut served = self.handle.served.write_or_recover();
        let Some(ar) = resource else {
            info!(kind = w.kind, "CRD removed; no longer watching");
            served.remove(w.kind);
            return self.index.replace(slot, KindIndex::absent(w.preferred()));
        };
        info!(kind = w.kind, api_version = %ar.api_version, "watching");
        served.insert(w.kind.to_string(), ar.clone());
        drop(served);
        self.generation += 1;
        let generation = self.generation;
        let task = spawn_watcher(self.api(slot, &ar), tx.clone(), move |result| Input::Kind {
            slot,
            generation,
            result,
        });
        self.tasks[slot] = Some((task, generation));
        self.index.replace(slot, KindIndex::new(ar))
    }

    /// Starts, switches or stops the CRD-backed kinds after a CRD change.
    fn reconcile_crds(&mut self, tx: &mpsc::Sender<Input>) -> Vec<FileEvent> {
        let want = self.crds.resolve();
        let mut out = Vec::new();
        for (slot, w) in WATCHED.iter().enumerate().filter(|(_, w)| w.from_crd()) {
            if !self.enabled(slot) {
                continue;
            }
            let now = self.tasks[slot]
                .is_some()
                .then(|| self.index.kinds()[slot].resource().clone());
            let wanted = want.get(&slot).cloned();
            if now.as_ref().map(|r| &r.api_version) != wanted.as_ref().map(|r| &r.api_version) {
                if wanted.is_none() {
                    warn!(kind = w.kind, "CRD not installed (or serves no supported version); not watching this kind");
                }
                out.extend(self.set(slot, wanted, tx));
            }
        }
        out
    }

    fn on_kind(&mut self, slot: usize, result: WatchResult) -> Vec<FileEvent> {
        let kind = WATCHED[slot].kind;
        match result {
            Ok(ev) => {
                if matches!(ev, watcher::Event::InitDone) {
                    self.handle.health.clear(kind);
                }
                self.index.handle(slot, ev)
            }
            Err(e) => {
                match health::api_status(&e) {
                    Some((code, message)) => {
                        let ix = self.index.kind_mut(slot);
                        if ix.has_listed() {
                            // Listed before: its objects stay as last listed.
                            let report =
                                health::report(ix.resource(), code, &message, health::STALE);
                            warn!(kind, code, error = %e, "cannot watch this kind any more; keeping its objects as last listed, retrying with backoff");
                            self.handle.health.set_stale(kind, report);
                        } else {
                            let report =
                                health::report(ix.resource(), code, &message, health::LEFT_OUT);
                            warn!(kind, code, error = %e, "cannot watch this kind; left out of the config and retried with backoff");
                            ix.mark_absent();
                            self.handle.health.set(kind, report);
                        }
                    }
                    None => {
                        warn!(kind, error = %e, "watch failed; retrying with backoff (a relist follows)")
                    }
                }
                Vec::new()
            }
        }
    }

    fn on_crd(&mut self, result: WatchResult, tx: &mpsc::Sender<Input>) -> Vec<FileEvent> {
        const CRD: &str = "CustomResourceDefinition";
        match result {
            Ok(ev) => {
                if matches!(ev, watcher::Event::InitDone) {
                    self.handle.health.clear(CRD);
                    if let Some(poll) = self.poll.take() {
                        info!("CRDs watched again; API discovery polling stopped");
                        poll.abort();
                    }
                }
                if self.crds.handle(ev) {
                    return self.reconcile_crds(tx);
                }
            }
            Err(e) => match health::api_status(&e) {
                Some((code, message)) => {
                    warn!(code, error = %e, "cannot watch CRDs; polling API discovery instead");
                    let report = health::report(&crd_resource(), code, &message, health::POLLED);
                    self.handle.health.warn(CRD, report);
                    if self.poll.is_none() {
                        self.poll = Some(spawn_poll(self.client.clone(), tx.clone()));
                    }
                }
                None => warn!(error = %e, "CRD watch failed; retrying with backoff"),
            },
        }
        Vec::new()
    }

    async fn run(mut self, tx: mpsc::Sender<Vec<FileEvent>>) {
        let (in_tx, in_rx) = mpsc::channel::<Input>(1024);
        let crd_api = Api::all_with(self.client.clone(), &crd_resource());
        let crd_task = spawn_watcher(crd_api, in_tx.clone(), Input::Crd);
        for (slot, w) in WATCHED.iter().enumerate().filter(|(_, w)| !w.from_crd()) {
            if self.enabled(slot) {
                self.set(slot, Some(w.preferred()), &in_tx);
            }
        }
        let mut chunks = tokio_stream::wrappers::ReceiverStream::new(in_rx).ready_chunks(512);
        let mut pending: Vec<FileEvent> = Vec::new();
        let mut initial_sent = false;
        while let Some(chunk) = chunks.next().await {
            let health_before = self.handle.health.changes();
            for input in chunk {
                let events = match input {
                    Input::Kind {
                        slot,
                        generation,
                        result,
                    } => {
                        let current = self.tasks[slot].as_ref().map(|(_, g)| *g);
                        if current != Some(generation) {
                            continue; // a stopped watcher's last events
                        }
                        self.on_kind(slot, result)
                    }
                    Input::Crd(result) => self.on_crd(result, &in_tx),
                    Input::Discovered(found) => {
                        // The CRD watch may have come back meanwhile: it wins.
                        if self.poll.is_some() && self.crds.set_discovered(found) {
                            self.reconcile_crds(&in_tx)
                        } else {
                            Vec::new()
                        }
                    }
                };
                pending.extend(events);
            }
            if !initial_sent {
                if !(self.crds.is_synced() && self.index.is_synced()) {
                    continue;
                }
                initial_sent = true;
                info!(
                    objects = self.index.len(),
                    absent = ?self.index.kinds().iter().filter(|k| k.is_absent()).map(|k| k.resource().kind.clone()).collect::<Vec<_>>(),
                    "Kubernetes initial list complete"
                );
            } else if pending.is_empty() && self.handle.health.changes() == health_before {
                continue;
            }
            // A batch (even empty) also when only the reports changed: the engine then
            // re-evaluates what fails closed.
            if tx.send(std::mem::take(&mut pending)).await.is_err() {
                break;
            }
        }
        crd_task.abort();
        if let Some(poll) = self.poll.take() {
            poll.abort();
        }
        for (task, _) in self.tasks.into_iter().flatten() {
            task.abort();
        }
    }
}

type Item = (usize, WatchResult);

/// Feeds a fixed set of kinds' watch events through `index` and sends the batches, the
/// first once every kind has listed; public for tests, which drive it with synthetic
/// streams.
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
        } else if pending.is_empty() {
            continue;
        }
        if tx.send(std::mem::take(&mut pending)).await.is_err() {
            return;
        }
    }
}

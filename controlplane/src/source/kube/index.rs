//! Watch events → pseudo-file events, per watched kind.
//!
//! [`KindIndex`] remembers a fingerprint of every object of one kind it has reported (not
//! its text: the validated store keeps the one copy), so that:
//! - `Apply` of an unchanged object reports nothing, a changed or new one `Changed`;
//! - `Delete` reports `Removed` (once);
//! - a relist (`Init`, `InitApply`…, `InitDone`: the watcher's start, and every restart
//!   after a `410 Gone` or a lost connection) is buffered and, on `InitDone`, compared
//!   with what was known: objects missing from the relist were deleted while the watch
//!   was down and are reported `Removed`, changed ones `Changed`, unchanged ones nothing.
//!
//! The fingerprint is a 64-bit SipHash keyed at random per process ([`RandomState`]): an
//! object's author cannot craft a collision to hide a change.
//!
//! Objects whose text cannot be produced are logged and skipped (the store keeps nothing
//! for them rather than a stale version).

use std::collections::BTreeMap;
use std::hash::{BuildHasher, RandomState};
use std::path::PathBuf;

use ::kube::core::{ApiResource, DynamicObject};
use ::kube::runtime::watcher::Event;
use tracing::warn;

use super::pseudo;
use crate::source::FileEvent;

/// Known objects of one kind and the relist in progress.
#[derive(Debug)]
pub struct KindIndex {
    resource: ApiResource,
    hasher: RandomState,
    known: BTreeMap<PathBuf, u64>,
    /// Relisted objects: fingerprint, and the text when it differs from the known one.
    relist: Option<BTreeMap<PathBuf, (u64, Option<String>)>>,
    synced: bool,
    /// Not watched (its CRD is not installed, or listing it failed): counts as synced.
    absent: bool,
}

impl KindIndex {
    pub fn new(resource: ApiResource) -> Self {
        KindIndex {
            resource,
            hasher: RandomState::new(),
            known: BTreeMap::new(),
            relist: None,
            synced: false,
            absent: false,
        }
    }

    /// A kind that is not watched (yet): synced, empty.
    pub fn absent(resource: ApiResource) -> Self {
        KindIndex {
            absent: true,
            ..KindIndex::new(resource)
        }
    }

    pub fn resource(&self) -> &ApiResource {
        &self.resource
    }

    /// Whether a first complete list has been seen, or the kind is absent.
    pub fn is_synced(&self) -> bool {
        self.synced || self.absent
    }

    /// Whether a first complete list has been seen (not merely absent).
    pub fn has_listed(&self) -> bool {
        self.synced
    }

    /// Whether the kind is absent (not served, or its list failed before a first sync).
    pub fn is_absent(&self) -> bool {
        self.absent && !self.synced
    }

    /// Treats the kind as absent until its first list completes: listing it failed.
    pub fn mark_absent(&mut self) {
        self.absent = true;
    }

    /// Current pseudo-files of this kind, by path, with their fingerprints.
    pub fn known(&self) -> &BTreeMap<PathBuf, u64> {
        &self.known
    }

    /// Forgets every object (the kind stopped being watched): their removals.
    pub fn clear(&mut self) -> Vec<FileEvent> {
        self.relist = None;
        std::mem::take(&mut self.known)
            .into_keys()
            .map(FileEvent::Removed)
            .collect()
    }

    fn render(&self, obj: &DynamicObject) -> Option<(PathBuf, String, u64)> {
        match pseudo::render(&self.resource, obj) {
            Ok((path, text)) => {
                let fp = self.hasher.hash_one(&text);
                Some((path, text, fp))
            }
            Err(e) => {
                warn!(error = %e, "skipping object");
                None
            }
        }
    }

    /// Handles one watch event; returns the pseudo-file events it implies.
    pub fn handle(&mut self, event: Event<DynamicObject>) -> Vec<FileEvent> {
        match event {
            Event::Apply(obj) => {
                let Some((path, text, fp)) = self.render(&obj) else {
                    return Vec::new();
                };
                if self.known.get(&path) == Some(&fp) {
                    return Vec::new();
                }
                self.known.insert(path.clone(), fp);
                vec![FileEvent::Changed(path, text)]
            }
            Event::Delete(obj) => {
                let Some((path, _, _)) = self.render(&obj) else {
                    return Vec::new();
                };
                match self.known.remove(&path) {
                    Some(_) => vec![FileEvent::Removed(path)],
                    None => Vec::new(),
                }
            }
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                Vec::new()
            }
            Event::InitApply(obj) => {
                if let Some((path, text, fp)) = self.render(&obj) {
                    let text = (self.known.get(&path) != Some(&fp)).then_some(text);
                    self.relist.get_or_insert_default().insert(path, (fp, text));
                }
                Vec::new()
            }
            Event::InitDone => {
                let listed = self.relist.take().unwrap_or_default();
                self.synced = true;
                self.absent = false;
                let mut events: Vec<FileEvent> = self
                    .known
                    .keys()
                    .filter(|p| !listed.contains_key(*p))
                    .map(|p| FileEvent::Removed(p.clone()))
                    .collect();
                let mut known = BTreeMap::new();
                let mut changed = Vec::new();
                for (p, (fp, text)) in listed {
                    if let Some(t) = text {
                        changed.push(FileEvent::Changed(p.clone(), t));
                    }
                    known.insert(p, fp);
                }
                changed.append(&mut events);
                self.known = known;
                changed
            }
        }
    }
}

/// The indexes of every watched kind, and whether the initial state is complete.
#[derive(Debug, Default)]
pub struct SourceIndex {
    kinds: Vec<KindIndex>,
}

impl SourceIndex {
    pub fn new(resources: impl IntoIterator<Item = ApiResource>) -> Self {
        SourceIndex {
            kinds: resources.into_iter().map(KindIndex::new).collect(),
        }
    }

    pub fn kinds(&self) -> &[KindIndex] {
        &self.kinds
    }

    /// Handles an event of the kind at position `kind` (as given to [`SourceIndex::new`]).
    pub fn handle(&mut self, kind: usize, event: Event<DynamicObject>) -> Vec<FileEvent> {
        self.kinds[kind].handle(event)
    }

    /// The index of the kind at position `kind`.
    pub fn kind_mut(&mut self, kind: usize) -> &mut KindIndex {
        &mut self.kinds[kind]
    }

    /// Replaces the index at position `kind` (the kind is now watched at another version,
    /// or no longer watched): the removals of the objects the old one knew.
    pub fn replace(&mut self, kind: usize, with: KindIndex) -> Vec<FileEvent> {
        std::mem::replace(&mut self.kinds[kind], with).clear()
    }

    /// An index over indexes built by the caller (some possibly [`KindIndex::absent`]).
    pub fn from_kinds(kinds: Vec<KindIndex>) -> Self {
        SourceIndex { kinds }
    }

    /// True once every kind has completed its first list: the engine may then treat
    /// the accumulated events as the complete initial configuration.
    pub fn is_synced(&self) -> bool {
        self.kinds.iter().all(KindIndex::is_synced)
    }

    /// Total number of known objects.
    pub fn len(&self) -> usize {
        self.kinds.iter().map(|k| k.known.len()).sum()
    }

    pub fn is_empty(&self) -> bool {
        self.len() == 0
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::source::kube::resources::watched;
    use serde_json::json;

    fn svc(name: &str, port: u16) -> DynamicObject {
        serde_json::from_value(json!({
            "metadata": {"name": name, "namespace": "ns", "resourceVersion": port.to_string()},
            "spec": {"ports": [{"port": port}]}
        }))
        .unwrap()
    }

    fn index() -> KindIndex {
        KindIndex::new(watched("Service").unwrap().preferred())
    }

    fn paths(ev: &[FileEvent]) -> Vec<String> {
        ev.iter()
            .map(|e| match e {
                FileEvent::Changed(p, _) => format!("changed {}", p.display()),
                FileEvent::Removed(p) => format!("removed {}", p.display()),
            })
            .collect()
    }

    #[test]
    fn apply_reports_only_content_changes() {
        let mut ix = index();
        assert_eq!(
            paths(&ix.handle(Event::Apply(svc("a", 80)))),
            ["changed k8s://Service/ns/a"]
        );
        // Same content, new resourceVersion: nothing.
        let mut again = svc("a", 80);
        again.metadata.resource_version = Some("999".into());
        assert!(ix.handle(Event::Apply(again)).is_empty());
        assert_eq!(
            paths(&ix.handle(Event::Apply(svc("a", 81)))),
            ["changed k8s://Service/ns/a"]
        );
        assert_eq!(
            paths(&ix.handle(Event::Delete(svc("a", 81)))),
            ["removed k8s://Service/ns/a"]
        );
        assert!(ix.handle(Event::Delete(svc("a", 81))).is_empty());
    }

    #[test]
    fn relist_reports_deletes_while_disconnected_and_skips_unchanged() {
        let mut ix = index();
        ix.handle(Event::Init);
        ix.handle(Event::InitApply(svc("keep", 80)));
        ix.handle(Event::InitApply(svc("gone", 80)));
        ix.handle(Event::InitApply(svc("edit", 80)));
        assert!(!ix.is_synced());
        assert_eq!(
            paths(&ix.handle(Event::InitDone)),
            [
                "changed k8s://Service/ns/edit",
                "changed k8s://Service/ns/gone",
                "changed k8s://Service/ns/keep"
            ]
        );
        assert!(ix.is_synced());
        // 410 Gone: the watcher relists. "gone" was deleted, "edit" edited, "new" created.
        assert!(ix.handle(Event::Init).is_empty());
        assert!(ix.handle(Event::InitApply(svc("keep", 80))).is_empty());
        assert!(ix.handle(Event::InitApply(svc("edit", 90))).is_empty());
        assert!(ix.handle(Event::InitApply(svc("new", 80))).is_empty());
        assert_eq!(
            paths(&ix.handle(Event::InitDone)),
            [
                "changed k8s://Service/ns/edit",
                "changed k8s://Service/ns/new",
                "removed k8s://Service/ns/gone"
            ]
        );
        assert_eq!(ix.known().len(), 3);
    }

    #[test]
    fn empty_relist_removes_everything() {
        let mut ix = index();
        ix.handle(Event::Apply(svc("a", 80)));
        ix.handle(Event::Init);
        assert_eq!(
            paths(&ix.handle(Event::InitDone)),
            ["removed k8s://Service/ns/a"]
        );
        assert!(ix.known().is_empty());
    }

    #[test]
    fn source_index_is_synced_when_every_kind_listed() {
        let mut s = SourceIndex::new([
            watched("Service").unwrap().preferred(),
            watched("Namespace").unwrap().preferred(),
        ]);
        s.handle(0, Event::Init);
        s.handle(0, Event::InitDone);
        assert!(!s.is_synced());
        s.handle(1, Event::Init);
        s.handle(1, Event::InitDone);
        assert!(s.is_synced());
        assert!(s.is_empty());
    }
}

//! The current model, its generation and the log of recent changes.
//!
//! The hub encodes each resource once, and for each workload also its compact remote view
//! ([`meshwork_model::view::remote_workload`]): what ztunnels of other nodes receive. Both
//! encodings are shared by every stream.

use meshwork_runtime::sync::RwLockExt;
use std::collections::{HashMap, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use bytes::Bytes;
use meshwork_model::keys::make_resource;
use meshwork_model::pb::config::{resource, Resource};
use meshwork_model::view::remote_workload;
use prost::Message;
use tokio::sync::watch;

/// How many generations of change log to keep; a stream further behind does a full diff.
pub(super) const LOG_LEN: usize = 4096;

/// What a key was before a change: its version and, for a workload, its compact view's
/// version (None: absent).
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct Before {
    pub version: Option<String>,
    pub compact: Option<String>,
}

/// Keys changed in one generation, each with what it was before the change.
type LogEntry = (u64, Vec<(String, Before)>);

/// A workload's compact remote view, encoded once.
#[derive(Debug, Clone)]
pub struct Compact {
    pub version: String,
    pub bytes: Bytes,
}

impl Compact {
    pub fn of(key: &str, r: &Resource) -> Option<Compact> {
        let Some(resource::Kind::Workload(w)) = &r.kind else {
            return None;
        };
        let view = make_resource(
            key.to_string(),
            resource::Kind::Workload(remote_workload(w)),
        );
        Some(Compact {
            version: view.version.clone(),
            bytes: Bytes::from(view.encode_to_vec()),
        })
    }
}

#[derive(Debug, Default)]
pub struct HubState {
    pub generation: u64,
    pub resources: HashMap<String, Arc<Resource>>,
    /// Each resource's protobuf encoding, made once and shared by every stream.
    encoded: HashMap<String, Bytes>,
    /// Each workload's compact remote view.
    compact: HashMap<String, Compact>,
    log: VecDeque<LogEntry>,
}

impl HubState {
    /// Keys changed after generation `since`, each with what it was as of `since`, or None
    /// when the log no longer reaches back.
    pub fn changed_since(&self, since: u64) -> Option<HashMap<String, Before>> {
        if since >= self.generation {
            return Some(HashMap::new());
        }
        let oldest = self.log.front().map(|(g, _)| *g)?;
        if since + 1 < oldest {
            return None;
        }
        let mut changed = HashMap::new();
        for (_, keys) in self.log.iter().filter(|(g, _)| *g > since) {
            for (key, before) in keys {
                // The first change after `since` knows the version as of `since`.
                changed.entry(key.clone()).or_insert_with(|| before.clone());
            }
        }
        Some(changed)
    }

    /// The protobuf encoding of the resource under `key`.
    pub fn encoded(&self, key: &str) -> Option<&Bytes> {
        self.encoded.get(key)
    }

    /// The compact remote view of the workload under `key`.
    pub fn compact(&self, key: &str) -> Option<&Compact> {
        self.compact.get(key)
    }
}

pub struct ModelHub {
    state: RwLock<HubState>,
    generation: watch::Sender<u64>,
}

impl Default for ModelHub {
    fn default() -> Self {
        ModelHub {
            state: RwLock::new(HubState::default()),
            generation: watch::channel(0).0,
        }
    }
}

impl ModelHub {
    pub fn new() -> Arc<ModelHub> {
        Arc::new(ModelHub::default())
    }

    /// Applies upserts (`Some`) and removals (`None`); returns the new generation, or the
    /// current one when nothing actually changed.
    pub fn apply(&self, changes: impl IntoIterator<Item = (String, Option<Resource>)>) -> u64 {
        let mut st = self.state.write_or_recover();
        let mut keys = Vec::new();
        for (key, res) in changes {
            let before = Before {
                version: st.resources.get(&key).map(|old| old.version.clone()),
                compact: st.compact.get(&key).map(|c| c.version.clone()),
            };
            match res {
                Some(r) if before.version.as_ref() == Some(&r.version) => continue,
                Some(r) => {
                    st.encoded
                        .insert(key.clone(), Bytes::from(r.encode_to_vec()));
                    match Compact::of(&key, &r) {
                        // An unchanged view keeps its bytes.
                        Some(c) if before.compact.as_ref() == Some(&c.version) => {}
                        Some(c) => {
                            st.compact.insert(key.clone(), c);
                        }
                        None => {
                            st.compact.remove(&key);
                        }
                    }
                    st.resources.insert(key.clone(), Arc::new(r));
                }
                None if before.version.is_none() => continue,
                None => {
                    st.resources.remove(&key);
                    st.encoded.remove(&key);
                    st.compact.remove(&key);
                }
            }
            keys.push((key, before));
        }
        if keys.is_empty() {
            return st.generation;
        }
        st.generation += 1;
        let g = st.generation;
        st.log.push_back((g, keys));
        while st.log.len() > LOG_LEN {
            st.log.pop_front();
        }
        drop(st);
        self.generation.send_replace(g);
        g
    }

    pub fn read(&self) -> RwLockReadGuard<'_, HubState> {
        self.state.read_or_recover()
    }

    pub fn generation(&self) -> u64 {
        *self.generation.borrow()
    }

    pub fn watch(&self) -> watch::Receiver<u64> {
        self.generation.subscribe()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::{resource::Kind, Workload};

    fn wl(name: &str, node: &str) -> (String, Option<Resource>) {
        let key = format!("workload/ns/{name}");
        let r = make_resource(
            key.clone(),
            Kind::Workload(Workload {
                name: name.into(),
                node: node.into(),
                ..Default::default()
            }),
        );
        (key, Some(r))
    }

    fn v(name: &str, node: &str) -> Before {
        let r = wl(name, node).1.unwrap();
        Before {
            compact: Some(Compact::of(&r.key, &r).unwrap().version),
            version: Some(r.version),
        }
    }

    #[test]
    fn generations_and_change_log() {
        let hub = ModelHub::default();
        assert_eq!(hub.apply([wl("a", "n1"), wl("b", "n1")]), 1);
        assert_eq!(hub.apply([wl("a", "n1")]), 1, "same content is no change");
        assert_eq!(hub.apply([wl("a", "n2")]), 2);
        assert_eq!(hub.apply([("workload/ns/b".to_string(), None)]), 3);
        assert_eq!(hub.apply([("workload/ns/zzz".to_string(), None)]), 3);
        let st = hub.read();
        assert_eq!(st.resources.len(), 1);
        let since1 = st.changed_since(1).unwrap();
        let (a1, b1) = (v("a", "n1"), v("b", "n1"));
        assert_eq!(
            since1,
            HashMap::from([
                ("workload/ns/a".to_string(), a1),
                ("workload/ns/b".to_string(), b1)
            ]),
            "each key with its version as of generation 1"
        );
        assert!(st.changed_since(3).unwrap().is_empty());
        let since0 = st.changed_since(0).unwrap();
        assert_eq!(since0.len(), 2);
        assert!(
            since0.values().all(|b| *b == Before::default()),
            "absent at 0"
        );
        let a = st.resources.get("workload/ns/a").unwrap();
        let decoded = Resource::decode(st.encoded("workload/ns/a").unwrap().clone()).unwrap();
        assert_eq!(
            &decoded,
            a.as_ref(),
            "the shared encoding is the resource's"
        );
        assert!(st.encoded("workload/ns/b").is_none());
        assert!(st.compact("workload/ns/b").is_none());
    }

    #[test]
    fn each_workload_has_its_compact_view_encoded_once() {
        let hub = ModelHub::default();
        let (key, r) = wl("a", "n1");
        let mut r = r.unwrap();
        hub.apply([(key.clone(), Some(r.clone()))]);
        let first = hub.read().compact(&key).unwrap().clone();
        let decoded = Resource::decode(first.bytes.clone()).unwrap();
        assert_eq!(decoded.version, first.version);
        match decoded.kind {
            Some(resource::Kind::Workload(w)) => assert!(w.compact && w.name == "a"),
            other => panic!("{other:?}"),
        }
        // A label changes the workload, not its view: the view keeps its bytes.
        if let Some(resource::Kind::Workload(w)) = &mut r.kind {
            w.labels.insert("team".into(), "x".into());
        }
        let r = make_resource(key.clone(), r.kind.unwrap());
        hub.apply([(key.clone(), Some(r))]);
        let st = hub.read();
        let after = st.compact(&key).unwrap();
        assert_eq!(after.version, first.version);
        assert_eq!(after.bytes.as_ptr(), first.bytes.as_ptr());
        let changed = st.changed_since(1).unwrap();
        assert_eq!(changed[&key].compact, Some(first.version.clone()));
        // Services and policies have none.
        drop(st);
        let svc = make_resource(
            "service/ns/s".into(),
            resource::Kind::Service(Default::default()),
        );
        hub.apply([("service/ns/s".to_string(), Some(svc))]);
        assert!(hub.read().compact("service/ns/s").is_none());
    }
}

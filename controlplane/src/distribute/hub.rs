//! The current model, its generation and the log of recent changes.

use std::collections::{HashMap, HashSet, VecDeque};
use std::sync::{Arc, RwLock, RwLockReadGuard};

use meshwork_model::pb::config::Resource;
use tokio::sync::watch;

/// How many generations of change log to keep; a stream further behind does a full diff.
const LOG_LEN: usize = 4096;

#[derive(Debug, Default)]
pub struct HubState {
    pub generation: u64,
    pub resources: HashMap<String, Arc<Resource>>,
    log: VecDeque<(u64, Vec<String>)>,
}

impl HubState {
    /// Keys changed after generation `since`, or None when the log no longer reaches back.
    pub fn changed_since(&self, since: u64) -> Option<HashSet<String>> {
        if since >= self.generation {
            return Some(HashSet::new());
        }
        let oldest = self.log.front().map(|(g, _)| *g)?;
        if since + 1 < oldest {
            return None;
        }
        Some(
            self.log
                .iter()
                .filter(|(g, _)| *g > since)
                .flat_map(|(_, keys)| keys.iter().cloned())
                .collect(),
        )
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
        let mut st = self.state.write().unwrap_or_else(|e| e.into_inner());
        let mut keys = Vec::new();
        for (key, res) in changes {
            let changed = match res {
                Some(r) => {
                    let same = st.resources.get(&key).map(|old| old.version == r.version);
                    if same == Some(true) {
                        false
                    } else {
                        st.resources.insert(key.clone(), Arc::new(r));
                        true
                    }
                }
                None => st.resources.remove(&key).is_some(),
            };
            if changed {
                keys.push(key);
            }
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
        self.state.read().unwrap_or_else(|e| e.into_inner())
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
        let since1: HashSet<_> = st.changed_since(1).unwrap();
        assert_eq!(
            since1,
            HashSet::from(["workload/ns/a".to_string(), "workload/ns/b".to_string()])
        );
        assert!(st.changed_since(3).unwrap().is_empty());
        assert_eq!(st.changed_since(0).unwrap().len(), 2);
    }
}

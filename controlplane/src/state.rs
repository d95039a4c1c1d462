//! What the control plane keeps across restarts in its state directory (`--state-dir`,
//! directory source only):
//!
//! - `last-good.json`: per config file, the text of its documents whose versions were in
//!   force (see [`meshwork_api::Store::last_good_files`]). At start it is applied before the
//!   files on disk, so a file that is broken while the control plane restarts keeps its last
//!   good version in force, exactly as it would have without the restart.
//! - in the same file, the order in which the control plane first saw each object. The
//!   directory source has no API server to set `metadata.creationTimestamp`; objects are
//!   given the time they were first seen instead (what `kubectl apply` gets from the API
//!   server), so "oldest first" cannot be gamed by renaming a resource or by writing a
//!   timestamp into the file.
//!
//! The file is written atomically (temp file + rename) after each applied batch that
//! changed it.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};

use k8s_openapi::apimachinery::pkg::apis::meta::v1::Time;
use meshwork_api::ObjectKey;
use serde::{Deserialize, Serialize};
use thiserror::Error;

/// Name of the state file inside the state directory.
pub const STATE_FILE: &str = "last-good.json";

#[derive(Debug, Error)]
pub enum StateError {
    #[error("state directory {0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("state file {0} is not valid: {1}")]
    Format(PathBuf, serde_json::Error),
}

/// The persisted state.
#[derive(Debug, Default, Clone, PartialEq, Serialize, Deserialize)]
#[serde(rename_all = "camelCase")]
pub struct Saved {
    /// Config file path -> text of its documents in force.
    #[serde(default)]
    pub files: BTreeMap<PathBuf, String>,
    /// `Kind/ns/name` -> when the control plane first saw it (nanoseconds since the Unix
    /// epoch; `Time` itself serializes whole seconds only).
    #[serde(default)]
    pub first_seen: BTreeMap<String, i64>,
}

/// A state directory.
#[derive(Debug, Clone)]
pub struct StateDir {
    dir: PathBuf,
}

impl StateDir {
    pub fn new(dir: impl Into<PathBuf>) -> StateDir {
        StateDir { dir: dir.into() }
    }

    pub fn path(&self) -> &Path {
        &self.dir
    }

    fn file(&self) -> PathBuf {
        self.dir.join(STATE_FILE)
    }

    /// The saved state; empty when none was saved yet.
    pub fn load(&self) -> Result<Saved, StateError> {
        let file = self.file();
        match std::fs::read(&file) {
            Ok(bytes) => serde_json::from_slice(&bytes).map_err(|e| StateError::Format(file, e)),
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(Saved::default()),
            Err(e) => Err(StateError::Io(file, e)),
        }
    }

    /// Writes `state` atomically (the directory is created, owner-only, if missing).
    pub fn save(&self, state: &Saved) -> Result<(), StateError> {
        let io = |e| StateError::Io(self.dir.clone(), e);
        create_private_dir(&self.dir).map_err(io)?;
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec(state).map_err(|e| StateError::Format(tmp.clone(), e))?;
        std::fs::write(&tmp, bytes).map_err(io)?;
        std::fs::rename(&tmp, self.file()).map_err(io)
    }
}

fn create_private_dir(dir: &Path) -> std::io::Result<()> {
    use std::os::unix::fs::DirBuilderExt;
    std::fs::DirBuilder::new()
        .recursive(true)
        .mode(0o700)
        .create(dir)
}

/// First-seen times of objects: strictly increasing, so objects first seen in one batch
/// keep the order they were applied in (file path order, then document order).
#[derive(Debug, Default, Clone)]
pub struct FirstSeen {
    times: BTreeMap<String, Time>,
    last: Option<jiff::Timestamp>,
}

impl FirstSeen {
    pub fn from_saved(saved: &BTreeMap<String, i64>) -> FirstSeen {
        let times: BTreeMap<String, Time> = saved
            .iter()
            .filter_map(|(k, ns)| {
                let t = jiff::Timestamp::from_nanosecond(i128::from(*ns)).ok()?;
                Some((k.clone(), Time(t)))
            })
            .collect();
        let last = times.values().map(|t| t.0).max();
        FirstSeen { times, last }
    }

    pub fn saved(&self) -> BTreeMap<String, i64> {
        self.times
            .iter()
            .map(|(k, t)| (k.clone(), t.0.as_nanosecond() as i64))
            .collect()
    }

    /// When `key` was first seen; now (after every earlier time) if never.
    pub fn stamp(&mut self, key: &ObjectKey) -> Time {
        let id = key.to_string();
        if let Some(t) = self.times.get(&id) {
            return t.clone();
        }
        let mut now = jiff::Timestamp::now();
        if let Some(last) = self.last {
            if now <= last {
                now = last
                    .checked_add(jiff::SignedDuration::from_nanos(1))
                    .unwrap_or(last);
            }
        }
        self.last = Some(now);
        self.times.insert(id, Time(now));
        Time(now)
    }

    /// A deleted object: created again, it is new.
    pub fn forget(&mut self, key: &ObjectKey) {
        self.times.remove(&key.to_string());
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_api::Kind;

    #[test]
    fn state_round_trips_and_starts_empty() {
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path().join("state"));
        assert_eq!(sd.load().unwrap(), Saved::default());
        let mut first = FirstSeen::default();
        first.stamp(&ObjectKey::new(Kind::VirtualService, "ns", "a"));
        let saved = Saved {
            files: [(PathBuf::from("/c/a.yaml"), "kind: X".to_string())].into(),
            first_seen: first.saved(),
        };
        sd.save(&saved).unwrap();
        assert_eq!(sd.load().unwrap(), saved);
        std::fs::write(sd.path().join(STATE_FILE), "{not json").unwrap();
        let err = sd.load().unwrap_err().to_string();
        assert!(err.contains(STATE_FILE), "{err}");
    }

    #[test]
    fn first_seen_is_stable_strictly_increasing_and_forgotten_on_delete() {
        let mut f = FirstSeen::default();
        let keys: Vec<_> = (0..50)
            .map(|i| ObjectKey::new(Kind::VirtualService, "ns", format!("vs-{i}")))
            .collect();
        let times: Vec<_> = keys.iter().map(|k| f.stamp(k)).collect();
        assert!(times.windows(2).all(|w| w[0].0 < w[1].0));
        assert_eq!(f.stamp(&keys[0]), times[0]);
        let mut restored = FirstSeen::from_saved(&f.saved());
        assert_eq!(restored.stamp(&keys[3]), times[3]);
        let fresh = restored.stamp(&ObjectKey::new(Kind::VirtualService, "ns", "new"));
        assert!(fresh.0 > times[49].0, "newer than everything restored");
        restored.forget(&keys[0]);
        assert!(restored.stamp(&keys[0]).0 > fresh.0, "re-created = new");
    }
}

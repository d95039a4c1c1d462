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
//!
//! A saved version can keep in force a policy the files no longer hold, so the state is
//! believed only when nobody but the control plane's user can have written it: the
//! directory and the file must be owned by that user and not writable by group or others,
//! and the file must not be a symbolic link. Otherwise it is ignored with an error (the
//! control plane then fails closed for any policy that does not load).

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
    #[error("state {0} is not trusted: {1}")]
    Untrusted(PathBuf, &'static str),
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
        let meta = match std::fs::symlink_metadata(&file) {
            Ok(m) => m,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Saved::default()),
            Err(e) => return Err(StateError::Io(file, e)),
        };
        let dir_meta =
            std::fs::metadata(&self.dir).map_err(|e| StateError::Io(self.dir.clone(), e))?;
        trusted(&self.dir, &dir_meta, owner())?;
        if meta.file_type().is_symlink() {
            return Err(StateError::Untrusted(file, "a symbolic link"));
        }
        trusted(&file, &meta, owner())?;
        let bytes = std::fs::read(&file).map_err(|e| StateError::Io(file.clone(), e))?;
        serde_json::from_slice(&bytes).map_err(|e| StateError::Format(file, e))
    }

    /// Writes `state` atomically (the directory is created, owner-only, if missing). The
    /// temporary file is created anew, owner-only, never through a link left in its place.
    pub fn save(&self, state: &Saved) -> Result<(), StateError> {
        use std::io::Write;
        use std::os::unix::fs::OpenOptionsExt;
        let io = |e| StateError::Io(self.dir.clone(), e);
        create_private_dir(&self.dir).map_err(io)?;
        let tmp = self.dir.join(format!(".{STATE_FILE}.tmp"));
        let bytes = serde_json::to_vec(state).map_err(|e| StateError::Format(tmp.clone(), e))?;
        match std::fs::remove_file(&tmp) {
            Err(e) if e.kind() != std::io::ErrorKind::NotFound => return Err(io(e)),
            _ => {}
        }
        let mut f = std::fs::OpenOptions::new()
            .write(true)
            .create_new(true)
            .mode(0o600)
            .open(&tmp)
            .map_err(io)?;
        f.write_all(&bytes).map_err(io)?;
        drop(f);
        std::fs::rename(&tmp, self.file()).map_err(io)
    }
}

/// The user the control plane runs as (the owner of `/proc/self`); `None` off Linux.
fn owner() -> Option<u32> {
    use std::os::unix::fs::MetadataExt;
    std::fs::metadata("/proc/self").ok().map(|m| m.uid())
}

/// Refuses state that another user may have written.
fn trusted(path: &Path, meta: &std::fs::Metadata, owner: Option<u32>) -> Result<(), StateError> {
    use std::os::unix::fs::{MetadataExt, PermissionsExt};
    if owner.is_some_and(|uid| meta.uid() != uid) {
        return Err(StateError::Untrusted(
            path.to_path_buf(),
            "owned by another user",
        ));
    }
    if meta.permissions().mode() & 0o022 != 0 {
        return Err(StateError::Untrusted(
            path.to_path_buf(),
            "writable by group or others (use mode 0700 for the directory, 0600 for the file)",
        ));
    }
    Ok(())
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
    fn state_others_may_write_is_not_trusted() {
        use std::os::unix::fs::PermissionsExt;
        let mode = |p: &Path, m: u32| {
            std::fs::set_permissions(p, std::fs::Permissions::from_mode(m)).unwrap()
        };
        let dir = tempfile::tempdir().unwrap();
        let sd = StateDir::new(dir.path().join("state"));
        sd.save(&Saved::default()).unwrap();
        let file = sd.path().join(STATE_FILE);
        assert_eq!(
            std::fs::metadata(&file).unwrap().permissions().mode() & 0o777,
            0o600
        );
        assert!(sd.load().is_ok());
        for (what, m) in [
            ("dir", 0o770),
            ("dir", 0o1777),
            ("file", 0o620),
            ("file", 0o666),
        ] {
            let p = if what == "dir" {
                sd.path()
            } else {
                file.as_path()
            };
            mode(p, m);
            let err = sd.load().unwrap_err().to_string();
            assert!(
                err.contains("writable by group or others"),
                "{what} {m:o}: {err}"
            );
            mode(p, if what == "dir" { 0o700 } else { 0o600 });
        }
        // A link in the file's place (to a file the attacker controls) is not followed.
        let elsewhere = dir.path().join("planted.json");
        std::fs::write(&elsewhere, "{}").unwrap();
        mode(&elsewhere, 0o600);
        std::fs::remove_file(&file).unwrap();
        std::os::unix::fs::symlink(&elsewhere, &file).unwrap();
        let err = sd.load().unwrap_err().to_string();
        assert!(err.contains("symbolic link"), "{err}");
        // Saving replaces the link, and never writes through one left at the temp path.
        let tmp = sd.path().join(format!(".{STATE_FILE}.tmp"));
        std::os::unix::fs::symlink(&elsewhere, &tmp).unwrap();
        sd.save(&Saved::default()).unwrap();
        assert_eq!(std::fs::read_to_string(&elsewhere).unwrap(), "{}");
        assert!(!std::fs::symlink_metadata(&file)
            .unwrap()
            .file_type()
            .is_symlink());
        assert!(sd.load().is_ok());
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

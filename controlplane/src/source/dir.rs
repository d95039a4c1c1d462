//! A directory of multi-document YAML, applied as `kubectl apply -f DIR` would, and
//! watched: every add, edit or delete becomes a [`FileEvent`].
//!
//! Editors save in many ways (rename over, truncate + write, temp files), so instead of
//! trusting individual notify events the watcher treats them as a hint: after a short
//! quiet period it rescans the directory and reports the files whose content changed.

use std::collections::HashMap;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, warn};

#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileEvent {
    /// A new or changed file with its full text.
    Changed(PathBuf, String),
    Removed(PathBuf),
}

impl FileEvent {
    /// The file the event is about.
    pub fn path(&self) -> &Path {
        match self {
            FileEvent::Changed(p, _) | FileEvent::Removed(p) => p,
        }
    }
}

#[derive(Debug, Error)]
pub enum DirError {
    #[error("config directory {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot watch config directory {0}: {1}")]
    Watch(PathBuf, notify::Error),
}

/// Whether a path is a manifest the directory source reads.
pub fn is_manifest(path: &Path) -> bool {
    let name = path.file_name().and_then(|n| n.to_str()).unwrap_or("");
    !name.starts_with('.')
        && matches!(
            path.extension().and_then(|e| e.to_str()),
            Some("yaml" | "yml" | "json")
        )
}

/// Lists manifests below `dir` (recursively, sorted, hidden entries skipped).
pub fn list_manifests(dir: &Path) -> Result<Vec<PathBuf>, DirError> {
    let mut out = Vec::new();
    let mut stack = vec![dir.to_path_buf()];
    while let Some(d) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| DirError::Read(d.clone(), e))?;
        for entry in entries {
            let entry = entry.map_err(|e| DirError::Read(d.clone(), e))?;
            let path = entry.path();
            let hidden = entry.file_name().to_string_lossy().starts_with('.');
            if hidden {
                continue;
            }
            if path.is_dir() {
                stack.push(path);
            } else if is_manifest(&path) {
                out.push(path);
            }
        }
    }
    out.sort();
    Ok(out)
}

/// Tracks file contents so that rescans report only real changes.
#[derive(Debug, Default)]
pub struct DirState {
    files: HashMap<PathBuf, String>,
}

impl DirState {
    /// Reads the directory and returns the events since the previous scan.
    pub fn rescan(&mut self, dir: &Path) -> Result<Vec<FileEvent>, DirError> {
        let mut events = Vec::new();
        let mut seen = HashMap::new();
        for path in list_manifests(dir)? {
            let text = match std::fs::read_to_string(&path) {
                Ok(t) => t,
                // Deleted between listing and reading: the next scan reports it.
                Err(e) if e.kind() == std::io::ErrorKind::NotFound => continue,
                Err(e) => {
                    warn!(file = %path.display(), error = %e, "cannot read manifest; keeping its last version");
                    if let Some(old) = self.files.get(&path) {
                        seen.insert(path, old.clone());
                    }
                    continue;
                }
            };
            if self.files.get(&path) != Some(&text) {
                events.push(FileEvent::Changed(path.clone(), text.clone()));
            }
            seen.insert(path, text);
        }
        let mut removed: Vec<_> = self
            .files
            .keys()
            .filter(|p| !seen.contains_key(*p))
            .cloned()
            .collect();
        removed.sort();
        events.extend(removed.into_iter().map(FileEvent::Removed));
        self.files = seen;
        Ok(events)
    }
}

/// How long the directory must be quiet before a rescan.
const SETTLE: Duration = Duration::from_millis(30);
/// Periodic rescan, in case a filesystem does not deliver notifications.
const RESYNC: Duration = Duration::from_secs(10);

/// Scans `dir` once (sending the initial events as one batch), then watches it and sends
/// each later batch of changes. The task ends when the receiver is dropped.
pub fn watch(dir: PathBuf) -> Result<mpsc::Receiver<Vec<FileEvent>>, DirError> {
    let mut state = DirState::default();
    let initial = state.rescan(&dir)?;
    let (hint_tx, mut hint_rx) = mpsc::unbounded_channel::<()>();
    let mut watcher = notify::recommended_watcher(move |res: notify::Result<notify::Event>| {
        if res.is_ok() {
            let _ = hint_tx.send(());
        }
    })
    .map_err(|e| DirError::Watch(dir.clone(), e))?;
    watcher
        .watch(&dir, RecursiveMode::Recursive)
        .map_err(|e| DirError::Watch(dir.clone(), e))?;

    let (tx, rx) = mpsc::channel(16);
    tokio::spawn(async move {
        let _watcher = watcher;
        if tx.send(initial).await.is_err() {
            return;
        }
        loop {
            let hinted = tokio::time::timeout(RESYNC, hint_rx.recv()).await;
            if matches!(hinted, Ok(None)) {
                return;
            }
            // Let a burst of writes settle.
            while let Ok(Some(())) = tokio::time::timeout(SETTLE, hint_rx.recv()).await {}
            match state.rescan(&dir) {
                Ok(events) if events.is_empty() => {}
                Ok(events) => {
                    debug!(count = events.len(), "config directory changed");
                    if tx.send(events).await.is_err() {
                        return;
                    }
                }
                Err(e) => warn!(error = %e, "rescan failed; keeping the current config"),
            }
        }
    });
    Ok(rx)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn rescan_reports_adds_edits_and_deletes() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, "kind: A").unwrap();
        std::fs::write(dir.path().join("notes.txt"), "ignored").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        let b = dir.path().join("sub/b.yml");
        std::fs::write(&b, "kind: B").unwrap();

        let mut st = DirState::default();
        let ev = st.rescan(dir.path()).unwrap();
        assert_eq!(
            ev,
            vec![
                FileEvent::Changed(a.clone(), "kind: A".into()),
                FileEvent::Changed(b.clone(), "kind: B".into()),
            ]
        );
        assert!(st.rescan(dir.path()).unwrap().is_empty());
        std::fs::write(&a, "kind: A2").unwrap();
        std::fs::remove_file(&b).unwrap();
        let ev = st.rescan(dir.path()).unwrap();
        assert_eq!(
            ev,
            vec![
                FileEvent::Changed(a.clone(), "kind: A2".into()),
                FileEvent::Removed(b)
            ]
        );
    }

    #[test]
    fn missing_directory_is_a_named_error() {
        let err = list_manifests(Path::new("/nonexistent/meshwork-config")).unwrap_err();
        assert!(
            err.to_string().contains("/nonexistent/meshwork-config"),
            "{err}"
        );
    }

    #[tokio::test]
    async fn watch_delivers_edits() {
        let dir = tempfile::tempdir().unwrap();
        let a = dir.path().join("a.yaml");
        std::fs::write(&a, "one").unwrap();
        let mut rx = watch(dir.path().to_path_buf()).unwrap();
        let first = rx.recv().await.unwrap();
        assert_eq!(first.len(), 1);
        std::fs::write(&a, "two").unwrap();
        let next = tokio::time::timeout(Duration::from_secs(5), rx.recv())
            .await
            .expect("edit delivered")
            .unwrap();
        assert_eq!(next, vec![FileEvent::Changed(a, "two".into())]);
    }
}

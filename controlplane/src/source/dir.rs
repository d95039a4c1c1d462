//! A directory of multi-document YAML, applied as `kubectl apply -f DIR` would, and
//! watched: every add, edit or delete becomes a [`FileEvent`].
//!
//! Editors save in many ways (rename over, truncate + write, temp files), so instead of
//! trusting individual notify events the watcher treats them as a hint: after a short
//! quiet period it rescans the directory and reports the files whose content changed.

use std::collections::{HashMap, HashSet};
use std::os::unix::fs::MetadataExt;
use std::path::{Path, PathBuf};
use std::time::Duration;

use notify::{RecursiveMode, Watcher};
use thiserror::Error;
use tokio::sync::mpsc;
use tracing::{debug, warn};

pub use super::FileEvent;

#[derive(Debug, Error)]
pub enum DirError {
    #[error("config directory {0}: {1}")]
    Read(PathBuf, std::io::Error),
    #[error("cannot watch config directory {0}: {1}")]
    Watch(PathBuf, notify::Error),
    #[error("config directory {0} is nested more than {1} levels deep (a link loop?); not loaded")]
    TooDeep(PathBuf, usize),
    #[error("config directory {0} holds more than {1} manifests; not loaded")]
    TooManyFiles(PathBuf, usize),
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

/// Deepest directory level the scan descends to (the config directory is level 0).
pub const MAX_DEPTH: usize = 32;
/// Most manifests one scan reads; a larger tree is refused rather than half-loaded.
pub const MAX_FILES: usize = 10_000;

/// Lists manifests below `dir` (recursively, sorted, hidden entries skipped).
///
/// Symbolic links are followed, but every real directory and file is visited once
/// (identified by device and inode): a link loop such as `a -> .` adds nothing, and a
/// manifest reachable by two paths is read under the first path only (in sorted order).
/// The walk stops with an error below [`MAX_DEPTH`] levels or past [`MAX_FILES`] manifests.
pub fn list_manifests(dir: &Path) -> Result<Vec<PathBuf>, DirError> {
    let mut out = Vec::new();
    let mut seen: HashSet<(u64, u64)> = HashSet::new();
    let root = std::fs::metadata(dir).map_err(|e| DirError::Read(dir.to_path_buf(), e))?;
    seen.insert((root.dev(), root.ino()));
    let mut stack = vec![(dir.to_path_buf(), 0usize)];
    while let Some((d, depth)) = stack.pop() {
        let entries = std::fs::read_dir(&d).map_err(|e| DirError::Read(d.clone(), e))?;
        let mut paths = Vec::new();
        for entry in entries {
            let entry = entry.map_err(|e| DirError::Read(d.clone(), e))?;
            if entry.file_name().to_string_lossy().starts_with('.') {
                continue;
            }
            paths.push(entry.path());
        }
        // Sorted, so which of two paths to one file wins does not depend on readdir order;
        // pushed in reverse, so subdirectories are walked in name order.
        paths.sort();
        let mut subdirs = Vec::new();
        for path in paths {
            // Follows links; a dangling link is skipped like an unreadable entry.
            let Ok(meta) = std::fs::metadata(&path) else {
                debug!(path = %path.display(), "skipping an entry that cannot be followed");
                continue;
            };
            if meta.is_dir() {
                if !seen.insert((meta.dev(), meta.ino())) {
                    debug!(path = %path.display(), "directory already scanned (link loop or second link)");
                    continue;
                }
                if depth + 1 > MAX_DEPTH {
                    return Err(DirError::TooDeep(path, MAX_DEPTH));
                }
                subdirs.push(path);
            } else if is_manifest(&path) && seen.insert((meta.dev(), meta.ino())) {
                if out.len() == MAX_FILES {
                    return Err(DirError::TooManyFiles(dir.to_path_buf(), MAX_FILES));
                }
                out.push(path);
            }
        }
        stack.extend(subdirs.into_iter().rev().map(|p| (p, depth + 1)));
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
    // The watcher does not follow links (a loop would make it register watches without
    // end); changes behind a link to another directory are picked up by the periodic rescan.
    let mut watcher = notify::RecommendedWatcher::new(
        move |res: notify::Result<notify::Event>| {
            if res.is_ok() {
                let _ = hint_tx.send(());
            }
        },
        notify::Config::default().with_follow_symlinks(false),
    )
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
    fn link_loops_and_second_links_are_visited_once() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("p.yaml"), "kind: A").unwrap();
        std::fs::create_dir(dir.path().join("sub")).unwrap();
        std::fs::write(dir.path().join("sub/q.yaml"), "kind: B").unwrap();
        for (link, to) in [
            ("loop-a", "."),
            ("loop-b", "."),
            ("sub/up", ".."),
            ("alias", "sub"),
        ] {
            std::os::unix::fs::symlink(to, dir.path().join(link)).unwrap();
        }
        std::os::unix::fs::symlink("p.yaml", dir.path().join("same.yaml")).unwrap();
        let got = list_manifests(dir.path()).unwrap();
        assert_eq!(
            got,
            // `alias` sorts before `sub`: sub/q.yaml is read as alias/q.yaml.
            vec![dir.path().join("alias/q.yaml"), dir.path().join("p.yaml")],
            "each real file once, under its first path in name order"
        );
    }

    #[test]
    fn too_deep_a_tree_is_a_named_error() {
        let dir = tempfile::tempdir().unwrap();
        let mut d = dir.path().to_path_buf();
        for i in 0..=MAX_DEPTH {
            d.push(format!("d{i}"));
        }
        std::fs::create_dir_all(&d).unwrap();
        let err = list_manifests(dir.path()).unwrap_err();
        assert!(matches!(err, DirError::TooDeep(..)), "{err}");
        assert!(err.to_string().contains("levels deep"), "{err}");
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

//! The validated resource store: current good objects per (kind, namespace, name), with the
//! file they came from. Pure logic, no IO: the caller feeds it file contents.
//!
//! Semantics of [`Store::apply_file`] / [`Store::remove_file`]:
//! - every valid document applies, even when other documents in the same file are bad;
//! - a document that becomes invalid keeps its **last good** version in force and its
//!   error is reported (the message ends with "last valid version stays in force").
//!   A document so broken that its kind/name cannot be read is matched to the resource
//!   that the same document position defined before;
//! - a resource no longer defined by its file (or whose file is removed) is deleted;
//! - the same kind/namespace/name defined twice (two files, or twice in one file): the
//!   first definition stays in force and the other is reported as a "duplicate" error
//!   naming both files. When the first goes away, the other takes over;
//! - re-applying unchanged content yields no [`Change`]; documents whose text did not
//!   change are not even parsed again (see [`Store::parsed_documents`]).
//!
//! [`Store::errors`] and [`Store::warnings`] always describe the current files: fixing a
//! problem clears its entry.

use std::collections::{BTreeMap, BTreeSet, HashMap, VecDeque};
use std::path::{Path, PathBuf};
use std::sync::Arc;

use crate::error::ApiError;
use crate::object::{Object, ObjectKey};
use crate::parse::{parse_document, split_documents, ParsedDocument, ParsedFile};

/// A change to the set of objects in force.
#[derive(Debug, Clone, PartialEq)]
pub enum Change {
    Upsert(Arc<Object>),
    Delete(ObjectKey),
}

impl Change {
    pub fn key(&self) -> ObjectKey {
        match self {
            Change::Upsert(o) => o.key(),
            Change::Delete(k) => k.clone(),
        }
    }
}

/// An object in force and the file that defines it.
#[derive(Debug, Clone, PartialEq)]
pub struct StoredObject {
    pub object: Arc<Object>,
    pub file: PathBuf,
}

#[derive(Debug, Clone)]
struct DocEntry {
    index: usize,
    item: Option<usize>,
    line: usize,
    key: Option<ObjectKey>,
    valid: Option<Arc<Object>>,
    last_good: Option<Arc<Object>>,
    errors: Vec<ApiError>,
    warnings: Vec<ApiError>,
    /// Text of the YAML document this entry came from (for re-parse avoidance).
    source: Option<Arc<str>>,
    /// Text of the document that defined the value in force ([`DocEntry::value`]): the
    /// entry's own source when valid, the last good one's when not.
    good_source: Option<Arc<str>>,
}

/// One document for [`Store::install`]: freshly parsed, or reused unchanged.
enum Input {
    Parsed(Box<ParsedDocument>, Option<Arc<str>>),
    Reused(DocEntry),
}

impl DocEntry {
    /// Moves an unchanged document to its new position in the file.
    fn shift(&mut self, index: usize, line: usize) {
        let delta = line as isize - self.line as isize;
        self.index = index;
        self.line = line;
        for e in self.errors.iter_mut().chain(self.warnings.iter_mut()) {
            e.document = index;
            if e.line > 0 {
                e.line = (e.line as isize + delta).max(1) as usize;
            }
        }
    }

    fn value(&self) -> Option<&Arc<Object>> {
        self.valid.as_ref().or(self.last_good.as_ref())
    }
    fn claims(&self) -> Option<(&ObjectKey, &Arc<Object>)> {
        Some((self.key.as_ref()?, self.value()?))
    }
}

#[derive(Debug, Clone, Default)]
struct FileEntry {
    docs: Vec<DocEntry>,
    default_namespace: String,
}

/// See the module documentation.
#[derive(Debug, Default)]
pub struct Store {
    files: BTreeMap<PathBuf, FileEntry>,
    /// key -> (file, doc position) of every document that could define it.
    claims: BTreeMap<ObjectKey, BTreeSet<(PathBuf, usize)>>,
    objects: BTreeMap<ObjectKey, StoredObject>,
    /// YAML documents parsed so far (unchanged documents are not parsed again).
    parsed_documents: u64,
}

impl Store {
    pub fn new() -> Self {
        Self::default()
    }

    /// Parses `text` (the full content of `path`) and applies it; returns what changed.
    ///
    /// Documents whose text did not change since the previous apply of the same file
    /// (with the same default namespace) are not parsed again.
    pub fn apply_file(&mut self, path: &Path, text: &str, default_namespace: &str) -> Vec<Change> {
        let old = self.files.remove(path).unwrap_or_default();
        let mut cache: HashMap<Arc<str>, VecDeque<Vec<DocEntry>>> = HashMap::new();
        if old.default_namespace == default_namespace {
            let mut i = 0;
            while i < old.docs.len() {
                let first = &old.docs[i];
                let Some(src) = first.source.clone() else {
                    i += 1;
                    continue;
                };
                let index = first.index;
                // Entries of one source document (several for a List) are contiguous.
                let mut group = Vec::new();
                while i < old.docs.len()
                    && old.docs[i].index == index
                    && old.docs[i]
                        .source
                        .as_ref()
                        .is_some_and(|s| Arc::ptr_eq(s, &src))
                {
                    group.push(old.docs[i].clone());
                    i += 1;
                }
                cache.entry(src).or_default().push_back(group);
            }
        }
        let mut inputs = Vec::new();
        for (index, line, doc_text) in split_documents(text) {
            if let Some(group) = cache.get_mut(doc_text.as_str()).and_then(|q| q.pop_front()) {
                for mut e in group {
                    e.shift(index, line);
                    inputs.push(Input::Reused(e));
                }
                continue;
            }
            self.parsed_documents += 1;
            let source: Arc<str> = Arc::from(doc_text.as_str());
            let mut parsed = Vec::new();
            parse_document(path, index, line, &doc_text, default_namespace, &mut parsed);
            inputs.extend(
                parsed
                    .into_iter()
                    .map(|d| Input::Parsed(Box::new(d), Some(Arc::clone(&source)))),
            );
        }
        self.install(path.to_path_buf(), old, inputs, default_namespace)
    }

    /// Applies an already parsed file.
    pub fn apply_parsed(&mut self, parsed: ParsedFile) -> Vec<Change> {
        let old = self.files.remove(&parsed.path).unwrap_or_default();
        let inputs = parsed
            .documents
            .into_iter()
            .map(|d| Input::Parsed(Box::new(d), None))
            .collect();
        self.install(parsed.path, old, inputs, "")
    }

    fn install(
        &mut self,
        path: PathBuf,
        old: FileEntry,
        inputs: Vec<Input>,
        default_namespace: &str,
    ) -> Vec<Change> {
        let mut old_values: BTreeMap<&ObjectKey, &Arc<Object>> = BTreeMap::new();
        let mut old_by_pos: BTreeMap<(usize, Option<usize>), &ObjectKey> = BTreeMap::new();
        let mut old_sources: BTreeMap<&ObjectKey, &Option<Arc<str>>> = BTreeMap::new();
        for d in &old.docs {
            if let Some((k, v)) = d.claims() {
                old_values.entry(k).or_insert(v);
                old_sources.entry(k).or_insert(&d.good_source);
                old_by_pos.insert((d.index, d.item), k);
            }
        }
        let new_keys: BTreeSet<&ObjectKey> = inputs
            .iter()
            .filter_map(|i| match i {
                Input::Parsed(d, _) => d.key.as_ref(),
                Input::Reused(e) => e.key.as_ref(),
            })
            .collect();
        let mut docs = Vec::with_capacity(inputs.len());
        for input in &inputs {
            let (d, source) = match input {
                Input::Reused(e) => {
                    docs.push(e.clone());
                    continue;
                }
                Input::Parsed(d, source) => (d, source),
            };
            let mut key = d.key.clone();
            if key.is_none() && d.result.is_err() {
                // Unreadable document: assume it is the one that used to be at this position.
                key = old_by_pos
                    .get(&(d.index, d.item))
                    .filter(|k| !new_keys.contains(*k))
                    .map(|k| (*k).clone());
            }
            let (valid, errors) = match &d.result {
                Ok(obj) => {
                    // Reuse the previous allocation when nothing changed.
                    let arc = match old_values.get(&obj.key()) {
                        Some(prev) if prev.as_ref() == obj => Arc::clone(prev),
                        _ => Arc::new(obj.clone()),
                    };
                    (Some(arc), Vec::new())
                }
                Err(errs) => (None, errs.clone()),
            };
            let last_good = if valid.is_none() {
                key.as_ref()
                    .and_then(|k| old_values.get(k))
                    .map(|v| Arc::clone(v))
            } else {
                None
            };
            let good_source = if valid.is_some() {
                source.clone()
            } else {
                key.as_ref()
                    .and_then(|k| old_sources.get(k))
                    .and_then(|s| (**s).clone())
            };
            docs.push(DocEntry {
                index: d.index,
                item: d.item,
                line: d.line,
                key,
                valid,
                last_good,
                errors,
                warnings: d.warnings.clone(),
                source: source.clone(),
                good_source,
            });
        }
        let mut affected: BTreeSet<ObjectKey> = BTreeSet::new();
        for (pos, d) in old.docs.iter().enumerate() {
            if let Some((k, _)) = d.claims() {
                self.unclaim(k, &path, pos);
                affected.insert(k.clone());
            }
        }
        for (pos, d) in docs.iter().enumerate() {
            if let Some((k, _)) = d.claims() {
                self.claims
                    .entry(k.clone())
                    .or_default()
                    .insert((path.clone(), pos));
                affected.insert(k.clone());
            }
        }
        self.files.insert(
            path,
            FileEntry {
                docs,
                default_namespace: default_namespace.to_string(),
            },
        );
        affected
            .into_iter()
            .filter_map(|k| self.resolve(k))
            .collect()
    }

    /// Forgets a file; everything it defined is deleted (or taken over by a duplicate).
    pub fn remove_file(&mut self, path: &Path) -> Vec<Change> {
        let Some(old) = self.files.remove(path) else {
            return Vec::new();
        };
        let mut affected = BTreeSet::new();
        for (pos, d) in old.docs.iter().enumerate() {
            if let Some((k, _)) = d.claims() {
                self.unclaim(k, path, pos);
                affected.insert(k.clone());
            }
        }
        affected
            .into_iter()
            .filter_map(|k| self.resolve(k))
            .collect()
    }

    fn unclaim(&mut self, key: &ObjectKey, path: &Path, pos: usize) {
        if let Some(set) = self.claims.get_mut(key) {
            set.remove(&(path.to_path_buf(), pos));
            if set.is_empty() {
                self.claims.remove(key);
            }
        }
    }

    /// Picks the definition in force for `key` and reports whether it changed.
    fn resolve(&mut self, key: ObjectKey) -> Option<Change> {
        let current_file = self.objects.get(&key).map(|s| s.file.clone());
        let claims = self.claims.get(&key);
        let winner = claims.and_then(|set| {
            current_file
                .as_ref()
                .and_then(|f| set.iter().find(|(p, _)| p == f))
                .or_else(|| set.iter().next())
                .cloned()
        });
        match winner {
            None => self.objects.remove(&key).map(|_| Change::Delete(key)),
            Some((file, pos)) => {
                let value = self.files[&file].docs[pos].value()?.clone();
                match self.objects.get_mut(&key) {
                    Some(s) if Arc::ptr_eq(&s.object, &value) || *s.object == *value => {
                        s.file = file;
                        s.object = value;
                        None
                    }
                    _ => {
                        self.objects.insert(
                            key,
                            StoredObject {
                                object: Arc::clone(&value),
                                file,
                            },
                        );
                        Some(Change::Upsert(value))
                    }
                }
            }
        }
    }

    /// How many YAML documents `apply_file` has parsed (documents that did not change
    /// since the previous apply of their file are reused, not parsed).
    pub fn parsed_documents(&self) -> u64 {
        self.parsed_documents
    }

    /// The object in force for `key`.
    pub fn get(&self, key: &ObjectKey) -> Option<&StoredObject> {
        self.objects.get(key)
    }

    /// All objects in force, ordered by key.
    pub fn objects(&self) -> impl Iterator<Item = (&ObjectKey, &StoredObject)> {
        self.objects.iter()
    }

    /// `Upsert` changes for every object in force (initial load of a consumer).
    pub fn snapshot(&self) -> Vec<Change> {
        self.objects
            .values()
            .map(|s| Change::Upsert(Arc::clone(&s.object)))
            .collect()
    }

    pub fn len(&self) -> usize {
        self.objects.len()
    }

    pub fn is_empty(&self) -> bool {
        self.objects.is_empty()
    }

    /// Files the store knows, in path order.
    pub fn files(&self) -> impl Iterator<Item = &Path> {
        self.files.keys().map(PathBuf::as_path)
    }

    /// Per file, the text of the documents whose versions are in force (valid now, or the
    /// last good version of one that is invalid now), in document order: applied to a new
    /// store, it restores the same objects. Files defining nothing in force are left out.
    /// (For persisting the last good config across restarts; `apply_parsed` input has no
    /// text and is not included.)
    pub fn last_good_files(&self) -> BTreeMap<PathBuf, String> {
        let mut out = BTreeMap::new();
        for (path, f) in &self.files {
            let mut docs: Vec<&Arc<str>> = Vec::new();
            for d in &f.docs {
                let Some(src) = d.good_source.as_ref().filter(|_| d.value().is_some()) else {
                    continue;
                };
                // A List's items share one source document.
                if docs.last().is_some_and(|last| Arc::ptr_eq(last, src)) {
                    continue;
                }
                docs.push(src);
            }
            if !docs.is_empty() {
                let text: Vec<&str> = docs.iter().map(|s| s.as_ref()).collect();
                out.insert(path.clone(), text.join("\n---\n"));
            }
        }
        out
    }

    /// Documents that failed to load and have no last good version: nothing of theirs is in
    /// force. Each comes with its first error and its text (when it was read from text).
    pub fn failed_without_last_good(&self) -> Vec<(ApiError, Option<Arc<str>>)> {
        self.files
            .values()
            .flat_map(|f| f.docs.iter())
            .filter(|d| d.value().is_none())
            .filter_map(|d| Some((d.errors.first()?.clone(), d.source.clone())))
            .collect()
    }

    /// Current errors: parse/validation errors of every document plus duplicates.
    pub fn errors(&self) -> Vec<ApiError> {
        let mut out = Vec::new();
        for (path, f) in &self.files {
            for (pos, d) in f.docs.iter().enumerate() {
                for e in &d.errors {
                    let mut e = e.clone();
                    if d.last_good.is_some() {
                        e.message.push_str(" (last valid version stays in force)");
                    }
                    out.push(e);
                }
                let Some((key, value)) = d.claims() else {
                    continue;
                };
                let Some(owner) = self.objects.get(key) else {
                    continue;
                };
                let owner_pos = self.claims.get(key).and_then(|set| {
                    set.iter()
                        .find(|(p, _)| *p == owner.file)
                        .map(|(_, pos)| *pos)
                });
                if owner.file == *path && owner_pos == Some(pos) {
                    continue;
                }
                let owner_doc = owner_pos
                    .and_then(|p| self.files.get(&owner.file).map(|f| &f.docs[p]))
                    .map(|d| d.index)
                    .unwrap_or(0);
                out.push(ApiError {
                    file: path.clone(),
                    document: d.index,
                    line: d.line,
                    kind: key.kind.to_string(),
                    namespace: key.namespace.clone(),
                    name: key.name.clone(),
                    field: "metadata.name".into(),
                    message: format!(
                        "duplicate {} {}: already defined in {} (doc {}); this definition in {} is ignored",
                        key.kind,
                        value.ns_name(),
                        owner.file.display(),
                        owner_doc,
                        path.display()
                    ),
                });
            }
        }
        out
    }

    /// Current warnings (unknown fields), in file order.
    pub fn warnings(&self) -> Vec<ApiError> {
        self.files
            .values()
            .flat_map(|f| f.docs.iter().flat_map(|d| d.warnings.iter().cloned()))
            .collect()
    }
}

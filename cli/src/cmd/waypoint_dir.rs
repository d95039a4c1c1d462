//! Directory mode: the waypoint as manifests in the control plane's watched YAML directory
//! (`controlplane --config-dir DIR`, the embedded/dir source), which picks changes up.
//!
//! - the Gateway goes to `DIR/waypoint.<ns>.<name>.yaml`;
//! - `--enroll-namespace` adds `istio.io/use-waypoint` to the namespace's manifest where it
//!   is defined (only that document is rewritten; comments inside it are lost), else
//!   writes `DIR/namespace.<ns>.yaml`;
//! - delete removes the Gateway's document (and its file when nothing else is in it).
//!
//! Files are written to a hidden temporary name and renamed, so the watcher never reads a
//! half-written file.

use std::path::{Path, PathBuf};

use meshwork_controlplane::source::dir::list_manifests;
use serde_json::Value;
use thiserror::Error;

use super::waypoint_manifest::{
    self as manifest, WaypointFor, LABEL_USE_WAYPOINT, LABEL_WAYPOINT_FOR,
};

#[derive(Debug, Error)]
pub enum DirModeError {
    #[error("--dir {0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("{0}: {1}")]
    Io(PathBuf, std::io::Error),
    #[error("Gateway {namespace}/{name} is already defined in {file}; edit that file instead")]
    DefinedElsewhere {
        namespace: String,
        name: String,
        file: PathBuf,
    },
    #[error("no waypoint Gateway {namespace}/{name} in {dir}")]
    NotFound {
        namespace: String,
        name: String,
        dir: PathBuf,
    },
    #[error("{0}: cannot encode: {1}")]
    Encode(PathBuf, String),
}

/// One file change.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum FileChange {
    Write(PathBuf, String),
    Remove(PathBuf),
}

impl FileChange {
    pub fn path(&self) -> &Path {
        match self {
            FileChange::Write(p, _) | FileChange::Remove(p) => p,
        }
    }
}

/// A document of a manifest file.
struct Doc {
    file: PathBuf,
    chunk: usize,
    value: Value,
}

/// A manifest split into the chunks between `---` lines.
fn chunks(text: &str) -> Vec<String> {
    let mut out = vec![String::new()];
    for line in text.split_inclusive('\n') {
        let l = line.trim_end();
        if l == "---" || l.starts_with("--- ") {
            out.push(String::new());
        } else if let Some(last) = out.last_mut() {
            last.push_str(line);
        }
    }
    out
}

fn join(chunks: &[String]) -> String {
    chunks
        .iter()
        .filter(|c| !c.trim().is_empty())
        .map(|c| {
            if c.ends_with('\n') {
                c.clone()
            } else {
                format!("{c}\n")
            }
        })
        .collect::<Vec<_>>()
        .join("---\n")
}

fn read(path: &Path) -> Result<String, DirModeError> {
    std::fs::read_to_string(path).map_err(|e| DirModeError::Io(path.to_path_buf(), e))
}

fn scan(dir: &Path) -> Result<Vec<Doc>, DirModeError> {
    if !dir.is_dir() {
        return Err(DirModeError::NotADirectory(dir.to_path_buf()));
    }
    let files = list_manifests(dir)
        .map_err(|e| DirModeError::Io(dir.to_path_buf(), std::io::Error::other(e.to_string())))?;
    let mut docs = Vec::new();
    for file in files {
        let text = read(&file)?;
        for (chunk, c) in chunks(&text).iter().enumerate() {
            // Unreadable documents are the store's to report; they define nothing here.
            if let Ok(value) = serde_yaml_ng::from_str::<Value>(c) {
                if value.is_object() {
                    docs.push(Doc {
                        file: file.clone(),
                        chunk,
                        value,
                    });
                }
            }
        }
    }
    Ok(docs)
}

fn namespace_of(v: &Value) -> &str {
    v["metadata"]["namespace"].as_str().unwrap_or("default")
}

fn find_gateway<'a>(docs: &'a [Doc], namespace: &str, name: &str) -> Option<&'a Doc> {
    docs.iter().find(|d| {
        d.value["kind"] == "Gateway"
            && d.value["metadata"]["name"] == name
            && namespace_of(&d.value) == namespace
    })
}

fn yaml(path: &Path, v: &Value) -> Result<String, DirModeError> {
    serde_yaml_ng::to_string(v).map_err(|e| DirModeError::Encode(path.to_path_buf(), e.to_string()))
}

/// The file holding the Gateway `namespace/name` written by this command.
pub fn gateway_file(dir: &Path, namespace: &str, name: &str) -> PathBuf {
    dir.join(format!("waypoint.{namespace}.{name}.yaml"))
}

/// The files to write for `meshwork waypoint apply --dir`.
pub fn plan_apply(
    dir: &Path,
    namespace: &str,
    name: &str,
    for_: WaypointFor,
    enroll: bool,
) -> Result<Vec<FileChange>, DirModeError> {
    let docs = scan(dir)?;
    let file = gateway_file(dir, namespace, name);
    if let Some(d) = find_gateway(&docs, namespace, name) {
        if d.file != file {
            return Err(DirModeError::DefinedElsewhere {
                namespace: namespace.into(),
                name: name.into(),
                file: d.file.clone(),
            });
        }
    }
    let mut out = vec![FileChange::Write(
        file.clone(),
        yaml(&file, &manifest::gateway(namespace, name, for_))?,
    )];
    if enroll {
        out.extend(plan_enroll(dir, &docs, namespace, name)?);
    }
    Ok(out)
}

fn plan_enroll(
    dir: &Path,
    docs: &[Doc],
    namespace: &str,
    name: &str,
) -> Result<Option<FileChange>, DirModeError> {
    let Some(d) = docs
        .iter()
        .find(|d| d.value["kind"] == "Namespace" && d.value["metadata"]["name"] == namespace)
    else {
        let file = dir.join(format!("namespace.{namespace}.yaml"));
        let text = yaml(&file, &manifest::namespace_enrollment(namespace, name))?;
        return Ok(Some(FileChange::Write(file, text)));
    };
    if d.value["metadata"]["labels"][LABEL_USE_WAYPOINT] == name {
        return Ok(None);
    }
    let mut v = d.value.clone();
    if !v["metadata"]["labels"].is_object() {
        v["metadata"]["labels"] = serde_json::json!({});
    }
    v["metadata"]["labels"][LABEL_USE_WAYPOINT] = Value::String(name.to_string());
    Ok(Some(replace_chunk(&d.file, d.chunk, Some(&v))?))
}

/// `file` with document `chunk` replaced by `v` (or removed); removing the last
/// document removes the file.
fn replace_chunk(file: &Path, chunk: usize, v: Option<&Value>) -> Result<FileChange, DirModeError> {
    let text = read(file)?;
    let is_json = file.extension().is_some_and(|e| e == "json");
    let mut parts = chunks(&text);
    match v {
        Some(v) if is_json => {
            let t = serde_json::to_string_pretty(v)
                .map_err(|e| DirModeError::Encode(file.to_path_buf(), e.to_string()))?;
            return Ok(FileChange::Write(file.to_path_buf(), t + "\n"));
        }
        Some(v) => parts[chunk] = yaml(file, v)?,
        None => parts[chunk] = String::new(),
    }
    let joined = join(&parts);
    Ok(if joined.trim().is_empty() {
        FileChange::Remove(file.to_path_buf())
    } else {
        FileChange::Write(file.to_path_buf(), joined)
    })
}

/// The change removing the Gateway `namespace/name` from the directory.
pub fn plan_delete(dir: &Path, namespace: &str, name: &str) -> Result<FileChange, DirModeError> {
    let docs = scan(dir)?;
    let d = find_gateway(&docs, namespace, name)
        .filter(|d| manifest::is_waypoint(&d.value))
        .ok_or_else(|| DirModeError::NotFound {
            namespace: namespace.into(),
            name: name.into(),
            dir: dir.to_path_buf(),
        })?;
    replace_chunk(&d.file, d.chunk, None)
}

/// Carries the changes out (write to a hidden temporary file, then rename).
pub fn execute(changes: &[FileChange]) -> Result<(), DirModeError> {
    for c in changes {
        match c {
            FileChange::Write(path, text) => {
                let name = path
                    .file_name()
                    .and_then(|n| n.to_str())
                    .unwrap_or("waypoint");
                let tmp = path.with_file_name(format!(".{name}.tmp"));
                std::fs::write(&tmp, text).map_err(|e| DirModeError::Io(tmp.clone(), e))?;
                std::fs::rename(&tmp, path).map_err(|e| DirModeError::Io(path.clone(), e))?;
            }
            FileChange::Remove(path) => {
                std::fs::remove_file(path).map_err(|e| DirModeError::Io(path.clone(), e))?
            }
        }
    }
    Ok(())
}

/// A waypoint found in the directory.
#[derive(Debug, Clone, PartialEq, Eq, serde::Serialize)]
pub struct Listed {
    pub namespace: String,
    pub name: String,
    #[serde(rename = "for")]
    pub for_: String,
    pub file: PathBuf,
}

/// The waypoint Gateways in `dir` (of `namespace` when given), by namespace and name.
pub fn list(dir: &Path, namespace: Option<&str>) -> Result<Vec<Listed>, DirModeError> {
    let mut out: Vec<Listed> = scan(dir)?
        .into_iter()
        .filter(|d| manifest::is_waypoint(&d.value))
        .filter(|d| namespace.is_none_or(|ns| namespace_of(&d.value) == ns))
        .map(|d| Listed {
            namespace: namespace_of(&d.value).to_string(),
            name: d.value["metadata"]["name"]
                .as_str()
                .unwrap_or_default()
                .to_string(),
            for_: d.value["metadata"]["labels"][LABEL_WAYPOINT_FOR]
                .as_str()
                .unwrap_or("service")
                .to_string(),
            file: d.file,
        })
        .collect();
    out.sort_by(|a, b| (&a.namespace, &a.name).cmp(&(&b.namespace, &b.name)));
    Ok(out)
}

/// Every document of a YAML text, as JSON values.
#[cfg(test)]
fn parse_yaml(text: &str) -> Result<Vec<Value>, serde_yaml_ng::Error> {
    use serde::Deserialize;
    serde_yaml_ng::Deserializer::from_str(text)
        .map(Value::deserialize)
        .filter(|v| !matches!(v, Ok(Value::Null)))
        .collect()
}

#[cfg(test)]
mod tests {
    use super::*;

    const NS_FILE: &str = "# apps\napiVersion: v1\nkind: Namespace\nmetadata:\n  name: shop\n  labels:\n    istio.io/dataplane-mode: ambient\n---\n# the service\napiVersion: v1\nkind: Service\nmetadata: {name: cart, namespace: shop}\nspec:\n  ports: [{port: 80}]\n";

    #[test]
    fn apply_writes_the_gateway_and_labels_the_namespace_in_place() {
        let dir = tempfile::tempdir().unwrap();
        std::fs::write(dir.path().join("apps.yaml"), NS_FILE).unwrap();
        let plan = plan_apply(dir.path(), "shop", "waypoint", WaypointFor::Service, true).unwrap();
        assert_eq!(plan.len(), 2);
        execute(&plan).unwrap();
        let gw = parse_yaml(
            &std::fs::read_to_string(dir.path().join("waypoint.shop.waypoint.yaml")).unwrap(),
        )
        .unwrap();
        assert!(manifest::is_waypoint(&gw[0]));
        let apps = std::fs::read_to_string(dir.path().join("apps.yaml")).unwrap();
        let docs = parse_yaml(&apps).unwrap();
        assert_eq!(docs.len(), 2);
        assert_eq!(
            docs[0]["metadata"]["labels"]["istio.io/use-waypoint"],
            "waypoint"
        );
        assert_eq!(
            docs[0]["metadata"]["labels"]["istio.io/dataplane-mode"],
            "ambient"
        );
        assert!(
            apps.contains("# the service"),
            "other documents keep their text: {apps}"
        );
        // Applying again: same Gateway file, namespace already labelled.
        let again = plan_apply(dir.path(), "shop", "waypoint", WaypointFor::Service, true).unwrap();
        assert_eq!(again.len(), 1);
    }

    #[test]
    fn enrolling_an_undeclared_namespace_writes_it() {
        let dir = tempfile::tempdir().unwrap();
        let plan = plan_apply(dir.path(), "shop", "wp", WaypointFor::All, true).unwrap();
        assert_eq!(plan[1].path(), dir.path().join("namespace.shop.yaml"));
    }

    #[test]
    fn a_gateway_defined_by_hand_is_not_duplicated_and_delete_removes_only_it() {
        let dir = tempfile::tempdir().unwrap();
        let own = "apiVersion: gateway.networking.k8s.io/v1\nkind: Gateway\nmetadata: {name: waypoint, namespace: shop}\nspec:\n  gatewayClassName: istio-waypoint\n  listeners: [{name: mesh, port: 15008, protocol: HBONE}]\n";
        std::fs::write(dir.path().join("all.yaml"), format!("{NS_FILE}---\n{own}")).unwrap();
        let e = plan_apply(dir.path(), "shop", "waypoint", WaypointFor::Service, false)
            .unwrap_err()
            .to_string();
        assert!(e.contains("all.yaml"), "{e}");
        let l = list(dir.path(), None).unwrap();
        assert_eq!(
            (l[0].namespace.as_str(), l[0].name.as_str()),
            ("shop", "waypoint")
        );
        assert!(list(dir.path(), Some("other")).unwrap().is_empty());
        let del = plan_delete(dir.path(), "shop", "waypoint").unwrap();
        execute(&[del]).unwrap();
        let rest =
            parse_yaml(&std::fs::read_to_string(dir.path().join("all.yaml")).unwrap()).unwrap();
        assert_eq!(rest.len(), 2, "namespace and service remain");
        let e = plan_delete(dir.path(), "shop", "waypoint")
            .unwrap_err()
            .to_string();
        assert!(e.contains("no waypoint Gateway shop/waypoint"), "{e}");
    }

    #[test]
    fn missing_directory_is_named() {
        let e = plan_apply(
            Path::new("/nonexistent/meshwork"),
            "a",
            "b",
            WaypointFor::Service,
            false,
        )
        .unwrap_err()
        .to_string();
        assert_eq!(e, "--dir /nonexistent/meshwork: not a directory");
    }
}

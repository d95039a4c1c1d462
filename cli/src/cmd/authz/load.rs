//! The model `authz check` decides over: translated offline from a directory of manifests,
//! or read from a running control plane's `/debug/model`.

use std::collections::BTreeMap;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use meshwork_api::Store;
use meshwork_controlplane::source::dir::list_manifests;
use meshwork_controlplane::translate::Translator;
use meshwork_model::pb::config::Resource;
use meshwork_model::Snapshot;

use crate::admin_client::get_json;

#[derive(Debug, thiserror::Error)]
pub enum LoadError {
    #[error("{0}: not a directory")]
    NotADirectory(PathBuf),
    #[error("listing manifests in {path}: {error}")]
    List { path: PathBuf, error: String },
    #[error("reading {path}: {error}")]
    Read {
        path: PathBuf,
        error: std::io::Error,
    },
    #[error("{0}")]
    Admin(String),
    #[error("{url}/debug/model: field `resources` is missing or not a list")]
    NoResources { url: String },
    #[error("{url}/debug/model: resource #{index} is not a model resource: {error}")]
    BadResource {
        url: String,
        index: usize,
        error: serde_json::Error,
    },
}

/// Translates the manifests of `dir` (recursively) as the control plane would.
pub fn from_dir(dir: &Path, namespace: &str) -> Result<Snapshot, LoadError> {
    if !dir.is_dir() {
        return Err(LoadError::NotADirectory(dir.to_path_buf()));
    }
    let mut store = Store::new();
    let files = list_manifests(dir).map_err(|e| LoadError::List {
        path: dir.to_path_buf(),
        error: e.to_string(),
    })?;
    for path in files {
        let text = std::fs::read_to_string(&path).map_err(|error| LoadError::Read {
            path: path.clone(),
            error,
        })?;
        store.apply_file(&path, &text, namespace);
    }
    for e in store.errors() {
        eprintln!("warning: {e} (left out)");
    }
    let mut translator = Translator::new();
    translator.apply_batch(&store.snapshot());
    let resources = translator
        .resources()
        .iter()
        .map(|(k, r)| (k.clone(), Arc::new(r.clone())))
        .collect();
    Ok(Snapshot::new(1, resources))
}

/// Reads the model a running control plane serves on its admin endpoint.
pub async fn from_controlplane(url: &str) -> Result<Snapshot, LoadError> {
    let v = get_json(url, "/debug/model")
        .await
        .map_err(|e| LoadError::Admin(format!("{e:#}")))?;
    parse_model(url, v)
}

fn parse_model(url: &str, v: serde_json::Value) -> Result<Snapshot, LoadError> {
    let url = url.trim_end_matches('/').to_string();
    let serde_json::Value::Object(mut obj) = v else {
        return Err(LoadError::NoResources { url });
    };
    let Some(serde_json::Value::Array(items)) = obj.remove("resources") else {
        return Err(LoadError::NoResources { url });
    };
    let mut resources = BTreeMap::new();
    for (index, item) in items.into_iter().enumerate() {
        let r: Resource = serde_json::from_value(item).map_err(|error| LoadError::BadResource {
            url: url.clone(),
            index,
            error,
        })?;
        resources.insert(r.key.clone(), Arc::new(r));
    }
    Ok(Snapshot::new(1, resources))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::{resource, Workload};

    #[test]
    fn model_json_round_trips() {
        let w = Workload {
            name: "a".into(),
            namespace: "ns".into(),
            service_account: "sa".into(),
            ..Default::default()
        };
        let r = make_resource("workload/ns/a".into(), resource::Kind::Workload(w));
        let v = serde_json::json!({ "version": 3, "resources": [r] });
        let snap = parse_model("http://x/", v).unwrap();
        assert_eq!(
            snap.workload("workload/ns/a").unwrap().service_account,
            "sa"
        );
        let e = parse_model("http://x/", serde_json::json!({})).unwrap_err();
        assert_eq!(
            e.to_string(),
            "http://x/debug/model: field `resources` is missing or not a list"
        );
        let e = parse_model("http://x", serde_json::json!({"resources": [1]})).unwrap_err();
        assert!(e.to_string().contains("resource #0"), "{e}");
    }

    #[test]
    fn missing_dir_is_named() {
        let e = from_dir(Path::new("/nonexistent/meshwork"), "default").unwrap_err();
        assert_eq!(e.to_string(), "/nonexistent/meshwork: not a directory");
    }
}

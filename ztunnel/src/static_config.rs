//! A fixed config read from a file (offline runs, benchmarks): one protobuf-encoded
//! `meshwork.config.v1.ConfigUpdate` whose resources make the snapshot.

use std::path::Path;

use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config::ConfigUpdate;
use meshwork_model::Snapshot;
use prost::Message;

#[derive(Debug, thiserror::Error)]
pub enum StaticConfigError {
    #[error("reading static config {path}: {source}")]
    Read {
        path: String,
        source: std::io::Error,
    },
    #[error("static config {path} is not a protobuf ConfigUpdate: {source}")]
    Decode {
        path: String,
        source: prost::DecodeError,
    },
}

/// Encodes `update` for [`load`].
pub fn encode(update: &ConfigUpdate) -> Vec<u8> {
    update.encode_to_vec()
}

pub fn load(path: &Path) -> Result<ConfigHandle, StaticConfigError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| StaticConfigError::Read {
        path: p.clone(),
        source,
    })?;
    let update = ConfigUpdate::decode(bytes.as_slice())
        .map_err(|source| StaticConfigError::Decode { path: p, source })?;
    let snap = Snapshot::default().apply(update.version, update.resources, &[]);
    Ok(ConfigHandle::fixed(snap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::{resource, Workload};

    #[test]
    fn round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("meshwork-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.pb");
        let w = Workload {
            name: "a".into(),
            namespace: "b".into(),
            ..Default::default()
        };
        let update = ConfigUpdate {
            version: 3,
            resources: vec![make_resource(
                "workload/b/a".into(),
                resource::Kind::Workload(w),
            )],
            ..Default::default()
        };
        std::fs::write(&f, encode(&update)).unwrap();
        let h = load(&f).unwrap();
        assert_eq!(h.snapshot().version, 3);
        assert!(h.snapshot().workload("workload/b/a").is_some());
        std::fs::write(&f, b"\xff\xff\xff").unwrap();
        let err = |p: &Path| match load(p) {
            Ok(_) => panic!("{} loaded", p.display()),
            Err(e) => e.to_string(),
        };
        assert!(err(&f).contains("not a protobuf"));
        assert!(err(&dir.join("missing")).contains("missing"));
        let _ = std::fs::remove_dir_all(dir);
    }
}

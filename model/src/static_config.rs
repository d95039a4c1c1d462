//! A fixed config read from a file instead of the control plane (offline runs,
//! benchmarks): one protobuf-encoded `ConfigUpdate` whose resources make the snapshot.
//! Both proxies read the same format.

use std::path::Path;

use prost::Message;

use crate::pb::config::ConfigUpdate;
use crate::snapshot::Snapshot;

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
    #[error("static config {path} is unusable: {reason}")]
    Invalid { path: String, reason: String },
}

/// Encodes `update` for [`load`].
pub fn encode(update: &ConfigUpdate) -> Vec<u8> {
    update.encode_to_vec()
}

/// Reads `path` and checks the snapshot with the proxy's own `validate` (the same check a
/// live update must pass before it is ACKed).
pub fn load(
    path: &Path,
    validate: impl Fn(&Snapshot) -> Result<(), String>,
) -> Result<Snapshot, StaticConfigError> {
    let p = path.display().to_string();
    let bytes = std::fs::read(path).map_err(|source| StaticConfigError::Read {
        path: p.clone(),
        source,
    })?;
    let update =
        ConfigUpdate::decode(bytes.as_slice()).map_err(|source| StaticConfigError::Decode {
            path: p.clone(),
            source,
        })?;
    let snap = Snapshot::default().apply(update.version, update.resources, &[]);
    validate(&snap).map_err(|reason| StaticConfigError::Invalid { path: p, reason })?;
    Ok(snap)
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::keys::make_resource;
    use crate::pb::config::{resource, Workload};

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
        let snap = load(&f, |_| Ok(())).unwrap();
        assert_eq!(snap.version, 3);
        assert!(snap.workload("workload/b/a").is_some());
        let refused = load(&f, |_| Err("no workloads allowed".into())).unwrap_err();
        assert!(
            matches!(refused, StaticConfigError::Invalid { .. }),
            "{refused}"
        );
        assert!(refused.to_string().contains("no workloads allowed"));

        std::fs::write(&f, b"\xff\xff\xff").unwrap();
        let err = load(&f, |_| Ok(())).unwrap_err();
        assert!(err.to_string().contains("not a protobuf"), "{err}");
        let err = load(&dir.join("missing"), |_| Ok(())).unwrap_err();
        assert!(matches!(err, StaticConfigError::Read { .. }), "{err}");
        let _ = std::fs::remove_dir_all(dir);
    }
}

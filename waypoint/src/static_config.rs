//! A fixed config read from a file instead of the control plane (offline runs, benchmarks):
//! one protobuf-encoded `meshwork.config.v1.ConfigUpdate` (the format ztunnel reads too).

use std::path::Path;

use meshwork_model::client::ConfigHandle;
use meshwork_model::pb::config::ConfigUpdate;
use meshwork_model::snapshot::Snapshot;
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
    #[error("static config {path} is unusable: {reason}")]
    Invalid { path: String, reason: String },
}

pub fn load(path: &Path) -> Result<ConfigHandle, StaticConfigError> {
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
    crate::config::validate(&snap)
        .map_err(|reason| StaticConfigError::Invalid { path: p, reason })?;
    Ok(ConfigHandle::fixed(snap))
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::keys::make_resource;
    use meshwork_model::pb::config::{resource, RouteConfig, Service};

    #[test]
    fn round_trip_and_errors() {
        let dir = std::env::temp_dir().join(format!("meshwork-wp-static-{}", std::process::id()));
        std::fs::create_dir_all(&dir).unwrap();
        let f = dir.join("config.pb");
        let s = Service {
            name: "a".into(),
            namespace: "b".into(),
            hostname: "a.b.svc.cluster.local".into(),
            ..Default::default()
        };
        let update = ConfigUpdate {
            version: 3,
            resources: vec![make_resource(
                "service/b/a.b.svc.cluster.local".into(),
                resource::Kind::Service(s),
            )],
            ..Default::default()
        };
        std::fs::write(&f, update.encode_to_vec()).unwrap();
        let h = load(&f).unwrap();
        assert_eq!(h.snapshot().version, 3);
        std::fs::write(&f, b"\xff\xff\xff").unwrap();
        assert!(matches!(load(&f), Err(StaticConfigError::Decode { .. })));
        let bad_route = RouteConfig {
            hostname: "a".into(),
            namespace: "b".into(),
            http: vec![meshwork_model::pb::config::HttpRoute {
                matches: vec![meshwork_model::pb::config::RouteMatch {
                    uri: Some(meshwork_model::pb::config::StringMatch {
                        r#match: Some(meshwork_model::pb::config::string_match::Match::Regex(
                            "(".into(),
                        )),
                        present: false,
                    }),
                    ..Default::default()
                }],
                ..Default::default()
            }],
            ..Default::default()
        };
        let update = ConfigUpdate {
            version: 4,
            resources: vec![make_resource(
                "route/b/a".into(),
                resource::Kind::Route(bad_route),
            )],
            ..Default::default()
        };
        std::fs::write(&f, update.encode_to_vec()).unwrap();
        assert!(matches!(load(&f), Err(StaticConfigError::Invalid { .. })));
        assert!(matches!(
            load(&dir.join("missing.pb")),
            Err(StaticConfigError::Read { .. })
        ));
        let _ = std::fs::remove_dir_all(&dir);
    }
}

//! Resource keys (`workload/<ns>/<name>`, …) and content versions.

use crate::pb::config::{resource, Resource};

/// The kind of a model resource, as encoded in the first segment of its key.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub enum Kind {
    Mesh,
    Workload,
    Service,
    Authorization,
    Route,
    Telemetry,
    WasmPlugin,
}

impl Kind {
    pub const fn prefix(self) -> &'static str {
        match self {
            Kind::Mesh => "mesh",
            Kind::Workload => "workload",
            Kind::Service => "service",
            Kind::Authorization => "authz",
            Kind::Route => "route",
            Kind::Telemetry => "telemetry",
            Kind::WasmPlugin => "wasmplugin",
        }
    }

    /// The kind named by a key's first segment.
    pub fn of_key(key: &str) -> Option<Kind> {
        let prefix = key.split('/').next()?;
        [
            Kind::Mesh,
            Kind::Workload,
            Kind::Service,
            Kind::Authorization,
            Kind::Route,
            Kind::Telemetry,
            Kind::WasmPlugin,
        ]
        .into_iter()
        .find(|k| k.prefix() == prefix)
    }

    /// Key for a namespaced resource: `<kind>/<ns>/<name>`.
    pub fn key(self, namespace: &str, name: &str) -> String {
        format!("{}/{namespace}/{name}", self.prefix())
    }

    pub fn of_resource(r: &resource::Kind) -> Kind {
        match r {
            resource::Kind::Mesh(_) => Kind::Mesh,
            resource::Kind::Workload(_) => Kind::Workload,
            resource::Kind::Service(_) => Kind::Service,
            resource::Kind::Authorization(_) => Kind::Authorization,
            resource::Kind::Route(_) => Kind::Route,
            resource::Kind::Telemetry(_) => Kind::Telemetry,
            resource::Kind::WasmPlugin(_) => Kind::WasmPlugin,
        }
    }
}

/// Splits `<kind>/<ns>/<name>` into namespace and name (name may contain no `/`).
pub fn namespace_and_name(key: &str) -> Option<(&str, &str)> {
    let mut parts = key.splitn(3, '/');
    let _kind = parts.next()?;
    Some((parts.next()?, parts.next()?))
}

/// Stable content version of a resource body: FNV-1a 64 of its protobuf encoding, in hex.
/// Maps are generated as `BTreeMap`, so equal content always encodes to equal bytes.
pub fn resource_version(kind: &resource::Kind) -> String {
    let mut buf = Vec::with_capacity(256);
    kind.encode(&mut buf);
    let mut hash: u64 = 0xcbf2_9ce4_8422_2325;
    for b in buf {
        hash ^= u64::from(b);
        hash = hash.wrapping_mul(0x0100_0000_01b3);
    }
    format!("{hash:016x}")
}

/// Builds a keyed, versioned resource.
pub fn make_resource(key: String, kind: resource::Kind) -> Resource {
    Resource {
        version: resource_version(&kind),
        key,
        kind: Some(kind),
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::pb::config::Workload;

    #[test]
    fn kinds_round_trip_through_keys() {
        let key = Kind::Workload.key("production", "order-1");
        assert_eq!(key, "workload/production/order-1");
        assert_eq!(Kind::of_key(&key), Some(Kind::Workload));
        assert_eq!(namespace_and_name(&key), Some(("production", "order-1")));
        assert_eq!(Kind::of_key("mesh"), Some(Kind::Mesh));
        assert_eq!(Kind::of_key("bogus/x/y"), None);
    }

    #[test]
    fn version_tracks_content() {
        let a = resource::Kind::Workload(Workload {
            name: "a".into(),
            ..Default::default()
        });
        let b = resource::Kind::Workload(Workload {
            name: "b".into(),
            ..Default::default()
        });
        assert_eq!(resource_version(&a), resource_version(&a.clone()));
        assert_ne!(resource_version(&a), resource_version(&b));
    }
}

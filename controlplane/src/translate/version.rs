//! Resource construction and content versions.

use meshwork_model::pb::config::{resource::Kind, Resource};
use prost::Message;

/// FNV-1a 64-bit: stable across runs, platforms and releases (unlike `DefaultHasher`).
pub fn fnv1a64(bytes: &[u8]) -> u64 {
    let mut h: u64 = 0xcbf2_9ce4_8422_2325;
    for b in bytes {
        h ^= u64::from(*b);
        h = h.wrapping_mul(0x0000_0100_0000_01b3);
    }
    h
}

/// Builds a `Resource` whose version is the hex hash of the prost encoding of its
/// content. Maps are `BTreeMap`s in the generated code, so the encoding is deterministic.
pub fn resource(key: String, kind: Kind) -> Resource {
    let mut r = Resource {
        key,
        version: String::new(),
        kind: Some(kind),
    };
    let encoded = r.encode_to_vec();
    r.version = format!("{:016x}", fnv1a64(&encoded));
    r
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_model::pb::config::MeshSettings;

    #[test]
    fn version_is_stable_and_content_sensitive() {
        let mesh = |td: &str| {
            Kind::Mesh(MeshSettings {
                trust_domain: td.into(),
                ..Default::default()
            })
        };
        let a = resource("mesh".into(), mesh("cluster.local"));
        let b = resource("mesh".into(), mesh("cluster.local"));
        let c = resource("mesh".into(), mesh("other.local"));
        assert_eq!(a.version, b.version);
        assert_ne!(a.version, c.version);
        assert_eq!(a.version.len(), 16);
        // Known FNV-1a vector.
        assert_eq!(fnv1a64(b"a"), 0xaf63_dc4c_8601_ec8c);
    }
}

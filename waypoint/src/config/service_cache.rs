//! Which waypoint this is, and the per-service caches keyed by it: leaves that the compiled
//! config ([`super`]) and the Telemetry settings ([`crate::telemetry::policy`]) both use.

use meshwork_runtime::sync::LockExt;
use std::collections::HashMap;
use std::sync::Mutex;

/// Which waypoint this is (its Gateway).
#[derive(Debug, Clone, Default, PartialEq, Eq, Hash)]
pub struct WaypointId {
    pub namespace: String,
    pub name: String,
}

/// Values per (waypoint, namespace, name), filled lazily; a hit allocates nothing.
#[derive(Debug)]
pub struct ServiceCache<V>(Mutex<HashMap<WaypointId, Nested<V>>>);

/// namespace → name → value.
pub(crate) type Nested<V> = HashMap<String, HashMap<String, V>>;

impl<V> Default for ServiceCache<V> {
    fn default() -> Self {
        ServiceCache(Mutex::new(HashMap::new()))
    }
}

impl<V: Clone> ServiceCache<V> {
    /// The cached value, or `make()`'s, which is then cached.
    pub fn get_or_insert_with(
        &self,
        waypoint: &WaypointId,
        namespace: &str,
        name: &str,
        make: impl FnOnce() -> V,
    ) -> V {
        let mut map = self.0.lock_or_recover();
        if let Some(v) = map
            .get(waypoint)
            .and_then(|m| m.get(namespace))
            .and_then(|m| m.get(name))
        {
            return v.clone();
        }
        let v = make();
        map.entry(waypoint.clone())
            .or_default()
            .entry(namespace.to_string())
            .or_default()
            .insert(name.to_string(), v.clone());
        v
    }
}

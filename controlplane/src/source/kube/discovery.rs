//! Live discovery of the CRD-backed kinds: the CustomResourceDefinitions
//! (`apiextensions.k8s.io/v1`) are watched, and each Istio or Gateway API kind is watched
//! at the first of its candidate versions its CRD serves, from when the CRD appears until
//! it is removed. A CRD installed after the control plane started needs no restart.
//!
//! When the CRDs cannot be watched (RBAC without `customresourcedefinitions`), API
//! discovery (`GET /apis/<group>/<version>`, open to every authenticated client) is polled
//! instead, every [`POLL`]: see [`discover`].

use std::collections::BTreeMap;
use std::time::Duration;

use ::kube::core::{ApiResource, DynamicObject};
use ::kube::runtime::watcher::Event;
use ::kube::Client;

use super::resources::WATCHED;

/// The CRD resource.
pub fn crd_resource() -> ApiResource {
    ApiResource {
        group: "apiextensions.k8s.io".into(),
        version: "v1".into(),
        api_version: "apiextensions.k8s.io/v1".into(),
        kind: "CustomResourceDefinition".into(),
        plural: "customresourcedefinitions".into(),
    }
}

/// A CRD-backed resource and the versions served of it.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ServedResource {
    pub group: String,
    pub plural: String,
    pub versions: Vec<String>,
}

/// How often API discovery is polled while the CRDs cannot be watched.
pub const POLL: Duration = Duration::from_secs(30);

/// `(group, plural, served versions)` of the CRD-backed watched kinds, by API discovery.
pub async fn discover(client: &Client) -> Result<Vec<ServedResource>, ::kube::Error> {
    let mut groups: BTreeMap<String, Option<Vec<String>>> = BTreeMap::new();
    let mut out = Vec::new();
    for w in WATCHED.iter().filter(|w| w.from_crd()) {
        let mut versions = Vec::new();
        for v in w.versions {
            let gv = format!("{}/{}", w.group, v);
            if !groups.contains_key(&gv) {
                let plurals = match client.list_api_group_resources(&gv).await {
                    Ok(list) => Some(list.resources.into_iter().map(|r| r.name).collect()),
                    Err(::kube::Error::Api(s)) if s.code == 404 => None,
                    Err(e) => return Err(e),
                };
                groups.insert(gv.clone(), plurals);
            }
            if groups[&gv]
                .as_ref()
                .is_some_and(|p| p.iter().any(|n| n == w.plural))
            {
                versions.push(v.to_string());
            }
        }
        out.push(ServedResource {
            group: w.group.to_string(),
            plural: w.plural.to_string(),
            versions,
        });
    }
    Ok(out)
}

/// `(group, plural)` → served versions, from the CRDs seen.
#[derive(Debug, Default)]
pub struct Crds {
    /// By CRD name.
    served: BTreeMap<String, ServedResource>,
    relist: Option<BTreeMap<String, ServedResource>>,
    synced: bool,
}

fn read(crd: &DynamicObject) -> Option<(String, ServedResource)> {
    let name = crd.metadata.name.clone()?;
    let spec = crd.data.get("spec")?;
    let group = spec["group"].as_str()?.to_string();
    let plural = spec["names"]["plural"].as_str()?.to_string();
    let versions = spec["versions"]
        .as_array()?
        .iter()
        .filter(|v| v["served"].as_bool().unwrap_or(false))
        .filter_map(|v| v["name"].as_str().map(String::from))
        .collect();
    Some((
        name,
        ServedResource {
            group,
            plural,
            versions,
        },
    ))
}

impl Crds {
    /// Whether the first list of CRDs is complete.
    pub fn is_synced(&self) -> bool {
        self.synced
    }

    /// Replaces what is served with the result of [`discover`] (the CRDs cannot be
    /// watched); true when it changed.
    pub fn set_discovered(&mut self, found: Vec<ServedResource>) -> bool {
        let served: BTreeMap<_, _> = found
            .into_iter()
            .map(|r| (format!("{}.{}", r.plural, r.group), r))
            .collect();
        self.synced = true;
        self.relist = None;
        if served == self.served {
            return false;
        }
        self.served = served;
        true
    }

    /// Takes a CRD watch event; true when the set of served versions may have changed.
    pub fn handle(&mut self, event: Event<DynamicObject>) -> bool {
        match event {
            Event::Apply(crd) => read(&crd)
                .map(|(name, v)| self.served.insert(name, v.clone()) != Some(v))
                .unwrap_or(false),
            Event::Delete(crd) => crd
                .metadata
                .name
                .as_ref()
                .is_some_and(|n| self.served.remove(n).is_some()),
            Event::Init => {
                self.relist = Some(BTreeMap::new());
                false
            }
            Event::InitApply(crd) => {
                if let Some((name, v)) = read(&crd) {
                    self.relist.get_or_insert_default().insert(name, v);
                }
                false
            }
            Event::InitDone => {
                self.served = self.relist.take().unwrap_or_default();
                self.synced = true;
                true
            }
        }
    }

    /// The version each CRD-backed watched kind is to be watched at, by position in
    /// [`WATCHED`]; kinds whose CRD is missing (or serves none of the candidates) are
    /// left out.
    pub fn resolve(&self) -> BTreeMap<usize, ApiResource> {
        WATCHED
            .iter()
            .enumerate()
            .filter(|(_, w)| w.from_crd())
            .filter_map(|(i, w)| {
                let served = self
                    .served
                    .values()
                    .find(|r| r.group == w.group && r.plural == w.plural)?;
                let v = w
                    .versions
                    .iter()
                    .find(|v| served.versions.iter().any(|s| s == *v))?;
                Some((i, w.api_resource(v)))
            })
            .collect()
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use serde_json::json;

    fn crd(group: &str, plural: &str, versions: &[(&str, bool)]) -> DynamicObject {
        let versions: Vec<_> = versions
            .iter()
            .map(|(n, s)| json!({"name": n, "served": s}))
            .collect();
        serde_json::from_value(json!({
            "metadata": {"name": format!("{plural}.{group}")},
            "spec": {"group": group, "names": {"plural": plural, "kind": "X"},
                     "versions": versions}
        }))
        .unwrap()
    }

    fn kinds(c: &Crds) -> Vec<String> {
        c.resolve()
            .values()
            .map(|r| format!("{} {}", r.kind, r.api_version))
            .collect()
    }

    #[test]
    fn a_kind_is_watched_at_its_first_served_candidate_while_its_crd_exists() {
        let mut c = Crds::default();
        c.handle(Event::Init);
        c.handle(Event::InitApply(crd(
            "security.istio.io",
            "authorizationpolicies",
            &[("v1beta1", true), ("v1", false)],
        )));
        assert!(!c.is_synced());
        assert!(c.handle(Event::InitDone));
        assert_eq!(kinds(&c), ["AuthorizationPolicy security.istio.io/v1beta1"]);
        // Upgraded CRD: v1 served now, and preferred.
        assert!(c.handle(Event::Apply(crd(
            "security.istio.io",
            "authorizationpolicies",
            &[("v1beta1", true), ("v1", true)],
        ))));
        assert_eq!(kinds(&c), ["AuthorizationPolicy security.istio.io/v1"]);
        // Unrelated CRDs are ignored; removal stops the kind.
        c.handle(Event::Apply(crd("example.com", "widgets", &[("v1", true)])));
        assert_eq!(kinds(&c).len(), 1);
        assert!(c.handle(Event::Delete(crd(
            "security.istio.io",
            "authorizationpolicies",
            &[]
        ))));
        assert!(kinds(&c).is_empty());
    }
}

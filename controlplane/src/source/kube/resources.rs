//! The kinds the Kubernetes source watches, and the API version each is watched at.
//!
//! One version per kind: the API server serves every stored object at every served version
//! of its CRD (converting on the fly), so watching one version sees every object, however
//! it was written (`networking.istio.io/v1alpha3` manifests included). The preferred
//! version is the storage version of current Istio / Gateway API releases (`v1`); when a
//! cluster only serves an older version (Istio before 1.22 has no `security.istio.io/v1`
//! nor `telemetry.istio.io/v1`), the next candidate is used. A kind whose group is not
//! served at all (Gateway API CRDs not installed) is not watched until its CRD is
//! installed (see [`super::discovery`]).

use ::kube::core::ApiResource;

/// Scope of a watched kind.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Scope {
    Cluster,
    /// Every namespace.
    AllNamespaces,
    /// Only the mesh root namespace (the mesh ConfigMap lives there).
    RootNamespace,
}

/// A kind the source watches.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct WatchedKind {
    pub kind: &'static str,
    /// API group; empty for the core group.
    pub group: &'static str,
    /// Candidate versions, preferred first.
    pub versions: &'static [&'static str],
    pub plural: &'static str,
    pub scope: Scope,
    /// Istio kinds get an `Accepted` status condition written back.
    pub writes_status: bool,
    /// Watched only when the canary controller runs in Kubernetes
    /// ([`super::KubeSourceOptions::canary`]): Deployments and Flagger's kinds.
    pub canary_only: bool,
}

impl WatchedKind {
    /// The [`ApiResource`] for `version` (one of [`Self::versions`]).
    pub fn api_resource(&self, version: &str) -> ApiResource {
        let api_version = if self.group.is_empty() {
            version.to_string()
        } else {
            format!("{}/{}", self.group, version)
        };
        ApiResource {
            group: self.group.to_string(),
            version: version.to_string(),
            api_version,
            kind: self.kind.to_string(),
            plural: self.plural.to_string(),
        }
    }

    /// The [`ApiResource`] at the preferred version.
    pub fn preferred(&self) -> ApiResource {
        self.api_resource(self.versions[0])
    }

    pub fn is_namespaced(&self) -> bool {
        self.scope != Scope::Cluster
    }

    /// Whether the kind comes from a CustomResourceDefinition (Istio, Gateway API): it is
    /// watched only while its CRD is installed. Core and `discovery.k8s.io` kinds are
    /// built in.
    pub fn from_crd(&self) -> bool {
        !(self.group.is_empty() || self.group == "discovery.k8s.io" || self.group == "apps")
    }
}

const fn kind(
    kind: &'static str,
    group: &'static str,
    versions: &'static [&'static str],
    plural: &'static str,
    scope: Scope,
    writes_status: bool,
) -> WatchedKind {
    WatchedKind {
        kind,
        group,
        versions,
        plural,
        scope,
        writes_status,
        canary_only: false,
    }
}

/// A kind only the canary controller reads.
const fn canary_kind(
    kind: &'static str,
    group: &'static str,
    versions: &'static [&'static str],
    plural: &'static str,
) -> WatchedKind {
    WatchedKind {
        kind,
        group,
        versions,
        plural,
        scope: Scope::AllNamespaces,
        writes_status: false,
        canary_only: true,
    }
}

const ISTIO_NETWORKING: &[&str] = &["v1", "v1beta1", "v1alpha3"];
const ISTIO_SECURITY: &[&str] = &["v1", "v1beta1"];
const ISTIO_TELEMETRY: &[&str] = &["v1", "v1alpha1"];
const ISTIO_EXTENSIONS: &[&str] = &["v1alpha1"];
const GATEWAY_API: &[&str] = &["v1", "v1beta1"];
const CORE: &[&str] = &["v1"];
const FLAGGER: &[&str] = &["v1beta1"];

/// Every watched kind.
pub const WATCHED: &[WatchedKind] = &[
    kind("Namespace", "", CORE, "namespaces", Scope::Cluster, false),
    kind("Pod", "", CORE, "pods", Scope::AllNamespaces, false),
    kind("Service", "", CORE, "services", Scope::AllNamespaces, false),
    kind(
        "EndpointSlice",
        "discovery.k8s.io",
        CORE,
        "endpointslices",
        Scope::AllNamespaces,
        false,
    ),
    kind(
        "ServiceAccount",
        "",
        CORE,
        "serviceaccounts",
        Scope::AllNamespaces,
        false,
    ),
    kind(
        "ConfigMap",
        "",
        CORE,
        "configmaps",
        Scope::RootNamespace,
        false,
    ),
    kind(
        "VirtualService",
        "networking.istio.io",
        ISTIO_NETWORKING,
        "virtualservices",
        Scope::AllNamespaces,
        true,
    ),
    kind(
        "DestinationRule",
        "networking.istio.io",
        ISTIO_NETWORKING,
        "destinationrules",
        Scope::AllNamespaces,
        true,
    ),
    kind(
        "PeerAuthentication",
        "security.istio.io",
        ISTIO_SECURITY,
        "peerauthentications",
        Scope::AllNamespaces,
        true,
    ),
    kind(
        "AuthorizationPolicy",
        "security.istio.io",
        ISTIO_SECURITY,
        "authorizationpolicies",
        Scope::AllNamespaces,
        true,
    ),
    kind(
        "Telemetry",
        "telemetry.istio.io",
        ISTIO_TELEMETRY,
        "telemetries",
        Scope::AllNamespaces,
        true,
    ),
    kind(
        "WasmPlugin",
        "extensions.istio.io",
        ISTIO_EXTENSIONS,
        "wasmplugins",
        Scope::AllNamespaces,
        true,
    ),
    kind(
        "Gateway",
        "gateway.networking.k8s.io",
        GATEWAY_API,
        "gateways",
        Scope::AllNamespaces,
        false,
    ),
    kind(
        "HTTPRoute",
        "gateway.networking.k8s.io",
        GATEWAY_API,
        "httproutes",
        Scope::AllNamespaces,
        false,
    ),
    kind(
        "GRPCRoute",
        "gateway.networking.k8s.io",
        GATEWAY_API,
        "grpcroutes",
        Scope::AllNamespaces,
        false,
    ),
    // The canary controller's inputs: the target (and `<target>-primary`) Deployments,
    // Flagger's Canary and MetricTemplate (while their CRDs are installed).
    canary_kind("Deployment", "apps", CORE, "deployments"),
    canary_kind("Canary", "flagger.app", FLAGGER, "canaries"),
    canary_kind("MetricTemplate", "flagger.app", FLAGGER, "metrictemplates"),
];

/// Looks a watched kind up by its `kind:` string.
pub fn watched(kind: &str) -> Option<&'static WatchedKind> {
    WATCHED.iter().find(|k| k.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_api::Kind;

    #[test]
    fn every_watched_kind_is_accepted_by_the_api_at_every_candidate_version() {
        for w in WATCHED {
            let k = Kind::from_kind_str(w.kind).unwrap_or_else(|| panic!("{} unknown", w.kind));
            for v in w.versions {
                let ar = w.api_resource(v);
                assert!(
                    k.api_versions().contains(&ar.api_version.as_str()),
                    "{} at {}",
                    w.kind,
                    ar.api_version
                );
            }
            assert_eq!(k.is_cluster_scoped(), !w.is_namespaced(), "{}", w.kind);
        }
    }

    #[test]
    fn api_resource_paths() {
        let vs = watched("VirtualService").unwrap().preferred();
        assert_eq!(vs.api_version, "networking.istio.io/v1");
        assert_eq!(vs.plural, "virtualservices");
        let pod = watched("Pod").unwrap().preferred();
        assert_eq!(pod.api_version, "v1");
        assert_eq!(pod.group, "");
        let d = watched("Deployment").unwrap();
        assert_eq!(d.preferred().api_version, "apps/v1");
        assert!(!d.from_crd() && d.canary_only);
        let c = watched("Canary").unwrap();
        assert_eq!(c.preferred().api_version, "flagger.app/v1beta1");
        assert_eq!(c.plural, "canaries");
        assert!(c.from_crd() && c.canary_only);
        assert!(!watched("VirtualService").unwrap().canary_only);
    }

    #[test]
    fn only_istio_kinds_write_status() {
        let writers: Vec<_> = WATCHED
            .iter()
            .filter(|w| w.writes_status)
            .map(|w| w.group)
            .collect();
        assert!(
            writers.iter().all(|g| g.ends_with("istio.io")),
            "{writers:?}"
        );
        assert_eq!(writers.len(), 6);
    }
}

//! The Istio kinds Meshwork serves CRDs for: names, versions and printer columns as
//! Istio's own CRDs have them, and the Rust type each spec is read into.

use crate::{extensions, networking, security, telemetry, Kind};
use schemars::{JsonSchema, Schema, SchemaGenerator};

/// A column `kubectl get` shows.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct PrinterColumn {
    pub name: &'static str,
    /// `string`, `integer`, `date`, ...
    pub type_: &'static str,
    pub json_path: &'static str,
    pub description: &'static str,
}

/// One Istio kind: everything its CRD needs besides the schema.
#[derive(Debug, Clone, Copy)]
pub struct CrdKind {
    pub kind: Kind,
    pub group: &'static str,
    pub plural: &'static str,
    pub short_names: &'static [&'static str],
    /// Category besides `istio-io` (`kubectl get networking-istio-io`).
    pub category: &'static str,
    /// The version the API server stores; the same as Istio's CRDs (istio/api
    /// `kubernetes/customresourcedefinitions.gen.yaml`), so that switching between Istio's
    /// CRDs and these keeps stored objects readable.
    pub storage_version: &'static str,
    pub spec_description: &'static str,
    pub columns: &'static [PrinterColumn],
    /// Root JSON Schema of the spec type (all served versions share one schema).
    pub spec_schema: fn(&mut SchemaGenerator) -> Schema,
}

impl CrdKind {
    /// `<plural>.<group>`, the CRD's name.
    pub fn crd_name(&self) -> String {
        format!("{}.{}", self.plural, self.group)
    }

    /// Served versions, in the order Istio lists them (from [`Kind::api_versions`]).
    pub fn versions(&self) -> Vec<&'static str> {
        self.kind
            .api_versions()
            .iter()
            .filter_map(|v| v.strip_prefix(self.group)?.strip_prefix('/'))
            .collect()
    }
}

fn root_schema<T: JsonSchema>(generator: &mut SchemaGenerator) -> Schema {
    generator.root_schema_for::<T>()
}

const AGE: PrinterColumn = PrinterColumn {
    name: "Age",
    type_: "date",
    json_path: ".metadata.creationTimestamp",
    description: "CreationTimestamp is a timestamp representing the server time when this \
                  object was created.",
};

/// Every Istio kind Meshwork reads, in a stable order.
pub const ISTIO_KINDS: &[CrdKind] = &[
    CrdKind {
        kind: Kind::VirtualService,
        group: "networking.istio.io",
        plural: "virtualservices",
        short_names: &["vs"],
        category: "networking-istio-io",
        storage_version: "v1",
        spec_description: "Configuration affecting label/content routing, sni routing, etc. \
                           See more details at: \
                           https://istio.io/docs/reference/config/networking/virtual-service.html",
        columns: &[
            PrinterColumn {
                name: "Gateways",
                type_: "string",
                json_path: ".spec.gateways",
                description: "The names of gateways and sidecars that should apply these routes",
            },
            PrinterColumn {
                name: "Hosts",
                type_: "string",
                json_path: ".spec.hosts",
                description: "The destination hosts to which traffic is being sent",
            },
            AGE,
        ],
        spec_schema: root_schema::<networking::VirtualService>,
    },
    CrdKind {
        kind: Kind::DestinationRule,
        group: "networking.istio.io",
        plural: "destinationrules",
        short_names: &["dr"],
        category: "networking-istio-io",
        storage_version: "v1",
        spec_description: "Configuration affecting load balancing, outlier detection, etc. \
                           See more details at: \
                           https://istio.io/docs/reference/config/networking/destination-rule.html",
        columns: &[
            PrinterColumn {
                name: "Host",
                type_: "string",
                json_path: ".spec.host",
                description: "The name of a service from the service registry",
            },
            AGE,
        ],
        spec_schema: root_schema::<networking::DestinationRule>,
    },
    CrdKind {
        kind: Kind::PeerAuthentication,
        group: "security.istio.io",
        plural: "peerauthentications",
        short_names: &["pa"],
        category: "security-istio-io",
        storage_version: "v1",
        spec_description: "Peer authentication configuration for workloads. See more details \
                           at: https://istio.io/docs/reference/config/security/peer_authentication.html",
        columns: &[
            PrinterColumn {
                name: "Mode",
                type_: "string",
                json_path: ".spec.mtls.mode",
                description: "Defines the mTLS mode used for peer authentication.",
            },
            AGE,
        ],
        spec_schema: root_schema::<security::PeerAuthentication>,
    },
    CrdKind {
        kind: Kind::AuthorizationPolicy,
        group: "security.istio.io",
        plural: "authorizationpolicies",
        short_names: &["ap"],
        category: "security-istio-io",
        storage_version: "v1",
        spec_description: "Configuration for access control on workloads. See more details \
                           at: https://istio.io/docs/reference/config/security/authorization-policy.html",
        columns: &[
            PrinterColumn {
                name: "Action",
                type_: "string",
                json_path: ".spec.action",
                description: "The operation to take.",
            },
            AGE,
        ],
        spec_schema: root_schema::<security::AuthorizationPolicy>,
    },
    CrdKind {
        kind: Kind::Telemetry,
        group: "telemetry.istio.io",
        plural: "telemetries",
        short_names: &["telemetry"],
        category: "telemetry-istio-io",
        storage_version: "v1alpha1",
        spec_description: "Telemetry configuration for workloads. See more details at: \
                           https://istio.io/docs/reference/config/telemetry.html",
        columns: &[AGE],
        spec_schema: root_schema::<telemetry::Telemetry>,
    },
    CrdKind {
        kind: Kind::WasmPlugin,
        group: "extensions.istio.io",
        plural: "wasmplugins",
        short_names: &[],
        category: "extensions-istio-io",
        storage_version: "v1alpha1",
        spec_description: "Extend the functionality provided by the Istio proxy through \
                           WebAssembly filters. See more details at: \
                           https://istio.io/docs/reference/config/proxy_extensions/wasm-plugin.html",
        columns: &[AGE],
        spec_schema: root_schema::<extensions::WasmPlugin>,
    },
];

/// The entry for `kind`, if Meshwork serves a CRD for it.
pub fn crd_kind(kind: Kind) -> Option<&'static CrdKind> {
    ISTIO_KINDS.iter().find(|k| k.kind == kind)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn versions_come_from_the_api_crate_and_include_the_storage_version() {
        for k in ISTIO_KINDS {
            let versions = k.versions();
            assert_eq!(versions.len(), k.kind.api_versions().len(), "{}", k.kind);
            assert!(versions.contains(&k.storage_version), "{}", k.kind);
        }
        let vs = crd_kind(Kind::VirtualService).unwrap();
        assert_eq!(vs.versions(), ["v1alpha3", "v1beta1", "v1"]);
        assert_eq!(vs.crd_name(), "virtualservices.networking.istio.io");
        assert!(crd_kind(Kind::HttpRoute).is_none());
    }

    #[test]
    fn every_istio_kind_of_the_api_crate_has_a_crd() {
        for kind in Kind::ALL {
            let istio = kind.api_versions().iter().any(|v| v.contains(".istio.io/"));
            assert_eq!(istio, crd_kind(kind).is_some(), "{kind}");
        }
    }
}

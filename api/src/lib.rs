//! Istio / Gateway API / Kubernetes resources as users write them, with parsing,
//! validation and the validated resource store.
//!
//! - [`parse_file`] turns one file (several YAML documents, `kind: List` expanded) into a
//!   [`ParsedFile`]: per document a typed [`Object`] or [`ApiError`]s that name the file,
//!   document, line, kind, namespace/name and field path. Unknown fields are warnings.
//! - [`Store`] keeps the objects in force (last good versions, duplicates rejected) and
//!   reports [`Change`]s; see [`store`] for the exact semantics.
//! - [`crd`] generates the CustomResourceDefinitions of the Istio kinds from these types
//!   (JSON Schema via `schemars`, see [`schema`]), printed by `controlplane crds`.
//! - [`MeshConfig`] is Istio's MeshConfig (standalone file or `mesh` key of ConfigMaps in
//!   the root namespace); see [`mesh`] for the merge rules.
//!
//! Accepted kinds (see [`Kind::api_versions`]): VirtualService, DestinationRule
//! (`networking.istio.io/v1alpha3|v1beta1|v1`), PeerAuthentication, AuthorizationPolicy
//! (`security.istio.io/v1beta1|v1`), Telemetry (`telemetry.istio.io/v1alpha1|v1`),
//! WasmPlugin (`extensions.istio.io/v1alpha1`),
//! Gateway, HTTPRoute, GRPCRoute (`gateway.networking.k8s.io/v1|v1beta1`), Namespace,
//! Pod, Service, ServiceAccount, ConfigMap (`v1`), EndpointSlice (`discovery.k8s.io/v1`)
//! and, so that application manifests apply unchanged, Deployment/StatefulSet/DaemonSet
//! (`apps/v1`, stored but not translated: the mesh model is built from Pods), and
//! Flagger's Canary and MetricTemplate (`flagger.app/v1beta1`, see [`canary`]), run by the
//! control plane's canary controller.
//!
//! ```
//! use meshwork_api::{Store, Change};
//! let mut store = Store::new();
//! let yaml = "apiVersion: v1\nkind: Namespace\nmetadata:\n  name: production\n";
//! let changes = store.apply_file("ns.yaml".as_ref(), yaml, "default");
//! assert!(matches!(&changes[..], [Change::Upsert(o)] if o.name == "production"));
//! assert!(store.errors().is_empty());
//! ```

pub mod canary;
pub mod common;
pub mod crd;
pub mod duration;
pub mod error;
pub mod extensions;
pub mod gateway;
mod guard;
pub mod mesh;
pub mod networking;
pub mod object;
pub mod parse;
pub mod schema;
pub mod security;
pub mod store;
pub mod telemetry;
pub mod validate;

pub use duration::{Duration, DurationError};
pub use error::ApiError;
pub use mesh::{MeshConfig, MeshConfigError, MeshConfigOverlay};
pub use object::{Kind, Object, ObjectKey, Spec};
pub use parse::{parse_file, ParsedDocument, ParsedFile};
pub use store::{Change, Store, StoredObject};

/// Re-export so consumers use the same k8s-openapi types.
pub use k8s_openapi;

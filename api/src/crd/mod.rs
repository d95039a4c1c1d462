//! CustomResourceDefinitions for the Istio kinds Meshwork reads, generated from the Rust
//! types of this crate; `controlplane crds` prints them.
//!
//! - [`kinds`]: per kind, names, served and storage versions, printer columns and spec type;
//! - [`structural`]: rewriting a `schemars` schema into a Kubernetes structural schema;
//! - [`check`]: the structural-schema rules, checked on the result;
//! - [`definition`]: assembling the CRD objects;
//! - [`render`]: YAML / JSON output and the Helm chart template.
//!
//! The chart's `templates/crds.yaml` is this module's output; regenerate it with
//! `cargo run -q -p meshwork-controlplane --bin controlplane -- crds --output chart > charts/meshwork/templates/crds.yaml`.
//! Gateway API CRDs are not generated: users install them from upstream.

pub mod check;
pub mod definition;
pub mod kinds;
pub mod render;
pub mod structural;

pub use definition::{crd, istio_crds, object_schema, spec_schema};
pub use kinds::{crd_kind, CrdKind, ISTIO_KINDS};
pub use render::{chart_template, to_json, to_yaml, Format};

/// Why CRDs could not be generated or rendered.
#[derive(Debug, thiserror::Error)]
pub enum CrdError {
    #[error("schema {schema} is not structural at {path}: {problem}")]
    NotStructural {
        schema: String,
        path: String,
        problem: String,
    },
    #[error("rendering CRD {crd}: {source}")]
    Render {
        crd: String,
        #[source]
        source: serde_yaml_ng::Error,
    },
    #[error("CRD {crd} contains \"{{{{\", which Helm would read as a template action")]
    TemplateDelimiter { crd: String },
    #[error("unknown output format \"{0}\" (use yaml, json or chart)")]
    UnknownFormat(String),
}

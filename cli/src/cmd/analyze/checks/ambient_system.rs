//! System namespaces enrolled in ambient: the mesh's own components and the cluster's
//! would have their traffic captured (and may break when ztunnel restarts).

use meshwork_api::Kind;

use super::super::context::{Context, SYSTEM_NAMESPACES};
use super::super::finding::{Finding, Severity};

pub fn check(ctx: &Context) -> Vec<Finding> {
    ctx.of_kind(Kind::Namespace)
        .filter(|s| SYSTEM_NAMESPACES.contains(&s.object.name.as_str()))
        .filter(|s| Context::ambient(&s.object.labels))
        .map(|s| {
            Finding::new(
                Severity::Warning,
                "system-namespace-ambient",
                Context::label(&s.object),
                Context::file_of(s),
                format!(
                    "system namespace {} is labelled istio.io/dataplane-mode=ambient: the cluster's and the mesh's own components would be captured by ztunnel (DNS, the control plane and ztunnel's dependencies break with it)",
                    s.object.name
                ),
                "enroll only application namespaces: remove the istio.io/dataplane-mode label from this namespace",
            )
        })
        .collect()
}

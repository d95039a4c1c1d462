//! A VirtualService host that names an in-cluster service that does not exist.

use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = &s.object.spec else {
            continue;
        };
        if !vs.gateways.is_empty() && !vs.gateways.iter().any(|g| g == "mesh") {
            // Ingress-only routes name external hosts.
            continue;
        }
        let ns = &s.object.namespace;
        for (i, host) in vs.hosts.iter().enumerate() {
            let Some((sns, name)) = ctx.service_host(host, ns) else {
                continue;
            };
            if ctx.service(&sns, &name).is_some() {
                continue;
            }
            out.push(Finding::new(
                Severity::Warning,
                "host-no-service",
                Context::label(&s.object),
                Context::file_of(s),
                format!(
                    "spec.hosts[{i}] \"{host}\" means service {sns}/{name}, which the manifests do not define; the routes apply to no traffic"
                ),
                format!("create Service {sns}/{name} or correct the host (e.g. <service>.<namespace>.svc.cluster.local)"),
            ));
        }
    }
    out
}

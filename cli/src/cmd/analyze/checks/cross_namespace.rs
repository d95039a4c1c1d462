//! A VirtualService and the DestinationRule for the same host in different namespaces.

use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};
use super::hosts::{destination_rules, host_key};

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = &s.object.spec else {
            continue;
        };
        let ns = &s.object.namespace;
        for host in &vs.hosts {
            let key = host_key(ctx, host, ns);
            let drs: Vec<_> = destination_rules(ctx, &key).collect();
            if drs.is_empty() || drs.iter().any(|d| &d.object.namespace == ns) {
                continue;
            }
            let service_ns = ctx.service_host(host, ns).map(|(sns, _)| sns);
            for dr in drs {
                let dns = &dr.object.namespace;
                let visible = Some(dns) == service_ns.as_ref() || dns == ctx.root_namespace();
                let consequence = if visible {
                    "Istio still finds it (it looks in the client's namespace, then the service's namespace, then the root namespace), but a DestinationRule added later in the client's namespace would silently replace it"
                } else {
                    "Istio looks for a DestinationRule in the client's namespace, then the service's namespace, then the root namespace, so clients will not see this one: its subsets and traffic policy do not apply"
                };
                out.push(Finding::new(
                    Severity::Warning,
                    "cross-namespace-rules",
                    Context::label(&s.object),
                    Context::file_of(s),
                    format!(
                        "host {host} has this VirtualService in namespace {ns} but DestinationRule {} in namespace {dns}; {consequence}",
                        dr.object.ns_name()
                    ),
                    format!(
                        "put the VirtualService and DestinationRule for {host} in the same namespace (the service's, {})",
                        service_ns.as_deref().unwrap_or(dns)
                    ),
                ));
            }
        }
    }
    out
}

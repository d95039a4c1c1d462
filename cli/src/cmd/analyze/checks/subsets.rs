//! Subsets: a VirtualService route to a subset that no DestinationRule defines (error),
//! and a DestinationRule subset whose labels select no pod of the service (warning).

use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};
use super::hosts::{destinations, host_key, lookup_destination_rule};

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = undefined_subsets(ctx);
    out.extend(empty_subsets(ctx));
    out
}

fn undefined_subsets(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = &s.object.spec else {
            continue;
        };
        let ns = &s.object.namespace;
        for (path, d) in destinations(vs) {
            if d.subset.is_empty() {
                continue;
            }
            let key = host_key(ctx, &d.host, ns);
            let service_ns = ctx.service_host(&d.host, ns).map(|(sns, _)| sns);
            let dr = lookup_destination_rule(ctx, &key, ns, service_ns.as_deref());
            let (message, fix) = match dr {
                None => (
                    format!(
                        "{path} routes to subset \"{}\" of host {}, but no DestinationRule for that host is visible from namespace {ns}; requests on this route fail with 503",
                        d.subset, d.host
                    ),
                    format!(
                        "add a DestinationRule with host: {} and a subset named \"{}\" (in namespace {ns} or the service's namespace)",
                        d.host, d.subset
                    ),
                ),
                Some(dr_obj) => {
                    let Spec::DestinationRule(dr) = &dr_obj.object.spec else { continue };
                    if dr.subsets.iter().any(|x| x.name == d.subset) {
                        continue;
                    }
                    (
                        format!(
                            "{path} routes to subset \"{}\" of host {}, but DestinationRule {} defines no such subset; requests on this route fail with 503",
                            d.subset, d.host, dr_obj.object.ns_name()
                        ),
                        format!(
                            "add subset \"{}\" to DestinationRule {} or route to one of its subsets",
                            d.subset, dr_obj.object.ns_name()
                        ),
                    )
                }
            };
            out.push(Finding::new(
                Severity::Error,
                "subset-undefined",
                Context::label(&s.object),
                Context::file_of(s),
                message,
                fix,
            ));
        }
    }
    out
}

fn empty_subsets(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = &s.object.spec else {
            continue;
        };
        let Some((sns, sname)) = ctx.service_host(&dr.host, &s.object.namespace) else {
            continue;
        };
        let selector = ctx
            .service(&sns, &sname)
            .and_then(|svc| match &svc.object.spec {
                Spec::Service(k) => k.spec.as_ref()?.selector.clone(),
                _ => None,
            });
        let workloads = ctx.workloads(&sns);
        for (i, sub) in dr.subsets.iter().enumerate() {
            let matches = workloads.iter().any(|w| {
                let has = |(k, v): (&String, &String)| w.labels.get(k) == Some(v);
                sub.labels.iter().all(has) && selector.iter().flatten().all(has)
            });
            if matches {
                continue;
            }
            let labels: Vec<String> = sub.labels.iter().map(|(k, v)| format!("{k}={v}")).collect();
            out.push(Finding::new(
                Severity::Warning,
                "subset-no-pods",
                Context::label(&s.object),
                Context::file_of(s),
                format!(
                    "spec.subsets[{i}] \"{}\" selects pods with {} of service {sns}/{sname}, but no pod or pod template in namespace {sns} has them; traffic routed to this subset fails with 503",
                    sub.name,
                    if labels.is_empty() { "any labels".to_string() } else { labels.join(",") }
                ),
                format!(
                    "deploy pods of {sname} labelled {} or correct the subset's labels",
                    labels.join(",")
                ),
            ));
        }
    }
    out
}

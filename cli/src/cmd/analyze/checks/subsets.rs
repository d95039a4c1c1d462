//! Subsets: a VirtualService route to a subset that no DestinationRule defines (error),
//! and a DestinationRule subset whose labels select no pod of the service (warning).

use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};
use meshwork_controlplane::checks::subsets::{self as rule, RuleFor};

use super::hosts::{host_key, lookup_destination_rule};

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = undefined_subsets(ctx);
    out.extend(empty_subsets(ctx));
    out
}

/// The rule lives in the control plane (which reports it while running); here hosts and
/// DestinationRules resolve as `analyze` sees them (client namespace, then the service's,
/// then the root namespace).
fn undefined_subsets(ctx: &Context) -> Vec<Finding> {
    let rule_for = |host: &str, ns: &str| {
        let key = host_key(ctx, host, ns);
        let service_ns = ctx.service_host(host, ns).map(|(sns, _)| sns);
        let dr = lookup_destination_rule(ctx, &key, ns, service_ns.as_deref())?;
        let Spec::DestinationRule(spec) = &dr.object.spec else {
            return None;
        };
        Some(RuleFor {
            name: dr.object.ns_name(),
            subsets: spec.subsets.iter().map(|s| s.name.clone()).collect(),
        })
    };
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::VirtualService) {
        out.extend(undefined_mirror_subsets(s, &rule_for));
        for u in rule::undefined_subsets(&s.object, rule_for) {
            out.push(
                Finding::new(
                    Severity::Error,
                    "subset-undefined",
                    Context::label(&s.object),
                    Context::file_of(s),
                    format!("{} {}", u.field, u.message()),
                    u.fix(),
                )
                .with_code("IST0101"),
            );
        }
    }
    out
}

/// Mirrors to a subset the host's DestinationRule does not define (Istio's
/// DestinationRuleAnalyzer checks mirror destinations too): the copies are dropped.
fn undefined_mirror_subsets(
    s: &meshwork_api::StoredObject,
    rule_for: &impl Fn(&str, &str) -> Option<RuleFor>,
) -> Vec<Finding> {
    let Spec::VirtualService(vs) = &s.object.spec else {
        return Vec::new();
    };
    let ns = &s.object.namespace;
    let mut mirrors = Vec::new();
    for (i, r) in vs.http.iter().enumerate() {
        if let Some(m) = &r.mirror {
            mirrors.push((format!("spec.http[{i}].mirror"), m));
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            mirrors.push((
                format!("spec.http[{i}].mirrors[{j}].destination"),
                &m.destination,
            ));
        }
    }
    let mut out = Vec::new();
    for (field, d) in mirrors.into_iter().filter(|(_, d)| !d.subset.is_empty()) {
        let rule = rule_for(&d.host, ns);
        if rule.as_ref().is_some_and(|r| r.subsets.contains(&d.subset)) {
            continue;
        }
        let (why, fix) = match rule {
            None => (
                format!("no DestinationRule for that host is visible from namespace {ns}"),
                format!(
                    "add a DestinationRule with host: {} and a subset named \"{}\"",
                    d.host, d.subset
                ),
            ),
            Some(r) => (
                format!("DestinationRule {} defines no such subset", r.name),
                format!("add subset \"{}\" to DestinationRule {}", d.subset, r.name),
            ),
        };
        out.push(
            Finding::new(
                Severity::Error,
                "subset-undefined",
                Context::label(&s.object),
                Context::file_of(s),
                format!(
                    "{field} mirrors to subset \"{}\" of host {}, but {why}; the mirrored requests are dropped",
                    d.subset, d.host
                ),
                fix,
            )
            .with_code("IST0101"),
        );
    }
    out
}

/// Labels Istio puts on endpoints from the node or the mesh topology.
fn is_node_topology_label(key: &str) -> bool {
    matches!(
        key,
        "topology.kubernetes.io/region"
            | "topology.kubernetes.io/zone"
            | "topology.istio.io/subzone"
            | "topology.istio.io/network"
            | "topology.istio.io/cluster"
            | "kubernetes.io/hostname"
            | "failure-domain.beta.kubernetes.io/region"
            | "failure-domain.beta.kubernetes.io/zone"
    )
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
            // Endpoints carry their node's topology labels; pods in manifests do not, so
            // those labels cannot be checked here.
            let pod_labels = sub
                .labels
                .iter()
                .filter(|(k, _)| !is_node_topology_label(k));
            let matches = workloads.iter().any(|w| {
                let has = |(k, v): (&String, &String)| w.labels.get(k) == Some(v);
                pod_labels.clone().all(has) && selector.iter().flatten().all(has)
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

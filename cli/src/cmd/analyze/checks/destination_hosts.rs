//! Istio's `virtualservice.DestinationHostAnalyzer`: every route and mirror destination of
//! a VirtualService must name a service the VirtualService's namespace can see.
//!
//! - `destination-host-not-found` (IST0101, error): the host means an in-cluster Service
//!   that the manifests do not define, or one whose `networking.istio.io/exportTo`
//!   annotation hides it from the namespaces the VirtualService is exported to; or the
//!   destination's port is not a port of that Service (`host:port`).
//! - `destination-port-required` (IST0112, error): no destination port, and the Service
//!   exposes several.
//!
//! Hosts that are not in-cluster names (Istio resolves them through ServiceEntries, a kind
//! Meshwork does not implement) are not checked. Nothing is reported when the manifests
//! define no Service at all (a directory of routing rules alone says nothing about which
//! services exist).

use meshwork_api::{Kind, Spec, StoredObject};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};

const EXPORT_TO: &str = "networking.istio.io/exportTo";

/// `(field path, host, port)` of every route and mirror destination.
fn destinations(s: &StoredObject) -> Vec<(String, String, Option<u32>, &'static str)> {
    let Spec::VirtualService(vs) = &s.object.spec else {
        return Vec::new();
    };
    let mut out = Vec::new();
    let mut push = |field: String, d: &meshwork_api::networking::Destination, what| {
        out.push((
            field,
            d.host.clone(),
            d.port.as_ref().map(|p| p.number),
            what,
        ));
    };
    for (i, r) in vs.http.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            push(
                format!("spec.http[{i}].route[{j}].destination"),
                &d.destination,
                "host",
            );
        }
        if let Some(m) = &r.mirror {
            push(format!("spec.http[{i}].mirror"), m, "mirror host");
        }
        for (j, m) in r.mirrors.iter().enumerate() {
            push(
                format!("spec.http[{i}].mirrors[{j}].destination"),
                &m.destination,
                "mirror host",
            );
        }
    }
    for (i, r) in vs.tcp.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            push(
                format!("spec.tcp[{i}].route[{j}].destination"),
                &d.destination,
                "host",
            );
        }
    }
    for (i, r) in vs.tls.iter().enumerate() {
        for (j, d) in r.route.iter().enumerate() {
            push(
                format!("spec.tls[{i}].route[{j}].destination"),
                &d.destination,
                "host",
            );
        }
    }
    out
}

/// Namespaces a Service is visible from, per its exportTo annotation (`None`: all).
fn service_visible_in(svc: &StoredObject) -> Option<Vec<String>> {
    let anno = svc.object.annotations.get(EXPORT_TO)?;
    let mut out = Vec::new();
    for ns in anno.split(',').map(str::trim).filter(|n| !n.is_empty()) {
        match ns {
            "*" => return None,
            "." => out.push(svc.object.namespace.clone()),
            other => out.push(other.to_string()),
        }
    }
    Some(out)
}

fn service_ports(svc: &StoredObject) -> Vec<u32> {
    match &svc.object.spec {
        Spec::Service(s) => s
            .spec
            .as_ref()
            .and_then(|spec| spec.ports.as_ref())
            .map(|ports| ports.iter().map(|p| p.port as u32).collect())
            .unwrap_or_default(),
        _ => Vec::new(),
    }
}

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    if ctx.of_kind(Kind::Service).next().is_none() {
        return out;
    }
    for s in ctx.of_kind(Kind::VirtualService) {
        let Spec::VirtualService(vs) = &s.object.spec else {
            continue;
        };
        let ns = &s.object.namespace;
        // The namespaces that use this VirtualService, as Istio looks hosts up for it.
        let seen_from: Vec<String> = if vs.export_to.is_empty() {
            vec![ns.clone()]
        } else {
            vs.export_to
                .iter()
                .map(|e| if e == "." { ns.clone() } else { e.clone() })
                .collect()
        };
        for (field, host, port, what) in destinations(s) {
            let Some((sns, name)) = ctx.service_host(&host, ns) else {
                continue;
            };
            let svc = ctx.service(&sns, &name).filter(|svc| {
                service_visible_in(svc)
                    .is_none_or(|v| v.iter().any(|n| n == "*" || seen_from.contains(n)))
            });
            let Some(svc) = svc else {
                let why = if ctx.service(&sns, &name).is_some() {
                    format!(
                        "Service {sns}/{name} is not exported ({EXPORT_TO}) to namespace {}",
                        seen_from.join(",")
                    )
                } else {
                    format!("the manifests define no Service {sns}/{name}")
                };
                out.push(
                    Finding::new(
                        Severity::Error,
                        "destination-host-not-found",
                        Context::label(&s.object),
                        Context::file_of(s),
                        format!("Referenced {what} not found: {host:?} ({field}: {why})"),
                        format!("create Service {sns}/{name}, export it to this namespace, or correct {field}.host"),
                    )
                    .with_code("IST0101"),
                );
                continue;
            };
            let ports = service_ports(svc);
            match port {
                None if ports.len() > 1 => out.push(
                    Finding::new(
                        Severity::Error,
                        "destination-port-required",
                        Context::label(&s.object),
                        Context::file_of(s),
                        format!(
                            "This VirtualService routes to a service {host:?} that exposes multiple ports {ports:?}. Specifying a port in the destination is required to disambiguate. ({field})"
                        ),
                        format!("set {field}.port.number to one of {ports:?}"),
                    )
                    .with_code("IST0112"),
                ),
                Some(p) if !ports.contains(&p) => out.push(
                    Finding::new(
                        Severity::Error,
                        "destination-host-not-found",
                        Context::label(&s.object),
                        Context::file_of(s),
                        format!(
                            "Referenced host:port not found: \"{host}:{p}\" ({field}: Service {sns}/{name} has ports {ports:?})"
                        ),
                        format!("set {field}.port.number to one of {ports:?}"),
                    )
                    .with_code("IST0101"),
                ),
                _ => {}
            }
        }
    }
    out
}

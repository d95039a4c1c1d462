//! Host helpers shared by the traffic checks.

use meshwork_api::{Kind, Spec, StoredObject};

use super::super::context::{Context, CLUSTER_DOMAIN};

/// A host as a comparable key: the FQDN of in-cluster service names, else as written.
pub fn host_key(ctx: &Context, host: &str, ns: &str) -> String {
    match ctx.service_host(host, ns) {
        Some((sns, name)) => format!("{name}.{sns}.{CLUSTER_DOMAIN}"),
        None => host.to_string(),
    }
}

/// DestinationRules whose host is `key`, in key order.
pub fn destination_rules<'a>(
    ctx: &'a Context,
    key: &'a str,
) -> impl Iterator<Item = &'a StoredObject> {
    ctx.of_kind(Kind::DestinationRule)
        .filter(move |s| match &s.object.spec {
            Spec::DestinationRule(dr) => host_key(ctx, &dr.host, &s.object.namespace) == key,
            _ => false,
        })
}

/// The DestinationRule Istio uses for `key` seen from a client in `client_ns`: the
/// client's namespace first, then the service's namespace, then the root namespace.
pub fn lookup_destination_rule<'a>(
    ctx: &'a Context,
    key: &'a str,
    client_ns: &str,
    service_ns: Option<&str>,
) -> Option<&'a StoredObject> {
    let drs: Vec<&StoredObject> = destination_rules(ctx, key).collect();
    let order = [Some(client_ns), service_ns, Some(ctx.root_namespace())];
    order
        .into_iter()
        .flatten()
        .find_map(|ns| drs.iter().find(|s| s.object.namespace == ns).copied())
}

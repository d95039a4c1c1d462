//! The running control plane's view of [`crate::checks::subsets`]: a destination host's
//! subsets are those of the DestinationRule its route config uses (the oldest one for the
//! host, see the module doc of [`super`]).

use std::collections::HashMap;
use std::sync::Arc;

use meshwork_api::{Object, ObjectKey, Spec};

use super::{resolve_host, route_id, RouteId};
use crate::checks::subsets::{undefined_subsets as check, RuleFor, UndefinedSubset};
use crate::translate::index::{age_order, Indexes};

/// Every route to a subset the destination's DestinationRule does not define, with the
/// VirtualService it is in, in VirtualService key order.
pub fn undefined_subsets(idx: &Indexes) -> Vec<(ObjectKey, UndefinedSubset)> {
    let mut rules: HashMap<RouteId, &Arc<Object>> = HashMap::new();
    for dr in idx.destination_rules.all() {
        let Spec::DestinationRule(spec) = &dr.spec else {
            continue;
        };
        let id = route_id(resolve_host(&spec.host, &dr.namespace), &dr.namespace);
        let slot = rules.entry(id).or_insert(dr);
        if age_order(dr, slot).is_lt() {
            *slot = dr;
        }
    }
    let rule_for = |host: &str, ns: &str| {
        let dr = rules.get(&route_id(resolve_host(host, ns), ns))?;
        let Spec::DestinationRule(spec) = &dr.spec else {
            return None;
        };
        Some(RuleFor {
            name: dr.ns_name(),
            subsets: spec.subsets.iter().map(|s| s.name.clone()).collect(),
        })
    };
    let mut out: Vec<(ObjectKey, UndefinedSubset)> = idx
        .virtual_services
        .all()
        .flat_map(|vs| {
            check(vs, rule_for)
                .into_iter()
                .map(|u| (vs.key(), u))
                .collect::<Vec<_>>()
        })
        .collect();
    out.sort_by(|a, b| a.0.cmp(&b.0).then_with(|| a.1.field.cmp(&b.1.field)));
    out
}

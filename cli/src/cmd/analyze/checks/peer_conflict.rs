//! Conflicting PeerAuthentications: two namespace-wide ones in a namespace, or two with
//! selectors matching the same workload. The oldest wins; the others are ignored.

use std::collections::BTreeMap;

use meshwork_api::{Kind, Spec, StoredObject};

use super::super::context::{age_order, Context};
use super::super::finding::{Finding, Severity};

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut wide: BTreeMap<&str, Vec<&StoredObject>> = BTreeMap::new();
    let mut selecting: Vec<&StoredObject> = Vec::new();
    for s in ctx.of_kind(Kind::PeerAuthentication) {
        let Spec::PeerAuthentication(pa) = &s.object.spec else {
            continue;
        };
        match pa
            .selector
            .as_ref()
            .filter(|sel| !sel.match_labels.is_empty())
        {
            None => wide.entry(&s.object.namespace).or_default().push(s),
            Some(_) => selecting.push(s),
        }
    }
    let mut out = Vec::new();
    for (ns, group) in wide {
        out.extend(conflict(group, &format!("namespace {ns} (no selector)")));
    }
    // Group selector policies by the set of workloads they both select.
    let mut per_workload: BTreeMap<String, Vec<&StoredObject>> = BTreeMap::new();
    for s in &selecting {
        let Spec::PeerAuthentication(pa) = &s.object.spec else {
            continue;
        };
        let sel = pa.selector.as_ref().map(|x| &x.match_labels);
        for w in ctx.selected(&s.object.namespace, sel) {
            per_workload.entry(w.label).or_default().push(s);
        }
    }
    for (workload, group) in per_workload {
        out.extend(conflict(group, &workload));
    }
    out
}

fn conflict(mut group: Vec<&StoredObject>, scope: &str) -> Vec<Finding> {
    if group.len() < 2 {
        return Vec::new();
    }
    group.sort_by(|a, b| age_order(&a.object, &b.object));
    let winner = group[0].object.ns_name();
    group[1..]
        .iter()
        .map(|s| {
            Finding::new(
                Severity::Warning,
                "peer-authentication-conflict",
                Context::label(&s.object),
                Context::file_of(s),
                format!(
                    "{} PeerAuthentications apply to {scope}; only the oldest, {winner}, takes effect and this one is ignored",
                    group.len()
                ),
                format!("merge the settings into {winner} and delete this one, or give it a selector that no other policy uses"),
            )
        })
        .collect()
}

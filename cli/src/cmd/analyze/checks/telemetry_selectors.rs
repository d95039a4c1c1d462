//! Istio's `telemetry.SelectorAnalyzer` and `telemetry.DefaultSelectorAnalyzer`.
//!
//! - `telemetry-selector-no-pods` (IST0101 ReferencedResourceNotFound, error): a
//!   Telemetry `selector` that selects no Pod of its namespace (only checked when the
//!   manifests define Pods).
//! - `telemetry-conflicting-selectors` (IST0159 ConflictingTelemetryWorkloadSelectors,
//!   error): several Telemetries of a namespace select the same Pod; which one applies is
//!   undefined.
//! - `telemetry-several-without-selector` (IST0160
//!   MultipleTelemetriesWithoutWorkloadSelectors, error): several namespace-wide
//!   Telemetries (no selector, no targetRefs) in one namespace.

use std::collections::BTreeMap;

use meshwork_api::{Kind, Spec, StoredObject};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    let pods: Vec<&StoredObject> = ctx.of_kind(Kind::Pod).collect();
    // Pod (ns/name) → Telemetries selecting it.
    let mut selecting: BTreeMap<(String, String), Vec<&StoredObject>> = BTreeMap::new();
    // Namespace → namespace-wide Telemetries.
    let mut ns_wide: BTreeMap<&str, Vec<&StoredObject>> = BTreeMap::new();
    for s in ctx.of_kind(Kind::Telemetry) {
        let Spec::Telemetry(t) = &s.object.spec else {
            continue;
        };
        let ns = s.object.namespace.as_str();
        let sel = match &t.selector {
            None if t.target_ref.is_none() && t.target_refs.is_empty() => {
                ns_wide.entry(ns).or_default().push(s);
                continue;
            }
            Some(sel) if !sel.match_labels.is_empty() => sel,
            _ => continue,
        };
        let mut found = false;
        for p in pods.iter().filter(|p| p.object.namespace == ns) {
            if sel.matches(&p.object.labels) {
                found = true;
                selecting
                    .entry((ns.to_string(), p.object.name.clone()))
                    .or_default()
                    .push(s);
            }
        }
        if !found && !pods.is_empty() {
            let labels: Vec<String> = sel
                .match_labels
                .iter()
                .map(|(k, v)| format!("{k}={v}"))
                .collect();
            out.push(
                Finding::new(
                    Severity::Error,
                    "telemetry-selector-no-pods",
                    Context::label(&s.object),
                    Context::file_of(s),
                    format!(
                        "Referenced selector not found: \"{}\" (no Pod of namespace {ns} carries these labels; the Telemetry applies to nothing)",
                        labels.join(",")
                    ),
                    "correct spec.selector.matchLabels to select the workloads' pod labels",
                )
                .with_code("IST0101"),
            );
        }
    }
    for ((ns, pod), list) in &selecting {
        if list.len() < 2 {
            continue;
        }
        let names: Vec<&str> = list.iter().map(|s| s.object.name.as_str()).collect();
        for s in list {
            out.push(
                Finding::new(
                    Severity::Error,
                    "telemetry-conflicting-selectors",
                    Context::label(&s.object),
                    Context::file_of(s),
                    format!(
                        "The Telemetries {names:?} in namespace {ns:?} select the same workload pod {pod:?}, which can lead to undefined behavior."
                    ),
                    "merge the Telemetries or make their selectors disjoint",
                )
                .with_code("IST0159"),
            );
        }
    }
    for (ns, list) in &ns_wide {
        if list.len() < 2 {
            continue;
        }
        let names: Vec<&str> = list.iter().map(|s| s.object.name.as_str()).collect();
        for s in list {
            out.push(
                Finding::new(
                    Severity::Error,
                    "telemetry-several-without-selector",
                    Context::label(&s.object),
                    Context::file_of(s),
                    format!(
                        "The Telemetries {names:?} in namespace {ns:?} have no workload selector, which can lead to undefined behavior."
                    ),
                    "merge them into one namespace-wide Telemetry, or give all but one a selector",
                )
                .with_code("IST0160"),
            );
        }
    }
    out
}

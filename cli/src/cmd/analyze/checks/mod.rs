//! One file per check; each is `fn(&Context) -> Vec<Finding>`.

mod allow_all;
mod ambient_system;
mod authz_l7;
mod authz_refs;
mod conflicting_hosts;
mod cross_namespace;
mod deny_default;
mod destination_hosts;
mod dr_ca_certificates;
mod hosts;
mod not_applied;
mod peer_conflict;
mod sampling;
mod selector_behind_waypoint;
mod store_errors;
mod subsets;
mod telemetry_selectors;
mod unknown_fields;
mod vs_host;
mod wasm_plugin;

use super::context::Context;
use super::finding::Finding;

type Check = fn(&Context) -> Vec<Finding>;

const CHECKS: [Check; 19] = [
    store_errors::check,
    unknown_fields::check,
    subsets::check,
    cross_namespace::check,
    vs_host::check,
    destination_hosts::check,
    dr_ca_certificates::check,
    not_applied::check,
    conflicting_hosts::check,
    peer_conflict::check,
    authz_l7::check,
    authz_refs::check,
    selector_behind_waypoint::check,
    allow_all::check,
    deny_default::check,
    sampling::check,
    telemetry_selectors::check,
    ambient_system::check,
    wasm_plugin::check,
];

/// Runs every check; findings sorted by severity, then resource.
pub fn run_all(ctx: &Context) -> Vec<Finding> {
    let mut out: Vec<Finding> = CHECKS.iter().flat_map(|c| c(ctx)).collect();
    out.sort();
    out.dedup();
    out
}

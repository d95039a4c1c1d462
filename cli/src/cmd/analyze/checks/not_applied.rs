//! DestinationRule settings Meshwork accepts and keeps but its data path does not act on
//! (Envoy does): a manifest that relies on them means less here than under Istio
//! (`docs/istio-differences.md`).

use meshwork_api::networking::TrafficPolicy;
use meshwork_api::{Kind, Spec};

use super::super::context::Context;
use super::super::finding::{Finding, Severity};

/// The fields of `tp` (at `at`) that are carried, not applied, with what is lost.
fn unapplied(tp: &TrafficPolicy, at: &str) -> Vec<(String, &'static str)> {
    let mut out = Vec::new();
    if let Some(lb) = &tp.load_balancer {
        if lb.locality_lb_setting.is_some() {
            out.push((
                format!("{at}.loadBalancer.localityLbSetting"),
                "the waypoint balances without locality: no zone preference, distribution or failover",
            ));
        }
        if lb.zone_aware_lb_setting.is_some() {
            out.push((
                format!("{at}.loadBalancer.zoneAwareLbSetting"),
                "the waypoint balances without locality: traffic is not kept in the client's zone",
            ));
        }
    }
    if !tp.port_level_settings.is_empty() {
        out.push((
            format!("{at}.portLevelSettings"),
            "port-level policies are not applied: every port of the host gets the host-level policy",
        ));
    }
    out
}

pub fn check(ctx: &Context) -> Vec<Finding> {
    let mut out = Vec::new();
    for s in ctx.of_kind(Kind::DestinationRule) {
        let Spec::DestinationRule(dr) = &s.object.spec else {
            continue;
        };
        let mut fields = Vec::new();
        if let Some(tp) = &dr.traffic_policy {
            fields.extend(unapplied(tp, "spec.trafficPolicy"));
        }
        for (i, sub) in dr.subsets.iter().enumerate() {
            if let Some(tp) = &sub.traffic_policy {
                fields.extend(unapplied(tp, &format!("spec.subsets[{i}].trafficPolicy")));
            }
        }
        for (field, lost) in fields {
            out.push(Finding::new(
                Severity::Warning,
                "not-applied",
                Context::label(&s.object),
                Context::file_of(s),
                format!("{field} is accepted but not applied by Meshwork ({lost}); Envoy under Istio applies it"),
                "see docs/istio-differences.md; remove the field or do not rely on it",
            ));
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;
    use meshwork_api::networking::{LoadBalancerSettings, PortTrafficPolicy};

    #[test]
    fn names_each_unapplied_field_where_it_is() {
        let tp = TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings {
                simple: Some("ROUND_ROBIN".into()),
                zone_aware_lb_setting: Some(Default::default()),
                ..Default::default()
            }),
            port_level_settings: vec![PortTrafficPolicy::default()],
            ..Default::default()
        };
        let found: Vec<String> = unapplied(&tp, "spec.subsets[1].trafficPolicy")
            .into_iter()
            .map(|(f, _)| f)
            .collect();
        assert_eq!(
            found,
            [
                "spec.subsets[1].trafficPolicy.loadBalancer.zoneAwareLbSetting",
                "spec.subsets[1].trafficPolicy.portLevelSettings"
            ]
        );
        // What the data path applies is not reported.
        let applied = TrafficPolicy {
            load_balancer: Some(LoadBalancerSettings {
                warmup: Some(Default::default()),
                ..Default::default()
            }),
            ..Default::default()
        };
        assert!(unapplied(&applied, "spec.trafficPolicy").is_empty());
    }
}

//! Mesh rules every component reads the same way: the control plane when it translates
//! and validates, both proxies on the data path, and the CLI when it explains a decision.
//! Each rule is written once here so an explanation cannot drift from what the data path
//! does.
//!
//! - **mTLS per port** ([`Workload::mtls_mode_for_port`]): a port-level override, else the
//!   workload's mode; UNSET reads as PERMISSIVE (Istio's default).
//! - **Waypoint binding** ([`Workload::own_waypoint`], [`crate::Snapshot::waypoint_of`]).
//! - **Routes bound to a waypoint Gateway** are published under the reserved host
//!   [`gateway_host`]`(name)` = `gateway~<name>` (`~` cannot occur in a DNS name).
//! - **Route weights** ([`weights`]).

use crate::pb::config::{GatewayAddress, MtlsMode, WeightedDestination, Workload};

impl Workload {
    /// The mTLS mode the destination ztunnel enforces on `port`: the port's override
    /// (PeerAuthentication `portLevelMtls`), else the workload's; UNSET means PERMISSIVE.
    pub fn mtls_mode_for_port(&self, port: u16) -> MtlsMode {
        let raw = self
            .port_mtls
            .get(&u32::from(port))
            .copied()
            .unwrap_or(self.mtls_mode);
        match MtlsMode::try_from(raw).unwrap_or(MtlsMode::MtlsUnset) {
            MtlsMode::MtlsUnset => MtlsMode::Permissive,
            m => m,
        }
    }

    /// The workload's own waypoint (`istio.io/use-waypoint` on the pod or its namespace),
    /// when it is running; [`crate::Snapshot::waypoint_of`] also looks at its services'.
    pub fn own_waypoint(&self) -> Option<&GatewayAddress> {
        GatewayAddress::usable(self.waypoint.as_ref())
    }
}

impl GatewayAddress {
    /// Whether this names the waypoint Gateway `namespace/name`.
    pub fn is(&self, namespace: &str, name: &str) -> bool {
        self.namespace == namespace && self.name == name
    }

    /// A waypoint reference that names a running waypoint (an empty address: none yet).
    pub fn usable(gw: Option<&GatewayAddress>) -> Option<&GatewayAddress> {
        gw.filter(|g| !g.address.is_empty())
    }
}

/// Prefix of [`gateway_host`].
pub const GATEWAY_HOST_PREFIX: &str = "gateway~";

/// The reserved host under which the routes bound to waypoint Gateway `name` are published
/// (key `route/<gateway ns>/gateway~<name>`); the waypoint named by the Gateway looks its
/// routes up under the same host.
pub fn gateway_host(name: &str) -> String {
    format!("{GATEWAY_HOST_PREFIX}{name}")
}

/// The Gateway name of a [`gateway_host`], `None` for a service host.
pub fn gateway_of_host(host: &str) -> Option<&str> {
    host.strip_prefix(GATEWAY_HOST_PREFIX)
}

/// Route weights. Weights are relative (Istio normalises them by their sum, so 49/50 and
/// 550/500 are valid).
pub mod weights {
    use super::WeightedDestination;

    /// The weight of a route to a single destination (the implicit route to a service).
    pub const WHOLE: u32 = 100;

    /// A Gateway API `backendRef` without a weight counts as 1.
    pub const GATEWAY_API_DEFAULT: u32 = 1;

    /// Whether a destination list's weights are invalid: with several destinations, some
    /// weights given and all of them 0 (destinations without any weight given split
    /// evenly: Meshwork's reading; Istio counts them as 0).
    pub fn all_zero(given: impl Iterator<Item = Option<u32>> + Clone) -> bool {
        let n = given.clone().count();
        let any_given = given.clone().any(|w| w.is_some());
        let sum: u64 = given.map(|w| u64::from(w.unwrap_or(0))).sum();
        n > 1 && any_given && sum == 0
    }

    /// VirtualService weights: as given (missing = 0) when any is given; otherwise
    /// [`WHOLE`] split evenly (the remainder goes to the first destinations).
    pub fn fill_in(given: impl Iterator<Item = Option<u32>> + Clone) -> Vec<u32> {
        let n = given.clone().count() as u32;
        if given.clone().any(|w| w.is_some()) {
            return given.map(|w| w.unwrap_or(0)).collect();
        }
        (0..n)
            .map(|i| WHOLE / n.max(1) + u32::from(i < WHOLE % n.max(1)))
            .collect()
    }

    /// Picks a destination by weight, `draw(total)` returning a uniform number in
    /// `0..total`. A single destination, or all-zero weights, pick the first one.
    pub fn pick(
        dests: &[WeightedDestination],
        draw: impl FnOnce(u64) -> u64,
    ) -> Option<&WeightedDestination> {
        let total: u64 = dests.iter().map(|d| u64::from(d.weight)).sum();
        if total == 0 {
            return dests.first();
        }
        let mut point = draw(total);
        for d in dests {
            let w = u64::from(d.weight);
            if point < w {
                return Some(d);
            }
            point -= w;
        }
        dests.last()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn port_override_wins_and_unset_is_permissive() {
        let mut w = Workload::default();
        assert_eq!(w.mtls_mode_for_port(80), MtlsMode::Permissive);
        w.mtls_mode = MtlsMode::Strict as i32;
        w.port_mtls.insert(9090, MtlsMode::Disable as i32);
        assert_eq!(w.mtls_mode_for_port(80), MtlsMode::Strict);
        assert_eq!(w.mtls_mode_for_port(9090), MtlsMode::Disable);
        w.port_mtls.insert(8080, MtlsMode::MtlsUnset as i32);
        assert_eq!(w.mtls_mode_for_port(8080), MtlsMode::Permissive);
    }

    #[test]
    fn gateway_host_round_trips() {
        assert_eq!(gateway_host("waypoint"), "gateway~waypoint");
        assert_eq!(gateway_of_host("gateway~waypoint"), Some("waypoint"));
        assert_eq!(gateway_of_host("reviews.prod.svc.cluster.local"), None);
    }

    #[test]
    fn weights_fill_in_and_validate() {
        assert_eq!(
            weights::fill_in([None, None, None].into_iter()),
            [34, 33, 33]
        );
        assert_eq!(weights::fill_in([Some(90), None].into_iter()), [90, 0]);
        assert_eq!(weights::fill_in(std::iter::once(None)), [weights::WHOLE]);
        assert!(weights::all_zero([Some(0), None].into_iter()));
        assert!(!weights::all_zero([None, None].into_iter()));
        assert!(!weights::all_zero(std::iter::once(Some(0))));
        assert!(!weights::all_zero([Some(49), Some(50)].into_iter()));
    }

    #[test]
    fn pick_walks_the_cumulative_weights() {
        let wd = |weight| WeightedDestination {
            weight,
            ..Default::default()
        };
        let dests = [wd(90), wd(10)];
        assert_eq!(weights::pick(&dests, |_| 89).unwrap().weight, 90);
        assert_eq!(weights::pick(&dests, |_| 90).unwrap().weight, 10);
        assert!(weights::pick(&[], |_| 0).is_none());
        let zero = [wd(0), wd(0)];
        assert!(std::ptr::eq(weights::pick(&zero, |_| 0).unwrap(), &zero[0]));
    }
}

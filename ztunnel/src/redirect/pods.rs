//! Which pods of a config snapshot this node's redirection captures.

use std::collections::BTreeSet;
use std::net::{IpAddr, Ipv4Addr};

use meshwork_model::Snapshot;

/// The captured pods of one node, as the redirection needs them.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CapturedPods {
    /// IPv4 addresses of workloads on the node with `captured == true`.
    pub ips: BTreeSet<Ipv4Addr>,
    /// IPv4 addresses of the node's other workloads (not captured). The program is attached
    /// to their interfaces too, so their connections *to* captured pods on the same node are
    /// captured at inbound as they would be from another node.
    pub uncaptured: BTreeSet<Ipv4Addr>,
    /// Addresses of captured local workloads that cannot be captured (IPv6, unparsable),
    /// as `"<ns>/<name> <address>: <why>"`.
    pub skipped: Vec<String>,
}

/// Workloads of `snapshot` on `node`: the IPv4 addresses of those with `captured == true`,
/// and of the others.
pub fn captured_local_pods(snapshot: &Snapshot, node: &str) -> CapturedPods {
    let mut out = CapturedPods::default();
    for w in snapshot.workloads() {
        if w.node != node {
            continue;
        }
        if !w.captured {
            let v4 = w
                .addresses
                .iter()
                .filter_map(|a| match a.parse::<IpAddr>() {
                    Ok(IpAddr::V4(ip)) if !ip.is_unspecified() && !ip.is_loopback() => Some(ip),
                    _ => None,
                });
            out.uncaptured.extend(v4);
            continue;
        }
        for a in &w.addresses {
            match a.parse::<IpAddr>() {
                Ok(IpAddr::V4(ip)) if !ip.is_unspecified() && !ip.is_loopback() => {
                    out.ips.insert(ip);
                }
                Ok(IpAddr::V4(ip)) => out.skipped.push(format!(
                    "{}/{} {ip}: not a pod address",
                    w.namespace, w.name
                )),
                Ok(IpAddr::V6(ip)) => out.skipped.push(format!(
                    "{}/{} {ip}: IPv6 is not redirected",
                    w.namespace, w.name
                )),
                Err(_) => out.skipped.push(format!(
                    "{}/{} {a:?}: field addresses is not an IP address",
                    w.namespace, w.name
                )),
            }
        }
    }
    out
}

#[cfg(test)]
mod tests {
    use std::collections::BTreeMap;
    use std::sync::Arc;

    use meshwork_model::pb::config::{resource, Resource, Workload};
    use meshwork_model::Snapshot;

    use super::*;

    fn wl(name: &str, node: &str, captured: bool, addrs: &[&str]) -> Resource {
        Resource {
            key: format!("workload/prod/{name}"),
            version: "1".into(),
            kind: Some(resource::Kind::Workload(Workload {
                name: name.into(),
                namespace: "prod".into(),
                node: node.into(),
                captured,
                addresses: addrs.iter().map(|s| s.to_string()).collect(),
                ..Default::default()
            })),
        }
    }

    fn snapshot(rs: Vec<Resource>) -> Snapshot {
        let map: BTreeMap<String, Arc<Resource>> = rs
            .into_iter()
            .map(|r| (r.key.clone(), Arc::new(r)))
            .collect();
        Snapshot::new(1, map)
    }

    #[test]
    fn only_captured_workloads_of_this_node() {
        let s = snapshot(vec![
            wl("a", "n0", true, &["10.0.0.1"]),
            wl("b", "n0", false, &["10.0.0.2"]),
            wl("c", "n1", true, &["10.0.1.1"]),
            wl(
                "d",
                "n0",
                true,
                &["10.0.0.4", "fd00::4", "bogus", "0.0.0.0"],
            ),
        ]);
        let got = captured_local_pods(&s, "n0");
        let want: BTreeSet<Ipv4Addr> = ["10.0.0.1", "10.0.0.4"]
            .iter()
            .map(|s| s.parse().unwrap())
            .collect();
        assert_eq!(got.ips, want);
        let b: Ipv4Addr = "10.0.0.2".parse().unwrap();
        assert_eq!(
            got.uncaptured,
            BTreeSet::from([b]),
            "b is local, not captured"
        );
        assert_eq!(got.skipped.len(), 3, "{:?}", got.skipped);
        assert!(got
            .skipped
            .iter()
            .any(|s| s.contains("prod/d") && s.contains("IPv6")));
        assert!(got
            .skipped
            .iter()
            .any(|s| s.contains("\"bogus\"") && s.contains("addresses")));
        assert!(captured_local_pods(&s, "n2").ips.is_empty());
    }
}

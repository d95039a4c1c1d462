//! Finding pods that were never handed over: pods that ran before the mesh was installed,
//! or whose record was lost. The container runtime keeps every pod sandbox's network
//! namespace as a file in one directory (`/var/run/netns/cni-<id>` for containerd and
//! CRI-O); each is opened and its interfaces' addresses are matched against this node's
//! captured workloads the config names. A namespace is adopted only when one of its
//! interfaces holds an address of exactly one such workload.

use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv4Addr};
use std::path::Path;

use meshwork_redirect::interface_ipv4_addresses;
use meshwork_runtime::netns::NetNs;

use super::records::PodRecord;

/// A workload the config places on this node, captured, that no known pod has.
#[derive(Debug, Clone)]
pub struct Wanted {
    pub namespace: String,
    pub name: String,
    pub uid: String,
    pub ips: Vec<IpAddr>,
}

/// The namespaces in `dir` holding a wanted workload's address, with that workload's
/// record (netns path, the interface holding the address, its addresses).
pub fn scan(dir: &Path, wanted: &[Wanted]) -> Vec<(PodRecord, NetNs)> {
    let by_ip: BTreeMap<Ipv4Addr, &Wanted> = wanted
        .iter()
        .flat_map(|w| {
            w.ips.iter().filter_map(move |ip| match ip {
                IpAddr::V4(v4) => Some((*v4, w)),
                IpAddr::V6(_) => None,
            })
        })
        .collect();
    if by_ip.is_empty() {
        return Vec::new();
    }
    let Ok(entries) = std::fs::read_dir(dir) else {
        return Vec::new();
    };
    let mut found = Vec::new();
    for e in entries.flatten() {
        let path = e.path();
        let Ok(netns) = NetNs::open(&path) else {
            continue;
        };
        if netns.is_home() {
            continue;
        }
        let Ok(Ok(addrs)) = netns.run(interface_ipv4_addresses) else {
            continue;
        };
        let hit = addrs
            .iter()
            .find_map(|(ifname, ip)| by_ip.get(ip).map(|w| (ifname.clone(), *w)));
        if let Some((ifname, w)) = hit {
            tracing::info!(pod = %format!("{}/{}", w.namespace, w.name), netns = %path.display(), %ifname, "found a pod's network namespace");
            found.push((
                PodRecord {
                    namespace: w.namespace.clone(),
                    name: w.name.clone(),
                    uid: w.uid.clone(),
                    container_id: String::new(),
                    netns: path,
                    ifname,
                    ips: w.ips.clone(),
                },
                netns,
            ));
        }
    }
    found
}

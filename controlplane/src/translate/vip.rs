//! Cluster IPs for Services that declare none.
//!
//! In Kubernetes the API server allocates a Service's `clusterIP`; manifests applied from a
//! directory (the seed's `order-service`, most application charts) usually leave it out.
//! Without a VIP the ztunnel could only name the service by hostname, so the directory
//! source plays the API server's part: each such Service gets an address from the service
//! CIDR, chosen by a hash of its namespace/name (stable across restarts, so proxies resuming
//! a stream see unchanged versions) and probed past addresses already in use.

use std::collections::{HashMap, HashSet};
use std::net::Ipv4Addr;

use ipnet::Ipv4Net;

/// Kubernetes' default service CIDR.
pub const DEFAULT_SERVICE_CIDR: &str = "10.96.0.0/12";

#[derive(Debug)]
pub struct VipAllocator {
    net: Ipv4Net,
    assigned: HashMap<(String, String), Ipv4Addr>,
    in_use: HashSet<Ipv4Addr>,
}

impl Default for VipAllocator {
    fn default() -> Self {
        VipAllocator::new(DEFAULT_SERVICE_CIDR.parse().expect("valid default CIDR"))
    }
}

impl VipAllocator {
    pub fn new(net: Ipv4Net) -> Self {
        VipAllocator {
            net,
            assigned: HashMap::new(),
            in_use: HashSet::new(),
        }
    }

    /// Marks addresses a Service declares itself, so none is handed out twice.
    pub fn reserve(&mut self, ip: &str) {
        if let Ok(ip) = ip.parse() {
            self.in_use.insert(ip);
        }
    }

    /// The address of `namespace/name`, allocating one on first use.
    pub fn assign(&mut self, namespace: &str, name: &str) -> Ipv4Addr {
        let key = (namespace.to_string(), name.to_string());
        if let Some(ip) = self.assigned.get(&key) {
            return *ip;
        }
        let base = u32::from(self.net.network());
        // Skip the network address and the first ten (10.96.0.1 is the API server, .10 DNS).
        let size = (1u64 << (32 - self.net.prefix_len()))
            .saturating_sub(12)
            .max(1);
        let mut offset = fnv(&format!("{namespace}/{name}")) % size;
        let ip = loop {
            let candidate = Ipv4Addr::from(base + 11 + offset as u32);
            if !self.in_use.contains(&candidate) {
                break candidate;
            }
            offset = (offset + 1) % size;
        };
        self.in_use.insert(ip);
        self.assigned.insert(key, ip);
        ip
    }

    /// Frees the address of a deleted Service (or one that now declares its own).
    pub fn release(&mut self, namespace: &str, name: &str) {
        if let Some(ip) = self
            .assigned
            .remove(&(namespace.to_string(), name.to_string()))
        {
            self.in_use.remove(&ip);
        }
    }
}

fn fnv(s: &str) -> u64 {
    s.bytes().fold(0xcbf2_9ce4_8422_2325, |h, b| {
        (h ^ u64::from(b)).wrapping_mul(0x0100_0000_01b3)
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn stable_distinct_and_inside_the_cidr() {
        let mut a = VipAllocator::default();
        let net: Ipv4Net = DEFAULT_SERVICE_CIDR.parse().unwrap();
        let x = a.assign("production", "order-service");
        assert!(net.contains(&x));
        assert_eq!(
            a.assign("production", "order-service"),
            x,
            "same name, same IP"
        );
        let mut b = VipAllocator::default();
        assert_eq!(
            b.assign("production", "order-service"),
            x,
            "stable across restarts"
        );
        let y = a.assign("production", "payment-service");
        assert_ne!(x, y);
    }

    #[test]
    fn probes_past_addresses_in_use() {
        let mut probe = VipAllocator::default();
        let wanted = probe.assign("ns", "svc");
        let mut a = VipAllocator::default();
        a.reserve(&wanted.to_string());
        let got = a.assign("ns", "svc");
        assert_ne!(got, wanted);
        a.release("ns", "svc");
        assert_eq!(a.assign("ns", "svc"), got, "released then reassigned");
    }

    #[test]
    fn a_tiny_cidr_still_allocates() {
        let mut a = VipAllocator::new("10.0.0.0/28".parse().unwrap());
        let ips: HashSet<_> = (0..4).map(|i| a.assign("ns", &format!("s{i}"))).collect();
        assert_eq!(ips.len(), 4);
    }
}

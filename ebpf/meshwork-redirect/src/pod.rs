//! In-pod mode: the capture programs on a pod's own interface, inside its network
//! namespace (`docs/inpod.md`, "Hooks"). Links are pinned under
//! `<pin_root>/<node>/pods/<key>/{ingress,egress}`; the pod's addresses are enrolled in the
//! node's `MW_ENROLLED` with an owner tag derived from the key, so a restarted process can
//! unenroll them knowing only the key.
use std::collections::BTreeMap;
use std::net::{IpAddr, Ipv6Addr};
use std::path::PathBuf;

use aya::programs::links::FdLink;
use aya::programs::tc::TcAttachOptions;
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use meshwork_ebpf_common::{
    PodEntry, FLAG_ALL, MAP_ENROLLED, MAP_ENROLLED6, PROG_POD_EGRESS, PROG_POD_INGRESS,
};
use meshwork_runtime::netns::NetNs;

use crate::options::{ip_key, key_ip};
use crate::redirect::{classifier, PodState};
use crate::{netlink, Redirect, RedirectError, RedirectOptions};

/// Pin file name, hook, program.
const POD_LINKS: [(&str, TcAttachType, &str); 2] = [
    ("ingress", TcAttachType::Ingress, PROG_POD_INGRESS),
    ("egress", TcAttachType::Egress, PROG_POD_EGRESS),
];

/// 32-bit FNV-1a of the pod key, never 0 (0 is node mode's "no owner").
fn owner_tag(key: &str) -> u32 {
    let mut h: u32 = 0x811c_9dc5;
    for b in key.bytes() {
        h ^= b as u32;
        h = h.wrapping_mul(0x0100_0193);
    }
    h.max(1)
}

fn check_key(key: &str) -> Result<(), RedirectError> {
    // bpffs refuses a name with a dot (EPERM): the key names the pod's pin directory.
    if key.is_empty() || key.len() > 128 || key.contains('/') || key.contains('.') {
        return Err(RedirectError::InvalidOption {
            field: "key",
            reason: format!(
                "{key:?}: must be a non-empty name without '/' or '.' (a pod uid; bpffs refuses dots)"
            ),
        });
    }
    Ok(())
}

fn check_ifname(key: &str, ifname: &str) -> Result<(), RedirectError> {
    if ifname.is_empty() || ifname.len() > 15 || ifname.contains('/') || ifname.starts_with('.') {
        return Err(RedirectError::Pod {
            key: key.to_string(),
            reason: format!("invalid interface name {ifname:?}"),
        });
    }
    Ok(())
}

/// In the calling thread's network namespace (a pod's: call it inside `NetNs::run`):
/// `ip rule add priority P fwmark C/C lookup T` and `ip route replace local 0.0.0.0/0 dev
/// lo table T`, C the pod capture mark. Idempotent.
pub fn install_pod_routing(opts: &RedirectOptions) -> Result<(), crate::NetlinkError> {
    netlink::add_fwmark_rule(opts.pod_capture_mark, opts.table, opts.rule_priority)?;
    netlink::replace_local_default_route(opts.table)
}

/// The IPv6 counterpart of [`install_pod_routing`]: `ip -6 rule add priority P fwmark C/C
/// lookup T` and `ip -6 route replace local ::/0 dev lo table T`. IPv6 has no
/// `accept_local`: a hairpinned packet whose source is the pod's own address is accepted
/// as it is. Idempotent.
pub fn install_pod_routing6(opts: &RedirectOptions) -> Result<(), crate::NetlinkError> {
    use netlink::Family::V6;
    netlink::add_fwmark_rule_for(V6, opts.pod_capture_mark, opts.table, opts.rule_priority)?;
    netlink::replace_local_default_route_for(V6, opts.table)
}

/// Removes what [`install_pod_routing`] and [`install_pod_routing6`] installed; missing
/// pieces (or IPv6 disabled in the namespace) are not an error.
pub fn remove_pod_routing(opts: &RedirectOptions) -> Result<(), crate::NetlinkError> {
    use netlink::Family::V6;
    netlink::del_fwmark_rule(opts.pod_capture_mark, opts.table, opts.rule_priority)?;
    netlink::del_local_default_route(opts.table)?;
    netlink::del_fwmark_rule_for(V6, opts.pod_capture_mark, opts.table, opts.rule_priority)?;
    netlink::del_local_default_route_for(V6, opts.table)
}

impl Redirect {
    /// `<pin_root>/<node>/pods`.
    pub fn pods_pin_dir(&self) -> PathBuf {
        self.opts.pin_dir().join("pods")
    }

    /// Captures a pod in its own network namespace: sets `accept_local=1` on `ifname`
    /// (rtnetlink), installs the capture-mark rule and local route (IPv4, and IPv6 when
    /// `ips` has an IPv6 address), attaches `mw_pod_ingress` / `mw_pod_egress` (TCX,
    /// first) to `ifname`, pins the links under `pods/<key>/`, and enrolls `ips` (IPv4 and
    /// IPv6, both directions). Idempotent; called again with another namespace (the pod's
    /// sandbox was recreated) it moves the links there, and addresses the pod no longer
    /// has are unenrolled.
    ///
    /// IPv6 TCP of the pod from or to an address not in `ips` is dropped (fail closed):
    /// pass every address the pod has.
    pub fn attach_pod<A: Into<IpAddr> + Copy>(
        &mut self,
        netns: &NetNs,
        key: &str,
        ifname: &str,
        ips: &[A],
    ) -> Result<(), RedirectError> {
        let ips: Vec<IpAddr> = ips.iter().map(|ip| (*ip).into()).collect();
        let has_v6 = ips.iter().any(IpAddr::is_ipv6);
        check_key(key)?;
        check_ifname(key, ifname)?;
        let pod_err = |reason: String| RedirectError::Pod {
            key: key.to_string(),
            reason,
        };
        let netns_err = |source| RedirectError::PodNetns {
            key: key.to_string(),
            source,
        };
        let nl_err = |source| RedirectError::PodNetlink {
            key: key.to_string(),
            source,
        };
        let opts = self.opts.clone();
        netns
            .run(|| {
                netlink::set_accept_local(ifname, true)?;
                install_pod_routing(&opts)?;
                if has_v6 {
                    install_pod_routing6(&opts)?;
                }
                Ok(())
            })
            .map_err(netns_err)?
            .map_err(nl_err)?;

        let dir = self.pods_pin_dir().join(key);
        let pinned = POD_LINKS.iter().all(|(f, _, _)| dir.join(f).exists());
        let attached = pinned
            && match self.pods.get(key) {
                Some(p) => p.netns_inode == netns.inode() && p.ifname == ifname,
                // Links adopted at load (a restarted process): already ours on this
                // interface when the pod's namespace is the one they hook. Attaching the
                // same program again would fail (`EEXIST`).
                None => self.ours_on(netns, key, ifname)?,
            };
        if !attached {
            std::fs::create_dir_all(&dir).map_err(|source| RedirectError::PinDir {
                path: dir.clone(),
                source,
            })?;
            for (file, attach_type, program) in POD_LINKS {
                let path = dir.join(file);
                let prog = classifier(&mut self.ebpf, program)?;
                // The interface name is resolved in the calling thread's namespace.
                let id = netns
                    .run(|| {
                        prog.attach_with_options(
                            ifname,
                            attach_type,
                            TcAttachOptions::TcxOrder(LinkOrder::first()),
                        )
                    })
                    .map_err(netns_err)?
                    .map_err(|e| {
                        pod_err(format!(
                            "attaching {program} to {ifname}: {e} ({:?})",
                            std::error::Error::source(&e)
                        ))
                    })?;
                let link = prog.take_link(id).map_err(|e| pod_err(e.to_string()))?;
                let fd_link = FdLink::try_from(link).map_err(|e| pod_err(e.to_string()))?;
                // A previous link (same namespace: now a duplicate; an old sandbox's: to be
                // dropped) goes with its pin; ours is held by `fd_link` meanwhile, so the
                // hook is never absent.
                remove_pin(&path)?;
                fd_link
                    .pin(&path)
                    .map_err(|e| pod_err(format!("pin {}: {e}", path.display())))?;
            }
            tracing::info!(
                pod = key,
                interface = ifname,
                "attached in-pod redirect programs"
            );
        }

        let tag = owner_tag(key);
        // Before the addresses: once enrolled, the pod's connects are recorded.
        self.register_pod_netns(key, netns, tag)?;
        for (ip, entry) in self.owned_entries(tag)? {
            if !ips.contains(&ip) && entry.reserved == tag {
                self.unenroll_any(ip)?;
            }
        }
        let entry = PodEntry {
            flags: FLAG_ALL,
            reserved: tag,
        };
        for ip in &ips {
            match ip {
                IpAddr::V4(v4) => self
                    .enrolled
                    .insert(ip_key(*v4), entry, 0)
                    .map_err(|e| RedirectError::map(MAP_ENROLLED, e))?,
                IpAddr::V6(v6) => self
                    .enrolled6
                    .insert(v6.octets(), entry, 0)
                    .map_err(|e| RedirectError::map(MAP_ENROLLED6, e))?,
            }
        }
        self.pods.insert(
            key.to_string(),
            PodState {
                netns_inode: netns.inode(),
                ifname: ifname.to_string(),
            },
        );
        Ok(())
    }

    /// Whether both of this process's pod programs are attached (TCX) to `ifname` in
    /// `netns`: after [`Redirect::load`] adopted a pod's pinned links (their programs
    /// swapped for ours), they are, as long as the sandbox is the same.
    fn ours_on(&mut self, netns: &NetNs, key: &str, ifname: &str) -> Result<bool, RedirectError> {
        for (_, attach_type, program) in POD_LINKS {
            let id = classifier(&mut self.ebpf, program)?
                .info()
                .map_err(|e| RedirectError::program(program, e))?
                .id();
            let found = netns
                .run(|| SchedClassifier::query_tcx(ifname, attach_type))
                .map_err(|source| RedirectError::PodNetns {
                    key: key.to_string(),
                    source,
                })?;
            // No such interface (a new sandbox) or no TCX there: not attached.
            let Ok((_, progs)) = found else {
                return Ok(false);
            };
            if !progs.iter().any(|p| p.id() == id) {
                return Ok(false);
            }
        }
        Ok(true)
    }

    /// Releases a pod: removes its pinned links (detaching the programs), unenrolls its
    /// addresses, and, given its namespace, removes the rule and route there and resets
    /// `accept_local` (when this process attached it and so knows the interface). Missing
    /// pieces are not an error.
    pub fn detach_pod(&mut self, key: &str, netns: Option<&NetNs>) -> Result<(), RedirectError> {
        check_key(key)?;
        let dir = self.pods_pin_dir().join(key);
        match std::fs::remove_dir_all(&dir) {
            Ok(()) => {}
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
            Err(source) => return Err(RedirectError::Teardown { path: dir, source }),
        }
        let state = self.pods.remove(key);
        let tag = owner_tag(key);
        for (ip, _) in self.owned_entries(tag)? {
            self.unenroll_any(ip)?;
        }
        self.forget_pod_netns(tag)?;
        if let Some(netns) = netns {
            let opts = self.opts.clone();
            let ifname = state.map(|s| s.ifname);
            netns
                .run(|| {
                    remove_pod_routing(&opts)?;
                    if let Some(ifname) = &ifname {
                        match netlink::set_accept_local(ifname, false) {
                            // The interface is gone with the pod: nothing to reset.
                            Err(netlink::NetlinkError::Interface { .. }) => {}
                            other => other?,
                        }
                    }
                    Ok(())
                })
                .map_err(|source| RedirectError::PodNetns {
                    key: key.to_string(),
                    source,
                })?
                .map_err(|source| RedirectError::PodNetlink {
                    key: key.to_string(),
                    source,
                })?;
        }
        tracing::info!(pod = key, "detached in-pod redirect programs");
        Ok(())
    }

    /// Keys of the pods with pinned links (after [`Redirect::load`]: the ones whose links
    /// were adopted), sorted.
    pub fn pinned_pods(&self) -> Result<Vec<String>, RedirectError> {
        let dir = self.pods_pin_dir();
        let entries = match std::fs::read_dir(&dir) {
            Ok(e) => e,
            Err(e) if e.kind() == std::io::ErrorKind::NotFound => return Ok(Vec::new()),
            Err(source) => return Err(RedirectError::PinDir { path: dir, source }),
        };
        let mut keys: Vec<String> = entries
            .flatten()
            .filter(|e| e.path().is_dir())
            .map(|e| e.file_name().to_string_lossy().into_owned())
            .collect();
        keys.sort();
        Ok(keys)
    }

    /// Addresses enrolled for `key` (by owner tag): IPv4 ones first.
    pub fn pod_addresses(&self, key: &str) -> Result<Vec<IpAddr>, RedirectError> {
        Ok(self
            .owned_entries(owner_tag(key))?
            .into_iter()
            .map(|(ip, _)| ip)
            .collect())
    }

    fn owned_entries(&self, tag: u32) -> Result<Vec<(IpAddr, PodEntry)>, RedirectError> {
        let mut out = Vec::new();
        for item in self.enrolled.iter() {
            let (k, v) = item.map_err(|e| RedirectError::map(MAP_ENROLLED, e))?;
            if v.reserved == tag {
                out.push((IpAddr::V4(key_ip(k)), v));
            }
        }
        for item in self.enrolled6.iter() {
            let (k, v) = item.map_err(|e| RedirectError::map(MAP_ENROLLED6, e))?;
            if v.reserved == tag {
                out.push((IpAddr::V6(Ipv6Addr::from(k)), v));
            }
        }
        Ok(out)
    }

    fn unenroll_any(&mut self, ip: IpAddr) -> Result<(), RedirectError> {
        match ip {
            IpAddr::V4(v4) => self.unenroll(v4),
            IpAddr::V6(v6) => match self.enrolled6.remove(&v6.octets()) {
                Ok(()) => Ok(()),
                Err(aya::maps::MapError::KeyNotFound) => Ok(()),
                Err(e) => Err(RedirectError::map(MAP_ENROLLED6, e)),
            },
        }
    }

    /// At load: swaps the new programs into every pinned pod link; a pod whose links are
    /// all defunct (its namespace is gone) loses its pins and its enrolled addresses.
    pub(crate) fn adopt_pinned_pods(&mut self) -> Result<(), RedirectError> {
        let keys = self.pinned_pods()?;
        let mut stale: BTreeMap<String, PathBuf> = BTreeMap::new();
        for key in keys {
            let dir = self.pods_pin_dir().join(&key);
            let mut live = 0;
            for (file, _, program) in POD_LINKS {
                let path = dir.join(file);
                if !path.exists() {
                    continue;
                }
                match self.replace_program(&path, program) {
                    Ok(()) => live += 1,
                    Err(e) => {
                        tracing::info!(pod = %key, error = %e, "dropping stale pinned pod link");
                        remove_pin(&path)?;
                    }
                }
            }
            if live == 0 {
                stale.insert(key, dir);
            } else {
                tracing::info!(pod = %key, "adopted pinned in-pod redirect links");
            }
        }
        for (key, dir) in stale {
            let _ = std::fs::remove_dir_all(&dir);
            for (ip, _) in self.owned_entries(owner_tag(&key))? {
                self.unenroll_any(ip)?;
            }
            self.forget_pod_netns(owner_tag(&key))?;
        }
        Ok(())
    }
}

fn remove_pin(path: &std::path::Path) -> Result<(), RedirectError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(e) => Err(RedirectError::Link {
            path: path.to_path_buf(),
            reason: e.to_string(),
        }),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn owner_tags_are_stable_and_never_zero() {
        assert_eq!(owner_tag("a"), owner_tag("a"));
        assert_ne!(owner_tag("a"), owner_tag("b"));
        assert_ne!(owner_tag(""), 0);
    }

    #[test]
    fn keys_and_interfaces_are_checked_naming_the_pod() {
        assert!(check_key("0f1e-uid").is_ok());
        for bad in ["", "a/b", ".", "..", "shop.cart"] {
            assert!(check_key(bad).unwrap_err().to_string().contains("key"));
        }
        let e = check_ifname("uid-1", "../x").unwrap_err().to_string();
        assert!(e.contains("uid-1") && e.contains("../x"), "{e}");
    }
}

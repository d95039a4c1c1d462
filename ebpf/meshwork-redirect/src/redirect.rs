use std::collections::{BTreeMap, BTreeSet};
use std::net::{IpAddr, Ipv4Addr, Ipv6Addr};
use std::os::fd::AsFd;
use std::path::{Path, PathBuf};

use aya::maps::{Array, HashMap, MapData, PerCpuArray};
use aya::programs::links::{FdLink, PinnedLink};
use aya::programs::tc::{SchedClassifierLink, TcAttachOptions};
use aya::programs::{LinkOrder, SchedClassifier, TcAttachType};
use aya::{Ebpf, EbpfLoader};
use meshwork_ebpf_common::{
    Ip6Key, PodConfig, PodEntry, RedirectConfig, FLAG_ALL, MAP_CONFIG, MAP_ENROLLED, MAP_ENROLLED6,
    MAP_EXCLUDED, MAP_EXCLUDED6, MAP_ORIG_DST, MAP_POD_CONFIG, MAP_POD_NETNS, MAP_SOCK_ORIG,
    MAP_STATS, MAP_STATS6, PROG_POD_CONNECT4, PROG_POD_EGRESS, PROG_POD_INGRESS, PROG_TC_EGRESS,
    PROG_TC_INGRESS, STAT6_UNENROLLED_DROP, STAT6_UNPARSED_DROP, STAT_ASSIGN_FAILED, STAT_COUNT,
    STAT_HAIRPIN, STAT_INBOUND_HBONE_SYN, STAT_INBOUND_PLAIN_SYN, STAT_MARKED,
    STAT_NO_LISTENER_DROP, STAT_OUTBOUND_SYN,
};

use crate::options::{ip_key, key_ip};
use crate::{RedirectError, RedirectOptions, BPF_OBJECT};

/// Pinned links are `<direction>-<interface>`.
const DIRECTIONS: [(&str, TcAttachType, &str); 2] = [
    ("ingress-", TcAttachType::Ingress, PROG_TC_INGRESS),
    ("egress-", TcAttachType::Egress, PROG_TC_EGRESS),
];

/// Counters summed over CPUs.
#[derive(Clone, Copy, Debug, Default, PartialEq, Eq)]
pub struct RedirectStats {
    pub outbound_syn: u64,
    pub inbound_hbone_syn: u64,
    pub inbound_plain_syn: u64,
    /// SYNs dropped because the target listener was absent (fail closed).
    pub no_listener_drop: u64,
    pub assign_failed: u64,
    /// Non-SYN packets of captured flows delivered locally.
    pub marked: u64,
    /// Node-originated HBONE packets to local pods looped back into ingress.
    pub hairpin: u64,
    /// IPv6 packets of enrolled pods dropped because the programs cannot parse them
    /// (extension headers, fragments): never passed uncaptured.
    pub ipv6_unparsed_drop: u64,
    /// IPv6 TCP of an enrolled pod from (or a SYN to) one of its addresses that is not
    /// enrolled: dropped.
    pub ipv6_unenrolled_drop: u64,
}

/// The loaded programs and maps of one node. Pins persist after drop: a later
/// [`Redirect::load`] for the same node adopts them.
pub struct Redirect {
    pub(crate) opts: RedirectOptions,
    pub(crate) ebpf: Ebpf,
    pub(crate) enrolled: HashMap<MapData, u32, PodEntry>,
    excluded: HashMap<MapData, u32, u8>,
    stats: PerCpuArray<MapData, u64>,
    /// In-pod mode, IPv6: enrolled addresses (value as in `enrolled`), excluded
    /// destinations, counters.
    pub(crate) enrolled6: HashMap<MapData, Ip6Key, PodEntry>,
    excluded6: HashMap<MapData, Ip6Key, u8>,
    stats6: PerCpuArray<MapData, u64>,
    /// Interface → pin directory of its links.
    attached: BTreeMap<String, PathBuf>,
    /// Interfaces attached because a pod is routed through them (see `sync_pods`).
    pod_interfaces: BTreeSet<String>,
    /// In-pod mode: pods attached by this process (key → where and what).
    pub(crate) pods: BTreeMap<String, PodState>,
    /// In-pod mode: enrolled pods' netns cookies → owner tag (`mw_pod_connect4`).
    pub(crate) pod_netns: HashMap<MapData, u64, u32>,
    /// In-pod mode: original destinations of captured connections (socket-LB).
    pub(crate) orig_dst: crate::OriginalDestinations,
}

/// What this process attached for a pod (in-pod mode, `crate::pod`).
#[derive(Clone, Debug)]
pub(crate) struct PodState {
    pub(crate) netns_inode: u64,
    pub(crate) ifname: String,
}

impl Redirect {
    /// Loads the programs into the current network namespace, reusing the maps pinned in
    /// `<pin_root>/<node>/` (enrollment survives restarts), writes the configuration, and
    /// atomically swaps the new program into every link pinned there (no detach gap).
    pub fn load(opts: RedirectOptions) -> Result<Self, RedirectError> {
        opts.validate()?;
        if BPF_OBJECT.is_empty() {
            return Err(RedirectError::BpfNotBuilt);
        }
        let dir = opts.pin_dir();
        std::fs::create_dir_all(&dir).map_err(|source| RedirectError::PinDir {
            path: dir.clone(),
            source,
        })?;
        if !crate::bpffs::is_bpffs(&dir).map_err(|e| RedirectError::Bpffs {
            path: dir.clone(),
            reason: e.to_string(),
        })? {
            return Err(RedirectError::Bpffs {
                path: dir,
                reason: "not on a bpffs (call ensure_bpffs for its mount point)".into(),
            });
        }
        let paths: Vec<(&'static str, PathBuf)> = [
            MAP_ENROLLED,
            MAP_EXCLUDED,
            MAP_CONFIG,
            MAP_POD_CONFIG,
            MAP_STATS,
            MAP_POD_NETNS,
            MAP_SOCK_ORIG,
            MAP_ORIG_DST,
            MAP_ENROLLED6,
            MAP_EXCLUDED6,
            MAP_STATS6,
        ]
        .into_iter()
        .map(|m| (m, dir.join(m)))
        .collect();
        let mut loader = EbpfLoader::new();
        for (name, path) in &paths {
            loader.map_pin_path(name, path.as_path());
        }
        let mut ebpf = loader.load(BPF_OBJECT).map_err(|e| RedirectError::Load {
            path: dir.clone(),
            source: Box::new(e),
        })?;

        let mut config: Array<MapData, RedirectConfig> = take(&mut ebpf, MAP_CONFIG)?;
        config
            .set(0, opts.config(), 0)
            .map_err(|e| RedirectError::map(MAP_CONFIG, e))?;
        let mut pod_config: Array<MapData, PodConfig> = take(&mut ebpf, MAP_POD_CONFIG)?;
        pod_config
            .set(0, opts.pod_config(), 0)
            .map_err(|e| RedirectError::map(MAP_POD_CONFIG, e))?;
        let enrolled = take(&mut ebpf, MAP_ENROLLED)?;
        let excluded = take(&mut ebpf, MAP_EXCLUDED)?;
        let stats = take(&mut ebpf, MAP_STATS)?;
        let enrolled6 = take(&mut ebpf, MAP_ENROLLED6)?;
        let excluded6 = take(&mut ebpf, MAP_EXCLUDED6)?;
        let stats6 = take(&mut ebpf, MAP_STATS6)?;
        let pod_netns = take(&mut ebpf, MAP_POD_NETNS)?;
        let orig_dst_map = ebpf.map(MAP_ORIG_DST).ok_or(RedirectError::Missing {
            kind: "map",
            name: MAP_ORIG_DST,
        })?;
        let aya::maps::Map::LruHashMap(orig_dst_data) = orig_dst_map else {
            return Err(RedirectError::Missing {
                kind: "LRU hash map",
                name: MAP_ORIG_DST,
            });
        };
        let orig_dst = crate::OriginalDestinations::new(orig_dst_data.fd().as_fd())?;

        for name in [
            PROG_TC_INGRESS,
            PROG_TC_EGRESS,
            PROG_POD_INGRESS,
            PROG_POD_EGRESS,
        ] {
            classifier(&mut ebpf, name)?
                .load()
                .map_err(|e| RedirectError::program(name, e))?;
        }
        {
            let prog: &mut aya::programs::CgroupSockAddr = ebpf
                .program_mut(PROG_POD_CONNECT4)
                .ok_or(RedirectError::Missing {
                    kind: "program",
                    name: PROG_POD_CONNECT4,
                })?
                .try_into()
                .map_err(|e| RedirectError::program(PROG_POD_CONNECT4, e))?;
            prog.load()
                .map_err(|e| RedirectError::program(PROG_POD_CONNECT4, e))?;
        }

        let mut me = Self {
            opts,
            ebpf,
            enrolled,
            excluded,
            stats,
            enrolled6,
            excluded6,
            stats6,
            attached: BTreeMap::new(),
            pod_interfaces: BTreeSet::new(),
            pods: BTreeMap::new(),
            pod_netns,
            orig_dst,
        };
        me.adopt_pinned_links()?;
        me.adopt_pinned_pods()?;
        me.adopt_pinned_connect4()?;
        Ok(me)
    }

    pub fn options(&self) -> &RedirectOptions {
        &self.opts
    }

    /// Interfaces with an attached (pinned) link.
    pub fn attached(&self) -> Vec<String> {
        self.attached.keys().cloned().collect()
    }

    fn adopt_pinned_links(&mut self) -> Result<(), RedirectError> {
        let dir = self.opts.pin_dir();
        let entries = std::fs::read_dir(&dir).map_err(|source| RedirectError::PinDir {
            path: dir.clone(),
            source,
        })?;
        for entry in entries.flatten() {
            let name = entry.file_name().to_string_lossy().into_owned();
            let Some((iface, program)) = DIRECTIONS
                .iter()
                .find_map(|(p, _, prog)| name.strip_prefix(p).map(|i| (i.to_string(), *prog)))
            else {
                continue;
            };
            let path = entry.path();
            match self.replace_program(&path, program) {
                Ok(()) => {
                    tracing::info!(interface = %iface, program, "adopted pinned redirect link");
                    self.attached.insert(iface, dir.clone());
                }
                Err(e) => {
                    // The interface is gone (pod deleted): the link is defunct.
                    tracing::info!(interface = %iface, error = %e, "dropping stale pinned link");
                    let _ = std::fs::remove_file(&path);
                }
            }
        }
        Ok(())
    }

    pub(crate) fn replace_program(
        &mut self,
        path: &Path,
        program: &'static str,
    ) -> Result<(), RedirectError> {
        let link_err = |reason: String| RedirectError::Link {
            path: path.to_path_buf(),
            reason,
        };
        let pinned = PinnedLink::from_pin(path).map_err(|e| link_err(e.to_string()))?;
        let fd_link = FdLink::from(pinned);
        let link = SchedClassifierLink::try_from(fd_link).map_err(|e| link_err(e.to_string()))?;
        let prog = classifier(&mut self.ebpf, program)?;
        let id = prog
            .attach_to_link(link)
            .map_err(|e| link_err(e.to_string()))?;
        // The pin keeps the link; our fd closes when the program is dropped.
        let _link = prog.take_link(id).map_err(|e| link_err(e.to_string()))?;
        Ok(())
    }

    /// Attaches the programs to `interface` (TCX ingress and egress, first in each chain),
    /// pins the links, and sets the interface's `accept_local` (hairpinned HBONE packets
    /// carry a node address as source). Already attached: no-op.
    pub fn attach(&mut self, interface: &str) -> Result<(), RedirectError> {
        if self.attached.contains_key(interface) {
            return Ok(());
        }
        let attach_err = |reason: String| RedirectError::Attach {
            interface: interface.to_string(),
            reason,
        };
        if interface.is_empty() || interface.contains('/') || interface.starts_with('.') {
            return Err(attach_err("invalid interface name".into()));
        }
        // Through rtnetlink, not /proc/sys (read-only in a non-privileged container).
        crate::netlink::set_accept_local(interface, true).map_err(|e| attach_err(e.to_string()))?;
        let dir = self.opts.pin_dir();
        for (prefix, attach_type, program) in DIRECTIONS {
            let path = dir.join(format!("{prefix}{interface}"));
            let prog = classifier(&mut self.ebpf, program)?;
            let id = prog
                .attach_with_options(
                    interface,
                    attach_type,
                    TcAttachOptions::TcxOrder(LinkOrder::first()),
                )
                .map_err(|e| {
                    attach_err(format!(
                        "{program}: {e} ({:?})",
                        std::error::Error::source(&e)
                    ))
                })?;
            let link = prog.take_link(id).map_err(|e| attach_err(e.to_string()))?;
            let fd_link = FdLink::try_from(link).map_err(|e| attach_err(e.to_string()))?;
            fd_link
                .pin(&path)
                .map_err(|e| attach_err(format!("pin {}: {e}", path.display())))?;
        }
        tracing::info!(interface, "attached redirect programs");
        self.attached.insert(interface.to_string(), dir);
        Ok(())
    }

    /// Attaches to the interface the node routes `pod` through (its host-side veth) and
    /// enrolls it; returns the interface.
    pub fn attach_and_enroll(&mut self, pod: Ipv4Addr) -> Result<String, RedirectError> {
        let iface = crate::routing::route_interface(pod)?;
        if iface == "lo" {
            return Err(RedirectError::InvalidOption {
                field: "pod",
                reason: format!("{pod} is a local address of this node, not a pod"),
            });
        }
        self.attach(&iface)?;
        self.pod_interfaces.insert(iface.clone());
        self.enroll(pod)?;
        Ok(iface)
    }

    /// Makes the captured pods exactly `pods`: attaches to each pod's interface (found by
    /// route) and enrolls it, unenrolls the others, and detaches interfaces that were
    /// attached for pods no longer present. Returns the interfaces now serving pods. The
    /// call ztunnel makes on every change of its node's captured workloads.
    pub fn sync_pods<I: IntoIterator<Item = Ipv4Addr>>(
        &mut self,
        pods: I,
    ) -> Result<BTreeSet<String>, RedirectError> {
        let mut want = BTreeMap::new();
        let mut ifaces = BTreeSet::new();
        for pod in pods {
            let iface = crate::routing::route_interface(pod)?;
            if iface == "lo" {
                return Err(RedirectError::InvalidOption {
                    field: "pods",
                    reason: format!("{pod} is a local address of this node, not a pod"),
                });
            }
            self.attach(&iface)?;
            ifaces.insert(iface);
            want.insert(pod, FLAG_ALL);
        }
        self.sync_with(&want)?;
        let gone: Vec<String> = self.pod_interfaces.difference(&ifaces).cloned().collect();
        for iface in gone {
            self.detach(&iface)?;
        }
        self.pod_interfaces = ifaces.clone();
        Ok(ifaces)
    }

    /// Detaches from `interface` (removes the pinned link). Not attached: no-op.
    pub fn detach(&mut self, interface: &str) -> Result<(), RedirectError> {
        self.pod_interfaces.remove(interface);
        if let Some(dir) = self.attached.remove(interface) {
            for (prefix, _, _) in DIRECTIONS {
                let path = dir.join(format!("{prefix}{interface}"));
                match std::fs::remove_file(&path) {
                    Ok(()) => {}
                    Err(e) if e.kind() == std::io::ErrorKind::NotFound => {}
                    Err(e) => {
                        return Err(RedirectError::Link {
                            path,
                            reason: e.to_string(),
                        })
                    }
                }
            }
            tracing::info!(interface, "detached redirect programs");
        }
        Ok(())
    }

    /// Enrolls a pod (both directions captured). Takes effect on the next SYN.
    pub fn enroll(&mut self, ip: Ipv4Addr) -> Result<(), RedirectError> {
        self.enroll_with(ip, FLAG_ALL)
    }

    /// Enrolls a pod with explicit `FLAG_*` bits.
    pub fn enroll_with(&mut self, ip: Ipv4Addr, flags: u32) -> Result<(), RedirectError> {
        if flags == 0 || flags & !FLAG_ALL != 0 {
            return Err(RedirectError::InvalidOption {
                field: "flags",
                reason: format!("{flags:#x} for pod {ip}: must be a non-empty set of FLAG_*"),
            });
        }
        let entry = PodEntry { flags, reserved: 0 };
        self.enrolled
            .insert(ip_key(ip), entry, 0)
            .map_err(|e| RedirectError::map(MAP_ENROLLED, e))?;
        tracing::debug!(%ip, flags, "enrolled pod");
        Ok(())
    }

    /// Removes a pod from the mesh. Not enrolled: no-op.
    pub fn unenroll(&mut self, ip: Ipv4Addr) -> Result<(), RedirectError> {
        match self.enrolled.remove(&ip_key(ip)) {
            Ok(()) => {
                tracing::debug!(%ip, "unenrolled pod");
                Ok(())
            }
            Err(aya::maps::MapError::KeyNotFound) => Ok(()),
            Err(e) => Err(RedirectError::map(MAP_ENROLLED, e)),
        }
    }

    /// Makes the enrolled set exactly `pods` (all with both directions captured).
    pub fn sync<I: IntoIterator<Item = Ipv4Addr>>(&mut self, pods: I) -> Result<(), RedirectError> {
        let want: BTreeMap<Ipv4Addr, u32> = pods.into_iter().map(|ip| (ip, FLAG_ALL)).collect();
        self.sync_with(&want)
    }

    /// Makes the enrolled set exactly `pods` with the given flags.
    pub fn sync_with(&mut self, pods: &BTreeMap<Ipv4Addr, u32>) -> Result<(), RedirectError> {
        let current = self.enrolled_with_flags()?;
        for ip in current.keys() {
            if !pods.contains_key(ip) {
                self.unenroll(*ip)?;
            }
        }
        for (ip, flags) in pods {
            if current.get(ip) != Some(flags) {
                self.enroll_with(*ip, *flags)?;
            }
        }
        Ok(())
    }

    /// The enrolled pods.
    pub fn enrolled(&self) -> Result<Vec<Ipv4Addr>, RedirectError> {
        Ok(self.enrolled_with_flags()?.into_keys().collect())
    }

    fn enrolled_with_flags(&self) -> Result<BTreeMap<Ipv4Addr, u32>, RedirectError> {
        let mut out = BTreeMap::new();
        for item in self.enrolled.iter() {
            let (k, v) = item.map_err(|e| RedirectError::map(MAP_ENROLLED, e))?;
            out.insert(key_ip(k), v.flags);
        }
        Ok(out)
    }

    /// Destinations an enrolled pod reaches directly (the node's own addresses); as
    /// sources (kubelet probes) they reach the pods directly. IPv4 or IPv6 (the IPv6 ones
    /// only matter to the in-pod programs).
    pub fn exclude_destination(&mut self, ip: impl Into<IpAddr>) -> Result<(), RedirectError> {
        match ip.into() {
            IpAddr::V4(v4) => self
                .excluded
                .insert(ip_key(v4), 1, 0)
                .map_err(|e| RedirectError::map(MAP_EXCLUDED, e)),
            IpAddr::V6(v6) => self
                .excluded6
                .insert(v6.octets(), 1, 0)
                .map_err(|e| RedirectError::map(MAP_EXCLUDED6, e)),
        }
    }

    /// The excluded IPv6 addresses.
    pub fn excluded_v6(&self) -> Result<Vec<Ipv6Addr>, RedirectError> {
        let mut out = Vec::new();
        for k in self.excluded6.keys() {
            out.push(Ipv6Addr::from(
                k.map_err(|e| RedirectError::map(MAP_EXCLUDED6, e))?,
            ));
        }
        Ok(out)
    }

    /// Excludes every address of the current network namespace (see
    /// [`crate::local_ipv4_addresses`], [`crate::local_ipv6_addresses`]).
    pub fn exclude_local_addresses(&mut self) -> Result<(), RedirectError> {
        for ip in crate::local_ipv4_addresses()? {
            self.exclude_destination(ip)?;
        }
        for ip in crate::local_ipv6_addresses()? {
            self.exclude_destination(ip)?;
        }
        Ok(())
    }

    fn stat6(&self, index: u32) -> Result<u64, RedirectError> {
        Ok(self
            .stats6
            .get(&index, 0)
            .map_err(|e| RedirectError::map(MAP_STATS6, e))?
            .iter()
            .sum())
    }

    pub fn stats(&self) -> Result<RedirectStats, RedirectError> {
        let mut sums = [0u64; STAT_COUNT as usize];
        for (i, slot) in sums.iter_mut().enumerate() {
            let values = self
                .stats
                .get(&(i as u32), 0)
                .map_err(|e| RedirectError::map(MAP_STATS, e))?;
            *slot = values.iter().sum();
        }
        Ok(RedirectStats {
            outbound_syn: sums[STAT_OUTBOUND_SYN as usize],
            inbound_hbone_syn: sums[STAT_INBOUND_HBONE_SYN as usize],
            inbound_plain_syn: sums[STAT_INBOUND_PLAIN_SYN as usize],
            no_listener_drop: sums[STAT_NO_LISTENER_DROP as usize],
            assign_failed: sums[STAT_ASSIGN_FAILED as usize],
            marked: sums[STAT_MARKED as usize],
            hairpin: sums[STAT_HAIRPIN as usize],
            ipv6_unparsed_drop: self.stat6(STAT6_UNPARSED_DROP)?,
            ipv6_unenrolled_drop: self.stat6(STAT6_UNENROLLED_DROP)?,
        })
    }
}

/// Removes every pin of a node: links (detaching the programs) and maps. Missing: no-op.
pub fn teardown(opts: &RedirectOptions) -> Result<(), RedirectError> {
    let dir = opts.pin_dir();
    match std::fs::remove_dir_all(&dir) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(RedirectError::Teardown { path: dir, source }),
    }
}

fn take<T>(ebpf: &mut Ebpf, name: &'static str) -> Result<T, RedirectError>
where
    T: TryFrom<aya::maps::Map, Error = aya::maps::MapError>,
{
    let map = ebpf
        .take_map(name)
        .ok_or(RedirectError::Missing { kind: "map", name })?;
    T::try_from(map).map_err(|e| RedirectError::map(name, e))
}

pub(crate) fn classifier<'a>(
    ebpf: &'a mut Ebpf,
    name: &'static str,
) -> Result<&'a mut SchedClassifier, RedirectError> {
    let prog = ebpf.program_mut(name).ok_or(RedirectError::Missing {
        kind: "program",
        name,
    })?;
    prog.try_into().map_err(|e| RedirectError::program(name, e))
}

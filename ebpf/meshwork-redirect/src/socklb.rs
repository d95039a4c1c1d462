//! In-pod mode under a socket-LB (`docs/inpod.md`, "Socket-LB"): a root-cgroup
//! `cgroup/connect4` program (Cilium's kube-proxy replacement) rewrites a service VIP to a
//! backend inside `connect()`, so the in-pod capture and the ztunnel's accepted socket only
//! ever see the backend. `mw_pod_connect4`, attached to a cgroup *below* the root (the
//! kubelet's `kubepods` slice), runs first and records the address the app asked for;
//! `mw_pod_egress` keys it by the captured connection's 4-tuple; the ztunnel reads it with
//! [`Redirect::original_destination`] / [`OriginalDestinations::lookup`].
//!
//! The link is pinned at `<pin_root>/<node>/pod-connect4`, adopted by `Redirect::load`
//! (`bpf_link_update`: never detached across a restart) and removed by `teardown`.
use std::ffi::CString;
use std::net::SocketAddrV4;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, FromRawFd, OwnedFd, RawFd};
use std::os::unix::ffi::OsStrExt;
use std::path::{Path, PathBuf};
use std::sync::Arc;

use aya::programs::links::FdLink;
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use meshwork_ebpf_common::{
    FlowKey, OrigDst, MAP_ORIG_DST, MAP_POD_NETNS, MAP_SOCK_ORIG, PROG_POD_CONNECT4,
};
use meshwork_runtime::netns::NetNs;

use crate::options::{ip_key, key_ip};
use crate::{Redirect, RedirectError};

/// Pin file of the `mw_pod_connect4` link, in the node's pin directory.
pub(crate) const CONNECT4_PIN: &str = "pod-connect4";

/// Errors of the socket-LB support.
#[derive(Debug, thiserror::Error)]
pub enum SockLbError {
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error(
        "cgroup {path}: a cgroup/connect4 program is attached there without BPF_F_ALLOW_MULTI \
         ({flags:#x}); attaching below it would {effect}"
    )]
    Exclusive {
        path: PathBuf,
        flags: u32,
        effect: &'static str,
    },
    #[error("attaching {PROG_POD_CONNECT4} to {path}: {reason}")]
    Attach { path: PathBuf, reason: String },
    #[error("pinned link {path}: {source}")]
    Link {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("network namespace cookie of pod {key}: {reason}")]
    NetnsCookie { key: String, reason: String },
    #[error("{0}")]
    Map(String),
}

/// The cgroup v2 hierarchy's mount point: `/sys/fs/cgroup` on a unified host, the
/// `cgroup2` mount (e.g. `/sys/fs/cgroup/unified`) on a hybrid one. `None` without one.
pub fn cgroup2_mount() -> Option<PathBuf> {
    let info = std::fs::read_to_string("/proc/self/mountinfo").ok()?;
    let mut found: Option<PathBuf> = None;
    for line in info.lines() {
        // `… mount-point options - fstype source super-options`
        let Some((left, right)) = line.split_once(" - ") else {
            continue;
        };
        if right.split_whitespace().next() != Some("cgroup2") {
            continue;
        }
        let Some(mp) = left.split_whitespace().nth(4) else {
            continue;
        };
        let mp = PathBuf::from(mp.replace("\\040", " "));
        // Prefer the canonical location when several are mounted.
        if mp == Path::new("/sys/fs/cgroup") {
            return Some(mp);
        }
        found.get_or_insert(mp);
    }
    found
}

/// Where `mw_pod_connect4` goes by default: the kubelet's pod slice of the cgroup v2
/// hierarchy, `kubepods.slice` (systemd driver) or `kubepods` (cgroupfs driver), if it
/// exists.
pub fn default_pod_cgroup() -> Option<PathBuf> {
    let root = cgroup2_mount()?;
    ["kubepods.slice", "kubepods"]
        .iter()
        .map(|d| root.join(d))
        .find(|p| p.is_dir())
}

// bpf(2) commands and attach types (uapi/linux/bpf.h).
const BPF_MAP_LOOKUP_ELEM: libc::c_long = 1;
const BPF_MAP_DELETE_ELEM: libc::c_long = 3;
const BPF_OBJ_GET: libc::c_long = 7;
const BPF_PROG_QUERY: libc::c_long = 16;
const BPF_MAP_LOOKUP_AND_DELETE_ELEM: libc::c_long = 21;
const BPF_LINK_UPDATE: libc::c_long = 29;
const BPF_LINK_DETACH: libc::c_long = 34;
const BPF_CGROUP_INET4_CONNECT: u32 = 10;
const BPF_F_ALLOW_OVERRIDE: u32 = 1;
const BPF_F_ALLOW_MULTI: u32 = 2;
/// `ENOTSUPP` (524, kernel-internal), as some map types report an unsupported command.
const ENOTSUPP: i32 = 524;

/// `bpf(cmd, attr)`; `attr` is a `#[repr(C)]` prefix of `union bpf_attr`.
fn sys_bpf<T>(cmd: libc::c_long, attr: &mut T) -> std::io::Result<libc::c_long> {
    // SAFETY: `attr` is a valid, initialised buffer of its size for the whole call.
    let r = unsafe {
        libc::syscall(
            libc::SYS_bpf,
            cmd,
            attr as *mut T as *mut libc::c_void,
            std::mem::size_of::<T>() as libc::c_uint,
        )
    };
    if r < 0 {
        Err(std::io::Error::last_os_error())
    } else {
        Ok(r)
    }
}

#[repr(C)]
#[derive(Default)]
struct MapElemAttr {
    map_fd: u32,
    _pad: u32,
    key: u64,
    value: u64,
    flags: u64,
}

#[repr(C)]
#[derive(Default)]
struct ObjGetAttr {
    pathname: u64,
    bpf_fd: u32,
    file_flags: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkUpdateAttr {
    link_fd: u32,
    new_prog_fd: u32,
    flags: u32,
    old_prog_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct LinkDetachAttr {
    link_fd: u32,
}

#[repr(C)]
#[derive(Default)]
struct ProgQueryAttr {
    target_fd: u32,
    attach_type: u32,
    query_flags: u32,
    attach_flags: u32,
    prog_ids: u64,
    prog_cnt: u32,
}

fn obj_get(path: &Path) -> std::io::Result<OwnedFd> {
    let c = CString::new(path.as_os_str().as_bytes())
        .map_err(|e| std::io::Error::new(std::io::ErrorKind::InvalidInput, e))?;
    let mut attr = ObjGetAttr {
        pathname: c.as_ptr() as u64,
        ..Default::default()
    };
    let fd = sys_bpf(BPF_OBJ_GET, &mut attr)?;
    // SAFETY: a new descriptor the kernel just returned, owned by nobody else.
    Ok(unsafe { OwnedFd::from_raw_fd(fd as RawFd) })
}

/// The original destinations map, shareable across threads (a duplicated map descriptor):
/// each lookup is one `bpf(2)` call, cheap enough for an accept path.
#[derive(Clone, Debug)]
pub struct OriginalDestinations {
    fd: Arc<OwnedFd>,
}

impl OriginalDestinations {
    pub(crate) fn new(fd: BorrowedFd<'_>) -> Result<Self, RedirectError> {
        let fd = fd
            .try_clone_to_owned()
            .map_err(|e| RedirectError::SockLb(SockLbError::Map(format!("{MAP_ORIG_DST}: {e}"))))?;
        Ok(Self { fd: Arc::new(fd) })
    }

    /// Opens the map pinned in a node's pin directory (`<pin_root>/<node>/MW_ORIG_DST`).
    pub fn open_pinned(pin_dir: &Path) -> Result<Self, RedirectError> {
        let path = pin_dir.join(MAP_ORIG_DST);
        let fd = obj_get(&path).map_err(|e| {
            RedirectError::SockLb(SockLbError::Map(format!("{}: {e}", path.display())))
        })?;
        Ok(Self { fd: Arc::new(fd) })
    }

    /// The address the app connected to, when a socket-LB changed it, for the captured
    /// connection the ztunnel accepted from `client` on `local` (its accepted socket's
    /// peer and local addresses). Takes the entry out of the map. `None`: nothing was
    /// recorded (no socket-LB rewrite, a connection not made by an enrolled pod, or the
    /// entry was taken already).
    pub fn lookup(&self, client: SocketAddrV4, local: SocketAddrV4) -> Option<SocketAddrV4> {
        let key = FlowKey {
            src_addr: ip_key(*client.ip()),
            dst_addr: ip_key(*local.ip()),
            src_port: client.port().to_be(),
            dst_port: local.port().to_be(),
        };
        let mut value = OrigDst::default();
        let mut attr = MapElemAttr {
            map_fd: self.fd.as_raw_fd() as u32,
            key: &key as *const FlowKey as u64,
            value: &mut value as *mut OrigDst as u64,
            ..Default::default()
        };
        match sys_bpf(BPF_MAP_LOOKUP_AND_DELETE_ELEM, &mut attr) {
            Ok(_) => {}
            Err(e) if e.raw_os_error() == Some(libc::ENOENT) => return None,
            // Kernels before 5.14 have no lookup-and-delete for hash maps.
            Err(e) if matches!(e.raw_os_error(), Some(libc::EINVAL | ENOTSUPP)) => {
                if let Err(e) = sys_bpf(BPF_MAP_LOOKUP_ELEM, &mut attr) {
                    if e.raw_os_error() != Some(libc::ENOENT) {
                        tracing::debug!(error = %e, "original destination lookup failed");
                    }
                    return None;
                }
                let _ = sys_bpf(BPF_MAP_DELETE_ELEM, &mut attr);
            }
            Err(e) => {
                tracing::debug!(error = %e, "original destination lookup failed");
                return None;
            }
        }
        Some(SocketAddrV4::new(
            key_ip(value.addr),
            u16::from_be(value.port),
        ))
    }
}

/// The netns cookie of `netns` (`SO_NETNS_COOKIE` of a socket made there).
pub(crate) fn netns_cookie(netns: &NetNs) -> std::io::Result<u64> {
    netns
        .run(|| {
            // SAFETY: plain socket(2); the descriptor is owned at once.
            let fd =
                unsafe { libc::socket(libc::AF_INET, libc::SOCK_DGRAM | libc::SOCK_CLOEXEC, 0) };
            if fd < 0 {
                return Err(std::io::Error::last_os_error());
            }
            // SAFETY: a new descriptor, owned by nobody else.
            let fd = unsafe { OwnedFd::from_raw_fd(fd) };
            socket_netns_cookie(fd.as_fd())
        })
        .map_err(|e| std::io::Error::other(e.to_string()))?
}

/// `SO_NETNS_COOKIE` of a socket.
pub fn socket_netns_cookie(fd: BorrowedFd<'_>) -> std::io::Result<u64> {
    let mut cookie: u64 = 0;
    let mut len = std::mem::size_of::<u64>() as libc::socklen_t;
    // SAFETY: getsockopt into a u64 of the given length.
    let r = unsafe {
        libc::getsockopt(
            fd.as_raw_fd(),
            libc::SOL_SOCKET,
            libc::SO_NETNS_COOKIE,
            &mut cookie as *mut u64 as *mut libc::c_void,
            &mut len,
        )
    };
    if r != 0 {
        return Err(std::io::Error::last_os_error());
    }
    Ok(cookie)
}

/// Refuses a cgroup whose ancestors (or itself) hold a `connect4` program attached
/// without `BPF_F_ALLOW_MULTI`: an `ALLOW_OVERRIDE` one would stop running for the
/// subtree once ours is attached (the socket-LB switched off for every pod), an exclusive
/// one makes the kernel refuse ours.
fn check_hierarchy(cgroup: &Path) -> Result<(), SockLbError> {
    let mut dir = Some(cgroup);
    while let Some(d) = dir {
        let f = match std::fs::File::open(d) {
            Ok(f) => f,
            Err(_) => break,
        };
        let mut attr = ProgQueryAttr {
            target_fd: f.as_raw_fd() as u32,
            attach_type: BPF_CGROUP_INET4_CONNECT,
            ..Default::default()
        };
        match sys_bpf(BPF_PROG_QUERY, &mut attr) {
            Ok(_) => {
                if attr.prog_cnt > 0 && attr.attach_flags & BPF_F_ALLOW_MULTI == 0 {
                    return Err(SockLbError::Exclusive {
                        path: d.to_path_buf(),
                        flags: attr.attach_flags,
                        effect: if attr.attach_flags & BPF_F_ALLOW_OVERRIDE != 0 {
                            "switch it off for the pods"
                        } else {
                            "be refused"
                        },
                    });
                }
            }
            // Not a cgroup (we walked above the hierarchy's root): done.
            Err(_) => break,
        }
        dir = d.parent();
    }
    Ok(())
}

impl Redirect {
    /// Attaches `mw_pod_connect4` to `cgroup` (a cgroup v2 directory below the root that
    /// holds the pods, e.g. [`default_pod_cgroup`]) and pins the link; an existing pinned
    /// link (another cgroup, an older program) is replaced, without a gap. Refuses when a
    /// `connect4` program is attached at the cgroup or above it without
    /// `BPF_F_ALLOW_MULTI` (see `docs/inpod.md`).
    pub fn attach_pod_cgroup(&mut self, cgroup: &Path) -> Result<(), RedirectError> {
        let cg = cgroup.to_path_buf();
        let file = std::fs::File::open(cgroup).map_err(|source| SockLbError::Cgroup {
            path: cg.clone(),
            source,
        })?;
        check_hierarchy(cgroup)?;
        let prog = connect4(&mut self.ebpf)?;
        let attach_err = |reason: String| SockLbError::Attach {
            path: cg.clone(),
            reason,
        };
        // A cgroup bpf_link: always multi (the kernel refuses any other flag).
        let id = prog
            .attach(&file, CgroupAttachMode::Single)
            .map_err(|e| attach_err(format!("{e} ({:?})", std::error::Error::source(&e))))?;
        let link = prog.take_link(id).map_err(|e| attach_err(e.to_string()))?;
        let fd_link = FdLink::try_from(link).map_err(|e| attach_err(e.to_string()))?;
        let path = self.opts.pin_dir().join(CONNECT4_PIN);
        remove_file(&path)?;
        fd_link
            .pin(&path)
            .map_err(|e| attach_err(format!("pin {}: {e}", path.display())))?;
        tracing::info!(cgroup = %cgroup.display(), "attached {PROG_POD_CONNECT4}");
        Ok(())
    }

    /// Removes the pinned `mw_pod_connect4` link (detaching it). Missing: no-op.
    pub fn detach_pod_cgroup(&mut self) -> Result<(), RedirectError> {
        let path = self.opts.pin_dir().join(CONNECT4_PIN);
        // Detach now: removing the pin alone frees the link only after an RCU grace
        // period (bpffs frees its inodes late), during which new connections would still
        // be recorded.
        if let Ok(link) = obj_get(&path) {
            let mut attr = LinkDetachAttr {
                link_fd: link.as_raw_fd() as u32,
            };
            if let Err(e) = sys_bpf(BPF_LINK_DETACH, &mut attr) {
                tracing::debug!(error = %e, "detaching the {PROG_POD_CONNECT4} link; removing its pin");
            }
        }
        remove_file(&path)
    }

    /// Whether `mw_pod_connect4` is attached (its link pinned).
    pub fn pod_cgroup_attached(&self) -> bool {
        self.opts.pin_dir().join(CONNECT4_PIN).exists()
    }

    /// See [`OriginalDestinations::lookup`].
    pub fn original_destination(
        &self,
        client: SocketAddrV4,
        local: SocketAddrV4,
    ) -> Option<SocketAddrV4> {
        self.orig_dst.lookup(client, local)
    }

    /// A handle on the original destinations that outlives no lock: for the ztunnel's
    /// accept path.
    pub fn original_destinations(&self) -> OriginalDestinations {
        self.orig_dst.clone()
    }

    /// At load: swaps the new `mw_pod_connect4` into the pinned link. A defunct link (its
    /// cgroup removed) loses its pin.
    pub(crate) fn adopt_pinned_connect4(&mut self) -> Result<(), RedirectError> {
        let path = self.opts.pin_dir().join(CONNECT4_PIN);
        if !path.exists() {
            return Ok(());
        }
        let prog_fd = connect4(&mut self.ebpf)?
            .fd()
            .map_err(|e| RedirectError::program(PROG_POD_CONNECT4, e))?
            .as_fd()
            .as_raw_fd();
        let res = obj_get(&path).and_then(|link| {
            let mut attr = LinkUpdateAttr {
                link_fd: link.as_raw_fd() as u32,
                new_prog_fd: prog_fd as u32,
                ..Default::default()
            };
            sys_bpf(BPF_LINK_UPDATE, &mut attr).map(|_| ())
        });
        match res {
            Ok(()) => tracing::info!("adopted pinned {PROG_POD_CONNECT4} link"),
            Err(e) => {
                tracing::info!(error = %e, "dropping stale pinned {PROG_POD_CONNECT4} link");
                remove_file(&path)?;
            }
        }
        Ok(())
    }

    /// Marks `netns` as an enrolled pod's (owner tag `tag`) for `mw_pod_connect4`, and
    /// forgets the tag's other namespaces (an older sandbox of the pod).
    pub(crate) fn register_pod_netns(
        &mut self,
        key: &str,
        netns: &NetNs,
        tag: u32,
    ) -> Result<(), RedirectError> {
        let cookie = netns_cookie(netns).map_err(|e| SockLbError::NetnsCookie {
            key: key.to_string(),
            reason: e.to_string(),
        })?;
        for (c, t) in self.pod_netns_entries()? {
            if t == tag && c != cookie {
                let _ = self.pod_netns.remove(&c);
            }
        }
        self.pod_netns
            .insert(cookie, tag, 0)
            .map_err(|e| RedirectError::map(MAP_POD_NETNS, e))
    }

    /// Forgets the namespaces registered with owner tag `tag`.
    pub(crate) fn forget_pod_netns(&mut self, tag: u32) -> Result<(), RedirectError> {
        for (c, t) in self.pod_netns_entries()? {
            if t == tag {
                match self.pod_netns.remove(&c) {
                    Ok(()) | Err(aya::maps::MapError::KeyNotFound) => {}
                    Err(e) => return Err(RedirectError::map(MAP_POD_NETNS, e)),
                }
            }
        }
        Ok(())
    }

    fn pod_netns_entries(&self) -> Result<Vec<(u64, u32)>, RedirectError> {
        self.pod_netns
            .iter()
            .map(|r| r.map_err(|e| RedirectError::map(MAP_POD_NETNS, e)))
            .collect()
    }

    /// Connects recorded by `mw_pod_connect4` whose SYN has not left yet (tests).
    #[doc(hidden)]
    pub fn recorded_connects(&self) -> Result<usize, RedirectError> {
        let map = self.ebpf.map(MAP_SOCK_ORIG).ok_or(RedirectError::Missing {
            kind: "map",
            name: MAP_SOCK_ORIG,
        })?;
        let m: aya::maps::HashMap<&aya::maps::MapData, u64, OrigDst> =
            aya::maps::HashMap::try_from(map).map_err(|e| RedirectError::map(MAP_SOCK_ORIG, e))?;
        Ok(m.keys().filter(|k| k.is_ok()).count())
    }

    /// Netns cookies of the enrolled pods' namespaces (tests, admin).
    pub fn pod_netns_cookies(&self) -> Result<Vec<u64>, RedirectError> {
        Ok(self
            .pod_netns_entries()?
            .into_iter()
            .map(|(c, _)| c)
            .collect())
    }
}

fn connect4(ebpf: &mut aya::Ebpf) -> Result<&mut CgroupSockAddr, RedirectError> {
    let prog = ebpf
        .program_mut(PROG_POD_CONNECT4)
        .ok_or(RedirectError::Missing {
            kind: "program",
            name: PROG_POD_CONNECT4,
        })?;
    prog.try_into()
        .map_err(|e| RedirectError::program(PROG_POD_CONNECT4, e))
}

fn remove_file(path: &Path) -> Result<(), RedirectError> {
    match std::fs::remove_file(path) {
        Ok(()) => Ok(()),
        Err(e) if e.kind() == std::io::ErrorKind::NotFound => Ok(()),
        Err(source) => Err(SockLbError::Link {
            path: path.to_path_buf(),
            source,
        }
        .into()),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn flow_key_is_network_order() {
        let client = SocketAddrV4::new(std::net::Ipv4Addr::new(10, 0, 0, 1), 40000);
        let key = FlowKey {
            src_addr: ip_key(*client.ip()),
            dst_addr: 0,
            src_port: client.port().to_be(),
            dst_port: 0,
        };
        assert_eq!(key.src_addr.to_ne_bytes(), [10, 0, 0, 1]);
        assert_eq!(key.src_port.to_ne_bytes(), 40000u16.to_be_bytes());
    }
}

//! Socket-LB test fixtures (`e2e/tests/socklb_inpod.rs`): a test-made cgroup tree standing
//! in for the node's (`<cgroup2>/mw-test-<pid>-<tag>/kubepods.slice/pod-…`), an emulation
//! of Cilium's root-cgroup socket-LB (`e2e/socklb-emu`, a test-only BPF program attached
//! at the tree's top instead of the machine's real root cgroup), and a client process that
//! joins a cgroup and a pod's namespace before it connects (cgroup programs follow the
//! socket's cgroup, which is its creating process's: a thread of the test cannot stand in).
use std::net::{SocketAddr, SocketAddrV4};
use std::path::{Path, PathBuf};
use std::process::Command;
use std::sync::atomic::{AtomicU32, Ordering};

use aya::maps::{HashMap, MapData};
use aya::programs::{CgroupAttachMode, CgroupSockAddr};
use aya::{Ebpf, EbpfLoader};

/// The emulation's BPF object (built by build.rs from `e2e/socklb-emu`; also holds the
/// emulated Cilium datapath of [`crate::cilium_like`]).
pub(crate) static EMU_OBJECT: &[u8] =
    aya::include_bytes_aligned!(concat!(env!("OUT_DIR"), "/meshwork-socklb-emu"));

const EMU_PROGRAM: &str = "test_socklb_connect4";
const EMU_MAP: &str = "TEST_SOCKLB_SERVICES";

#[derive(Debug, thiserror::Error)]
pub enum SockLbFixtureError {
    #[error("no cgroup v2 hierarchy is mounted")]
    NoCgroup2,
    #[error("cgroup {path}: {source}")]
    Cgroup {
        path: PathBuf,
        source: std::io::Error,
    },
    #[error("the socket-LB emulation was not built (AYA_BUILD_SKIP)")]
    NotBuilt,
    #[error("socket-LB emulation: {0}")]
    Bpf(String),
    #[error("client {bin}: {reason}")]
    Client { bin: String, reason: String },
}

/// A cgroup tree made for one test under the cgroup v2 root; removed on drop (its
/// processes must have exited).
pub struct TestCgroup {
    top: PathBuf,
}

impl TestCgroup {
    /// `<cgroup2>/mw-test-<pid>-<n>-<tag>`.
    pub fn create(tag: &str) -> Result<TestCgroup, SockLbFixtureError> {
        static N: AtomicU32 = AtomicU32::new(0);
        let root = meshwork_redirect::cgroup2_mount().ok_or(SockLbFixtureError::NoCgroup2)?;
        let top = root.join(format!(
            "mw-test-{}-{}-{tag}",
            std::process::id(),
            N.fetch_add(1, Ordering::Relaxed)
        ));
        std::fs::create_dir(&top).map_err(|source| SockLbFixtureError::Cgroup {
            path: top.clone(),
            source,
        })?;
        Ok(TestCgroup { top })
    }

    /// The top of the tree (stands in for the root cgroup).
    pub fn top(&self) -> &Path {
        &self.top
    }

    /// Creates (if needed) and returns `<top>/<rel>`.
    pub fn child(&self, rel: &str) -> Result<PathBuf, SockLbFixtureError> {
        let p = self.top.join(rel);
        std::fs::create_dir_all(&p).map_err(|source| SockLbFixtureError::Cgroup {
            path: p.clone(),
            source,
        })?;
        Ok(p)
    }
}

impl Drop for TestCgroup {
    fn drop(&mut self) {
        // Deepest first: a cgroup with children cannot be removed.
        let mut dirs = Vec::new();
        let mut stack = vec![self.top.clone()];
        while let Some(d) = stack.pop() {
            if let Ok(rd) = std::fs::read_dir(&d) {
                for e in rd.flatten() {
                    if e.file_type().is_ok_and(|t| t.is_dir()) {
                        stack.push(e.path());
                    }
                }
            }
            dirs.push(d);
        }
        for d in dirs.iter().rev() {
            if let Err(e) = std::fs::remove_dir(d) {
                eprintln!("test cgroup {} not removed: {e}", d.display());
            }
        }
    }
}

/// Service frontend / backend as the emulation's map holds them.
#[repr(C)]
#[derive(Clone, Copy, Debug, Default)]
struct Addr4 {
    addr: u32,
    port: u16,
    _pad: u16,
}

// SAFETY: repr(C), integers only, no padding (4 + 2 + 2).
unsafe impl aya::Pod for Addr4 {}

impl From<SocketAddrV4> for Addr4 {
    fn from(a: SocketAddrV4) -> Self {
        Addr4 {
            addr: u32::from_ne_bytes(a.ip().octets()),
            port: a.port().to_be(),
            _pad: 0,
        }
    }
}

/// The emulated socket-LB: `connect()` to a VIP:port of its map goes to the backend
/// instead, rewritten in the socket address before the kernel sees it (as Cilium's
/// `cil_sock4_connect`). Attached by a bpf_link (multi, as Cilium attaches); detached on
/// drop.
pub struct EmulatedSocketLb {
    _ebpf: Ebpf,
    services: HashMap<MapData, Addr4, Addr4>,
}

impl EmulatedSocketLb {
    pub fn attach(cgroup: &Path) -> Result<EmulatedSocketLb, SockLbFixtureError> {
        if EMU_OBJECT.is_empty() {
            return Err(SockLbFixtureError::NotBuilt);
        }
        let bpf = |e: &dyn std::fmt::Display| SockLbFixtureError::Bpf(e.to_string());
        let mut ebpf = EbpfLoader::new().load(EMU_OBJECT).map_err(|e| bpf(&e))?;
        let prog: &mut CgroupSockAddr = ebpf
            .program_mut(EMU_PROGRAM)
            .ok_or_else(|| bpf(&EMU_PROGRAM))?
            .try_into()
            .map_err(|e| bpf(&e))?;
        prog.load().map_err(|e| bpf(&e))?;
        let file = std::fs::File::open(cgroup).map_err(|source| SockLbFixtureError::Cgroup {
            path: cgroup.to_path_buf(),
            source,
        })?;
        prog.attach(file, CgroupAttachMode::Single)
            .map_err(|e| bpf(&e))?;
        let services = HashMap::try_from(ebpf.take_map(EMU_MAP).ok_or_else(|| bpf(&EMU_MAP))?)
            .map_err(|e| bpf(&e))?;
        Ok(EmulatedSocketLb {
            _ebpf: ebpf,
            services,
        })
    }

    /// `connect(vip)` now reaches `backend`.
    pub fn add_service(
        &mut self,
        vip: SocketAddrV4,
        backend: SocketAddrV4,
    ) -> Result<(), SockLbFixtureError> {
        self.services
            .insert(Addr4::from(vip), Addr4::from(backend), 0)
            .map_err(|e| SockLbFixtureError::Bpf(e.to_string()))
    }
}

/// What the client process saw.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct ClientResult {
    /// Its socket's local address.
    pub local: SocketAddr,
    /// Its socket's peer (after any socket-LB rewrite).
    pub peer: SocketAddr,
    /// The first line the server sent.
    pub line: String,
}

/// Runs `bin` (the e2e crate's `mw-cgroup-connect`) in `cgroup` and the network namespace
/// at `netns`: it connects to `dst`, reads a line and reports.
pub fn connect_in_cgroup(
    bin: &Path,
    cgroup: &Path,
    netns: &Path,
    dst: SocketAddr,
) -> Result<ClientResult, SockLbFixtureError> {
    let err = |reason: String| SockLbFixtureError::Client {
        bin: bin.display().to_string(),
        reason,
    };
    let out = Command::new(bin)
        .arg(cgroup)
        .arg(netns)
        .arg(dst.to_string())
        .output()
        .map_err(|e| err(e.to_string()))?;
    let stdout = String::from_utf8_lossy(&out.stdout).to_string();
    if !out.status.success() {
        return Err(err(format!(
            "{}: {}{}",
            out.status,
            stdout.trim(),
            String::from_utf8_lossy(&out.stderr).trim()
        )));
    }
    let field = |name: &str| {
        stdout
            .lines()
            .find_map(|l| l.strip_prefix(name).map(str::to_string))
            .ok_or_else(|| err(format!("no {name} in {stdout:?}")))
    };
    let parse = |s: String| {
        s.parse::<SocketAddr>()
            .map_err(|e| err(format!("{s:?}: {e}")))
    };
    Ok(ClientResult {
        local: parse(field("local=")?)?,
        peer: parse(field("peer=")?)?,
        line: field("line=")?,
    })
}

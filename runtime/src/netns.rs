//! Network namespaces as handles: run a short closure inside another namespace on the
//! *calling* thread (`setns` in, work, `setns` back), the way an in-pod proxy creates its
//! sockets in each pod's namespace. A socket belongs to the namespace it was created in for
//! its whole life, so only `socket(2)` (and anything else that resolves the namespace, such
//! as a netlink request or an interface lookup) needs to run inside; `bind`, `listen`,
//! `connect` and I/O then work from any thread.
//!
//! Entering another network namespace needs CAP_SYS_ADMIN (in the namespace's owning user
//! namespace and in the caller's). Only the network namespace is switched: the mount
//! namespace (and so `/proc/sys`, `/sys`) stays the caller's.

use std::fs::File;
use std::io;
use std::os::fd::{AsFd, AsRawFd, BorrowedFd, OwnedFd};
use std::os::unix::fs::MetadataExt;
use std::path::Path;
use std::sync::OnceLock;

/// An open network namespace (its `nsfs` file): stays valid while held, even after the
/// path it was opened from (a bind mount, `/proc/<pid>/ns/net`) is gone.
#[derive(Debug)]
pub struct NetNs {
    fd: OwnedFd,
    inode: u64,
}

#[derive(Debug, thiserror::Error)]
pub enum NetNsError {
    #[error("opening network namespace {path}: {source}")]
    Open { path: String, source: io::Error },
    #[error("{path} is not a network namespace")]
    NotNetNs { path: String },
    #[error("entering network namespace {inode}: {source}")]
    Enter { inode: u64, source: io::Error },
    #[error("returning to the original network namespace: {0}")]
    Return(io::Error),
}

/// The namespace this process started in (opened once; every `run` returns to it).
fn home() -> Result<&'static NetNs, NetNsError> {
    static HOME: OnceLock<Result<NetNs, String>> = OnceLock::new();
    HOME.get_or_init(|| NetNs::open("/proc/self/ns/net").map_err(|e| e.to_string()))
        .as_ref()
        .map_err(|e| NetNsError::Open {
            path: "/proc/self/ns/net".into(),
            source: io::Error::other(e.clone()),
        })
}

fn setns(fd: BorrowedFd<'_>) -> io::Result<()> {
    // SAFETY: a valid, open nsfs file descriptor; CLONE_NEWNET only affects this thread.
    if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
        return Err(io::Error::last_os_error());
    }
    Ok(())
}

impl NetNs {
    /// Opens the namespace at `path` (`/var/run/netns/<name>`, `/proc/<pid>/ns/net`, a
    /// CNI runtime's netns path).
    pub fn open(path: impl AsRef<Path>) -> Result<NetNs, NetNsError> {
        let path = path.as_ref();
        let shown = || path.display().to_string();
        let f = File::open(path).map_err(|source| NetNsError::Open {
            path: shown(),
            source,
        })?;
        Self::from_file(f).map_err(|e| match e {
            NetNsError::NotNetNs { .. } => NetNsError::NotNetNs { path: shown() },
            other => other,
        })
    }

    /// Adopts an already open namespace file (e.g. one received over a Unix socket).
    pub fn from_fd(fd: OwnedFd) -> Result<NetNs, NetNsError> {
        Self::from_file(File::from(fd))
    }

    fn from_file(f: File) -> Result<NetNs, NetNsError> {
        let meta = f.metadata().map_err(|source| NetNsError::Open {
            path: format!("fd {}", f.as_raw_fd()),
            source,
        })?;
        // nsfs files have no type bits a regular file would; check it really is a
        // network namespace by asking the kernel (NS_GET_NSTYPE).
        const NS_GET_NSTYPE: libc::c_ulong = 0xb703;
        // SAFETY: ioctl on a valid fd with no argument.
        let ty = unsafe { libc::ioctl(f.as_raw_fd(), NS_GET_NSTYPE as _) };
        if ty != libc::CLONE_NEWNET {
            return Err(NetNsError::NotNetNs {
                path: format!("fd {}", f.as_raw_fd()),
            });
        }
        Ok(NetNs {
            fd: f.into(),
            inode: meta.ino(),
        })
    }

    /// The namespace's inode: equal for two handles of the same namespace.
    pub fn inode(&self) -> u64 {
        self.inode
    }

    /// A second handle on the same namespace.
    pub fn try_clone(&self) -> io::Result<NetNs> {
        Ok(NetNs {
            fd: self.fd.try_clone()?,
            inode: self.inode,
        })
    }

    /// Whether this is the namespace the process started in.
    pub fn is_home(&self) -> bool {
        home().is_ok_and(|h| h.inode == self.inode)
    }

    /// Runs `f` with the calling thread inside this namespace, then returns the thread to
    /// the process's original namespace. Keep `f` short and free of `.await` points: the
    /// thread (a runtime worker) serves nothing else meanwhile.
    pub fn run<T>(&self, f: impl FnOnce() -> T) -> Result<T, NetNsError> {
        let home = home()?;
        if home.inode == self.inode {
            return Ok(f());
        }
        setns(self.fd.as_fd()).map_err(|source| NetNsError::Enter {
            inode: self.inode,
            source,
        })?;
        let out = f();
        // Returning can only fail if the home fd became invalid: that thread would then
        // create sockets in the wrong namespace, so it is fatal for the thread's work.
        setns(home.fd.as_fd()).map_err(NetNsError::Return)?;
        Ok(out)
    }
}

impl AsFd for NetNs {
    fn as_fd(&self) -> BorrowedFd<'_> {
        self.fd.as_fd()
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn the_own_namespace_runs_inline_and_is_home() {
        let me = NetNs::open("/proc/self/ns/net").unwrap();
        assert!(me.is_home());
        assert_eq!(me.run(|| 7).unwrap(), 7);
        assert_eq!(me.try_clone().unwrap().inode(), me.inode());
    }

    #[test]
    fn a_file_that_is_not_a_namespace_is_refused() {
        let e = NetNs::open("/proc/self/status").unwrap_err();
        assert!(matches!(e, NetNsError::NotNetNs { .. }), "{e}");
        assert!(e.to_string().contains("/proc/self/status"));
        let e = NetNs::open("/nonexistent/ns").unwrap_err();
        assert!(matches!(e, NetNsError::Open { .. }), "{e}");
        // Another kind of namespace is not a network namespace either.
        let e = NetNs::open("/proc/self/ns/uts").unwrap_err();
        assert!(matches!(e, NetNsError::NotNetNs { .. }), "{e}");
    }

    #[test]
    fn run_enters_another_namespace_and_returns() {
        // Needs CAP_SYS_ADMIN: create a namespace on a scratch thread and keep its handle.
        let other = std::thread::spawn(|| {
            // SAFETY: unshare on this thread only.
            if unsafe { libc::unshare(libc::CLONE_NEWNET) } != 0 {
                return None;
            }
            Some(NetNs::open("/proc/thread-self/ns/net").unwrap())
        })
        .join()
        .unwrap();
        let Some(other) = other else {
            eprintln!("skipped: unshare(CLONE_NEWNET) not permitted");
            return;
        };
        assert!(!other.is_home());
        let inside = other
            .run(|| NetNs::open("/proc/thread-self/ns/net").unwrap().inode())
            .unwrap();
        assert_eq!(inside, other.inode());
        let after = NetNs::open("/proc/thread-self/ns/net").unwrap();
        assert!(after.is_home());
        // A socket made inside lives there for good: connecting it later, from this
        // thread, does not reach a listener of the home namespace.
        let home_l = std::net::TcpListener::bind("127.0.0.1:0").unwrap();
        let addr = home_l.local_addr().unwrap();
        let sock = other
            .run(|| socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None))
            .unwrap()
            .unwrap();
        assert!(sock.connect(&addr.into()).is_err());
        let home_sock =
            socket2::Socket::new(socket2::Domain::IPV4, socket2::Type::STREAM, None).unwrap();
        home_sock.connect(&addr.into()).unwrap();
    }
}

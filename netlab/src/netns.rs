//! Network namespace plumbing: `ip` invocations, and running code or processes inside a
//! namespace with `setns(2)` (not `ip netns exec`, which remounts /sys and hides the host's
//! bpffs).
use std::fs::File;
use std::os::fd::{AsRawFd, OwnedFd};
use std::os::unix::process::CommandExt;
use std::path::PathBuf;
use std::process::{Command, Output};

use crate::LabError;

/// Path of a named network namespace created by `ip netns add`.
pub fn netns_path(name: &str) -> PathBuf {
    PathBuf::from("/run/netns").join(name)
}

fn describe(cmd: &Command) -> String {
    let mut s = cmd.get_program().to_string_lossy().into_owned();
    for a in cmd.get_args() {
        s.push(' ');
        s.push_str(&a.to_string_lossy());
    }
    s
}

/// Runs a command to completion; non-zero exit is an error carrying stderr.
pub fn run(cmd: &mut Command) -> Result<Output, LabError> {
    let out = cmd.output().map_err(|e| LabError::Command {
        command: describe(cmd),
        reason: e.to_string(),
    })?;
    if !out.status.success() {
        return Err(LabError::Command {
            command: describe(cmd),
            reason: format!(
                "{}: {}",
                out.status,
                String::from_utf8_lossy(&out.stderr).trim()
            ),
        });
    }
    Ok(out)
}

/// `ip <args>` in the current namespace.
pub fn ip(args: &[&str]) -> Result<Output, LabError> {
    run(Command::new("ip").args(args))
}

/// `ip -n <netns> <args>`.
pub fn ip_in(netns: &str, args: &[&str]) -> Result<Output, LabError> {
    run(Command::new("ip").arg("-n").arg(netns).args(args))
}

/// Writes a sysctl of a namespace (net.* sysctls are per network namespace).
pub fn sysctl_in(netns: &str, key: &str, value: &str) -> Result<(), LabError> {
    let path = PathBuf::from("/proc/sys").join(key.replace('.', "/"));
    let value = value.to_string();
    in_netns(netns, move || {
        std::fs::write(&path, value.as_bytes()).map_err(|source| LabError::Io { path, source })
    })?
}

fn open_netns(netns: &str) -> Result<OwnedFd, LabError> {
    let f = File::open(netns_path(netns)).map_err(|source| LabError::Setns {
        netns: netns.to_string(),
        source,
    })?;
    Ok(OwnedFd::from(f))
}

/// Runs `f` on a fresh thread that has entered `netns`; sockets it creates belong to that
/// namespace and stay there when handed back.
pub fn in_netns<T, F>(netns: &str, f: F) -> Result<T, LabError>
where
    F: FnOnce() -> T + Send + 'static,
    T: Send + 'static,
{
    let (tx, rx) = std::sync::mpsc::channel();
    let handle = spawn_in(netns, move || {
        let _ = tx.send(f());
    })?;
    if let Err(panic) = handle.join() {
        std::panic::resume_unwind(panic);
    }
    Ok(rx
        .recv()
        .expect("the namespace thread sends its result before ending"))
}

/// Like [`in_netns`] but does not wait: `f` runs on a thread of its own inside `netns`
/// (threads it spawns inherit the namespace). Entering is checked before this returns.
pub fn spawn_in<F>(netns: &str, f: F) -> Result<std::thread::JoinHandle<()>, LabError>
where
    F: FnOnce() + Send + 'static,
{
    let fd = open_netns(netns)?;
    let (entered_tx, entered_rx) = std::sync::mpsc::channel();
    let handle = std::thread::spawn(move || {
        // SAFETY: setns on this thread only, with a valid namespace fd.
        if unsafe { libc::setns(fd.as_raw_fd(), libc::CLONE_NEWNET) } != 0 {
            let _ = entered_tx.send(Err(std::io::Error::last_os_error()));
            return;
        }
        let _ = entered_tx.send(Ok(()));
        f();
    });
    let entered = entered_rx
        .recv()
        .unwrap_or_else(|_| Err(std::io::Error::other("namespace thread died")));
    entered.map_err(|source| LabError::Setns {
        netns: netns.to_string(),
        source,
    })?;
    Ok(handle)
}

/// Prepares `cmd` to run inside `netns` (setns in the child before exec; the mount
/// namespace is the caller's) and to die with its parent.
pub fn enter_before_exec(cmd: &mut Command, netns: &str) -> Result<(), LabError> {
    let fd = open_netns(netns)?;
    let raw = fd.as_raw_fd();
    // Keep the fd open until the command is spawned: leak it into the closure.
    let keep = std::sync::Arc::new(fd);
    // SAFETY: only async-signal-safe calls between fork and exec.
    unsafe {
        cmd.pre_exec(move || {
            let _hold = &keep;
            if libc::setns(raw, libc::CLONE_NEWNET) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            if libc::prctl(libc::PR_SET_PDEATHSIG, libc::SIGKILL) != 0 {
                return Err(std::io::Error::last_os_error());
            }
            Ok(())
        });
    }
    Ok(())
}

/// Runs a command inside `netns` to completion.
pub fn exec_in(netns: &str, cmd: &mut Command) -> Result<Output, LabError> {
    enter_before_exec(cmd, netns)?;
    run(cmd)
}

/// Names of the existing named network namespaces.
pub fn list_netns() -> Vec<String> {
    let Ok(dir) = std::fs::read_dir("/run/netns") else {
        return Vec::new();
    };
    dir.flatten()
        .map(|e| e.file_name().to_string_lossy().into_owned())
        .collect()
}

/// Deletes a named namespace (ignoring a missing one).
pub fn delete_netns(name: &str) {
    if netns_path(name).exists() {
        if let Err(e) = ip(&["netns", "del", name]) {
            tracing::warn!(netns = name, error = %e, "deleting netns");
        }
    }
}

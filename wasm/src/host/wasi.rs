//! WASI preview1 for modules built for `wasm32-wasip1`: wasmtime-wasi's p1 implementation
//! (environment from `vmConfig.env`, clocks, random, exit), minus the calls it can only run
//! by blocking on an async runtime, which cannot be done from a callback that already runs on
//! one. Those are replaced, per module, by synchronous ones: writes to stdout and stderr
//! become log lines, every other descriptor call answers `EBADF` (a plugin has no files
//! and no preopened directories) and `poll_oneoff` answers `ENOTSUP`.

use wasmtime::{Linker, Module, Val};

use super::abi::{self, Cx};
use super::state::HostState;

/// The p1 calls wasmtime-wasi runs asynchronously.
const ASYNC_CALLS: &[&str] = &[
    "fd_advise",
    "fd_close",
    "fd_datasync",
    "fd_fdstat_get",
    "fd_filestat_get",
    "fd_filestat_set_size",
    "fd_filestat_set_times",
    "fd_read",
    "fd_pread",
    "fd_seek",
    "fd_sync",
    "fd_readdir",
    "fd_write",
    "fd_pwrite",
    "poll_oneoff",
    "path_create_directory",
    "path_filestat_get",
    "path_filestat_set_times",
    "path_link",
    "path_open",
    "path_readlink",
    "path_remove_directory",
    "path_rename",
    "path_symlink",
    "path_unlink_file",
    "fd_renumber",
];

const WASI: &str = "wasi_snapshot_preview1";
const EBADF: i32 = 8;
const ENOTSUP: i32 = 58;

pub(crate) fn shadow_async_calls(
    l: &mut Linker<HostState>,
    module: &Module,
) -> wasmtime::Result<()> {
    l.allow_shadowing(true);
    for imp in module.imports() {
        if imp.module() != WASI || !ASYNC_CALLS.contains(&imp.name()) {
            continue;
        }
        let Some(ty) = imp.ty().func().cloned() else {
            continue;
        };
        if imp.name() == "fd_write" {
            l.func_wrap(WASI, "fd_write", fd_write)?;
            continue;
        }
        let errno = if imp.name() == "poll_oneoff" {
            ENOTSUP
        } else {
            EBADF
        };
        l.func_new(WASI, imp.name(), ty, move |_cx, _args, results| {
            if let Some(r) = results.first_mut() {
                *r = Val::I32(errno);
            }
            Ok(())
        })?;
    }
    Ok(())
}

/// `fd_write` to stdout or stderr: the bytes as a log line of the plugin.
fn fd_write(mut cx: Cx<'_>, fd: i32, iovs: i32, n: i32, nwritten: i32) -> wasmtime::Result<i32> {
    if fd != 1 && fd != 2 {
        return Ok(EBADF);
    }
    let mut out = Vec::new();
    for i in 0..n.clamp(0, 1024) {
        let iov = abi::read(&mut cx, iovs.wrapping_add(i * 8), 8)?;
        let ptr = i32::from_le_bytes([iov[0], iov[1], iov[2], iov[3]]);
        let len = i32::from_le_bytes([iov[4], iov[5], iov[6], iov[7]]);
        out.extend(abi::read(&mut cx, ptr, len)?);
    }
    let text = String::from_utf8_lossy(&out);
    let plugin = cx.data().plugin_name.as_str();
    for line in text.lines().filter(|l| !l.is_empty()) {
        tracing::info!(target: "meshwork_wasm::plugin", plugin, fd, "{line}");
    }
    abi::write_u32(&mut cx, nwritten, out.len() as u32)?;
    Ok(0)
}

//! The host functions a proxy-wasm module imports from `env`, by group, and the memory
//! helpers they share. Every function answers with a `proxy_status_t`; a guest pointer out of
//! bounds traps the callback (the module broke the ABI).

use wasmtime::{Caller, Extern, Linker, Memory};

use super::state::HostState;
use super::types::Status;

pub(super) mod body;
mod headers;
mod http_call;
mod local_response;
mod logging;
mod metrics;
mod properties;
mod shared;
mod timers;

/// Adds every proxy-wasm host function to `linker`.
pub fn add_to_linker(linker: &mut Linker<HostState>) -> wasmtime::Result<()> {
    logging::add(linker)?;
    timers::add(linker)?;
    headers::add(linker)?;
    body::add(linker)?;
    properties::add(linker)?;
    shared::add(linker)?;
    metrics::add(linker)?;
    http_call::add(linker)?;
    local_response::add(linker)?;
    Ok(())
}

pub(crate) type Cx<'a> = Caller<'a, HostState>;

fn memory(cx: &mut Cx<'_>) -> wasmtime::Result<Memory> {
    match cx.get_export("memory") {
        Some(Extern::Memory(m)) => Ok(m),
        _ => wasmtime::bail!("the module exports no memory"),
    }
}

/// `len` bytes of guest memory at `ptr`.
pub(crate) fn read(cx: &mut Cx<'_>, ptr: i32, len: i32) -> wasmtime::Result<Vec<u8>> {
    let mem = memory(cx)?;
    let (ptr, len) = (ptr as u32 as usize, len as u32 as usize);
    let data = mem.data(&*cx);
    match ptr.checked_add(len).and_then(|end| data.get(ptr..end)) {
        Some(b) => Ok(b.to_vec()),
        None => wasmtime::bail!("guest range {ptr}+{len} is out of bounds"),
    }
}

pub(super) fn read_string(cx: &mut Cx<'_>, ptr: i32, len: i32) -> wasmtime::Result<String> {
    Ok(String::from_utf8_lossy(&read(cx, ptr, len)?).into_owned())
}

pub(super) fn write(cx: &mut Cx<'_>, ptr: i32, bytes: &[u8]) -> wasmtime::Result<()> {
    let mem = memory(cx)?;
    if mem.write(&mut *cx, ptr as u32 as usize, bytes).is_err() {
        wasmtime::bail!("guest range {ptr}+{} is out of bounds", bytes.len());
    }
    Ok(())
}

pub(crate) fn write_u32(cx: &mut Cx<'_>, ptr: i32, v: u32) -> wasmtime::Result<()> {
    write(cx, ptr, &v.to_le_bytes())
}

pub(super) fn write_u64(cx: &mut Cx<'_>, ptr: i32, v: u64) -> wasmtime::Result<()> {
    write(cx, ptr, &v.to_le_bytes())
}

/// Hands `bytes` to the guest: memory from its allocator (`proxy_on_memory_allocate`, or
/// `malloc` for older SDKs), filled, and its address and size written to the return slots.
pub(super) fn give(
    cx: &mut Cx<'_>,
    bytes: &[u8],
    ret_ptr: i32,
    ret_size: i32,
) -> wasmtime::Result<()> {
    let alloc = ["proxy_on_memory_allocate", "malloc"]
        .iter()
        .find_map(|n| cx.get_export(n).and_then(Extern::into_func));
    let Some(alloc) = alloc else {
        wasmtime::bail!("the module exports neither proxy_on_memory_allocate nor malloc");
    };
    let alloc = alloc.typed::<i32, i32>(&*cx)?;
    let addr = alloc.call(&mut *cx, bytes.len() as i32)?;
    if addr == 0 && !bytes.is_empty() {
        wasmtime::bail!(
            "the module's allocator returned null for {} bytes",
            bytes.len()
        );
    }
    write(cx, addr, bytes)?;
    write_u32(cx, ret_ptr, addr as u32)?;
    write_u32(cx, ret_size, bytes.len() as u32)
}

pub(super) fn ok() -> i32 {
    Status::Ok as i32
}

pub(super) fn status(s: Status) -> i32 {
    s as i32
}

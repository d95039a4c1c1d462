//! Shared data and queues: `proxy_get_shared_data`, `proxy_set_shared_data`,
//! `proxy_register_shared_queue`, `proxy_resolve_shared_queue`,
//! `proxy_enqueue_shared_queue`, `proxy_dequeue_shared_queue`.

use wasmtime::Linker;

use super::{give, ok, read, read_string, status, write_u32, Cx};
use crate::host::state::HostState;
use crate::host::types::Status;

pub(super) fn add(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_shared_data",
        |mut cx: Cx<'_>,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_size: i32,
         ret_cas: i32|
         -> wasmtime::Result<i32> {
            let key = read_string(&mut cx, kp, kl)?;
            let s = cx.data();
            let Some((value, cas)) = s.shared.get(&s.vm_id, &key) else {
                return Ok(status(Status::NotFound));
            };
            give(&mut cx, &value, ret_ptr, ret_size)?;
            write_u32(&mut cx, ret_cas, cas)?;
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_shared_data",
        |mut cx: Cx<'_>, kp: i32, kl: i32, vp: i32, vl: i32, cas: i32| -> wasmtime::Result<i32> {
            let key = read_string(&mut cx, kp, kl)?;
            let value = read(&mut cx, vp, vl)?;
            let s = cx.data();
            Ok(status(s.shared.set(&s.vm_id, &key, value, cas as u32)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_register_shared_queue",
        |mut cx: Cx<'_>, np: i32, nl: i32, ret: i32| -> wasmtime::Result<i32> {
            let name = read_string(&mut cx, np, nl)?;
            let s = cx.data_mut();
            let id = s.shared.register_queue(&s.vm_id, &name);
            if !s.queues_ready.contains(&id) {
                s.queues_ready.push(id);
            }
            write_u32(&mut cx, ret, id)?;
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_resolve_shared_queue",
        |mut cx: Cx<'_>, vp: i32, vl: i32, np: i32, nl: i32, ret: i32| -> wasmtime::Result<i32> {
            let vm = read_string(&mut cx, vp, vl)?;
            let name = read_string(&mut cx, np, nl)?;
            let s = cx.data();
            let vm = if vm.is_empty() { s.vm_id.clone() } else { vm };
            match s.shared.resolve_queue(&vm, &name) {
                Some(id) => {
                    write_u32(&mut cx, ret, id)?;
                    Ok(ok())
                }
                None => Ok(status(Status::NotFound)),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_enqueue_shared_queue",
        |mut cx: Cx<'_>, id: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            let value = read(&mut cx, vp, vl)?;
            Ok(status(cx.data().shared.enqueue(id as u32, value)))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_dequeue_shared_queue",
        |mut cx: Cx<'_>, id: i32, ret_ptr: i32, ret_size: i32| -> wasmtime::Result<i32> {
            match cx.data().shared.dequeue(id as u32) {
                Ok(v) => {
                    give(&mut cx, &v, ret_ptr, ret_size)?;
                    Ok(ok())
                }
                Err(s) => Ok(status(s)),
            }
        },
    )?;
    Ok(())
}

//! Time and timers: `proxy_get_current_time_nanoseconds`, `proxy_set_tick_period_milliseconds`
//! (the root context's `proxy_on_tick`), and `proxy_done` / `proxy_set_effective_context`.

use std::time::{Duration, SystemTime, UNIX_EPOCH};

use wasmtime::Linker;

use super::{ok, status, write_u64, Cx};
use crate::host::state::HostState;
use crate::host::types::Status;

pub(super) fn add(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_current_time_nanoseconds",
        |mut cx: Cx<'_>, ret: i32| -> wasmtime::Result<i32> {
            let now = SystemTime::now()
                .duration_since(UNIX_EPOCH)
                .unwrap_or_default()
                .as_nanos() as u64;
            write_u64(&mut cx, ret, now)?;
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_tick_period_milliseconds",
        |mut cx: Cx<'_>, ms: i32| -> i32 {
            let ms = ms as u32;
            cx.data_mut().tick_period = (ms > 0).then(|| Duration::from_millis(u64::from(ms)));
            ok()
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_effective_context",
        |mut cx: Cx<'_>, id: i32| -> i32 {
            let id = id as u32;
            let s = cx.data_mut();
            if id == s.root_context || s.streams.contains_key(&id) {
                s.effective = id;
                ok()
            } else {
                status(Status::BadArgument)
            }
        },
    )?;
    l.func_wrap("env", "proxy_done", |_: Cx<'_>| -> i32 { ok() })?;
    Ok(())
}

//! `proxy_log`, `proxy_get_log_level`: plugin logs become `tracing` events of the
//! `meshwork_wasm::plugin` target, with the plugin's name.

use tracing::{debug, error, info, trace, warn, Level};
use wasmtime::Linker;

use super::{ok, read_string, write_u32, Cx};
use crate::host::state::HostState;

pub(super) fn add(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_log",
        |mut cx: Cx<'_>, level: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let msg = read_string(&mut cx, ptr, len)?;
            let plugin = cx.data().plugin_name.as_str();
            match level {
                0 => trace!(target: "meshwork_wasm::plugin", plugin, "{msg}"),
                1 => debug!(target: "meshwork_wasm::plugin", plugin, "{msg}"),
                2 => info!(target: "meshwork_wasm::plugin", plugin, "{msg}"),
                3 => warn!(target: "meshwork_wasm::plugin", plugin, "{msg}"),
                _ => error!(target: "meshwork_wasm::plugin", plugin, "{msg}"),
            }
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_log_level",
        |mut cx: Cx<'_>, ret: i32| -> wasmtime::Result<i32> {
            let level = match tracing::level_filters::LevelFilter::current().into_level() {
                Some(Level::TRACE) => 0,
                Some(Level::DEBUG) => 1,
                Some(Level::INFO) => 2,
                Some(Level::WARN) => 3,
                Some(Level::ERROR) => 4,
                None => 5,
            };
            write_u32(&mut cx, ret, level)?;
            Ok(ok())
        },
    )?;
    Ok(())
}

//! Metrics: `proxy_define_metric`, `proxy_increment_metric`, `proxy_record_metric`,
//! `proxy_get_metric`.

use wasmtime::Linker;

use super::{ok, read_string, status, write_u32, write_u64, Cx};
use crate::host::metrics::{Kind, MetricError};
use crate::host::state::HostState;
use crate::host::types::Status;

fn answer(r: Result<(), MetricError>) -> i32 {
    match r {
        Ok(()) => ok(),
        Err(MetricError::NotFound(_)) => status(Status::NotFound),
        Err(MetricError::WrongKind { .. }) => status(Status::BadArgument),
    }
}

pub(super) fn add(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_define_metric",
        |mut cx: Cx<'_>, kind: i32, np: i32, nl: i32, ret: i32| -> wasmtime::Result<i32> {
            let Some(kind) = Kind::from_raw(kind) else {
                return Ok(status(Status::BadArgument));
            };
            let name = read_string(&mut cx, np, nl)?;
            let id = cx.data().metrics.define(kind, &name);
            write_u32(&mut cx, ret, id)?;
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_increment_metric",
        |cx: Cx<'_>, id: i32, by: i64| -> i32 {
            answer(cx.data().metrics.increment(id as u32, by))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_record_metric",
        |cx: Cx<'_>, id: i32, v: i64| -> i32 {
            answer(cx.data().metrics.record(id as u32, v as u64))
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_metric",
        |mut cx: Cx<'_>, id: i32, ret: i32| -> wasmtime::Result<i32> {
            match cx.data().metrics.get(id as u32) {
                Ok(v) => {
                    write_u64(&mut cx, ret, v)?;
                    Ok(ok())
                }
                Err(e) => Ok(answer(Err(e))),
            }
        },
    )?;
    Ok(())
}

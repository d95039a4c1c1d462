//! Out-of-band calls: `proxy_http_call` records the call and hands back a token; the host
//! sends it once the callback returns and answers with `proxy_on_http_call_response`, during
//! which the `HttpCallResponse*` maps and buffer read the answer. gRPC calls are not
//! supported and say so (`InternalFailure`, which the SDKs turn into an error).

use std::time::Duration;

use wasmtime::Linker;

use super::{ok, read, read_string, status, write_u32, Cx};
use crate::host::state::{HostState, PendingCall};
use crate::host::types::{decode_map, CallRequest, Status};

pub(super) fn add(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_http_call",
        |mut cx: Cx<'_>,
         up: i32,
         ul: i32,
         hp: i32,
         hl: i32,
         bp: i32,
         bl: i32,
         tp: i32,
         tl: i32,
         timeout_ms: i32,
         ret: i32|
         -> wasmtime::Result<i32> {
            let upstream = read_string(&mut cx, up, ul)?;
            let (Some(headers), Some(trailers)) = (
                decode_map(&read(&mut cx, hp, hl)?),
                decode_map(&read(&mut cx, tp, tl)?),
            ) else {
                return Ok(status(Status::SerializationFailure));
            };
            let body = read(&mut cx, bp, bl)?;
            let has = |n: &str| headers.iter().any(|(k, _)| k == n);
            if upstream.is_empty() || !has(":path") || !has(":method") || !has(":authority") {
                // Envoy refuses a call without a cluster or the required pseudo-headers.
                return Ok(status(Status::BadArgument));
            }
            if !cx.data().caller.knows(&upstream) {
                // Envoy: no such cluster.
                return Ok(status(Status::BadArgument));
            }
            let s = cx.data_mut();
            s.next_token = s.next_token.wrapping_add(1).max(1);
            let token = s.next_token;
            let context_id = s.effective;
            s.pending_calls.push(PendingCall {
                token,
                context_id,
                request: CallRequest {
                    upstream,
                    headers,
                    body,
                    trailers,
                    timeout: Duration::from_millis(u64::from(timeout_ms as u32)),
                },
            });
            write_u32(&mut cx, ret, token)?;
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_call",
        |_: Cx<'_>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> i32 { status(Status::InternalFailure) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_stream",
        |_: Cx<'_>,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32,
         _: i32|
         -> i32 { status(Status::InternalFailure) },
    )?;
    l.func_wrap(
        "env",
        "proxy_grpc_send",
        |_: Cx<'_>, _: i32, _: i32, _: i32, _: i32| -> i32 { status(Status::NotFound) },
    )?;
    l.func_wrap("env", "proxy_grpc_cancel", |_: Cx<'_>, _: i32| -> i32 {
        status(Status::NotFound)
    })?;
    l.func_wrap("env", "proxy_grpc_close", |_: Cx<'_>, _: i32| -> i32 {
        status(Status::NotFound)
    })?;
    l.func_wrap(
        "env",
        "proxy_get_status",
        |mut cx: Cx<'_>, code: i32, mp: i32, ml: i32| -> wasmtime::Result<i32> {
            write_u32(&mut cx, code, 0)?;
            write_u32(&mut cx, mp, 0)?;
            write_u32(&mut cx, ml, 0)?;
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_call_foreign_function",
        |_: Cx<'_>, _: i32, _: i32, _: i32, _: i32, _: i32, _: i32| -> i32 {
            status(Status::NotFound)
        },
    )?;
    Ok(())
}

//! Stream control: `proxy_send_local_response`, `proxy_continue_stream` (and the 0.1-style
//! `proxy_continue_request` / `proxy_continue_response` some SDKs still import),
//! `proxy_close_stream`.

use wasmtime::Linker;

use super::{ok, read, read_string, status, Cx};
use crate::host::state::HostState;
use crate::host::types::{decode_map, LocalResponse, Status};

fn resume(cx: &mut Cx<'_>, response: bool) -> i32 {
    match cx.data_mut().stream() {
        Some(st) => {
            if response {
                st.resumed_response = true;
            } else {
                st.resumed_request = true;
            }
            ok()
        }
        None => status(Status::NotFound),
    }
}

pub(super) fn add(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_send_local_response",
        |mut cx: Cx<'_>,
         code: i32,
         dp: i32,
         dl: i32,
         bp: i32,
         bl: i32,
         hp: i32,
         hl: i32,
         grpc: i32|
         -> wasmtime::Result<i32> {
            let details = read_string(&mut cx, dp, dl)?;
            let body = read(&mut cx, bp, bl)?;
            let Some(headers) = decode_map(&read(&mut cx, hp, hl)?) else {
                return Ok(status(Status::SerializationFailure));
            };
            let code = code as u32;
            if !(200..=599).contains(&code) {
                return Ok(status(Status::BadArgument));
            }
            let Some(st) = cx.data_mut().stream() else {
                return Ok(status(Status::NotFound));
            };
            st.local_response = Some(LocalResponse {
                status: code as u16,
                details,
                headers: headers
                    .into_iter()
                    .map(|(k, v)| (k.to_ascii_lowercase(), v))
                    .collect(),
                body,
                grpc_status: grpc,
            });
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_continue_stream",
        |mut cx: Cx<'_>, t: i32| -> i32 {
            match t {
                0 => resume(&mut cx, false),
                1 => resume(&mut cx, true),
                _ => status(Status::BadArgument),
            }
        },
    )?;
    l.func_wrap("env", "proxy_continue_request", |mut cx: Cx<'_>| -> i32 {
        resume(&mut cx, false)
    })?;
    l.func_wrap("env", "proxy_continue_response", |mut cx: Cx<'_>| -> i32 {
        resume(&mut cx, true)
    })?;
    l.func_wrap(
        "env",
        "proxy_close_stream",
        |mut cx: Cx<'_>, _t: i32| -> i32 {
            // Envoy resets the stream; here the request is answered 502-free: a local 503
            // with a detail saying the plugin closed it.
            match cx.data_mut().stream() {
                Some(st) => {
                    st.local_response.get_or_insert(LocalResponse {
                        status: 503,
                        details: "wasm_close_stream".into(),
                        headers: Vec::new(),
                        body: Vec::new(),
                        grpc_status: -1,
                    });
                    ok()
                }
                None => status(Status::NotFound),
            }
        },
    )?;
    Ok(())
}

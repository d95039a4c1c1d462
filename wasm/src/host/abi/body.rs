//! Buffers: `proxy_get_buffer_bytes`, `proxy_set_buffer_bytes` over the request and response
//! bodies, the call response body and the VM and plugin configurations.

use wasmtime::Linker;

use super::{give, ok, read, status, Cx};
use crate::host::state::HostState;
use crate::host::types::{BufferType, Status};

fn buffer(s: &mut HostState, t: BufferType) -> Option<&mut Vec<u8>> {
    match t {
        BufferType::VmConfiguration => Some(&mut s.vm_config),
        BufferType::PluginConfiguration => Some(&mut s.plugin_config),
        BufferType::CallResponseBody => s.call_response.as_mut().map(|r| &mut r.body),
        BufferType::RequestBody => s.stream().map(|st| &mut st.request_body),
        BufferType::ResponseBody => s.stream().map(|st| &mut st.response_body),
    }
}

pub(super) fn add(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_buffer_bytes",
        |mut cx: Cx<'_>,
         t: i32,
         start: i32,
         max: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> wasmtime::Result<i32> {
            let Some(t) = BufferType::from_raw(t) else {
                return Ok(status(Status::BadArgument));
            };
            let Some(b) = buffer(cx.data_mut(), t) else {
                return Ok(status(Status::NotFound));
            };
            let start = (start as u32 as usize).min(b.len());
            let end = start.saturating_add(max as u32 as usize).min(b.len());
            if start == end {
                return Ok(status(Status::NotFound));
            }
            let chunk = b[start..end].to_vec();
            give(&mut cx, &chunk, ret_ptr, ret_size)?;
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_buffer_bytes",
        |mut cx: Cx<'_>,
         t: i32,
         start: i32,
         size: i32,
         ptr: i32,
         len: i32|
         -> wasmtime::Result<i32> {
            let Some(t) = BufferType::from_raw(t) else {
                return Ok(status(Status::BadArgument));
            };
            let data = read(&mut cx, ptr, len)?;
            let Some(b) = buffer(cx.data_mut(), t) else {
                return Ok(status(Status::NotFound));
            };
            splice(b, start as u32 as usize, size as u32 as usize, &data);
            Ok(ok())
        },
    )?;
    Ok(())
}

/// Replaces `size` bytes at `start` with `data`, as the spec says: `start` 0 and `size` at
/// least the length replace everything; a `start` at the end appends.
pub(crate) fn splice(b: &mut Vec<u8>, start: usize, size: usize, data: &[u8]) {
    let start = start.min(b.len());
    let end = start.saturating_add(size).min(b.len());
    b.splice(start..end, data.iter().copied());
}

#[cfg(test)]
mod tests {
    use super::splice;

    #[test]
    fn splice_replaces_prepends_appends() {
        let mut b = b"hello".to_vec();
        splice(&mut b, 0, usize::MAX, b"bye");
        assert_eq!(b, b"bye");
        splice(&mut b, 0, 0, b">");
        assert_eq!(b, b">bye");
        splice(&mut b, 4, 0, b"!");
        assert_eq!(b, b">bye!");
        splice(&mut b, 1, 3, b"hi");
        assert_eq!(b, b">hi!");
    }
}

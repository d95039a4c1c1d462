//! Properties: `proxy_get_property`, `proxy_set_property`. A path arrives as NUL-separated
//! segments (`request` `\0` `path`) and is looked up as `request.path`. What a stream knows
//! (`request.*`, `response.*`) is read from its current headers; what the proxy knows about
//! the connection and the peers (`source.*`, `destination.*`, `connection.*`) comes with the
//! stream; `node.*` comes with the instance; `plugin_name`, `plugin_root_id`, `plugin_vm_id`
//! from the plugin.

use wasmtime::Linker;

use super::{give, ok, read, status, Cx};
use crate::host::state::{HostState, StreamData};
use crate::host::types::{HeaderMap, Status, Value};

pub(super) fn add(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_property",
        |mut cx: Cx<'_>, pp: i32, pl: i32, ret_ptr: i32, ret_size: i32| -> wasmtime::Result<i32> {
            let raw = read(&mut cx, pp, pl)?;
            let segments: Vec<String> = raw
                .split(|b| *b == 0)
                .map(|s| String::from_utf8_lossy(s).into_owned())
                .collect();
            match lookup(cx.data_mut(), &segments) {
                Some(v) => {
                    give(&mut cx, &v, ret_ptr, ret_size)?;
                    Ok(ok())
                }
                None => Ok(status(Status::NotFound)),
            }
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_property",
        |mut cx: Cx<'_>, pp: i32, pl: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            let raw = read(&mut cx, pp, pl)?;
            let key = String::from_utf8_lossy(&raw).replace('\0', ".");
            let value = read(&mut cx, vp, vl)?;
            match cx.data_mut().stream() {
                Some(st) => {
                    st.set_properties.insert(key, value);
                    Ok(ok())
                }
                None => Ok(status(Status::NotFound)),
            }
        },
    )?;
    Ok(())
}

/// The encoded value of the property at `segments`.
pub(crate) fn lookup(s: &mut HostState, segments: &[String]) -> Option<Vec<u8>> {
    let key = segments.join(".");
    match key.as_str() {
        "plugin_name" => return Some(s.plugin_name.clone().into_bytes()),
        "plugin_root_id" => return Some(s.root_id.clone().into_bytes()),
        "plugin_vm_id" => return Some(s.vm_id.clone().into_bytes()),
        _ => {}
    }
    if let Some(v) = s.node.get(&key) {
        return Some(v.encode());
    }
    let st = s.stream()?;
    if let Some(v) = st.set_properties.get(&key) {
        return Some(v.clone());
    }
    if let Some(v) = from_headers(st, segments) {
        return Some(v.encode());
    }
    st.attributes.get(&key).map(Value::encode)
}

fn header(m: &HeaderMap, name: &str) -> Option<String> {
    let vals: Vec<&str> = m
        .iter()
        .filter(|(k, _)| k.eq_ignore_ascii_case(name))
        .map(|(_, v)| v.as_str())
        .collect();
    (!vals.is_empty()).then(|| vals.join(","))
}

/// `request.*` and `response.*` attributes read from the stream's current headers, so a
/// plugin that rewrote the path sees the new one.
fn from_headers(st: &StreamData, seg: &[String]) -> Option<Value> {
    let [first, second, rest @ ..] = seg else {
        return None;
    };
    let req = &st.request_headers;
    let resp = &st.response_headers;
    let v = match (first.as_str(), second.as_str(), rest) {
        ("request", "headers", [name]) => Value::Str(header(req, name)?),
        ("request", "headers", []) => Value::Map(req.clone()),
        ("request", "path", []) => Value::Str(header(req, ":path")?),
        ("request", "url_path", []) => {
            let p = header(req, ":path")?;
            Value::Str(p.split('?').next().unwrap_or_default().to_string())
        }
        ("request", "query", []) => {
            let p = header(req, ":path")?;
            Value::Str(
                p.split_once('?')
                    .map(|(_, q)| q.to_string())
                    .unwrap_or_default(),
            )
        }
        ("request", "method", []) => Value::Str(header(req, ":method")?),
        ("request", "host", []) => Value::Str(header(req, ":authority")?),
        ("request", "scheme", []) => Value::Str(header(req, ":scheme")?),
        ("request", "id", []) => Value::Str(header(req, "x-request-id")?),
        ("request", "useragent", []) => Value::Str(header(req, "user-agent")?),
        ("request", "referer", []) => Value::Str(header(req, "referer")?),
        ("response", "headers", [name]) => Value::Str(header(resp, name)?),
        ("response", "headers", []) => Value::Map(resp.clone()),
        ("response", "code", []) => Value::Int(header(resp, ":status")?.parse().ok()?),
        ("response", "trailers", []) => Value::Map(st.response_trailers.clone()),
        ("request", "trailers", []) => Value::Map(st.request_trailers.clone()),
        _ => return None,
    };
    Some(v)
}

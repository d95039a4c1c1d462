//! Header and trailer maps: `proxy_get_header_map_pairs`, `proxy_set_header_map_pairs`,
//! `proxy_get_header_map_value`, `proxy_add_header_map_value`,
//! `proxy_replace_header_map_value`, `proxy_remove_header_map_value`,
//! `proxy_get_header_map_size`. Names are matched case-insensitively and stored lower-case.

use wasmtime::Linker;

use super::{give, ok, read, read_string, status, write_u32, Cx};
use crate::host::state::HostState;
use crate::host::types::{decode_map, encode_map, HeaderMap, MapType, Status};

/// The map `t` of the effective context; `None` when it has none.
fn map(s: &mut HostState, t: i32) -> Option<&mut HeaderMap> {
    let t = MapType::from_raw(t)?;
    match t {
        MapType::CallResponseHeaders => s.call_response.as_mut().map(|r| &mut r.headers),
        MapType::CallResponseTrailers => s.call_response.as_mut().map(|r| &mut r.trailers),
        _ => {
            let st = s.stream()?;
            Some(match t {
                MapType::RequestHeaders => &mut st.request_headers,
                MapType::RequestTrailers => &mut st.request_trailers,
                MapType::ResponseHeaders => &mut st.response_headers,
                _ => &mut st.response_trailers,
            })
        }
    }
}

pub(super) fn add(l: &mut Linker<HostState>) -> wasmtime::Result<()> {
    l.func_wrap(
        "env",
        "proxy_get_header_map_pairs",
        |mut cx: Cx<'_>, t: i32, ret_ptr: i32, ret_size: i32| -> wasmtime::Result<i32> {
            let Some(m) = map(cx.data_mut(), t) else {
                return Ok(status(Status::NotFound));
            };
            let enc = encode_map(m);
            give(&mut cx, &enc, ret_ptr, ret_size)?;
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_set_header_map_pairs",
        |mut cx: Cx<'_>, t: i32, ptr: i32, len: i32| -> wasmtime::Result<i32> {
            let bytes = read(&mut cx, ptr, len)?;
            let Some(new) = decode_map(&bytes) else {
                return Ok(status(Status::SerializationFailure));
            };
            let Some(m) = map(cx.data_mut(), t) else {
                return Ok(status(Status::NotFound));
            };
            *m = new
                .into_iter()
                .map(|(k, v)| (k.to_ascii_lowercase(), v))
                .collect();
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_size",
        |mut cx: Cx<'_>, t: i32, ret: i32| -> wasmtime::Result<i32> {
            let Some(m) = map(cx.data_mut(), t) else {
                return Ok(status(Status::NotFound));
            };
            let n = encode_map(m).len() as u32;
            write_u32(&mut cx, ret, n)?;
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_get_header_map_value",
        |mut cx: Cx<'_>,
         t: i32,
         kp: i32,
         kl: i32,
         ret_ptr: i32,
         ret_size: i32|
         -> wasmtime::Result<i32> {
            let key = read_string(&mut cx, kp, kl)?;
            let Some(m) = map(cx.data_mut(), t) else {
                return Ok(status(Status::NotFound));
            };
            // Envoy joins repeated headers with a comma.
            let values: Vec<&str> = m
                .iter()
                .filter(|(k, _)| k.eq_ignore_ascii_case(&key))
                .map(|(_, v)| v.as_str())
                .collect();
            if values.is_empty() {
                return Ok(status(Status::NotFound));
            }
            let v = values.join(",");
            give(&mut cx, v.as_bytes(), ret_ptr, ret_size)?;
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_add_header_map_value",
        |mut cx: Cx<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            let key = read_string(&mut cx, kp, kl)?.to_ascii_lowercase();
            let value = read_string(&mut cx, vp, vl)?;
            let Some(m) = map(cx.data_mut(), t) else {
                return Ok(status(Status::NotFound));
            };
            m.push((key, value));
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_replace_header_map_value",
        |mut cx: Cx<'_>, t: i32, kp: i32, kl: i32, vp: i32, vl: i32| -> wasmtime::Result<i32> {
            let key = read_string(&mut cx, kp, kl)?.to_ascii_lowercase();
            let value = read_string(&mut cx, vp, vl)?;
            let Some(m) = map(cx.data_mut(), t) else {
                return Ok(status(Status::NotFound));
            };
            replace(m, key, value);
            Ok(ok())
        },
    )?;
    l.func_wrap(
        "env",
        "proxy_remove_header_map_value",
        |mut cx: Cx<'_>, t: i32, kp: i32, kl: i32| -> wasmtime::Result<i32> {
            let key = read_string(&mut cx, kp, kl)?;
            let Some(m) = map(cx.data_mut(), t) else {
                return Ok(status(Status::NotFound));
            };
            m.retain(|(k, _)| !k.eq_ignore_ascii_case(&key));
            Ok(ok())
        },
    )?;
    Ok(())
}

/// Sets `key` to `value`: the first occurrence keeps its place, others go.
pub(crate) fn replace(m: &mut HeaderMap, key: String, value: String) {
    let mut found = false;
    m.retain_mut(|(k, v)| {
        if !k.eq_ignore_ascii_case(&key) {
            return true;
        }
        if found {
            return false;
        }
        found = true;
        *v = value.clone();
        true
    });
    if !found {
        m.push((key, value));
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn replace_keeps_the_first_place_and_drops_repeats() {
        let mut m: HeaderMap = vec![
            ("a".into(), "1".into()),
            ("x".into(), "1".into()),
            ("x".into(), "2".into()),
        ];
        replace(&mut m, "x".into(), "9".into());
        assert_eq!(m, vec![("a".into(), "1".into()), ("x".into(), "9".into())]);
        replace(&mut m, "y".into(), "new".into());
        assert_eq!(m.last().unwrap(), &("y".to_string(), "new".to_string()));
    }
}

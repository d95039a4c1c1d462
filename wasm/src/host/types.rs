//! The proxy-wasm ABI's numbers (spec 0.2.x) and the host's plain data types.

/// `proxy_status_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
#[repr(i32)]
pub enum Status {
    Ok = 0,
    NotFound = 1,
    BadArgument = 2,
    SerializationFailure = 3,
    Empty = 7,
    CasMismatch = 8,
    InternalFailure = 10,
    Unimplemented = 12,
}

/// What a stream callback asks for (`proxy_action_t`).
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum Action {
    Continue,
    Pause,
}

impl Action {
    pub(crate) fn from_raw(v: i32) -> Action {
        // 0 Continue, 1 Pause; 2 (ContinueAndEndStream, 0.2.1) continues too.
        if v == 1 {
            Action::Pause
        } else {
            Action::Continue
        }
    }
}

/// `proxy_map_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum MapType {
    RequestHeaders,
    RequestTrailers,
    ResponseHeaders,
    ResponseTrailers,
    CallResponseHeaders,
    CallResponseTrailers,
}

impl MapType {
    pub(crate) fn from_raw(v: i32) -> Option<MapType> {
        Some(match v {
            0 => MapType::RequestHeaders,
            1 => MapType::RequestTrailers,
            2 => MapType::ResponseHeaders,
            3 => MapType::ResponseTrailers,
            6 => MapType::CallResponseHeaders,
            7 => MapType::CallResponseTrailers,
            _ => return None,
        })
    }
}

/// `proxy_buffer_type_t`.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub enum BufferType {
    RequestBody,
    ResponseBody,
    CallResponseBody,
    VmConfiguration,
    PluginConfiguration,
}

impl BufferType {
    pub(crate) fn from_raw(v: i32) -> Option<BufferType> {
        Some(match v {
            0 => BufferType::RequestBody,
            1 => BufferType::ResponseBody,
            4 => BufferType::CallResponseBody,
            6 => BufferType::VmConfiguration,
            7 => BufferType::PluginConfiguration,
            _ => return None,
        })
    }
}

/// A header (or trailer) map: ordered, names lower-case, repeated names allowed.
pub type HeaderMap = Vec<(String, String)>;

/// A reply a plugin made with `proxy_send_local_response`.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct LocalResponse {
    pub status: u16,
    pub details: String,
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    /// -1 when the plugin gave none.
    pub grpc_status: i32,
}

/// A `proxy_http_call` a plugin made, for the [`crate::host::HttpCaller`] to send.
#[derive(Debug, Clone, PartialEq, Eq)]
pub struct CallRequest {
    /// The upstream the plugin named: an Envoy cluster name such as
    /// `outbound|80||svc.ns.svc.cluster.local`, or `host:port`.
    pub upstream: String,
    /// Request headers, including the `:method`, `:path` and `:authority` pseudo-headers.
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
    pub timeout: std::time::Duration,
}

/// The answer to a [`CallRequest`]; `headers` include `:status`.
#[derive(Debug, Clone, Default, PartialEq, Eq)]
pub struct CallResponse {
    pub headers: HeaderMap,
    pub body: Vec<u8>,
    pub trailers: HeaderMap,
}

/// A property's value as proxy-wasm hands it to plugins: strings and bytes raw, integers as
/// 8 little-endian bytes, maps in the header-map encoding.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Value {
    Str(String),
    Bytes(Vec<u8>),
    Int(i64),
    Bool(bool),
    Map(HeaderMap),
}

impl Value {
    pub fn encode(&self) -> Vec<u8> {
        match self {
            Value::Str(s) => s.as_bytes().to_vec(),
            Value::Bytes(b) => b.clone(),
            Value::Int(i) => i.to_le_bytes().to_vec(),
            Value::Bool(b) => vec![u8::from(*b)],
            Value::Map(m) => encode_map(m),
        }
    }
}

/// The proxy-wasm map encoding: count, then (key len, value len) pairs, then each key and
/// value followed by a NUL.
pub fn encode_map(map: &[(String, String)]) -> Vec<u8> {
    let mut out = Vec::with_capacity(
        4 + map
            .iter()
            .map(|(k, v)| k.len() + v.len() + 10)
            .sum::<usize>(),
    );
    out.extend_from_slice(&(map.len() as u32).to_le_bytes());
    for (k, v) in map {
        out.extend_from_slice(&(k.len() as u32).to_le_bytes());
        out.extend_from_slice(&(v.len() as u32).to_le_bytes());
    }
    for (k, v) in map {
        out.extend_from_slice(k.as_bytes());
        out.push(0);
        out.extend_from_slice(v.as_bytes());
        out.push(0);
    }
    out
}

/// Reads the proxy-wasm map encoding; `None` when it is malformed.
pub fn decode_map(bytes: &[u8]) -> Option<HeaderMap> {
    if bytes.is_empty() {
        return Some(Vec::new());
    }
    let word = |at: usize| -> Option<usize> {
        let b = bytes.get(at..at + 4)?;
        Some(u32::from_le_bytes([b[0], b[1], b[2], b[3]]) as usize)
    };
    let n = word(0)?;
    let mut p = 4usize.checked_add(n.checked_mul(8)?)?;
    if p > bytes.len() {
        return None;
    }
    let mut out = Vec::with_capacity(n);
    for i in 0..n {
        let (kl, vl) = (word(4 + i * 8)?, word(8 + i * 8)?);
        let k = bytes.get(p..p + kl)?;
        p += kl + 1;
        let v = bytes.get(p..p + vl)?;
        p += vl + 1;
        out.push((
            String::from_utf8_lossy(k).into_owned(),
            String::from_utf8_lossy(v).into_owned(),
        ));
    }
    Some(out)
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn map_encoding_round_trips() {
        let m = vec![
            (":path".to_string(), "/a".to_string()),
            ("x".to_string(), String::new()),
            ("x".to_string(), "2".to_string()),
        ];
        let enc = encode_map(&m);
        assert_eq!(&enc[..4], &3u32.to_le_bytes());
        assert_eq!(decode_map(&enc).unwrap(), m);
        assert_eq!(decode_map(&[]).unwrap(), Vec::new());
    }

    #[test]
    fn malformed_maps_are_refused() {
        assert!(decode_map(&[1, 0, 0]).is_none());
        let mut enc = encode_map(&[("k".into(), "v".into())]);
        enc.truncate(enc.len() - 2);
        assert!(decode_map(&enc).is_none());
        // A count that would overflow the length check.
        assert!(decode_map(&u32::MAX.to_le_bytes()).is_none());
    }
}

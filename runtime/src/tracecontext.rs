//! W3C Trace Context: the `traceparent` header value, parsed one way for every reader
//! (the waypoint's tracing, the ztunnel's access log, the local mesh's trace checks).
//!
//! Strict as the W3C text says: lower-case hex only, exact lengths and separators, no
//! all-zero ids, version `ff` invalid; a later version may append fields after a `-`.

/// Why a `traceparent` header value was rejected.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum TraceparentError {
    #[error("traceparent header appears {0} times, expected once")]
    Repeated(usize),
    #[error("traceparent header is not visible ASCII")]
    NotAscii,
    #[error("traceparent is {0} characters, expected 55 (version-traceid-spanid-flags)")]
    Length(usize),
    #[error("traceparent field {field} is not {len} lowercase hex digits")]
    Field { field: &'static str, len: usize },
    #[error("traceparent fields must be separated by '-'")]
    Separator,
    #[error("traceparent version ff is invalid")]
    VersionFF,
    #[error("traceparent {0} is all zeros")]
    ZeroId(&'static str),
}

/// The fields of a valid `traceparent` value.
#[derive(Debug, Clone, Copy, PartialEq, Eq)]
pub struct Traceparent {
    pub trace_id: [u8; 16],
    /// The caller's span: the parent of anything done for this request.
    pub parent_id: [u8; 8],
    pub flags: u8,
}

impl Traceparent {
    /// The `sampled` bit of the trace flags.
    pub fn sampled(&self) -> bool {
        self.flags & 0x01 != 0
    }
}

/// Lower-case hex of `b` (how trace and span ids are written).
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

/// The bytes of `N * 2` hex digits (the caller checked they are hex).
fn bytes<const N: usize>(s: &str) -> [u8; N] {
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).unwrap_or(0);
    }
    out
}

fn lower_hex(s: &str) -> bool {
    s.bytes().all(|b| matches!(b, b'0'..=b'9' | b'a'..=b'f'))
}

fn field<'a>(
    v: &'a str,
    range: std::ops::Range<usize>,
    name: &'static str,
) -> Result<&'a str, TraceparentError> {
    let len = range.len();
    let s = &v[range];
    if lower_hex(s) {
        Ok(s)
    } else {
        Err(TraceparentError::Field { field: name, len })
    }
}

/// Parses a `traceparent` value: `version-traceid-spanid-flags`, e.g.
/// `00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01`.
///
/// Version `00` must be exactly 55 characters. A later version may be longer as long as
/// the 55-character prefix is followed by `-` (W3C forward compatibility); its first four
/// fields are read the same way.
pub fn parse_traceparent(v: &str) -> Result<Traceparent, TraceparentError> {
    if !v.is_ascii() {
        return Err(TraceparentError::NotAscii);
    }
    let v = v.trim_matches(|c| c == ' ' || c == '\t');
    if v.len() < 55 {
        return Err(TraceparentError::Length(v.len()));
    }
    let version = field(v, 0..2, "version")?;
    if version == "ff" {
        return Err(TraceparentError::VersionFF);
    }
    if (version == "00" && v.len() != 55) || (v.len() > 55 && v.as_bytes()[55] != b'-') {
        return Err(TraceparentError::Length(v.len()));
    }
    if [2, 35, 52].iter().any(|&i| v.as_bytes()[i] != b'-') {
        return Err(TraceparentError::Separator);
    }
    let trace_id = field(v, 3..35, "trace-id")?;
    let span_id = field(v, 36..52, "parent-id")?;
    let flags = field(v, 53..55, "trace-flags")?;
    if trace_id.bytes().all(|b| b == b'0') {
        return Err(TraceparentError::ZeroId("trace-id"));
    }
    if span_id.bytes().all(|b| b == b'0') {
        return Err(TraceparentError::ZeroId("parent-id"));
    }
    let flags = u8::from_str_radix(flags, 16).map_err(|_| TraceparentError::Field {
        field: "trace-flags",
        len: 2,
    })?;
    Ok(Traceparent {
        trace_id: bytes(trace_id),
        parent_id: bytes(span_id),
        flags,
    })
}

#[cfg(test)]
mod tests {
    use super::*;

    const GOOD: &str = "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01";

    #[test]
    fn parses_a_valid_traceparent() {
        let tp = parse_traceparent(GOOD).unwrap();
        assert_eq!(hex(&tp.trace_id), "4bf92f3577b34da6a3ce929d0e0e4736");
        assert_eq!(hex(&tp.parent_id), "00f067aa0ba902b7");
        assert_eq!(tp.flags, 1);
        assert!(tp.sampled());
        let tp = parse_traceparent(&GOOD.replace("-01", "-00")).unwrap();
        assert_eq!(tp.flags, 0);
    }

    #[test]
    fn future_versions_may_carry_more_fields() {
        let v = format!("01{}-extra", &GOOD[2..]);
        assert!(parse_traceparent(&v).is_ok());
        let v = format!("01{}", &GOOD[2..]);
        assert!(parse_traceparent(&v).is_ok());
        // Version 00 must be exact.
        assert_eq!(
            parse_traceparent(&format!("{GOOD}-extra")),
            Err(TraceparentError::Length(61))
        );
        // A longer future version must continue with '-'.
        assert_eq!(
            parse_traceparent(&format!("01{}x", &GOOD[2..])),
            Err(TraceparentError::Length(56))
        );
    }

    #[test]
    fn rejects_malformed_values() {
        let cases: &[(&str, TraceparentError)] = &[
            ("", TraceparentError::Length(0)),
            (&GOOD[..54], TraceparentError::Length(54)),
            (
                "00-4BF92F3577B34DA6A3CE929D0E0E4736-00f067aa0ba902b7-01",
                TraceparentError::Field {
                    field: "trace-id",
                    len: 32,
                },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902bz-01",
                TraceparentError::Field {
                    field: "parent-id",
                    len: 16,
                },
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0g",
                TraceparentError::Field {
                    field: "trace-flags",
                    len: 2,
                },
            ),
            (
                "0x-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceparentError::Field {
                    field: "version",
                    len: 2,
                },
            ),
            (
                "ff-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceparentError::VersionFF,
            ),
            (
                "00_4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-01",
                TraceparentError::Separator,
            ),
            (
                "00-00000000000000000000000000000000-00f067aa0ba902b7-01",
                TraceparentError::ZeroId("trace-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-0000000000000000-01",
                TraceparentError::ZeroId("parent-id"),
            ),
            (
                "00-4bf92f3577b34da6a3ce929d0e0e4736-00f067aa0ba902b7-0é",
                TraceparentError::NotAscii,
            ),
        ];
        for (v, want) in cases {
            assert_eq!(parse_traceparent(v).as_ref(), Err(want), "{v:?}");
        }
    }
}

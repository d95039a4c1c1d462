//! W3C trace context, as far as a client of the mesh reads it: the ids of a
//! `traceparent` and lower-case hex.

/// Lower-case hex of `b`.
pub fn hex(b: &[u8]) -> String {
    b.iter().map(|x| format!("{x:02x}")).collect()
}

fn hex_bytes<const N: usize>(s: &str) -> Option<[u8; N]> {
    if s.len() != 2 * N || !s.bytes().all(|b| b.is_ascii_hexdigit()) {
        return None;
    }
    let mut out = [0u8; N];
    for (i, o) in out.iter_mut().enumerate() {
        *o = u8::from_str_radix(&s[2 * i..2 * i + 2], 16).ok()?;
    }
    Some(out)
}

/// `00-<32 hex trace id>-<16 hex parent id>-<2 hex flags>`: (trace id, parent id, sampled).
/// All-zero ids and version `ff` are invalid; a later version may append fields.
pub fn parse_traceparent(v: &str) -> Option<([u8; 16], [u8; 8], bool)> {
    let mut it = v.trim().split('-');
    let version = it.next()?;
    let (t, s, f) = (it.next()?, it.next()?, it.next()?);
    if version == "ff" || (version == "00" && it.next().is_some()) {
        return None;
    }
    hex_bytes::<1>(version)?;
    let trace = hex_bytes::<16>(t).filter(|t| t.iter().any(|b| *b != 0))?;
    let span = hex_bytes::<8>(s).filter(|s| s.iter().any(|b| *b != 0))?;
    let flags = hex_bytes::<1>(f)?[0];
    Some((trace, span, flags & 1 == 1))
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn traceparent_ids_and_flag() {
        let tp = "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01";
        let (t, s, sampled) = parse_traceparent(tp).unwrap();
        assert_eq!(hex(&t), "0af7651916cd43dd8448eb211c80319c");
        assert_eq!(hex(&s), "b7ad6b7169203331");
        assert!(sampled);
        assert!(!parse_traceparent(&tp.replace("-01", "-00")).unwrap().2);
        for bad in [
            "00-00000000000000000000000000000000-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-0000000000000000-01",
            "ff-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
            "00-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x",
            "00-0af7651916cd43dd-b7ad6b7169203331-01",
            "zz-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01",
        ] {
            assert!(parse_traceparent(bad).is_none(), "{bad}");
        }
        assert!(
            parse_traceparent("01-0af7651916cd43dd8448eb211c80319c-b7ad6b7169203331-01-x")
                .is_some()
        );
    }
}

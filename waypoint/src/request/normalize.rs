//! Request path normalisation, the first stage of the L7 request path: authorization,
//! routing, rewrites, redirects and the upstream request all see the normalised path.
//!
//! The mode is Istio's `meshConfig.pathNormalization.normalization`, with the semantics of
//! the Envoy options Istio sets for it, applied in Envoy's order:
//!
//! 1. `DECODE_AND_MERGE_SLASHES` only (`path_with_escaped_slashes_action:
//!    UNESCAPE_AND_FORWARD`): `%2F`/`%2f` become `/` and `%5C`/`%5c` become `\`. Every other
//!    mode keeps escaped slashes unchanged.
//! 2. Every mode but `NONE` (`normalize_path`, RFC 3986 §6.2.2 plus Envoy's extras):
//!    percent-encoded unreserved characters (`ALPHA DIGIT - . _ ~`) are decoded, once (`%252e`
//!    stays `%252e`); other escapes are kept as written (`%5c%25` stays); a `%` not followed
//!    by two hex digits is kept; `\` becomes `/`; `.` and `..` segments are removed (RFC 3986
//!    §5.2.4, so `%2e%2e` counts as `..`); `..` above the root stays at the root; a path not
//!    starting with `/` gets one. A NUL (`%00`) rejects the request (Envoy answers 400).
//!    So does a path whose result is not itself normal, because decoding assembled new
//!    escapes from a stray `%` (`%2%65` → `%2e`): stricter than Envoy, which forwards it.
//!    Case is not normalised (`/A` stays `/A`).
//! 3. `MERGE_SLASHES` and `DECODE_AND_MERGE_SLASHES` (`merge_slashes`): runs of `/` become
//!    one.
//!
//! The query string is never touched.

use std::borrow::Cow;

use http::uri::{PathAndQuery, Uri};
use meshwork_model::pb::config as pb;

/// How request paths are normalised (Istio `meshConfig.pathNormalization.normalization`).
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Mode {
    /// Paths are used and forwarded exactly as received.
    None,
    /// RFC 3986 normalisation (Istio's default).
    #[default]
    Base,
    /// [`Mode::Base`], then adjacent slashes merged.
    MergeSlashes,
    /// Escaped slashes and backslashes decoded, then [`Mode::MergeSlashes`].
    DecodeAndMergeSlashes,
}

impl Mode {
    /// The mesh's mode; Istio's default (`BASE`) without mesh settings.
    pub fn of(mesh: Option<&pb::MeshSettings>) -> Mode {
        use pb::PathNormalization as P;
        match mesh.map(|m| m.path_normalization()) {
            Some(P::None) => Mode::None,
            Some(P::MergeSlashes) => Mode::MergeSlashes,
            Some(P::DecodeAndMergeSlashes) => Mode::DecodeAndMergeSlashes,
            Some(P::Base) | None => Mode::Base,
        }
    }

    fn merges_slashes(self) -> bool {
        matches!(self, Mode::MergeSlashes | Mode::DecodeAndMergeSlashes)
    }
}

/// A path the normaliser refuses (the request is answered 400, as Envoy does).
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum PathError {
    #[error("request path {0:?} contains an encoded NUL (%00)")]
    Nul(String),
    #[error("normalised request path {0:?} is not a valid URI path")]
    Invalid(String),
    #[error("request path {0:?} has escapes that decoding assembles into new escapes")]
    Assembled(String),
}

/// Normalises a request target's path (`path` or `path?query`); the query is kept verbatim.
pub fn path_and_query(pq: &str, mode: Mode) -> Result<Cow<'_, str>, PathError> {
    if mode == Mode::None || pq == "*" {
        return Ok(Cow::Borrowed(pq));
    }
    let (path, query) = match pq.find('?') {
        Some(i) => pq.split_at(i),
        None => (pq, ""),
    };
    if is_normal(path, mode) {
        return Ok(Cow::Borrowed(pq));
    }
    let mut out = normalize_path(path, mode)?;
    out.push_str(query);
    Ok(Cow::Owned(out))
}

/// Rewrites `req`'s URI to its normalised path (scheme, authority and query unchanged).
pub fn apply<B>(req: &mut http::Request<B>, mode: Mode) -> Result<(), PathError> {
    let Some(pq) = req.uri().path_and_query() else {
        return Ok(());
    };
    let normal = match path_and_query(pq.as_str(), mode)? {
        Cow::Borrowed(_) => return Ok(()),
        Cow::Owned(s) => s,
    };
    let new_pq =
        PathAndQuery::try_from(normal.as_str()).map_err(|_| PathError::Invalid(normal.clone()))?;
    let mut parts = req.uri().clone().into_parts();
    parts.path_and_query = Some(new_pq);
    *req.uri_mut() = Uri::from_parts(parts).map_err(|_| PathError::Invalid(normal))?;
    Ok(())
}

/// True when `path` is already in normal form for `mode` (the common case: no copy).
fn is_normal(path: &str, mode: Mode) -> bool {
    let b = path.as_bytes();
    if b.first() != Some(&b'/') {
        return false;
    }
    if b.iter()
        .any(|&c| matches!(c, b'%' | b'\\') || !c.is_ascii_graphic())
    {
        return false;
    }
    if path.split('/').any(|s| s == "." || s == "..") {
        return false;
    }
    !(mode.merges_slashes() && path.contains("//"))
}

/// Normalises `path`, refusing a path whose normal form is not itself normal.
///
/// One decoding pass can assemble a new escape out of a stray `%` and decoded hex digits
/// (`%2%65` → `%2e`, `%%37%32` → `%72`, `%2%46` → `%2F`). Forwarded as such, the backend's own
/// single decode would see a `..` segment, a letter or a slash the policy never judged, so
/// such a path is refused (400) rather than decoded again: no client has a reason to send one.
fn normalize_path(path: &str, mode: Mode) -> Result<String, PathError> {
    let out = normalize_once(path, mode)?;
    if !is_normal(&out, mode) {
        match normalize_once(&out, mode) {
            Ok(again) if again == out => {}
            _ => return Err(PathError::Assembled(path.to_string())),
        }
    }
    Ok(out)
}

fn normalize_once(path: &str, mode: Mode) -> Result<String, PathError> {
    let decoded_slashes;
    let path = if mode == Mode::DecodeAndMergeSlashes {
        decoded_slashes = decode_escaped_slashes(path);
        decoded_slashes.as_str()
    } else {
        path
    };
    let canonical = canonicalize(path)?;
    let mut out = remove_dot_segments(&canonical);
    if mode.merges_slashes() {
        out = merge_slashes(&out);
    }
    Ok(out)
}

fn hex(c: u8) -> Option<u8> {
    match c {
        b'0'..=b'9' => Some(c - b'0'),
        b'a'..=b'f' => Some(c - b'a' + 10),
        b'A'..=b'F' => Some(c - b'A' + 10),
        _ => None,
    }
}

/// The byte a `%XY` escape at `b[i]` stands for, if it is one.
fn escape_at(b: &[u8], i: usize) -> Option<u8> {
    if b.get(i) != Some(&b'%') {
        return None;
    }
    Some(hex(*b.get(i + 1)?)? << 4 | hex(*b.get(i + 2)?)?)
}

/// Step 1 of `DECODE_AND_MERGE_SLASHES`: `%2F` → `/`, `%5C` → `\` (either case), one pass.
fn decode_escaped_slashes(path: &str) -> String {
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len());
    let mut i = 0;
    while i < b.len() {
        match escape_at(b, i) {
            Some(v @ (b'/' | b'\\')) => {
                out.push(char::from(v));
                i += 3;
            }
            Some(_) => {
                out.push_str(&path[i..i + 3]);
                i += 3;
            }
            None => {
                let c = path[i..].chars().next().unwrap_or('\u{fffd}');
                out.push(c);
                i += c.len_utf8();
            }
        }
    }
    out
}

fn unreserved(c: u8) -> bool {
    c.is_ascii_alphanumeric() || matches!(c, b'-' | b'.' | b'_' | b'~')
}

/// Step 2 without dot segments: escapes of unreserved characters decoded, `\` → `/`, bytes
/// that may not appear in a path (controls, space, non-ASCII) escaped, a leading `/`.
fn canonicalize(path: &str) -> Result<String, PathError> {
    const HEX: &[u8; 16] = b"0123456789ABCDEF";
    let b = path.as_bytes();
    let mut out = String::with_capacity(path.len() + 1);
    if !matches!(b.first(), Some(b'/' | b'\\')) {
        out.push('/');
    }
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        if let Some(v) = escape_at(b, i) {
            if v == 0 {
                return Err(PathError::Nul(path.to_string()));
            }
            if unreserved(v) {
                out.push(char::from(v));
            } else {
                out.push_str(&path[i..i + 3]);
            }
            i += 3;
            continue;
        }
        match c {
            0 => return Err(PathError::Nul(path.to_string())),
            b'\\' => out.push('/'),
            c if c.is_ascii_graphic() => out.push(char::from(c)),
            c => {
                out.push('%');
                out.push(char::from(HEX[usize::from(c >> 4)]));
                out.push(char::from(HEX[usize::from(c & 0xf)]));
            }
        }
        i += 1;
    }
    Ok(out)
}

/// RFC 3986 §5.2.4 for a path starting with `/`: `.` segments dropped, `..` drops the
/// segment before it (never above the root); a trailing `.` or `..` leaves a trailing `/`.
/// Empty segments (`//`) are kept.
fn remove_dot_segments(path: &str) -> String {
    let rest = path.strip_prefix('/').unwrap_or(path);
    let segments: Vec<&str> = rest.split('/').collect();
    let last = segments.len() - 1;
    let mut out: Vec<&str> = Vec::with_capacity(segments.len());
    for (i, s) in segments.into_iter().enumerate() {
        match s {
            "." => {}
            ".." => {
                out.pop();
            }
            s => {
                out.push(s);
                continue;
            }
        }
        if i == last {
            out.push("");
        }
    }
    let mut r = String::with_capacity(path.len());
    r.push('/');
    r.push_str(&out.join("/"));
    r
}

fn merge_slashes(path: &str) -> String {
    let mut out = String::with_capacity(path.len());
    for c in path.chars() {
        if c == '/' && out.ends_with('/') {
            continue;
        }
        out.push(c);
    }
    out
}

#[cfg(test)]
mod tests {
    use super::*;

    fn norm(pq: &str, mode: Mode) -> Result<String, PathError> {
        path_and_query(pq, mode).map(Cow::into_owned)
    }

    /// RFC 3986 §5.4 reference resolutions, reduced to their dot-segment removal
    /// (base path `/b/c/d;p`, the relative reference appended to `/b/c/`).
    #[test]
    fn rfc3986_dot_segment_examples() {
        for (input, want) in [
            ("/b/c/g", "/b/c/g"),
            ("/b/c/./g", "/b/c/g"),
            ("/b/c/g/", "/b/c/g/"),
            ("/b/c/.", "/b/c/"),
            ("/b/c/./", "/b/c/"),
            ("/b/c/..", "/b/"),
            ("/b/c/../", "/b/"),
            ("/b/c/../g", "/b/g"),
            ("/b/c/../..", "/"),
            ("/b/c/../../", "/"),
            ("/b/c/../../g", "/g"),
            ("/b/c/../../../g", "/g"),
            ("/b/c/../../../../g", "/g"),
            ("/./g", "/g"),
            ("/../g", "/g"),
            ("/b/c/g.", "/b/c/g."),
            ("/b/c/.g", "/b/c/.g"),
            ("/b/c/g..", "/b/c/g.."),
            ("/b/c/..g", "/b/c/..g"),
            ("/b/c/./../g", "/b/g"),
            ("/b/c/./g/.", "/b/c/g/"),
            ("/b/c/g/./h", "/b/c/g/h"),
            ("/b/c/g/../h", "/b/c/h"),
            ("/b/c/g;x=1/./y", "/b/c/g;x=1/y"),
            ("/b/c/g;x=1/../y", "/b/c/y"),
            // RFC 3986 §5.2.4's own worked examples.
            ("/a/b/c/./../../g", "/a/g"),
            ("/mid/content=5/../6", "/mid/6"),
        ] {
            assert_eq!(norm(input, Mode::Base).unwrap(), want, "{input}");
        }
    }

    /// Cases learnt from Envoy's path-normalisation tests (written anew).
    #[test]
    fn envoy_style_vectors() {
        for (input, want) in [
            ("/xyz", "/xyz"),
            ("/x/y/z", "/x/y/z"),
            ("/p/q/../r", "/p/r"),
            ("/p/q/./r", "/p/q/r"),
            ("p/q/../r", "/p/r"),
            ("/p/q/../../../../../r", "/r"),
            ("/p/..\\r", "/r"),
            ("\\da", "/da"),
            ("/%c0%af", "/%c0%af"),
            ("/%5c%25", "/%5c%25"),
            ("/p/q/%2E%2E/r", "/p/r"),
            ("/p/q/%2e%2e/r", "/p/r"),
            ("/p/q/%2E./r", "/p/r"),
            ("/p/q/.%2e/r", "/p/r"),
            ("/p/q/%2E/r", "/p/q/r"),
            ("..", "/"),
            ("/../p/q", "/p/q"),
            ("/./p/q", "/p/q"),
            ("/P/Q/R", "/P/Q/R"),
            ("/p/%2F%2f/r", "/p/%2F%2f/r"),
            ("/p//q", "/p//q"),
        ] {
            assert_eq!(norm(input, Mode::Base).unwrap(), want, "{input}");
        }
        for bad in [
            "/xyz/.%00../abc",
            "/xyz/%00.%00./abc",
            "/xyz/AAAAA%%0000/abc",
        ] {
            assert!(
                matches!(norm(bad, Mode::Base), Err(PathError::Nul(_))),
                "{bad}"
            );
        }
    }

    #[test]
    fn unreserved_escapes_are_decoded_once() {
        for (input, want) in [
            ("/%61%62%63", "/abc"),
            ("/%41%5A%30%39%2D%5F%7E%2e", "/AZ09-_~."),
            ("/api/payments/%72efund", "/api/payments/refund"),
            ("/%252e%252e/x", "/%252e%252e/x"),
            ("/%25", "/%25"),
            ("/a%20b", "/a%20b"),
            ("/a%3Fb", "/a%3Fb"),
            // Not escapes: kept as written.
            ("/a%zz/b", "/a%zz/b"),
            ("/a%4", "/a%4"),
            ("/a%", "/a%"),
        ] {
            assert_eq!(norm(input, Mode::Base).unwrap(), want, "{input}");
        }
    }

    #[test]
    fn query_is_untouched() {
        assert_eq!(
            norm("/a/./b/../c?x=/../y&z=%61//", Mode::DecodeAndMergeSlashes).unwrap(),
            "/a/c?x=/../y&z=%61//"
        );
        assert_eq!(norm("/a//b?", Mode::MergeSlashes).unwrap(), "/a/b?");
        assert_eq!(norm("//a/?b", Mode::MergeSlashes).unwrap(), "/a/?b");
        assert_eq!(norm("/a?%00", Mode::Base).unwrap(), "/a?%00");
    }

    #[test]
    fn modes() {
        let cases: [(&str, [&str; 4]); 7] = [
            // input: [NONE, BASE, MERGE_SLASHES, DECODE_AND_MERGE_SLASHES]
            ("/a//b", ["/a//b", "/a//b", "/a/b", "/a/b"]),
            (
                "//a/b/c//",
                ["//a/b/c//", "//a/b/c//", "/a/b/c/", "/a/b/c/"],
            ),
            ("/a%2Fb", ["/a%2Fb", "/a%2Fb", "/a%2Fb", "/a/b"]),
            (
                "/a%2f%2F/b",
                ["/a%2f%2F/b", "/a%2f%2F/b", "/a%2f%2F/b", "/a/b"],
            ),
            (
                "/a%5Cb%5c",
                ["/a%5Cb%5c", "/a%5Cb%5c", "/a%5Cb%5c", "/a/b/"],
            ),
            (
                "/a/b%2F..%2Fc",
                ["/a/b%2F..%2Fc", "/a/b%2F..%2Fc", "/a/b%2F..%2Fc", "/a/c"],
            ),
            ("/a/../b", ["/a/../b", "/b", "/b", "/b"]),
        ];
        let modes = [
            Mode::None,
            Mode::Base,
            Mode::MergeSlashes,
            Mode::DecodeAndMergeSlashes,
        ];
        for (input, wants) in cases {
            for (mode, want) in modes.iter().zip(wants) {
                assert_eq!(norm(input, *mode).unwrap(), want, "{input} {mode:?}");
            }
        }
        // Decoding is one pass: an escaped escape stays escaped.
        assert_eq!(
            norm("/a%252Fb", Mode::DecodeAndMergeSlashes).unwrap(),
            "/a%252Fb"
        );
        // NONE forwards even a NUL escape unchanged.
        assert_eq!(norm("/a%00", Mode::None).unwrap(), "/a%00");
    }

    #[test]
    fn escapes_assembled_by_decoding_are_refused() {
        for (input, mode) in [
            ("/x/%2%65%2%65/y", Mode::Base),
            ("/x/%%32%65/y", Mode::Base),
            ("/%%37%32", Mode::Base),
            ("/a%%30%30", Mode::Base),
            ("/a%2%46b", Mode::DecodeAndMergeSlashes),
            ("/a%%35%63b", Mode::DecodeAndMergeSlashes),
        ] {
            assert_eq!(
                norm(input, mode),
                Err(PathError::Assembled(input.into())),
                "{input} {mode:?}"
            );
        }
        // Assembled escapes that mean nothing new in the mode are forwarded: BASE keeps `%2F`
        // as written, and `%25` is not decoded.
        assert_eq!(norm("/a%2%46b", Mode::Base).unwrap(), "/a%2Fb");
        assert_eq!(norm("/a%2%35", Mode::Base).unwrap(), "/a%25");
        assert_eq!(norm("/a%zz/%4/%", Mode::Base).unwrap(), "/a%zz/%4/%");
    }

    #[test]
    fn unprintable_bytes_are_escaped() {
        assert_eq!(norm("/a b/é", Mode::Base).unwrap(), "/a%20b/%C3%A9");
    }

    #[test]
    fn normal_paths_are_not_copied() {
        for p in ["/", "/api/v1/items", "/a//b", "*"] {
            assert!(
                matches!(path_and_query(p, Mode::Base), Ok(Cow::Borrowed(_))),
                "{p}"
            );
        }
        assert!(matches!(
            path_and_query("/a//b", Mode::MergeSlashes),
            Ok(Cow::Owned(_))
        ));
    }

    #[test]
    fn apply_keeps_scheme_authority_and_query() {
        let mut req = http::Request::builder()
            .uri("http://svc.example:8080/x/./%79/../z?q=%2e%2e")
            .body(())
            .unwrap();
        apply(&mut req, Mode::Base).unwrap();
        assert_eq!(
            req.uri().to_string(),
            "http://svc.example:8080/x/z?q=%2e%2e"
        );
        let mut req = http::Request::builder().uri("/a/%00").body(()).unwrap();
        assert!(apply(&mut req, Mode::Base).is_err());
        assert_eq!(req.uri(), "/a/%00");
    }

    #[test]
    fn mode_from_mesh_settings() {
        assert_eq!(Mode::of(None), Mode::Base);
        let mut m = pb::MeshSettings::default();
        assert_eq!(Mode::of(Some(&m)), Mode::Base);
        m.set_path_normalization(pb::PathNormalization::DecodeAndMergeSlashes);
        assert_eq!(Mode::of(Some(&m)), Mode::DecodeAndMergeSlashes);
        m.set_path_normalization(pb::PathNormalization::None);
        assert_eq!(Mode::of(Some(&m)), Mode::None);
    }
}

//! WasmPlugin rules: Istio's `ValidateWasmPlugin` plus the CRD schema's bounds (`minLength`
//! of `imagePullSecret` / `pluginName`, `number` required on match ports).

use std::collections::BTreeSet;

use super::{syntax, Problems};
use crate::extensions::{EnvValueSource, WasmPlugin};

pub(super) fn wasm_plugin(w: &WasmPlugin, p: &mut Problems) {
    let set = usize::from(w.selector.is_some())
        + usize::from(w.target_ref.is_some())
        + usize::from(!w.target_refs.is_empty());
    if set > 1 {
        p.add(
            "spec.targetRefs",
            "only one of targetRefs or workloadSelector can be set",
        );
    }
    syntax::workload_selector(p, "spec.selector", w.selector.as_ref());
    if let Some(t) = &w.target_ref {
        syntax::target_ref(p, "spec.targetRef", t);
    }
    for (i, t) in w.target_refs.iter().enumerate() {
        syntax::target_ref(p, &format!("spec.targetRefs[{i}]"), t);
    }
    if w.target_refs.len() > 16 {
        p.add("spec.targetRefs", "at most 16 target references");
    }
    if w.url.is_empty() {
        p.add("spec.url", "url field needs to be set");
    } else if let Err(e) = plugin_url(&w.url) {
        p.add("spec.url", e);
    }
    if !w.sha256.is_empty() {
        if w.sha256.len() != 64 {
            p.add("spec.sha256", "sha256 field must be 64 characters long");
        } else if !w
            .sha256
            .bytes()
            .all(|c| matches!(c, b'a'..=b'f' | b'0'..=b'9'))
        {
            p.add(
                "spec.sha256",
                "sha256 field must match [a-f0-9]{64} pattern",
            );
        }
    }
    if let Some(s) = &w.image_pull_secret {
        if s.is_empty() || s.len() > 253 {
            p.add(
                "spec.imagePullSecret",
                "imagePullSecret must be 1 to 253 characters long",
            );
        }
    }
    if let Some(n) = &w.plugin_name {
        if n.is_empty() || n.len() > 256 {
            p.add(
                "spec.pluginName",
                "pluginName must be 1 to 256 characters long",
            );
        }
    }
    if let Some(cfg) = &w.plugin_config {
        if !matches!(
            cfg,
            serde_yaml_ng::Value::Mapping(_) | serde_yaml_ng::Value::Null
        ) {
            p.add("spec.pluginConfig", "must be an object");
        }
    }
    if let Some(vm) = &w.vm_config {
        if vm.env.len() > 256 {
            p.add("spec.vmConfig.env", "at most 256 variables");
        }
        let mut names = BTreeSet::new();
        for (i, e) in vm.env.iter().enumerate() {
            let f = format!("spec.vmConfig.env[{i}]");
            if e.name.is_empty() {
                p.add(
                    format!("{f}.name"),
                    "spec.vmConfig.env invalid: name is required",
                );
            } else if e.name.len() > 256 {
                p.add(
                    format!("{f}.name"),
                    "env.name field must be less than 255 characters long",
                );
            } else if !names.insert(e.name.as_str()) {
                p.add(format!("{f}.name"), format!("duplicate env \"{}\"", e.name));
            }
            if e.value_from == Some(EnvValueSource::Host) && e.value.is_some() {
                p.add(
                    format!("{f}.value"),
                    "value may only be set when valueFrom is INLINE",
                );
            }
            if e.value.as_ref().is_some_and(|v| v.len() > 2048) {
                p.add(format!("{f}.value"), "at most 2048 characters");
            }
        }
    }
    for (i, m) in w.match_.iter().enumerate() {
        let mut seen = BTreeSet::new();
        for (j, port) in m.ports.iter().enumerate() {
            let f = format!("spec.match[{i}].ports[{j}].number");
            if !(1..=65535).contains(&port.number) {
                p.add(f, format!("port {} out of range 1..=65535", port.number));
            } else if !seen.insert(port.number) {
                p.add(f, format!("duplicate port {}", port.number));
            }
        }
    }
}

/// Istio's `strictParseURL` and scheme check: the URL as a request URI (Go's
/// `url.ParseRequestURI`), or failing that `http://` + it; the scheme must be empty,
/// `file`, `http`, `https` or `oci`.
pub(crate) fn plugin_url(url: &str) -> Result<(), String> {
    let scheme = match request_uri_scheme(url) {
        Ok(s) => s,
        Err(first) => request_uri_scheme(&format!("http://{url}"))
            .map_err(|_| format!("failed to parse url: {first}"))?,
    };
    if ["", "file", "http", "https", "oci"].contains(&scheme.as_str()) {
        Ok(())
    } else {
        Err(format!("url contains unsupported scheme: {scheme}"))
    }
}

/// The subset of Go's `url.ParseRequestURI` Istio's check depends on: the scheme (lower
/// case), a path-absolute or opaque remainder, valid `%` escapes, no control characters,
/// and a valid authority (userinfo, host characters, numeric port).
fn request_uri_scheme(s: &str) -> Result<String, String> {
    if s.bytes().any(|c| c < 0x20 || c == 0x7f) {
        return Err("net/url: invalid control character in URL".into());
    }
    let (scheme, rest) = go_scheme(s)?;
    escapes(rest)?;
    if !rest.starts_with('/') {
        if !scheme.is_empty() {
            return Ok(scheme); // opaque
        }
        return Err("invalid URI for request".into());
    }
    if let Some(after) = rest.strip_prefix("//").filter(|_| !scheme.is_empty()) {
        let authority = after.split('/').next().unwrap_or_default();
        let (userinfo, host) = match authority.rfind('@') {
            Some(i) => (Some(&authority[..i]), &authority[i + 1..]),
            None => (None, authority),
        };
        if let Some(u) = userinfo {
            let ok = u.bytes().all(|c| {
                c.is_ascii_alphanumeric() || b"-._:~!$&'()*+,;=%@".contains(&c) || c >= 0x80
            });
            if !ok {
                return Err("net/url: invalid userinfo".into());
            }
        }
        host_port(host)?;
    }
    Ok(scheme)
}

fn go_scheme(s: &str) -> Result<(String, &str), String> {
    for (i, c) in s.bytes().enumerate() {
        match c {
            b'a'..=b'z' | b'A'..=b'Z' => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' if i > 0 => {}
            b'0'..=b'9' | b'+' | b'-' | b'.' => return Ok((String::new(), s)),
            b':' if i == 0 => return Err("missing protocol scheme".into()),
            b':' => return Ok((s[..i].to_ascii_lowercase(), &s[i + 1..])),
            _ => return Ok((String::new(), s)),
        }
    }
    Ok((String::new(), s))
}

fn escapes(s: &str) -> Result<(), String> {
    let b = s.as_bytes();
    let mut i = 0;
    while i < b.len() {
        if b[i] == b'%' {
            let ok =
                b.len() > i + 2 && b[i + 1].is_ascii_hexdigit() && b[i + 2].is_ascii_hexdigit();
            if !ok {
                return Err(format!(
                    "invalid URL escape \"{}\"",
                    &s[i..(i + 3).min(s.len())]
                ));
            }
            i += 3;
        } else {
            i += 1;
        }
    }
    Ok(())
}

fn host_port(host: &str) -> Result<(), String> {
    let (name, port) = if let Some(v6) = host.strip_prefix('[') {
        let Some((_, after)) = v6.split_once(']') else {
            return Err("missing ']' in host".into());
        };
        ("", after.strip_prefix(':'))
    } else {
        match host.rsplit_once(':') {
            Some((h, p)) => (h, Some(p)),
            None => (host, None),
        }
    };
    if let Some(p) = port {
        if !p.bytes().all(|c| c.is_ascii_digit()) {
            return Err(format!("invalid port \":{p}\" after host"));
        }
    }
    let ok = name
        .bytes()
        .all(|c| c >= 0x80 || c.is_ascii_alphanumeric() || b"!$&'()*+,;=:[]<>\"-_.~%".contains(&c));
    if ok {
        Ok(())
    } else {
        Err(format!("invalid character in host name \"{host}\""))
    }
}

#[cfg(test)]
mod tests {
    use super::plugin_url;

    #[test]
    fn urls_as_istio_reads_them() {
        for ok in [
            "http://test.com/test",
            "https://a.b/c.wasm",
            "oci://test.com/test",
            "test.com/test",
            "test",
            "file:///opt/filters/openid.wasm",
            "oci://private-registry:5000/openid-connect/openid:latest",
            "ghcr.io/org/plugin:v1",
            "/abs/path.wasm",
        ] {
            assert_eq!(plugin_url(ok), Ok(()), "{ok}");
        }
        for (bad, why) in [
            ("ftp://test.com/test", "unsupported scheme: ftp"),
            ("fake://example.com", "unsupported scheme: fake"),
            ("#%blah$#@", "failed to parse url"),
            // Go reads `localhost:` as a scheme, as Istio does.
            ("localhost:5000/repo", "unsupported scheme: localhost"),
            ("http://a%zz/", "failed to parse url"),
        ] {
            let e = plugin_url(bad).unwrap_err();
            assert!(e.contains(why), "{bad}: {e}");
        }
    }
}

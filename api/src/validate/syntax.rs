//! Value syntax shared by several kinds, as Istio's webhook checks it (`pkg/config/validation`,
//! `pkg/config/labels`): host names and wildcards, label keys and values, workload
//! selectors, policy target references, HTTP header names and values, IPs and subnets,
//! gateway names, `exportTo`.

use std::collections::BTreeSet;
use std::net::IpAddr;

use super::Problems;
use crate::common::{PolicyTargetReference, WorkloadSelector};

/// A DNS-1123 label as Istio's `labels.IsDNS1123Label` checks it (letters of either case).
pub(crate) fn is_dns1123_label(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && b.len() <= 63
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter().all(|&c| alnum(c) || c == b'-')
}

/// Istio's wildcard label: `*`, or a label that may start with `*` or `*-`.
fn is_wildcard_label(s: &str) -> bool {
    if s == "*" {
        return true;
    }
    let rest = s
        .strip_prefix("*-")
        .or_else(|| s.strip_prefix('*'))
        .unwrap_or(s);
    s.len() <= 63 && is_dns1123_label(rest)
}

fn dns_preconditions(name: &str) -> Result<(), String> {
    if name.len() > 255 {
        return Err(format!("domain name \"{name}\" too long (max 255)"));
    }
    if name.is_empty() {
        return Err("empty domain name not allowed".into());
    }
    Ok(())
}

/// Labels joined by dots; the last may be empty (`istio.io.`), the top-level one not all digits.
fn dns1123_labels(domain: &str, whole: &str) -> Result<(), String> {
    let parts: Vec<&str> = domain.split('.').collect();
    let tld = parts[parts.len() - 1];
    if !tld.is_empty() && tld.bytes().all(|c| c.is_ascii_digit()) {
        return Err(format!(
            "domain name \"{whole}\" invalid (top level domain \"{tld}\" cannot be all-numeric)"
        ));
    }
    for (i, label) in parts.iter().enumerate() {
        if i == parts.len() - 1 && label.is_empty() {
            return Ok(());
        }
        if !is_dns1123_label(label) {
            return Err(format!(
                "domain name \"{whole}\" invalid (label \"{label}\" invalid)"
            ));
        }
    }
    Ok(())
}

/// Istio's `ValidateFQDN`.
pub(crate) fn fqdn(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    dns1123_labels(name, name)
}

/// Istio's `ValidateWildcardDomain`: an FQDN whose first label may be a wildcard.
pub(crate) fn wildcard_domain(name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    let (first, rest) = match name.split_once('.') {
        Some((f, r)) => (f, Some(r)),
        None => (name, None),
    };
    if !is_wildcard_label(first) {
        return Err(format!(
            "domain name \"{name}\" invalid (label \"{first}\" invalid)"
        ));
    }
    match rest {
        Some(r) => dns1123_labels(r, name),
        None => Ok(()),
    }
}

/// Istio's host check for a VirtualService bound to a gateway: SNI hosts may also be the
/// auto-generated `outbound_.<port>_._.<host>` form.
pub(crate) fn gateway_domain(sni: bool, name: &str) -> Result<(), String> {
    dns_preconditions(name)?;
    if sni && name.starts_with("outbound_") {
        let parts: Vec<&str> = name.split('_').collect();
        if parts.len() < 4 {
            return Err(format!(
                "domain name {name} invalid, should follow 'outbound_.<port>_._.<hostname>' format"
            ));
        }
        let port = parts[1].trim_matches('.');
        let host = parts[3].trim_matches('.');
        if parts[0] != "outbound"
            || !port.bytes().any(|c| c.is_ascii_digit())
            || !host.bytes().any(|c| c.is_ascii_alphabetic())
        {
            return Err(format!(
                "domain name \"{name}\" invalid, should follow 'outbound_.<port>_._.<hostname>' format"
            ));
        }
        return Ok(());
    }
    wildcard_domain(name)
}

pub(crate) fn is_ip(s: &str) -> bool {
    s.parse::<IpAddr>().is_ok()
}

/// Istio's `ValidateIPSubnet`: an address or a CIDR.
pub(crate) fn ip_subnet(s: &str) -> Result<(), String> {
    let ok = match s.split_once('/') {
        Some((a, pfx)) if !pfx.contains('/') => match a.parse::<IpAddr>() {
            Ok(ip) => pfx
                .parse::<u8>()
                .is_ok_and(|n| n <= if ip.is_ipv4() { 32 } else { 128 } && !pfx.starts_with('+')),
            Err(_) => false,
        },
        Some(_) => false,
        None => is_ip(s),
    };
    if ok {
        Ok(())
    } else {
        Err(format!("\"{s}\" is not a valid IP address or CIDR block"))
    }
}

pub(crate) fn port(p: &mut Problems, field: impl Into<String>, n: u32) {
    if !(1..=65535).contains(&n) {
        p.add(
            field,
            format!("port number {n} must be in the range 1..65535"),
        );
    }
}

/// A Kubernetes label key: optional DNS-subdomain prefix and `/`, then a name of
/// alphanumerics, `-`, `_`, `.` starting and ending alphanumeric (at most 63).
pub(crate) fn label_key(k: &str) -> bool {
    let (prefix, name) = match k.rsplit_once('/') {
        Some((p, n)) => (Some(p), n),
        None => (None, k),
    };
    let prefix_ok = prefix
        .is_none_or(|p| p.len() <= 253 && !p.is_empty() && p.split('.').all(is_dns1123_label));
    prefix_ok && !name.is_empty() && name.len() <= 63 && qualified_name(name)
}

fn qualified_name(s: &str) -> bool {
    let b = s.as_bytes();
    let alnum = |c: u8| c.is_ascii_alphanumeric();
    !b.is_empty()
        && alnum(b[0])
        && alnum(b[b.len() - 1])
        && b.iter()
            .all(|&c| alnum(c) || c == b'-' || c == b'_' || c == b'.')
}

/// A label value: empty, or a qualified name (Istio does not bound its length).
pub(crate) fn label_value(v: &str) -> bool {
    v.is_empty() || qualified_name(v)
}

/// Istio's `labels.Instance.Validate` (subset labels, `sourceLabels`).
pub(crate) fn labels<'a>(
    p: &mut Problems,
    field: &str,
    map: impl IntoIterator<Item = (&'a String, &'a String)>,
) {
    for (k, v) in map {
        if !label_key(k) {
            p.add(format!("{field}.{k}"), format!("invalid label key \"{k}\""));
        }
        if !label_value(v) {
            p.add(
                format!("{field}.{k}"),
                format!("invalid label value \"{v}\""),
            );
        }
    }
}

/// Istio's `validateWorkloadSelector`: no empty key, no wildcards; no labels at all is a
/// warning (it selects every workload in the namespace).
pub(crate) fn workload_selector(p: &mut Problems, field: &str, sel: Option<&WorkloadSelector>) {
    let Some(sel) = sel else { return };
    for (k, v) in &sel.match_labels {
        if k.is_empty() {
            p.add(
                format!("{field}.matchLabels"),
                format!("empty key is not supported in selector: \"={v}\""),
            );
        }
        if k.contains('*') || v.contains('*') {
            p.add(
                format!("{field}.matchLabels.{k}"),
                format!("wildcard is not supported in selector: \"{k}={v}\""),
            );
        }
    }
    if sel.match_labels.is_empty() {
        p.warn(
            format!("{field}.matchLabels"),
            "workload selector specified without labels",
        );
    }
}

/// Istio's `validatePolicyTargetReference`: a name, no namespace, and one of the kinds a
/// policy can attach to.
pub(crate) fn target_ref(p: &mut Problems, field: &str, t: &PolicyTargetReference) {
    if t.name.is_empty() {
        p.add(format!("{field}.name"), "targetRef name must be set");
    }
    if !t.namespace.is_empty() {
        p.add(
            format!("{field}.namespace"),
            "targetRef namespace must not be set; cross namespace referencing is not supported",
        );
    }
    let group = if t.group.is_empty() { "core" } else { &t.group };
    let allowed = matches!(
        (group, t.kind.as_str()),
        ("core", "Service")
            | ("networking.istio.io", "ServiceEntry")
            | ("gateway.networking.k8s.io", "Gateway" | "GatewayClass")
    );
    if !allowed {
        p.add(
            format!("{field}.kind"),
            format!(
                "targetRef must be to a Service, ServiceEntry, Gateway or GatewayClass, but was {}/{}",
                t.group, t.kind
            ),
        );
    }
}

/// Selector / targetRef / targetRefs: at most one of them, each well-formed.
pub(crate) fn policy_attachment(
    p: &mut Problems,
    selector: Option<&WorkloadSelector>,
    target_ref: Option<&PolicyTargetReference>,
    target_refs: &[PolicyTargetReference],
) {
    let set = usize::from(selector.is_some())
        + usize::from(target_ref.is_some())
        + usize::from(!target_refs.is_empty());
    if set > 1 {
        p.add(
            "spec.targetRefs",
            "selector, targetRef and targetRefs are mutually exclusive: set only one",
        );
    }
    workload_selector(p, "spec.selector", selector);
    if let Some(t) = target_ref {
        self::target_ref(p, "spec.targetRef", t);
    }
    for (i, t) in target_refs.iter().enumerate() {
        self::target_ref(p, &format!("spec.targetRefs[{i}]"), t);
    }
}

/// RFC 7230 token characters.
fn is_tchar(c: u8) -> bool {
    c.is_ascii_alphanumeric() || b"!#$%&'*+-.^_`|~".contains(&c)
}

pub(crate) fn is_header_token(name: &str) -> bool {
    !name.is_empty() && name.bytes().all(is_tchar)
}

/// `@request.auth.claims.<name>` / `@request.auth.claims[<name>]...`: routing on a JWT claim.
pub(crate) fn is_jwt_claim_route(name: &str) -> bool {
    name.strip_prefix("@request.auth.claims")
        .is_some_and(|rest| {
            (rest.starts_with('.') && rest.len() > 1) || (rest.starts_with('[') && rest.len() > 2)
        })
}

/// Header names in `match[].headers` / `withoutHeaders`: a token, a pseudo-header, or a
/// JWT claim route.
pub(crate) fn match_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if is_jwt_claim_route(name)
        || [":method", ":scheme", ":authority", ":path", ":status"].contains(&name)
        || is_header_token(name)
    {
        return Ok(());
    }
    Err(format!("header name {name} is not a valid header name"))
}

/// Request headers to add or set: not empty, no `:` pseudo-header but `:authority`
/// (`host` is allowed: it rewrites the authority).
pub(crate) fn set_request_header_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.starts_with(':') && !name.eq_ignore_ascii_case(":authority") {
        return Err(format!(
            "invalid header \"{name}\": header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

/// Headers to remove, and response headers to add or set: not empty, not `host`, no `:`.
pub(crate) fn header_operation_name(name: &str) -> Result<(), String> {
    if name.is_empty() {
        return Err("header name cannot be empty".into());
    }
    if name.eq_ignore_ascii_case("host") {
        return Err(format!("invalid header \"{name}\": cannot set Host header"));
    }
    if name.starts_with(':') {
        return Err(format!(
            "invalid header \"{name}\": header cannot have \":\" prefix"
        ));
    }
    Ok(())
}

pub(crate) fn is_authority_header(name: &str) -> bool {
    name.eq_ignore_ascii_case(":authority") || name.eq_ignore_ascii_case("host")
}

/// Istio's `ValidateHTTPHeaderValue`: no control characters but tab, and `%` either
/// doubled or opening a well-formed `%VAR%` / `%VAR(args)%` expression (Envoy's syntax).
pub(crate) fn header_value(v: &str) -> Result<(), String> {
    if v.chars()
        .any(|c| (c.is_control() && c != '\t') && (c as u32) < 0x80)
    {
        return Err(format!(
            "header value \"{}\" contains a control character",
            super::escaped(v)
        ));
    }
    envoy_format(v).map_err(|e| format!("header value \"{}\": {e}", super::escaped(v)))
}

fn envoy_format(v: &str) -> Result<(), &'static str> {
    #[derive(PartialEq)]
    enum S {
        Literal,
        Name,
        ExpectArray,
        ExpectString,
        Str,
        ExpectDelimOrEnd,
        ExpectArgsEnd,
        ExpectVarEnd,
    }
    let b = v.as_bytes();
    let mut s = S::Literal;
    let mut i = 0;
    while i < b.len() {
        let c = b[i];
        let has_next = i + 1 < b.len();
        match s {
            S::Literal => {
                if c == b'%' {
                    if !has_next {
                        return Err("un-escaped %");
                    }
                    if b[i + 1] == b'%' {
                        i += 1;
                    } else {
                        s = S::Name;
                    }
                }
            }
            S::Name => {
                if c == b'%' {
                    s = S::Literal;
                } else if c == b'(' {
                    s = S::ExpectArray;
                }
            }
            S::ExpectArray => {
                if c == b'[' {
                    s = S::ExpectString;
                } else if c != b' ' {
                    s = S::Str;
                }
            }
            S::ExpectDelimOrEnd => {
                if c == b',' {
                    s = S::ExpectString;
                } else if c == b']' {
                    s = S::ExpectArgsEnd;
                } else if c != b' ' {
                    return Err("expecting ',', ']', or whitespace");
                }
            }
            S::ExpectString => {
                if c == b'"' {
                    s = S::Str;
                } else if c != b' ' {
                    return Err("expecting '\"'");
                }
            }
            S::Str => {
                if c == b'\\' {
                    if !has_next {
                        return Err("un-terminated backslash in JSON string");
                    }
                    i += 1;
                } else if c == b')' {
                    s = S::ExpectVarEnd;
                } else if c == b'"' {
                    s = S::ExpectDelimOrEnd;
                }
            }
            S::ExpectArgsEnd => {
                if c == b')' {
                    s = S::ExpectVarEnd;
                } else if c != b' ' {
                    return Err("expecting ')' or whitespace");
                }
            }
            S::ExpectVarEnd => {
                if c == b'%' {
                    s = S::Literal;
                } else if c != b' ' {
                    return Err("expecting '%' or whitespace");
                }
            }
        }
        i += 1;
    }
    if s == S::Literal {
        Ok(())
    } else {
        Err("un-terminated variable expression")
    }
}

/// Istio's `validateGatewayNames`: `<namespace>/<name>` (both DNS-1123 labels), `mesh`, or
/// a bare / legacy `<name>.<namespace>` FQDN (the legacy form warns).
pub(crate) fn gateway_names(p: &mut Problems, field: &str, names: &[String]) {
    for (i, g) in names.iter().enumerate() {
        let f = format!("{field}[{i}]");
        match g.split_once('/') {
            None => {
                if let Some((name, ns)) = g.split_once('.') {
                    let ns = ns.split('.').next().unwrap_or_default();
                    p.warn(
                        &f,
                        format!("using legacy gatewayName format \"{g}\"; prefer the <namespace>/<name> format: \"{ns}/{name}\""),
                    );
                }
                if let Err(e) = fqdn(g) {
                    p.add(&f, e);
                }
                // Istio stops at the first name without a namespace.
                return;
            }
            Some((ns, name)) => {
                if ns.is_empty() || name.is_empty() {
                    p.add(&f, "config namespace and gateway name cannot be empty");
                }
                if !is_dns1123_label(ns) {
                    p.add(&f, format!("invalid value for namespace: \"{ns}\""));
                }
                if !is_dns1123_label(name) {
                    p.add(&f, format!("invalid value for gateway name: \"{name}\""));
                }
            }
        }
    }
}

/// Istio's `validateExportTo` (not for ServiceEntry): `.`, `*` or namespace names, no
/// duplicates, `*` alone.
pub(crate) fn export_to(p: &mut Problems, namespace: &str, list: &[String], dr_selector: bool) {
    if list.is_empty() {
        return;
    }
    let mut seen = BTreeSet::new();
    for (i, e) in list.iter().enumerate() {
        let f = format!("spec.exportTo[{i}]");
        let key = if e == "." { namespace } else { e.as_str() };
        if !seen.insert(key.to_string()) {
            if key != e {
                p.add(
                    &f,
                    format!("duplicate entries in exportTo: . and current namespace {namespace}"),
                );
            } else {
                p.add(&f, format!("duplicate entries in exportTo for entry {e}"));
            }
            continue;
        }
        if e != "*" && e != "." && !is_dns1123_label(e) {
            p.add(&f, format!("invalid exportTo value \"{e}\""));
        }
    }
    if dr_selector {
        if seen.contains(namespace) {
            if seen.len() > 1 {
                p.add(
                    "spec.exportTo",
                    "destination rule with workload selector cannot have multiple entries in exportTo",
                );
            }
        } else {
            p.add(
                "spec.exportTo",
                "destination rule with workload selector cannot have exportTo beyond current namespace",
            );
        }
    }
    if seen.contains("*") && list.len() > 1 {
        p.add(
            "spec.exportTo",
            "cannot have both public (*) and non-public exportTo values for a resource",
        );
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn domains() {
        for ok in [
            "foo.bar",
            "*.bar",
            "*",
            "*-foo.bar",
            "istio.io.",
            "a-b.c1",
            "Foo.Bar",
        ] {
            assert_eq!(wildcard_domain(ok), Ok(()), "{ok}");
        }
        for bad in [
            "",
            "foo.*.bar",
            "foo*.bar",
            "a..b",
            "-a.b",
            "a.123",
            "under_score.com",
        ] {
            assert!(wildcard_domain(bad).is_err(), "{bad}");
        }
        assert!(fqdn("*.bar").is_err());
        assert!(gateway_domain(
            true,
            "outbound_.15010_._.istiod.istio-system.svc.cluster.local"
        )
        .is_ok());
        assert!(gateway_domain(false, "outbound_.15010_._.istiod").is_err());
    }

    #[test]
    fn label_syntax() {
        assert!(label_key("app") && label_key("example.com/app-v1") && label_key("a_b.c"));
        assert!(!label_key("") && !label_key("-a") && !label_key("a/") && !label_key("*"));
        assert!(label_value("") && label_value("v1.2_3") && !label_value("a b"));
    }

    #[test]
    fn header_values_follow_envoy_format() {
        for ok in [
            "foo",
            "%HOSTNAME%",
            "100%%",
            "prefix %HOSTNAME% suffix",
            "%REQ(x-id)%",
            "%START_TIME([\"%s\"])%",
        ] {
            assert_eq!(header_value(ok), Ok(()), "{ok}");
        }
        for bad in ["abc%123", "%START_TIME%%", "50%", "a\nb", "a\u{1}"] {
            assert!(header_value(bad).is_err(), "{bad}");
        }
        assert!(header_value("tab\tok").is_ok());
    }

    #[test]
    fn header_names() {
        assert!(match_header_name("x-foo").is_ok());
        assert!(match_header_name(":authority").is_ok());
        assert!(match_header_name("@request.auth.claims.group").is_ok());
        assert!(match_header_name("bad header").is_err());
        assert!(match_header_name("").is_err());
        assert!(set_request_header_name(":path").is_err());
        assert!(set_request_header_name("host").is_ok());
        assert!(header_operation_name("Host").is_err());
    }

    #[test]
    fn subnets() {
        assert!(ip_subnet("10.0.0.0/8").is_ok() && ip_subnet("::1").is_ok());
        assert!(ip_subnet("10.0.0.0/33").is_err() && ip_subnet("foo").is_err());
    }
}

//! What a policy is evaluated against: the connection (L4) and optionally the HTTP request (L7).

use std::collections::BTreeMap;
use std::net::IpAddr;

/// The request being authorized.
#[derive(Debug, Clone, Default)]
pub struct RequestContext {
    /// Authenticated peer identity as Istio writes principals: `<td>/ns/<ns>/sa/<sa>` (a
    /// `spiffe://` prefix is accepted and stripped). `None` for a plaintext peer.
    pub source_principal: Option<String>,
    /// Namespace of the authenticated peer; derived from the principal when `None`.
    pub source_namespace: Option<String>,
    /// IP of the peer (`source.ip`, `ipBlocks`).
    pub source_ip: Option<IpAddr>,
    /// Original client IP (`remote.ip`, `remoteIpBlocks`); `source_ip` when `None`.
    pub remote_ip: Option<IpAddr>,
    pub destination_ip: Option<IpAddr>,
    pub destination_port: u16,
    /// TLS SNI of the connection (`connection.sni`).
    pub sni: Option<String>,
    /// HTTP attributes; `None` at L4 (ztunnel).
    pub http: Option<HttpAttributes>,
}

/// L7 attributes of an HTTP request.
#[derive(Debug, Clone, Default)]
pub struct HttpAttributes {
    /// Host or `:authority`, possibly with a port.
    pub host: String,
    pub method: String,
    /// Request path; the query string and fragment are ignored for matching.
    pub path: String,
    pub headers: http::HeaderMap,
    /// `<iss>/<sub>` of a validated JWT.
    pub request_principal: Option<String>,
    pub audiences: Vec<String>,
    pub presenter: Option<String>,
    /// Claims of a validated JWT.
    pub claims: BTreeMap<String, Claim>,
}

/// A JWT claim value.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Claim {
    /// A string (one value) or a list of strings.
    Values(Vec<String>),
    /// A nested object, addressed as `request.auth.claims[a][b]`.
    Object(BTreeMap<String, Claim>),
}

impl RequestContext {
    /// Principal without a `spiffe://` prefix.
    pub fn principal(&self) -> Option<&str> {
        self.source_principal
            .as_deref()
            .map(|p| p.strip_prefix("spiffe://").unwrap_or(p))
            .filter(|p| !p.is_empty())
    }

    /// The peer's trust domain: the part of its principal before the first `/`.
    pub fn trust_domain(&self) -> Option<&str> {
        let p = self.principal()?;
        p.split_once('/')
            .map(|(td, _)| td)
            .filter(|td| !td.is_empty())
    }

    /// The peer's namespace: explicit, else parsed from `<td>/ns/<ns>/sa/<sa>`.
    pub fn namespace(&self) -> Option<&str> {
        if let Some(ns) = self.source_namespace.as_deref().filter(|n| !n.is_empty()) {
            return Some(ns);
        }
        let p = self.principal()?;
        let mut parts = p.split('/');
        parts.next()?;
        (parts.next()? == "ns").then_some(())?;
        parts.next().filter(|n| !n.is_empty())
    }

    pub fn remote(&self) -> Option<IpAddr> {
        self.remote_ip.or(self.source_ip)
    }
}

impl HttpAttributes {
    /// The path without query string and fragment.
    pub fn url_path(&self) -> &str {
        let end = self.path.find(['?', '#']).unwrap_or(self.path.len());
        &self.path[..end]
    }

    /// Values of a header joined with `,` as Envoy matches them; `None` when absent.
    pub fn header(&self, name: &str) -> Option<String> {
        let mut values = self.headers.get_all(name).iter().peekable();
        values.peek()?;
        let joined: Vec<&str> = values.map(|v| v.to_str().unwrap_or("")).collect();
        Some(joined.join(","))
    }

    /// The host without a port (`a:80` → `a`, `[::1]:80` → `[::1]`).
    pub fn host_without_port(&self) -> &str {
        strip_port(&self.host)
    }

    /// The host as `hosts` match it, with and without the port: lower case, and without the
    /// root's trailing dot of a fully qualified name, which names the same host
    /// (`A.Example.:80` → (`a.example:80`, `a.example`)).
    pub fn canonical_host(&self) -> (String, String) {
        let bare = self.host_without_port();
        let port = &self.host[bare.len()..];
        let name = bare.strip_suffix('.').unwrap_or(bare).to_ascii_lowercase();
        (format!("{name}{port}"), name)
    }
}

fn strip_port(host: &str) -> &str {
    if host.starts_with('[') {
        return match host.find(']') {
            Some(i) => &host[..=i],
            None => host,
        };
    }
    match host.rsplit_once(':') {
        Some((h, port)) if !h.contains(':') && port.bytes().all(|b| b.is_ascii_digit()) => h,
        _ => host,
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn trust_domain_from_principal() {
        let ctx = RequestContext {
            source_principal: Some("spiffe://cluster.local/ns/production/sa/order".into()),
            ..Default::default()
        };
        assert_eq!(ctx.trust_domain(), Some("cluster.local"));
        assert_eq!(RequestContext::default().trust_domain(), None);
    }

    #[test]
    fn namespace_from_principal() {
        let ctx = RequestContext {
            source_principal: Some("spiffe://cluster.local/ns/production/sa/order".into()),
            ..Default::default()
        };
        assert_eq!(
            ctx.principal(),
            Some("cluster.local/ns/production/sa/order")
        );
        assert_eq!(ctx.namespace(), Some("production"));
        let bad = RequestContext {
            source_principal: Some("cluster.local/x/production".into()),
            ..Default::default()
        };
        assert_eq!(bad.namespace(), None);
        assert_eq!(RequestContext::default().namespace(), None);
    }

    #[test]
    fn host_port_stripping() {
        let mut h = HttpAttributes {
            host: "a.example:8080".into(),
            ..Default::default()
        };
        assert_eq!(h.host_without_port(), "a.example");
        h.host = "[::1]:80".into();
        assert_eq!(h.host_without_port(), "[::1]");
        h.host = "::1".into();
        assert_eq!(h.host_without_port(), "::1");
        h.host = "plain".into();
        assert_eq!(h.host_without_port(), "plain");
    }

    #[test]
    fn canonical_host_drops_case_and_the_root_dot() {
        let canon = |host: &str| {
            HttpAttributes {
                host: host.into(),
                ..Default::default()
            }
            .canonical_host()
        };
        let pair = |a: &str, b: &str| (a.to_string(), b.to_string());
        assert_eq!(canon("A.Example.:80"), pair("a.example:80", "a.example"));
        assert_eq!(canon("a.example."), pair("a.example", "a.example"));
        assert_eq!(canon("a.example:8080"), pair("a.example:8080", "a.example"));
        assert_eq!(canon("[::1]:80"), pair("[::1]:80", "[::1]"));
        assert_eq!(canon("a.."), pair("a.", "a."));
    }

    #[test]
    fn url_path_strips_query() {
        let h = HttpAttributes {
            path: "/a/b?x=1#f".into(),
            ..Default::default()
        };
        assert_eq!(h.url_path(), "/a/b");
    }

    #[test]
    fn header_joins_values() {
        let mut h = HttpAttributes::default();
        h.headers.append("x-a", "1".parse().unwrap());
        h.headers.append("x-a", "2".parse().unwrap());
        assert_eq!(h.header("X-A").as_deref(), Some("1,2"));
        assert_eq!(h.header("x-b"), None);
    }
}

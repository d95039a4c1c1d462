//! `when` conditions: a key naming a request attribute, `values` and `notValues`.

use ipnet::IpNet;

use crate::context::{Claim, RequestContext};
use crate::ip::{any_contains, parse_block};
use crate::strmatch::{any_matches, StrMatch};

/// The attribute a condition reads.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum Key {
    SourceIp,
    RemoteIp,
    DestinationIp,
    DestinationPort,
    SourceNamespace,
    SourcePrincipal,
    SourceTrustDomain,
    ConnectionSni,
    Header(String),
    AuthPrincipal,
    AuthAudiences,
    AuthPresenter,
    AuthClaims(Vec<String>),
}

/// Why a key could not be compiled.
#[derive(Debug, Clone, PartialEq, Eq)]
pub enum KeyError {
    Unsupported,
    Unknown,
}

impl Key {
    pub fn parse(key: &str) -> Result<Key, KeyError> {
        let simple = match key {
            "source.ip" => Some(Key::SourceIp),
            "remote.ip" => Some(Key::RemoteIp),
            "destination.ip" => Some(Key::DestinationIp),
            "destination.port" => Some(Key::DestinationPort),
            "source.namespace" => Some(Key::SourceNamespace),
            "source.principal" => Some(Key::SourcePrincipal),
            "source.trustDomain" => Some(Key::SourceTrustDomain),
            "connection.sni" => Some(Key::ConnectionSni),
            "request.auth.principal" => Some(Key::AuthPrincipal),
            "request.auth.audiences" => Some(Key::AuthAudiences),
            "request.auth.presenter" => Some(Key::AuthPresenter),
            _ => None,
        };
        if let Some(k) = simple {
            return Ok(k);
        }
        if key.starts_with("experimental.envoy.filters.") {
            return Err(KeyError::Unsupported);
        }
        if let Some(rest) = key.strip_prefix("request.headers") {
            let names = brackets(rest).ok_or(KeyError::Unknown)?;
            return match names.as_slice() {
                [name] if http::HeaderName::from_bytes(name.as_bytes()).is_ok() => {
                    Ok(Key::Header(name.to_ascii_lowercase()))
                }
                _ => Err(KeyError::Unknown),
            };
        }
        if let Some(rest) = key.strip_prefix("request.auth.claims") {
            return brackets(rest).map(Key::AuthClaims).ok_or(KeyError::Unknown);
        }
        Err(KeyError::Unknown)
    }

    pub fn is_l7(&self) -> bool {
        matches!(
            self,
            Key::Header(_)
                | Key::AuthPrincipal
                | Key::AuthAudiences
                | Key::AuthPresenter
                | Key::AuthClaims(_)
        )
    }

    /// Whether Istio's ztunnel enforces this key. istiod converts only `source.ip`,
    /// `source.namespace`, `source.principal`, `destination.ip` and `destination.port` for
    /// ztunnel (`l4WhenAttributes` in istio/istio
    /// `pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go`); every other
    /// key counts as an HTTP attribute there.
    pub fn is_ztunnel_l4(&self) -> bool {
        matches!(
            self,
            Key::SourceIp
                | Key::SourceNamespace
                | Key::SourcePrincipal
                | Key::DestinationIp
                | Key::DestinationPort
        )
    }

    fn is_ip(&self) -> bool {
        matches!(self, Key::SourceIp | Key::RemoteIp | Key::DestinationIp)
    }
}

/// `[a][b]` → `["a", "b"]`; `None` unless at least one non-empty bracketed name.
fn brackets(mut s: &str) -> Option<Vec<String>> {
    let mut out = Vec::new();
    while !s.is_empty() {
        let inner = s.strip_prefix('[')?;
        let end = inner.find(']')?;
        let name = &inner[..end];
        if name.is_empty() || name.contains('[') {
            return None;
        }
        out.push(name.to_string());
        s = &inner[end + 1..];
    }
    (!out.is_empty()).then_some(out)
}

/// Compiled values of a condition.
#[derive(Debug, Clone)]
pub enum Values {
    Ips(Vec<IpNet>),
    Ports(Vec<u16>),
    Strings(Vec<StrMatch>),
}

/// A bad value in `values`/`notValues`.
#[derive(Debug, Clone)]
pub struct BadValue {
    pub value: String,
    pub port: bool,
}

impl Values {
    fn compile(key: &Key, raw: &[String]) -> Result<Values, BadValue> {
        if key.is_ip() {
            raw.iter()
                .map(|v| {
                    parse_block(v).ok_or_else(|| BadValue {
                        value: v.clone(),
                        port: false,
                    })
                })
                .collect::<Result<_, _>>()
                .map(Values::Ips)
        } else if *key == Key::DestinationPort {
            raw.iter()
                .map(|v| {
                    v.parse::<u16>().map_err(|_| BadValue {
                        value: v.clone(),
                        port: true,
                    })
                })
                .collect::<Result<_, _>>()
                .map(Values::Ports)
        } else {
            Ok(Values::Strings(
                raw.iter().map(|v| StrMatch::parse(v)).collect(),
            ))
        }
    }
}

#[derive(Debug, Clone)]
pub struct Condition {
    pub key: Key,
    values: Values,
    not_values: Values,
    has_values: bool,
    has_not_values: bool,
}

impl Condition {
    pub fn compile(key: Key, values: &[String], not_values: &[String]) -> Result<Self, BadValue> {
        Ok(Condition {
            values: Values::compile(&key, values)?,
            not_values: Values::compile(&key, not_values)?,
            has_values: !values.is_empty(),
            has_not_values: !not_values.is_empty(),
            key,
        })
    }

    /// Whether the condition holds. L7 keys hold when there are no HTTP attributes (the caller
    /// decides what an L7 rule means at L4).
    pub fn matches(&self, ctx: &RequestContext) -> bool {
        if self.key.is_l7() && ctx.http.is_none() {
            return true;
        }
        let pos = !self.has_values || self.test(&self.values, ctx);
        let neg = !self.has_not_values || !self.test(&self.not_values, ctx);
        pos && neg
    }

    fn test(&self, values: &Values, ctx: &RequestContext) -> bool {
        match values {
            Values::Ips(blocks) => {
                let ip = match self.key {
                    Key::SourceIp => ctx.source_ip,
                    Key::RemoteIp => ctx.remote(),
                    _ => ctx.destination_ip,
                };
                any_contains(blocks, ip)
            }
            Values::Ports(ports) => ports.contains(&ctx.destination_port),
            Values::Strings(pats) => self.strings(ctx).iter().any(|v| any_matches(pats, v)),
        }
    }

    /// The attribute's values (several for audiences and list claims).
    fn strings(&self, ctx: &RequestContext) -> Vec<String> {
        let http = ctx.http.as_ref();
        let one = |v: Option<&str>| v.map(|s| vec![s.to_string()]).unwrap_or_default();
        match &self.key {
            Key::SourceNamespace => one(ctx.namespace()),
            Key::SourcePrincipal => one(ctx.principal()),
            Key::SourceTrustDomain => one(ctx.trust_domain()),
            Key::ConnectionSni => one(ctx.sni.as_deref()),
            Key::Header(name) => http.and_then(|h| h.header(name)).into_iter().collect(),
            Key::AuthPrincipal => one(http.and_then(|h| h.request_principal.as_deref())),
            Key::AuthPresenter => one(http.and_then(|h| h.presenter.as_deref())),
            Key::AuthAudiences => http.map(|h| h.audiences.clone()).unwrap_or_default(),
            Key::AuthClaims(path) => http
                .and_then(|h| claim(&h.claims, path))
                .unwrap_or_default(),
            Key::SourceIp | Key::RemoteIp | Key::DestinationIp | Key::DestinationPort => Vec::new(),
        }
    }
}

fn claim(
    claims: &std::collections::BTreeMap<String, Claim>,
    path: &[String],
) -> Option<Vec<String>> {
    let (first, rest) = path.split_first()?;
    match (claims.get(first)?, rest.is_empty()) {
        (Claim::Values(v), true) => Some(v.clone()),
        (Claim::Object(inner), false) => claim(inner, rest),
        _ => None,
    }
}

#[cfg(test)]
mod tests {
    use super::*;
    use crate::context::HttpAttributes;
    use std::collections::BTreeMap;

    #[test]
    fn key_parsing() {
        assert_eq!(Key::parse("source.ip"), Ok(Key::SourceIp));
        assert_eq!(
            Key::parse("request.headers[X-User-Role]"),
            Ok(Key::Header("x-user-role".into()))
        );
        assert_eq!(
            Key::parse("request.auth.claims[a][b]"),
            Ok(Key::AuthClaims(vec!["a".into(), "b".into()]))
        );
        assert_eq!(
            Key::parse("experimental.envoy.filters.network.mysql_proxy[db.table]"),
            Err(KeyError::Unsupported)
        );
        for bad in [
            "request.headers",
            "request.headers[]",
            "request.headers[a][b]",
            "request.headers[a",
            "request.auth.claims",
            "source.foo",
            "",
        ] {
            assert_eq!(Key::parse(bad), Err(KeyError::Unknown), "{bad}");
        }
    }

    fn cond(key: &str, values: &[&str], not: &[&str]) -> Condition {
        let s = |v: &[&str]| v.iter().map(|s| s.to_string()).collect::<Vec<_>>();
        Condition::compile(Key::parse(key).unwrap(), &s(values), &s(not)).unwrap()
    }

    fn l7_ctx() -> RequestContext {
        let mut claims = BTreeMap::new();
        claims.insert(
            "groups".into(),
            Claim::Values(vec!["dev".into(), "ops".into()]),
        );
        let mut inner = BTreeMap::new();
        inner.insert("b".into(), Claim::Values(vec!["deep".into()]));
        claims.insert("a".into(), Claim::Object(inner));
        let mut http = HttpAttributes {
            host: "h".into(),
            method: "GET".into(),
            path: "/".into(),
            request_principal: Some("iss/sub".into()),
            audiences: vec!["aud1".into(), "aud2".into()],
            presenter: Some("azp".into()),
            claims,
            ..Default::default()
        };
        http.headers.insert("x-user-role", "guest".parse().unwrap());
        RequestContext {
            source_principal: Some("cluster.local/ns/prod/sa/a".into()),
            source_ip: Some("10.0.0.1".parse().unwrap()),
            remote_ip: Some("1.2.3.4".parse().unwrap()),
            destination_ip: Some("10.0.0.2".parse().unwrap()),
            destination_port: 8080,
            sni: Some("svc.example".into()),
            http: Some(http),
            ..Default::default()
        }
    }

    #[test]
    fn every_key() {
        let ctx = l7_ctx();
        let cases: &[(&str, &[&str], &[&str], bool)] = &[
            ("source.ip", &["10.0.0.0/24"], &[], true),
            ("source.ip", &[], &["10.0.0.1"], false),
            ("remote.ip", &["1.2.3.4"], &[], true),
            ("remote.ip", &["10.0.0.1"], &[], false),
            ("destination.ip", &["10.0.0.2/32"], &[], true),
            ("destination.port", &["8080"], &[], true),
            ("destination.port", &["80"], &[], false),
            ("destination.port", &[], &["80"], true),
            ("source.namespace", &["prod"], &[], true),
            ("source.namespace", &["pr*"], &["prod"], false),
            ("source.principal", &["*"], &[], true),
            ("source.principal", &["*/sa/a"], &[], true),
            ("source.trustDomain", &["cluster.*"], &["other"], true),
            ("source.trustDomain", &["other"], &[], false),
            ("connection.sni", &["*.example"], &[], true),
            ("request.headers[x-user-role]", &["guest"], &[], true),
            ("request.headers[x-user-role]", &[], &["guest"], false),
            ("request.headers[x-missing]", &[], &["guest"], true),
            ("request.headers[x-missing]", &["*"], &[], false),
            ("request.auth.principal", &["iss/*"], &[], true),
            ("request.auth.audiences", &["aud2"], &[], true),
            ("request.auth.audiences", &["aud3"], &[], false),
            ("request.auth.presenter", &["azp"], &[], true),
            ("request.auth.claims[groups]", &["ops"], &[], true),
            ("request.auth.claims[groups]", &["x"], &[], false),
            ("request.auth.claims[a][b]", &["deep"], &[], true),
            ("request.auth.claims[a]", &["deep"], &[], false),
            ("request.auth.claims[nope]", &[], &["x"], true),
        ];
        for (key, values, not, want) in cases {
            assert_eq!(
                cond(key, values, not).matches(&ctx),
                *want,
                "{key} {values:?} {not:?}"
            );
        }
    }

    #[test]
    fn l7_keys_hold_without_http() {
        let mut ctx = l7_ctx();
        ctx.http = None;
        assert!(cond("request.headers[x]", &["y"], &[]).matches(&ctx));
        assert!(!cond("source.namespace", &["other"], &[]).matches(&ctx));
    }

    #[test]
    fn bad_values() {
        let s = |v: &str| vec![v.to_string()];
        assert!(Condition::compile(Key::SourceIp, &s("1.2.3.999"), &[]).is_err());
        let e = Condition::compile(Key::DestinationPort, &[], &s("http")).unwrap_err();
        assert!(e.port);
    }
}

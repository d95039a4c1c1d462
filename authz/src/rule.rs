//! Compiling an `Authorization` into matchers: sources, operations, conditions, rules.

use ipnet::IpNet;
use meshwork_model::pb::config as pb;

use crate::condition::{Condition, Key, KeyError};
use crate::context::RequestContext;
use crate::error::AuthzError;
use crate::ip::{any_contains, parse_block};
use crate::path::PathMatch;
use crate::strmatch::{any_matches, StrMatch};

/// A field with its values; empty means "not set" (always holds).
#[derive(Debug, Clone)]
struct Field<T> {
    values: Vec<T>,
    negate: bool,
}

impl<T> Field<T> {
    fn holds(&self, test: impl FnOnce(&[T]) -> bool) -> bool {
        self.values.is_empty() || test(&self.values) != self.negate
    }

    fn is_set(&self) -> bool {
        !self.values.is_empty()
    }
}

#[derive(Debug, Clone)]
struct Source {
    principals: [Field<StrMatch>; 2],
    namespaces: [Field<StrMatch>; 2],
    ip_blocks: [Field<IpNet>; 2],
    remote_ip_blocks: [Field<IpNet>; 2],
    request_principals: [Field<StrMatch>; 2],
}

#[derive(Debug, Clone)]
struct Operation {
    hosts: [Field<StrMatch>; 2],
    ports: [Field<u16>; 2],
    methods: [Field<StrMatch>; 2],
    paths: [Field<PathMatch>; 2],
}

/// One compiled rule.
#[derive(Debug, Clone)]
pub struct Rule {
    from: Vec<Source>,
    to: Vec<Operation>,
    when: Vec<Condition>,
    /// Carries an attribute only available in HTTP requests.
    pub has_l7: bool,
}

/// A compiled policy. Invalid rules are kept as errors: an invalid ALLOW/AUDIT rule never
/// matches, an invalid DENY/CUSTOM rule always matches (fail closed).
#[derive(Debug, Clone)]
pub struct Policy {
    /// `<ns>/<name>`.
    pub key: String,
    pub action: pb::Action,
    pub provider: String,
    pub dry_run: bool,
    rules: Vec<Result<Rule, AuthzError>>,
}

struct Ctx<'a> {
    policy: &'a str,
    rule: usize,
}

impl Ctx<'_> {
    fn strings(&self, v: &[String]) -> Vec<StrMatch> {
        v.iter().map(|s| StrMatch::parse(s)).collect()
    }

    fn ips(&self, field: &'static str, v: &[String]) -> Result<Vec<IpNet>, AuthzError> {
        v.iter()
            .map(|s| {
                parse_block(s).ok_or_else(|| AuthzError::InvalidIpBlock {
                    policy: self.policy.to_string(),
                    rule: self.rule,
                    field,
                    value: s.clone(),
                })
            })
            .collect()
    }

    fn ports(&self, field: &'static str, v: &[String]) -> Result<Vec<u16>, AuthzError> {
        v.iter()
            .map(|s| {
                s.parse::<u16>().map_err(|_| AuthzError::InvalidPort {
                    policy: self.policy.to_string(),
                    rule: self.rule,
                    field,
                    value: s.clone(),
                })
            })
            .collect()
    }

    fn paths(&self, field: &'static str, v: &[String]) -> Result<Vec<PathMatch>, AuthzError> {
        v.iter()
            .map(|s| {
                PathMatch::parse(s).map_err(|reason| AuthzError::InvalidPathTemplate {
                    policy: self.policy.to_string(),
                    rule: self.rule,
                    field,
                    value: s.clone(),
                    reason,
                })
            })
            .collect()
    }
}

fn pair<T>(pos: Vec<T>, neg: Vec<T>) -> [Field<T>; 2] {
    [
        Field {
            values: pos,
            negate: false,
        },
        Field {
            values: neg,
            negate: true,
        },
    ]
}

impl Source {
    fn compile(c: &Ctx, s: &pb::Source) -> Result<Self, AuthzError> {
        Ok(Source {
            principals: pair(c.strings(&s.principals), c.strings(&s.not_principals)),
            namespaces: pair(c.strings(&s.namespaces), c.strings(&s.not_namespaces)),
            ip_blocks: pair(
                c.ips("from.source.ipBlocks", &s.ip_blocks)?,
                c.ips("from.source.notIpBlocks", &s.not_ip_blocks)?,
            ),
            remote_ip_blocks: pair(
                c.ips("from.source.remoteIpBlocks", &s.remote_ip_blocks)?,
                c.ips("from.source.notRemoteIpBlocks", &s.not_remote_ip_blocks)?,
            ),
            request_principals: pair(
                c.strings(&s.request_principals),
                c.strings(&s.not_request_principals),
            ),
        })
    }

    fn has_l7(&self) -> bool {
        self.request_principals.iter().any(Field::is_set)
    }

    fn matches(&self, ctx: &RequestContext) -> bool {
        let principal = ctx.principal();
        let namespace = ctx.namespace();
        let principal_ok =
            |f: &Field<StrMatch>| f.holds(|v| principal.is_some_and(|p| any_matches(v, p)));
        let ns_ok = |f: &Field<StrMatch>| f.holds(|v| namespace.is_some_and(|n| any_matches(v, n)));
        let ip_ok = |f: &Field<IpNet>| f.holds(|v| any_contains(v, ctx.source_ip));
        let remote_ok = |f: &Field<IpNet>| f.holds(|v| any_contains(v, ctx.remote()));
        let rp_ok = |f: &Field<StrMatch>| match &ctx.http {
            None => true,
            Some(h) => f.holds(|v| {
                h.request_principal
                    .as_deref()
                    .is_some_and(|p| any_matches(v, p))
            }),
        };
        self.principals.iter().all(principal_ok)
            && self.namespaces.iter().all(ns_ok)
            && self.ip_blocks.iter().all(ip_ok)
            && self.remote_ip_blocks.iter().all(remote_ok)
            && self.request_principals.iter().all(rp_ok)
    }
}

impl Operation {
    fn compile(c: &Ctx, o: &pb::Operation) -> Result<Self, AuthzError> {
        let lower = |v: &[String]| v.iter().map(|s| StrMatch::parse_lowercase(s)).collect();
        Ok(Operation {
            hosts: pair(lower(&o.hosts), lower(&o.not_hosts)),
            ports: pair(
                c.ports("to.operation.ports", &o.ports)?,
                c.ports("to.operation.notPorts", &o.not_ports)?,
            ),
            methods: pair(c.strings(&o.methods), c.strings(&o.not_methods)),
            paths: pair(
                c.paths("to.operation.paths", &o.paths)?,
                c.paths("to.operation.notPaths", &o.not_paths)?,
            ),
        })
    }

    fn has_l7(&self) -> bool {
        self.hosts.iter().any(Field::is_set)
            || self.methods.iter().any(Field::is_set)
            || self.paths.iter().any(Field::is_set)
    }

    fn matches(&self, ctx: &RequestContext) -> bool {
        let port_ok = |f: &Field<u16>| f.holds(|v| v.contains(&ctx.destination_port));
        if !self.ports.iter().all(port_ok) {
            return false;
        }
        let Some(h) = &ctx.http else { return true };
        let (host, bare) = h.canonical_host();
        let path = h.url_path();
        let host_ok =
            |f: &Field<StrMatch>| f.holds(|v| any_matches(v, &bare) || any_matches(v, &host));
        let method_ok = |f: &Field<StrMatch>| f.holds(|v| any_matches(v, &h.method));
        let path_ok = |f: &Field<PathMatch>| f.holds(|v| v.iter().any(|p| p.matches(path)));
        self.hosts.iter().all(host_ok)
            && self.methods.iter().all(method_ok)
            && self.paths.iter().all(path_ok)
    }
}

impl Rule {
    fn compile(policy: &str, index: usize, r: &pb::Rule) -> Result<Self, AuthzError> {
        let c = Ctx {
            policy,
            rule: index,
        };
        let from = r
            .from
            .iter()
            .map(|s| Source::compile(&c, s))
            .collect::<Result<Vec<_>, _>>()?;
        let to =
            r.to.iter()
                .map(|o| Operation::compile(&c, o))
                .collect::<Result<Vec<_>, _>>()?;
        let when = r
            .when
            .iter()
            .map(|w| compile_condition(&c, w))
            .collect::<Result<Vec<_>, _>>()?;
        let has_l7 = from.iter().any(Source::has_l7)
            || to.iter().any(Operation::has_l7)
            || when.iter().any(|w| w.key.is_l7());
        Ok(Rule {
            from,
            to,
            when,
            has_l7,
        })
    }

    /// Whether the rule matches. Without HTTP attributes the L7 parts hold (see the crate docs
    /// for how callers treat L7 rules at L4).
    pub fn matches(&self, ctx: &RequestContext) -> bool {
        (self.from.is_empty() || self.from.iter().any(|s| s.matches(ctx)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches(ctx)))
            && self.when.iter().all(|w| w.matches(ctx))
    }
}

fn compile_condition(c: &Ctx, w: &pb::Condition) -> Result<Condition, AuthzError> {
    let key = Key::parse(&w.key).map_err(|e| match e {
        KeyError::Unsupported => AuthzError::UnsupportedConditionKey {
            policy: c.policy.to_string(),
            rule: c.rule,
            key: w.key.clone(),
        },
        KeyError::Unknown => AuthzError::UnknownConditionKey {
            policy: c.policy.to_string(),
            rule: c.rule,
            key: w.key.clone(),
        },
    })?;
    if w.values.is_empty() && w.not_values.is_empty() {
        return Err(AuthzError::EmptyCondition {
            policy: c.policy.to_string(),
            rule: c.rule,
            key: w.key.clone(),
        });
    }
    Condition::compile(key, &w.values, &w.not_values).map_err(|bad| {
        let field = if w.not_values.contains(&bad.value) {
            "when.notValues"
        } else {
            "when.values"
        };
        if bad.port {
            AuthzError::InvalidPort {
                policy: c.policy.to_string(),
                rule: c.rule,
                field,
                value: bad.value,
            }
        } else {
            AuthzError::InvalidIpBlock {
                policy: c.policy.to_string(),
                rule: c.rule,
                field,
                value: bad.value,
            }
        }
    })
}

impl Policy {
    /// Compiles a policy; never fails, invalid rules are kept as errors (see [`Policy`]).
    pub fn compile(a: &pb::Authorization) -> Policy {
        let key = format!("{}/{}", a.namespace, a.name);
        let rules = a
            .rules
            .iter()
            .enumerate()
            .map(|(i, r)| Rule::compile(&key, i, r))
            .collect();
        Policy {
            action: a.action(),
            provider: a.provider.clone(),
            dry_run: a.dry_run,
            rules,
            key,
        }
    }

    /// Errors of invalid rules.
    pub fn errors(&self) -> impl Iterator<Item = &AuthzError> {
        self.rules.iter().filter_map(|r| r.as_ref().err())
    }

    /// DENY and CUSTOM fail closed: invalid rules match, and without HTTP attributes their L7
    /// parts are ignored.
    pub fn fails_closed(&self) -> bool {
        matches!(self.action, pb::Action::Deny | pb::Action::Custom)
    }

    /// Index of the first matching rule, with the error if that rule is invalid.
    ///
    /// With no HTTP attributes in `ctx`: an ALLOW/AUDIT rule carrying L7 attributes does not
    /// match; a DENY/CUSTOM rule's L7 parts are ignored.
    pub fn matching_rule(&self, ctx: &RequestContext) -> Option<(usize, Option<&AuthzError>)> {
        let deny = self.fails_closed();
        self.rules.iter().enumerate().find_map(|(i, r)| match r {
            Err(e) => deny.then_some((i, Some(e))),
            Ok(rule) => {
                if !deny && rule.has_l7 && ctx.http.is_none() {
                    return None;
                }
                rule.matches(ctx).then_some((i, None))
            }
        })
    }
}

/// Checks a policy for values Meshwork cannot enforce; the first problem is returned.
pub fn validate(a: &pb::Authorization) -> Result<(), AuthzError> {
    match Policy::compile(a).errors().next() {
        Some(e) => Err(e.clone()),
        None => Ok(()),
    }
}

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
    /// Carries an attribute Istio's ztunnel does not enforce (see [`Enforcer::Ztunnel`]).
    ztunnel_l7: bool,
    /// Has a `when` condition Istio's ztunnel does not enforce.
    ztunnel_l7_when: bool,
}

/// Which proxy's rules decide a request that has no HTTP attributes (plain TCP).
///
/// With HTTP attributes (the waypoint's HTTP path) both are the same.
#[derive(Debug, Clone, Copy, PartialEq, Eq, Default)]
pub enum Enforcer {
    /// Envoy's TCP RBAC filter, as Istio's waypoint (and sidecar) builds it: an ALLOW/AUDIT
    /// rule with HTTP-only attributes never matches; a DENY rule is enforced without its
    /// HTTP-only attributes (it matches more); a matching CUSTOM rule rejects (Meshwork has
    /// no external authorizer). Also what a Meshwork ztunnel enforces under the opt-in mesh
    /// setting `meshwork.ztunnelPolicyFailClosed`.
    #[default]
    Envoy,
    /// Istio's ztunnel, exactly as istiod converts policies for it
    /// (`convertAuthorizationPolicy`/`handleRule` in istio/istio
    /// `pilot/pkg/serviceregistry/kube/controller/ambient/authorization.go`) and as ztunnel
    /// matches them (`Authorization::matches` in istio/ztunnel `src/rbac.rs`):
    ///
    /// * CUSTOM and AUDIT policies are never sent to ztunnel: they do not apply.
    /// * HTTP attributes are `hosts`, `methods`, `paths`, `requestPrincipals`,
    ///   `remoteIpBlocks` (and their `not` forms) and every `when` key other than
    ///   `source.ip`, `source.namespace`, `source.principal`, `destination.ip`,
    ///   `destination.port`.
    /// * ALLOW: a rule with an HTTP attribute is dropped (never matches).
    /// * DENY: HTTP attributes are removed from each source and operation; one left with no
    ///   attribute becomes an empty match, which ztunnel skips, so it matches nothing. An HTTP
    ///   `when` condition becomes an empty match too, so the whole rule matches nothing. An
    ///   L7-only DENY rule therefore has no effect at ztunnel.
    Ztunnel,
}

impl Enforcer {
    /// How a mesh's ztunnels match policies: [`Enforcer::Ztunnel`] unless the mesh opts in
    /// to `meshwork.ztunnelPolicyFailClosed`.
    pub fn for_ztunnel(mesh: Option<&pb::MeshSettings>) -> Enforcer {
        if mesh.is_some_and(|m| m.ztunnel_policy_fail_closed) {
            Enforcer::Envoy
        } else {
            Enforcer::Ztunnel
        }
    }
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
    /// How a request without HTTP attributes is decided.
    pub enforcer: Enforcer,
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

    /// `remoteIpBlocks` are HTTP attributes for Istio's ztunnel.
    fn has_ztunnel_l7(&self) -> bool {
        self.has_l7() || self.remote_ip_blocks.iter().any(Field::is_set)
    }

    /// Whether an attribute Istio's ztunnel enforces is set.
    fn has_ztunnel_l4(&self) -> bool {
        self.principals.iter().any(Field::is_set)
            || self.namespaces.iter().any(Field::is_set)
            || self.ip_blocks.iter().any(Field::is_set)
    }

    /// Istio's ztunnel: only the L4 attributes, and a source without any matches nothing.
    fn matches_ztunnel(&self, ctx: &RequestContext) -> bool {
        let principal = ctx.principal();
        let namespace = ctx.namespace();
        let principal_ok =
            |f: &Field<StrMatch>| f.holds(|v| principal.is_some_and(|p| any_matches(v, p)));
        let ns_ok = |f: &Field<StrMatch>| f.holds(|v| namespace.is_some_and(|n| any_matches(v, n)));
        let ip_ok = |f: &Field<IpNet>| f.holds(|v| any_contains(v, ctx.source_ip));
        self.has_ztunnel_l4()
            && self.principals.iter().all(principal_ok)
            && self.namespaces.iter().all(ns_ok)
            && self.ip_blocks.iter().all(ip_ok)
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

    /// Istio's ztunnel: only the ports, and an operation without any matches nothing.
    fn matches_ztunnel(&self, ctx: &RequestContext) -> bool {
        self.ports.iter().any(Field::is_set)
            && self
                .ports
                .iter()
                .all(|f| f.holds(|v| v.contains(&ctx.destination_port)))
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
        let ztunnel_l7_when = when.iter().any(|w| !w.key.is_ztunnel_l4());
        let ztunnel_l7 = ztunnel_l7_when
            || from.iter().any(Source::has_ztunnel_l7)
            || to.iter().any(Operation::has_l7);
        Ok(Rule {
            from,
            to,
            when,
            has_l7,
            ztunnel_l7,
            ztunnel_l7_when,
        })
    }

    /// Whether the rule matches as Istio's ztunnel matches what istiod sends it (see
    /// [`Enforcer::Ztunnel`]); `deny` selects the DENY conversion, else ALLOW's.
    fn matches_ztunnel(&self, ctx: &RequestContext, deny: bool) -> bool {
        if self.ztunnel_l7 && (!deny || self.ztunnel_l7_when) {
            return false;
        }
        (self.from.is_empty() || self.from.iter().any(|s| s.matches_ztunnel(ctx)))
            && (self.to.is_empty() || self.to.iter().any(|o| o.matches_ztunnel(ctx)))
            && self.when.iter().all(|w| w.matches(ctx))
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
        Policy::compile_for(a, Enforcer::Envoy)
    }

    /// Compiles a policy for an enforcement point (see [`Enforcer`]).
    pub fn compile_for(a: &pb::Authorization, enforcer: Enforcer) -> Policy {
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
            enforcer,
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
    ///
    /// Compiled for [`Enforcer::Ztunnel`], a request without HTTP attributes is matched as
    /// Istio's ztunnel matches it instead.
    pub fn matching_rule(&self, ctx: &RequestContext) -> Option<(usize, Option<&AuthzError>)> {
        if self.enforcer == Enforcer::Ztunnel && ctx.http.is_none() {
            return self.matching_rule_ztunnel(ctx);
        }
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

impl Policy {
    fn matching_rule_ztunnel(&self, ctx: &RequestContext) -> Option<(usize, Option<&AuthzError>)> {
        let deny = match self.action {
            // istiod never sends CUSTOM or AUDIT policies to ztunnel.
            pb::Action::Custom | pb::Action::Audit => return None,
            pb::Action::Deny => true,
            pb::Action::Allow => false,
        };
        self.rules.iter().enumerate().find_map(|(i, r)| match r {
            // Meshwork keeps failing closed on a rule it cannot compile (validation refuses
            // these before they reach a proxy).
            Err(e) => deny.then_some((i, Some(e))),
            Ok(rule) => rule.matches_ztunnel(ctx, deny).then_some((i, None)),
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

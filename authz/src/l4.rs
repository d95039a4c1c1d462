//! The L4 view of a policy: what ztunnel can enforce without HTTP attributes.

use meshwork_model::pb::config as pb;

/// Removes L7 attributes so that evaluation without HTTP attributes fails closed:
///
/// * ALLOW / AUDIT: rules carrying any L7 attribute are dropped (an ALLOW policy left with
///   no rules allows nothing).
/// * DENY / CUSTOM: L7 fields are removed from every source, operation and condition, so the
///   rule matches on its L4 parts alone (a matching CUSTOM policy rejects: its provider is
///   not supported).
///
/// Evaluating the result gives the same decision as evaluating the original without HTTP
/// attributes; this is the single source of truth for what ztunnel enforces.
pub fn l4_view(a: &pb::Authorization) -> pb::Authorization {
    let mut out = a.clone();
    out.has_l7 = false;
    if matches!(a.action(), pb::Action::Deny | pb::Action::Custom) {
        for rule in &mut out.rules {
            strip_rule(rule);
        }
    } else {
        out.rules.retain(|r| !rule_has_l7(r));
    }
    out
}

/// Keys that need the HTTP request; an unparseable `request.*` key counts too (fail closed).
fn is_l7_key(key: &str) -> bool {
    match crate::condition::Key::parse(key) {
        Ok(k) => k.is_l7(),
        Err(_) => key.starts_with("request."),
    }
}

fn source_has_l7(s: &pb::Source) -> bool {
    !s.request_principals.is_empty() || !s.not_request_principals.is_empty()
}

fn operation_has_l7(o: &pb::Operation) -> bool {
    !o.hosts.is_empty()
        || !o.not_hosts.is_empty()
        || !o.methods.is_empty()
        || !o.not_methods.is_empty()
        || !o.paths.is_empty()
        || !o.not_paths.is_empty()
}

/// Whether a rule carries an attribute only available in HTTP requests.
pub fn rule_has_l7(r: &pb::Rule) -> bool {
    r.from.iter().any(source_has_l7)
        || r.to.iter().any(operation_has_l7)
        || r.when.iter().any(|c| is_l7_key(&c.key))
}

fn strip_rule(r: &mut pb::Rule) {
    for s in &mut r.from {
        s.request_principals.clear();
        s.not_request_principals.clear();
    }
    for o in &mut r.to {
        o.hosts.clear();
        o.not_hosts.clear();
        o.methods.clear();
        o.not_methods.clear();
        o.paths.clear();
        o.not_paths.clear();
    }
    r.when.retain(|c| !is_l7_key(&c.key));
}

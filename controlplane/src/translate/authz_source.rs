//! An AuthorizationPolicy `source` → the model's `Source`: service accounts and trust
//! domains become principal patterns (the model has no fields of their own).
//!
//! Principals are `<trust domain>/ns/<namespace>/sa/<service account>`, and principal
//! patterns allow one wildcard at the start or end. So:
//! - `serviceAccounts: ["ns/sa"]` → `*/ns/ns/sa/sa`; a bare `["sa"]` means the policy's
//!   namespace, as in Istio.
//! - `notTrustDomains` (and `notServiceAccounts`) join `notPrincipals`: each is a "none of".
//! - `trustDomains` become principals `td/*` (exact), `td-*` (prefix) or `*`, when the source
//!   sets no other principal constraint. A suffix pattern (`*-td`), or trust domains
//!   together with principals or service accounts, cannot be written as one pattern list;
//!   then the source fails closed: for ALLOW it matches no peer, for the other actions the
//!   trust-domain constraint is dropped (the rule matches more: denies/audits more).

use meshwork_api::security::{self, AuthzAction};
use meshwork_model::pb::config::Source;

/// A principal no peer certificate can carry (URIs cannot contain NUL): an ALLOW source
/// with trust domains Meshwork cannot express matches nobody.
const NO_PEER: &str = "\u{0}unenforceable trustDomains";

fn sa_principals<'a>(list: &'a [String], ns: &'a str) -> impl Iterator<Item = String> + 'a {
    list.iter().map(move |s| match s.split_once('/') {
        Some((ns, sa)) => format!("*/ns/{ns}/sa/{sa}"),
        None => format!("*/ns/{ns}/sa/{s}"),
    })
}

/// Principal patterns selecting the given trust domains; `None` if one cannot be written.
fn td_principals(list: &[String]) -> Option<Vec<String>> {
    list.iter()
        .map(|td| {
            if td == "*" || (td.ends_with('*') && td.matches('*').count() == 1) {
                Some(td.clone())
            } else if !td.contains('*') {
                Some(format!("{td}/*"))
            } else {
                None
            }
        })
        .collect()
}

pub(crate) fn source(s: &security::Source, ns: &str, action: AuthzAction) -> Source {
    let mut principals: Vec<String> = s
        .principals
        .iter()
        .cloned()
        .chain(sa_principals(&s.service_accounts, ns))
        .collect();
    let mut not_principals: Vec<String> = s
        .not_principals
        .iter()
        .cloned()
        .chain(sa_principals(&s.not_service_accounts, ns))
        .collect();
    if let Some(tds) = td_principals(&s.not_trust_domains) {
        not_principals.extend(tds);
    } else if action == AuthzAction::Allow {
        principals = vec![NO_PEER.to_string()];
    }
    if !s.trust_domains.is_empty() {
        match td_principals(&s.trust_domains) {
            Some(tds) if principals.is_empty() => principals = tds,
            _ if action == AuthzAction::Allow => principals = vec![NO_PEER.to_string()],
            _ => {}
        }
    }
    Source {
        principals,
        not_principals,
        namespaces: s.namespaces.clone(),
        not_namespaces: s.not_namespaces.clone(),
        ip_blocks: s.ip_blocks.clone(),
        not_ip_blocks: s.not_ip_blocks.clone(),
        remote_ip_blocks: s.remote_ip_blocks.clone(),
        not_remote_ip_blocks: s.not_remote_ip_blocks.clone(),
        request_principals: s.request_principals.clone(),
        not_request_principals: s.not_request_principals.clone(),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn src(sa: &[&str], td: &[&str], not_td: &[&str]) -> security::Source {
        let v = |l: &[&str]| l.iter().map(|s| s.to_string()).collect();
        security::Source {
            service_accounts: v(sa),
            trust_domains: v(td),
            not_trust_domains: v(not_td),
            ..Default::default()
        }
    }

    #[test]
    fn bare_service_account_is_in_the_policy_namespace() {
        let s = source(
            &src(&["sa", "other/b"], &[], &[]),
            "prod",
            AuthzAction::Allow,
        );
        assert_eq!(s.principals, ["*/ns/prod/sa/sa", "*/ns/other/sa/b"]);
    }

    #[test]
    fn trust_domains_become_principal_patterns() {
        let s = source(
            &src(&[], &["cluster.local", "td-*", "*"], &["old.local"]),
            "prod",
            AuthzAction::Allow,
        );
        assert_eq!(s.principals, ["cluster.local/*", "td-*", "*"]);
        assert_eq!(s.not_principals, ["old.local/*"]);
    }

    #[test]
    fn inexpressible_trust_domains_fail_closed() {
        let allow = source(&src(&[], &["*-td"], &[]), "prod", AuthzAction::Allow);
        assert_eq!(allow.principals, [NO_PEER]);
        let with_sa = source(&src(&["sa"], &["td"], &[]), "prod", AuthzAction::Allow);
        assert_eq!(with_sa.principals, [NO_PEER]);
        let deny = source(&src(&["sa"], &["td"], &[]), "prod", AuthzAction::Deny);
        assert_eq!(deny.principals, ["*/ns/prod/sa/sa"]);
    }
}

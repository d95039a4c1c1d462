//! SPIFFE identities of mesh workloads: `spiffe://<trust-domain>/ns/<namespace>/sa/<service-account>`.

use std::fmt;
use std::str::FromStr;

/// URI scheme prefix of every SPIFFE id.
const SCHEME: &str = "spiffe://";

/// Why a string is not a valid mesh SPIFFE identity.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum SpiffeIdError {
    #[error("SPIFFE id {input:?}: must start with \"spiffe://\"")]
    MissingScheme { input: String },
    #[error("SPIFFE id {input:?}: trust domain is empty")]
    EmptyTrustDomain { input: String },
    #[error(
        "SPIFFE id {input:?}: trust domain {trust_domain:?} may only contain lowercase letters, digits, '.', '-' and '_'"
    )]
    InvalidTrustDomain { input: String, trust_domain: String },
    #[error(
        "SPIFFE id {input:?}: path must be \"/ns/<namespace>/sa/<service-account>\", got {path:?}"
    )]
    InvalidPath { input: String, path: String },
    #[error(
        "SPIFFE id {input:?}: {field} {value:?} must be non-empty, not \".\" or \"..\", and contain only letters, digits, '.', '-' and '_'"
    )]
    InvalidSegment {
        input: String,
        field: &'static str,
        value: String,
    },
}

/// A workload identity in Istio's SPIFFE format.
///
/// Constructed only through validation ([`SpiffeId::new`], [`FromStr`], [`SpiffeId::from_principal`]),
/// so its [`Display`](fmt::Display) form always parses back to the same value.
#[derive(Debug, Clone, PartialEq, Eq, Hash, PartialOrd, Ord)]
pub struct SpiffeId {
    trust_domain: String,
    namespace: String,
    service_account: String,
}

impl SpiffeId {
    /// Builds an identity from its parts, validating each of them.
    pub fn new(
        trust_domain: impl Into<String>,
        namespace: impl Into<String>,
        service_account: impl Into<String>,
    ) -> Result<Self, SpiffeIdError> {
        let id = SpiffeId {
            trust_domain: trust_domain.into(),
            namespace: namespace.into(),
            service_account: service_account.into(),
        };
        let input = id.render(SCHEME);
        validate_trust_domain(&input, &id.trust_domain)?;
        validate_segment(&input, "namespace", &id.namespace)?;
        validate_segment(&input, "service account", &id.service_account)?;
        Ok(id)
    }

    /// Parses Istio's principal form, the SPIFFE id without its scheme: `td/ns/<ns>/sa/<sa>`.
    pub fn from_principal(principal: &str) -> Result<Self, SpiffeIdError> {
        parse_without_scheme(principal, principal)
    }

    pub fn trust_domain(&self) -> &str {
        &self.trust_domain
    }

    pub fn namespace(&self) -> &str {
        &self.namespace
    }

    pub fn service_account(&self) -> &str {
        &self.service_account
    }

    /// Istio's principal form (as used in `AuthorizationPolicy` `principals`): `td/ns/<ns>/sa/<sa>`.
    pub fn principal(&self) -> String {
        self.render("")
    }

    fn render(&self, prefix: &str) -> String {
        format!(
            "{prefix}{}/ns/{}/sa/{}",
            self.trust_domain, self.namespace, self.service_account
        )
    }
}

impl fmt::Display for SpiffeId {
    fn fmt(&self, f: &mut fmt::Formatter<'_>) -> fmt::Result {
        f.write_str(&self.render(SCHEME))
    }
}

impl FromStr for SpiffeId {
    type Err = SpiffeIdError;

    fn from_str(input: &str) -> Result<Self, Self::Err> {
        let rest = input
            .strip_prefix(SCHEME)
            .ok_or_else(|| SpiffeIdError::MissingScheme {
                input: input.to_string(),
            })?;
        parse_without_scheme(input, rest)
    }
}

impl TryFrom<&str> for SpiffeId {
    type Error = SpiffeIdError;

    fn try_from(value: &str) -> Result<Self, Self::Error> {
        value.parse()
    }
}

fn parse_without_scheme(input: &str, rest: &str) -> Result<SpiffeId, SpiffeIdError> {
    let (trust_domain, path) = match rest.find('/') {
        Some(i) => (&rest[..i], &rest[i..]),
        None => (rest, ""),
    };
    validate_trust_domain(input, trust_domain)?;
    let invalid_path = || SpiffeIdError::InvalidPath {
        input: input.to_string(),
        path: path.to_string(),
    };
    let mut parts = path.split('/');
    let (Some(""), Some("ns"), Some(ns), Some("sa"), Some(sa), None) = (
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
        parts.next(),
    ) else {
        return Err(invalid_path());
    };
    validate_segment(input, "namespace", ns)?;
    validate_segment(input, "service account", sa)?;
    Ok(SpiffeId {
        trust_domain: trust_domain.to_string(),
        namespace: ns.to_string(),
        service_account: sa.to_string(),
    })
}

fn validate_trust_domain(input: &str, td: &str) -> Result<(), SpiffeIdError> {
    if td.is_empty() {
        return Err(SpiffeIdError::EmptyTrustDomain {
            input: input.to_string(),
        });
    }
    let valid = td
        .bytes()
        .all(|b| b.is_ascii_lowercase() || b.is_ascii_digit() || matches!(b, b'.' | b'-' | b'_'));
    if !valid {
        return Err(SpiffeIdError::InvalidTrustDomain {
            input: input.to_string(),
            trust_domain: td.to_string(),
        });
    }
    Ok(())
}

fn validate_segment(input: &str, field: &'static str, value: &str) -> Result<(), SpiffeIdError> {
    let valid = !value.is_empty()
        && value != "."
        && value != ".."
        && value
            .bytes()
            .all(|b| b.is_ascii_alphanumeric() || matches!(b, b'.' | b'-' | b'_'));
    if !valid {
        return Err(SpiffeIdError::InvalidSegment {
            input: input.to_string(),
            field,
            value: value.to_string(),
        });
    }
    Ok(())
}

#[cfg(test)]
mod tests {
    use super::*;

    #[test]
    fn parse_display_round_trip() {
        let text = "spiffe://cluster.local/ns/default/sa/sleep";
        let id: SpiffeId = text.parse().unwrap();
        assert_eq!(id.trust_domain(), "cluster.local");
        assert_eq!(id.namespace(), "default");
        assert_eq!(id.service_account(), "sleep");
        assert_eq!(id.to_string(), text);
        assert_eq!(id.principal(), "cluster.local/ns/default/sa/sleep");
        assert_eq!(SpiffeId::from_principal(&id.principal()).unwrap(), id);
        assert_eq!(
            SpiffeId::new("cluster.local", "default", "sleep").unwrap(),
            id
        );
    }

    #[test]
    fn rejects_missing_scheme() {
        let err = "cluster.local/ns/a/sa/b".parse::<SpiffeId>().unwrap_err();
        assert!(matches!(err, SpiffeIdError::MissingScheme { .. }), "{err}");
        assert!(err.to_string().contains("spiffe://"));
    }

    #[test]
    fn rejects_bad_trust_domain() {
        let err = "spiffe:///ns/a/sa/b".parse::<SpiffeId>().unwrap_err();
        assert!(
            matches!(err, SpiffeIdError::EmptyTrustDomain { .. }),
            "{err}"
        );
        let err = "spiffe://Cluster.Local/ns/a/sa/b"
            .parse::<SpiffeId>()
            .unwrap_err();
        assert!(
            matches!(err, SpiffeIdError::InvalidTrustDomain { .. }),
            "{err}"
        );
    }

    #[test]
    fn rejects_bad_paths() {
        for bad in [
            "spiffe://td",
            "spiffe://td/",
            "spiffe://td/ns/a",
            "spiffe://td/ns/a/sa",
            "spiffe://td/ns/a/sa/b/extra",
            "spiffe://td/namespace/a/sa/b",
            "spiffe://td/ns/a/serviceaccount/b",
        ] {
            let err = bad.parse::<SpiffeId>().unwrap_err();
            assert!(
                matches!(err, SpiffeIdError::InvalidPath { .. }),
                "{bad}: {err}"
            );
        }
    }

    #[test]
    fn rejects_bad_segments() {
        for bad in [
            "spiffe://td/ns//sa/b",
            "spiffe://td/ns/a/sa/",
            "spiffe://td/ns/../sa/b",
            "spiffe://td/ns/a/sa/b c",
            "spiffe://td/ns/a?x/sa/b",
        ] {
            let err = bad.parse::<SpiffeId>().unwrap_err();
            assert!(
                matches!(err, SpiffeIdError::InvalidSegment { .. }),
                "{bad}: {err}"
            );
        }
        let err = SpiffeId::new("td", "ns", "").unwrap_err();
        assert!(err.to_string().contains("service account"), "{err}");
    }
}

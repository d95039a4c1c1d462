//! One authority per request, before anything reads it.
//!
//! RFC 9112 §3.2.2: when the request-target is in absolute form (`POST http://a:80/x`), its
//! authority is the request's, and a proxy replaces `Host` with it. RFC 9113 §8.3.1: in
//! HTTP/2 `:authority` is the authority, and a `host` header that differs is not to be
//! trusted. As Envoy does, the target URI's authority (HTTP/1.1 absolute form, HTTP/2
//! `:authority`) wins and `Host` is rewritten to it, so service resolution, authorization,
//! routing, the access log and the upstream application all see the same authority. A
//! request with several `Host` headers, or a target authority with user information, is
//! refused (400): no reading of it is safe.

use http::header::{self, HeaderValue};
use http::Request;

/// Why a request's authority is ambiguous.
#[derive(Debug, Clone, PartialEq, Eq, thiserror::Error)]
pub enum AuthorityError {
    #[error("the request has {0} Host headers")]
    SeveralHosts(usize),
    #[error("the request target's authority {0:?} carries user information")]
    UserInfo(String),
    #[error("the request target's authority {0:?} is not a valid Host value")]
    Invalid(String),
}

/// Makes `Host` the request target's authority when the target has one; checks `Host`
/// is not repeated.
pub fn canonicalize<B>(req: &mut Request<B>) -> Result<(), AuthorityError> {
    let hosts = req.headers().get_all(header::HOST).iter().count();
    if hosts > 1 {
        return Err(AuthorityError::SeveralHosts(hosts));
    }
    let Some(authority) = req.uri().authority() else {
        return Ok(());
    };
    let a = authority.as_str();
    if a.contains('@') {
        return Err(AuthorityError::UserInfo(a.to_string()));
    }
    let value = HeaderValue::from_str(a).map_err(|_| AuthorityError::Invalid(a.to_string()))?;
    req.headers_mut().insert(header::HOST, value);
    Ok(())
}

/// The request's authority: the target URI's, else the `Host` header (after
/// [`canonicalize`] they are the same).
pub fn authority_of<B>(req: &Request<B>) -> String {
    req.uri()
        .authority()
        .map(|a| a.to_string())
        .or_else(|| {
            req.headers()
                .get(header::HOST)
                .and_then(|h| h.to_str().ok())
                .map(String::from)
        })
        .unwrap_or_default()
}

/// `host:port` → (host, Some(port)).
pub fn split_host(authority: &str) -> (&str, Option<u16>) {
    if let Some(rest) = authority.strip_prefix('[') {
        if let Some((h, p)) = rest.split_once(']') {
            return (h, p.strip_prefix(':').and_then(|p| p.parse().ok()));
        }
    }
    match authority.rsplit_once(':') {
        Some((h, p)) if !h.contains(':') => match p.parse() {
            Ok(port) => (h, Some(port)),
            Err(_) => (authority, None),
        },
        _ => (authority, None),
    }
}

#[cfg(test)]
mod tests {
    use super::*;

    fn req(uri: &str, hosts: &[&str]) -> Request<()> {
        let mut b = Request::builder().uri(uri);
        for h in hosts {
            b = b.header(header::HOST, *h);
        }
        b.body(()).unwrap()
    }

    fn host(r: &Request<()>) -> Option<&str> {
        r.headers().get(header::HOST).and_then(|v| v.to_str().ok())
    }

    #[test]
    fn the_target_authority_replaces_host() {
        let mut r = req(
            "http://payment-service:8080/api/payments/1",
            &["internal.example.com"],
        );
        canonicalize(&mut r).unwrap();
        assert_eq!(host(&r), Some("payment-service:8080"));
        let mut r = req("http://payment-service/x", &[]);
        canonicalize(&mut r).unwrap();
        assert_eq!(host(&r), Some("payment-service"));
    }

    #[test]
    fn origin_form_keeps_its_host() {
        let mut r = req("/api/payments/1", &["payment-service"]);
        canonicalize(&mut r).unwrap();
        assert_eq!(host(&r), Some("payment-service"));
        let mut r = req("/", &[]);
        canonicalize(&mut r).unwrap();
        assert_eq!(host(&r), None);
    }

    #[test]
    fn ambiguous_authorities_are_refused() {
        assert_eq!(
            canonicalize(&mut req("/", &["a", "b"])),
            Err(AuthorityError::SeveralHosts(2))
        );
        assert_eq!(
            canonicalize(&mut req("http://a/", &["a", "a"])),
            Err(AuthorityError::SeveralHosts(2))
        );
        assert!(matches!(
            canonicalize(&mut req("http://user:pw@payment-service/x", &["a"])),
            Err(AuthorityError::UserInfo(_))
        ));
    }
}

#[cfg(test)]
mod split_tests {
    use super::*;

    #[test]
    fn host_splitting() {
        assert_eq!(split_host("a:80"), ("a", Some(80)));
        assert_eq!(split_host("a"), ("a", None));
        assert_eq!(split_host("[::1]:8080"), ("::1", Some(8080)));
        assert_eq!(split_host("a:bad"), ("a:bad", None));
    }
}

//! L7 authorization at the waypoint: build the request context, evaluate, answer like Envoy.

use std::net::SocketAddr;

use http::request::Parts;
use http::{Response, StatusCode};
use meshwork_authz::{evaluate, Decision, HttpAttributes, Outcome, Policy, RequestContext};
use tracing::info;

use crate::body::Body;
use crate::request::flags;
use crate::request::local_reply::text;

/// Builds the authorization context for an HTTP request.
pub fn context(
    parts: &Parts,
    authority: &str,
    source_identity: Option<&str>,
    source: Option<SocketAddr>,
    destination: Option<SocketAddr>,
    port: u16,
) -> RequestContext {
    RequestContext {
        source_principal: source_identity.map(String::from),
        source_namespace: None,
        source_ip: source.map(|s| s.ip()),
        remote_ip: None,
        destination_ip: destination.map(|d| d.ip()),
        destination_port: port,
        sni: None,
        http: Some(HttpAttributes {
            host: authority.to_string(),
            method: parts.method.as_str().to_string(),
            path: parts
                .uri
                .path_and_query()
                .map(|p| p.as_str().to_string())
                .unwrap_or_else(|| "/".into()),
            headers: parts.headers.clone(),
            ..Default::default()
        }),
    }
}

/// Evaluates the policies; `Err` carries the rejection response and its flag.
pub fn check(
    policies: &[std::sync::Arc<Policy>],
    ctx: &RequestContext,
) -> (Decision, Option<(Response<Body>, &'static str)>) {
    let d = evaluate(policies.iter().map(|p| p.as_ref()), ctx);
    for a in &d.audit {
        info!(policy = %a.policy, rule = a.rule, "authz: AUDIT policy matched");
    }
    for a in &d.dry_run {
        info!(policy = %a.policy, rule = a.rule, action = ?a.action, "authz: dry-run policy matched");
    }
    if d.allowed {
        return (d, None);
    }
    let rejection = match &d.outcome {
        Outcome::Custom { provider } => {
            info!(provider, reason = %d.reason, "authz: CUSTOM provider not supported, denying");
            let msg = format!(
                "RBAC: access denied: CUSTOM authorization provider {provider:?} is not supported by Meshwork\n"
            );
            (
                text(StatusCode::FORBIDDEN, msg),
                flags::UNAUTHORIZED_EXTERNAL,
            )
        }
        _ => {
            info!(reason = %d.reason, "authz: denied");
            (
                text(StatusCode::FORBIDDEN, "RBAC: access denied"),
                flags::NONE,
            )
        }
    };
    (d, Some(rejection))
}

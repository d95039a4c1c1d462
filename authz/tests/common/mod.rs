//! Builders shared by the integration tests.
#![allow(dead_code)]

use meshwork_authz::{HttpAttributes, RequestContext};
use meshwork_model::pb::config as pb;

pub fn s(v: &[&str]) -> Vec<String> {
    v.iter().map(|x| x.to_string()).collect()
}

pub fn policy(name: &str, action: pb::Action, rules: Vec<pb::Rule>) -> pb::Authorization {
    pb::Authorization {
        name: name.into(),
        namespace: "production".into(),
        action: action as i32,
        rules,
        ..Default::default()
    }
}

pub fn peer(principal: Option<&str>) -> RequestContext {
    RequestContext {
        source_principal: principal.map(String::from),
        source_ip: Some("10.1.0.5".parse().unwrap()),
        destination_ip: Some("10.1.0.9".parse().unwrap()),
        destination_port: 8080,
        ..Default::default()
    }
}

pub fn http(method: &str, path: &str, headers: &[(&str, &str)]) -> HttpAttributes {
    let mut h = HttpAttributes {
        host: "payment-service.production.svc.cluster.local:8080".into(),
        method: method.into(),
        path: path.into(),
        ..Default::default()
    };
    for (k, v) in headers {
        h.headers.append(
            http::HeaderName::from_bytes(k.as_bytes()).unwrap(),
            v.parse().unwrap(),
        );
    }
    h
}

pub fn with_http(mut ctx: RequestContext, h: HttpAttributes) -> RequestContext {
    ctx.http = Some(h);
    ctx
}

/// The seed's payment-service-policy (05-zero-trust.yaml) as the translator produces it.
pub fn payment_policy() -> pb::Authorization {
    let mut p = policy(
        "payment-service-policy",
        pb::Action::Allow,
        vec![pb::Rule {
            from: vec![pb::Source {
                principals: s(&["cluster.local/ns/production/sa/order-service"]),
                namespaces: s(&["production"]),
                ..Default::default()
            }],
            to: vec![pb::Operation {
                methods: s(&["POST"]),
                paths: s(&["/api/payments/*"]),
                ..Default::default()
            }],
            when: vec![pb::Condition {
                key: "request.headers[x-user-role]".into(),
                not_values: s(&["guest"]),
                ..Default::default()
            }],
        }],
    );
    p.scope = pb::PolicyScope::WorkloadSelector as i32;
    p.selector.insert("app".into(), "payment-service".into());
    p.has_l7 = true;
    p
}

/// The seed's deny-all-default.
pub fn deny_all_default() -> pb::Authorization {
    let mut p = policy(
        "deny-all-default",
        pb::Action::Deny,
        vec![pb::Rule {
            from: vec![pb::Source {
                not_principals: s(&["cluster.local/ns/production/sa/*"]),
                ..Default::default()
            }],
            ..Default::default()
        }],
    );
    p.scope = pb::PolicyScope::Namespace as i32;
    p
}

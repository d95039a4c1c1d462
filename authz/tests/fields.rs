//! Table tests: every Source and Operation field, plain and `not*`, one rule at a time.

mod common;

use common::*;
use meshwork_authz::{evaluate_pb, RequestContext};
use meshwork_model::pb::config as pb;

fn ctx() -> RequestContext {
    let mut h = http("POST", "/api/v1/items/42?x=1", &[("x-env", "prod")]);
    h.host = "Shop.Example.COM:8443".into();
    h.request_principal = Some("https://issuer.example/alice".into());
    let mut c = with_http(peer(Some("cluster.local/ns/shop/sa/web")), h);
    c.remote_ip = Some("203.0.113.7".parse().unwrap());
    c
}

fn allow_source(src: pb::Source) -> pb::Authorization {
    policy(
        "p",
        pb::Action::Allow,
        vec![pb::Rule {
            from: vec![src],
            ..Default::default()
        }],
    )
}

fn allow_op(op: pb::Operation) -> pb::Authorization {
    policy(
        "p",
        pb::Action::Allow,
        vec![pb::Rule {
            to: vec![op],
            ..Default::default()
        }],
    )
}

#[test]
fn source_fields() {
    type Src = pb::Source;
    let cases: Vec<(&str, Src, bool)> = vec![
        (
            "principal exact",
            Src {
                principals: s(&["cluster.local/ns/shop/sa/web"]),
                ..Default::default()
            },
            true,
        ),
        (
            "principal other",
            Src {
                principals: s(&["cluster.local/ns/shop/sa/db"]),
                ..Default::default()
            },
            false,
        ),
        (
            "principal prefix",
            Src {
                principals: s(&["cluster.local/ns/shop/*"]),
                ..Default::default()
            },
            true,
        ),
        (
            "principal suffix",
            Src {
                principals: s(&["*/sa/web"]),
                ..Default::default()
            },
            true,
        ),
        (
            "principal any",
            Src {
                principals: s(&["*"]),
                ..Default::default()
            },
            true,
        ),
        (
            "notPrincipals hit",
            Src {
                not_principals: s(&["*/sa/web"]),
                ..Default::default()
            },
            false,
        ),
        (
            "notPrincipals miss",
            Src {
                not_principals: s(&["*/sa/db"]),
                ..Default::default()
            },
            true,
        ),
        (
            "namespace",
            Src {
                namespaces: s(&["shop"]),
                ..Default::default()
            },
            true,
        ),
        (
            "namespace other",
            Src {
                namespaces: s(&["prod*"]),
                ..Default::default()
            },
            false,
        ),
        (
            "notNamespaces",
            Src {
                not_namespaces: s(&["sh*"]),
                ..Default::default()
            },
            false,
        ),
        (
            "ipBlocks",
            Src {
                ip_blocks: s(&["10.1.0.0/16"]),
                ..Default::default()
            },
            true,
        ),
        (
            "ipBlocks single",
            Src {
                ip_blocks: s(&["10.1.0.6"]),
                ..Default::default()
            },
            false,
        ),
        (
            "notIpBlocks",
            Src {
                not_ip_blocks: s(&["10.0.0.0/8"]),
                ..Default::default()
            },
            false,
        ),
        (
            "remoteIpBlocks",
            Src {
                remote_ip_blocks: s(&["203.0.113.0/24"]),
                ..Default::default()
            },
            true,
        ),
        (
            "remoteIpBlocks v6",
            Src {
                remote_ip_blocks: s(&["2001:db8::/32"]),
                ..Default::default()
            },
            false,
        ),
        (
            "notRemoteIpBlocks",
            Src {
                not_remote_ip_blocks: s(&["10.1.0.5"]),
                ..Default::default()
            },
            true,
        ),
        (
            "requestPrincipals",
            Src {
                request_principals: s(&["https://issuer.example/*"]),
                ..Default::default()
            },
            true,
        ),
        (
            "requestPrincipals any",
            Src {
                request_principals: s(&["*"]),
                ..Default::default()
            },
            true,
        ),
        (
            "notRequestPrincipals",
            Src {
                not_request_principals: s(&["*"]),
                ..Default::default()
            },
            false,
        ),
        (
            "fields AND",
            Src {
                principals: s(&["*"]),
                namespaces: s(&["other"]),
                ..Default::default()
            },
            false,
        ),
    ];
    for (name, src, want) in cases {
        let d = evaluate_pb(&[allow_source(src)], &ctx());
        assert_eq!(d.allowed, want, "{name}: {d}");
    }
}

#[test]
fn unauthenticated_peer() {
    let mut c = ctx();
    c.source_principal = None;
    let cases: Vec<(&str, pb::Source, bool)> = vec![
        (
            "principals any",
            pb::Source {
                principals: s(&["*"]),
                ..Default::default()
            },
            false,
        ),
        (
            "notPrincipals",
            pb::Source {
                not_principals: s(&["*/sa/web"]),
                ..Default::default()
            },
            true,
        ),
        (
            "namespaces",
            pb::Source {
                namespaces: s(&["*"]),
                ..Default::default()
            },
            false,
        ),
        (
            "notNamespaces",
            pb::Source {
                not_namespaces: s(&["shop"]),
                ..Default::default()
            },
            true,
        ),
    ];
    for (name, src, want) in cases {
        assert_eq!(
            evaluate_pb(&[allow_source(src)], &c).allowed,
            want,
            "{name}"
        );
    }
}

#[test]
fn operation_fields() {
    type Op = pb::Operation;
    let cases: Vec<(&str, Op, bool)> = vec![
        (
            "host case/port",
            Op {
                hosts: s(&["shop.example.com"]),
                ..Default::default()
            },
            true,
        ),
        (
            "host with port",
            Op {
                hosts: s(&["shop.example.com:8443"]),
                ..Default::default()
            },
            true,
        ),
        (
            "host suffix",
            Op {
                hosts: s(&["*.EXAMPLE.com"]),
                ..Default::default()
            },
            true,
        ),
        (
            "host other",
            Op {
                hosts: s(&["api.example.com"]),
                ..Default::default()
            },
            false,
        ),
        (
            "notHosts",
            Op {
                not_hosts: s(&["shop.*"]),
                ..Default::default()
            },
            false,
        ),
        (
            "port",
            Op {
                ports: s(&["8080"]),
                ..Default::default()
            },
            true,
        ),
        (
            "port other",
            Op {
                ports: s(&["80"]),
                ..Default::default()
            },
            false,
        ),
        (
            "notPorts",
            Op {
                not_ports: s(&["8080"]),
                ..Default::default()
            },
            false,
        ),
        (
            "method",
            Op {
                methods: s(&["GET", "POST"]),
                ..Default::default()
            },
            true,
        ),
        (
            "method case",
            Op {
                methods: s(&["post"]),
                ..Default::default()
            },
            false,
        ),
        (
            "notMethods",
            Op {
                not_methods: s(&["DELETE"]),
                ..Default::default()
            },
            true,
        ),
        (
            "path exact ignores query",
            Op {
                paths: s(&["/api/v1/items/42"]),
                ..Default::default()
            },
            true,
        ),
        (
            "path prefix",
            Op {
                paths: s(&["/api/*"]),
                ..Default::default()
            },
            true,
        ),
        (
            "path suffix",
            Op {
                paths: s(&["*/42"]),
                ..Default::default()
            },
            true,
        ),
        (
            "path template one",
            Op {
                paths: s(&["/api/{*}/items/{*}"]),
                ..Default::default()
            },
            true,
        ),
        (
            "path template many",
            Op {
                paths: s(&["/api/{**}"]),
                ..Default::default()
            },
            true,
        ),
        (
            "path template miss",
            Op {
                paths: s(&["/api/{*}/42"]),
                ..Default::default()
            },
            false,
        ),
        (
            "notPaths",
            Op {
                not_paths: s(&["/api/{**}"]),
                ..Default::default()
            },
            false,
        ),
        (
            "fields AND",
            Op {
                methods: s(&["POST"]),
                paths: s(&["/other"]),
                ..Default::default()
            },
            false,
        ),
    ];
    for (name, op, want) in cases {
        let d = evaluate_pb(&[allow_op(op)], &ctx());
        assert_eq!(d.allowed, want, "{name}: {d}");
    }
}

#[test]
fn rule_structure() {
    let yes = pb::Source {
        namespaces: s(&["shop"]),
        ..Default::default()
    };
    let no = pb::Source {
        namespaces: s(&["x"]),
        ..Default::default()
    };
    let op_no = pb::Operation {
        methods: s(&["GET"]),
        ..Default::default()
    };
    let cond = |values: &[&str]| pb::Condition {
        key: "request.headers[x-env]".into(),
        values: s(values),
        ..Default::default()
    };
    let rule = |from, to, when| pb::Rule { from, to, when };
    let cases = vec![
        ("empty rule matches all", rule(vec![], vec![], vec![]), true),
        (
            "from OR",
            rule(vec![no.clone(), yes.clone()], vec![], vec![]),
            true,
        ),
        ("from none", rule(vec![no.clone()], vec![], vec![]), false),
        (
            "to fails",
            rule(vec![yes.clone()], vec![op_no.clone()], vec![]),
            false,
        ),
        (
            "when AND",
            rule(vec![], vec![], vec![cond(&["prod"]), cond(&["dev"])]),
            false,
        ),
        (
            "when ok",
            rule(vec![yes.clone()], vec![], vec![cond(&["pro*"])]),
            true,
        ),
    ];
    for (name, r, want) in cases {
        let d = evaluate_pb(&[policy("p", pb::Action::Allow, vec![r])], &ctx());
        assert_eq!(d.allowed, want, "{name}: {d}");
    }
    // Rules are OR'd; the decision names the rule.
    let two = policy(
        "p",
        pb::Action::Allow,
        vec![
            rule(vec![no], vec![], vec![]),
            rule(vec![yes], vec![], vec![]),
        ],
    );
    let d = evaluate_pb(&[two], &ctx());
    assert!(d.allowed);
    assert_eq!(d.rule, Some(1));
    assert_eq!(d.policy.as_deref(), Some("production/p"));
}
